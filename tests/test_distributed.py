import pytest
import torch

from efficientdet.distributed import (all_gather_sorted, broadcast_from_main, broadcast_state, gather_sorted,
                                      init_distributed, rank_and_world, shard)


def test_shards_keep_the_order_cover_every_item_once_and_may_be_empty():
    items = list(range(7))
    shards = [shard(items, rank, 3) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for s in shards for x in s) == items
    assert shard(items[:2], 2, 3) == []


def test_one_process_gathers_and_broadcasts_what_it_has():
    """Without torchrun every helper is the identity: eval and predict run one code path."""
    assert rank_and_world() == (0, 1)
    items = [{"image_id": 3}, {"image_id": 1}]
    assert gather_sorted(items, key=lambda r: r["image_id"]) is items  # one process: its own order, as it is
    assert all_gather_sorted(items, key=lambda r: r["image_id"]) is items
    metrics = {"AP": 0.5}
    assert broadcast_from_main(metrics) is metrics
    module = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    broadcast_state(module)
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_a_timeout_that_is_not_a_positive_number_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    for text in ("soon", "0", "nan"):
        monkeypatch.setenv("EFFICIENTDET_DIST_TIMEOUT", text)
        with pytest.raises(ValueError, match=f"must be a positive number of seconds, got '{text}'"):
            init_distributed("cpu")
