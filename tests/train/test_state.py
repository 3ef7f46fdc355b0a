"""TrainState: what it saves is what a fresh one loads, the RNG streams included."""

import pytest
import torch

from efficientdet import create_model
from efficientdet.train import TrainState
from efficientdet.train.ema import ModelEMA
from efficientdet.train.optim import build_optimizer


def fresh_state() -> TrainState:
    model = create_model("efficientdet-lite0", num_classes=3, image_size=128)
    return TrainState(model, ModelEMA(model), build_optimizer(model, "sgd", 0.1, 4e-5))


def test_a_saved_state_loads_into_a_fresh_one(tmp_path):
    torch.manual_seed(0)
    saved = fresh_state()
    for p in saved.model.parameters():  # one step: momentum buffers to save, weights apart from the EMA's
        p.grad = torch.ones_like(p)
    saved.optimizer.step()
    saved.ema.update(saved.model)
    saved.epochs, saved.epoch, saved.batch_in_epoch, saved.step, saved.best_ap = 7, 2, 3, 11, 0.25
    saved.history.append({"epoch": 1, "loss": 1.5})
    path = tmp_path / "train_state.pt"
    saved.save(path)
    next_draw = torch.rand(4)

    torch.manual_seed(1)
    loaded = fresh_state()
    loaded.load(path)
    assert torch.equal(torch.rand(4), next_draw)  # the RNG continues where the saved run was
    assert (loaded.epochs, loaded.epoch, loaded.batch_in_epoch, loaded.step, loaded.best_ap) == (7, 2, 3, 11, 0.25)
    assert loaded.history == [{"epoch": 1, "loss": 1.5}] and loaded.ema.updates == 1
    for mine, theirs in ((loaded.model, saved.model), (loaded.ema.module, saved.ema.module)):
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), key
    momentum = [s["momentum_buffer"] for s in saved.optimizer.state.values()]
    assert all(torch.equal(a["momentum_buffer"], b) for a, b in zip(loaded.optimizer.state.values(), momentum))
    assert len(momentum) == len(loaded.optimizer.state) > 0


def test_loading_a_missing_state_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume: no training state at .*train_state.pt"):
        fresh_state().load(tmp_path / "train_state.pt")
