"""Training end to end on tiny generated data: resume exactness, signals, non-finite guard, DDP, overfit."""

import dataclasses
import json
import os
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp
from model_builders import lively

from efficientdet import create_model
from efficientdet.shapes import make_shapes_dataset
from efficientdet.train import Interrupted, NonFiniteLoss, TrainConfig, train
from efficientdet.train.checkpoint import load_training_state


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=4, image_size=128, seed=1)


def base(shapes, out, **kw):
    cfg = TrainConfig(model="efficientdet-lite0", data=str(shapes), out=str(out), epochs=2, batch_size=4,
                      image_size=128, workers=0, eval_every=100, seed=3)
    return dataclasses.replace(cfg, **kw)


def final_state(out):
    return load_training_state(out / "train_state.pt")


def assert_same_weights(a, b, atol=0.0, rtol=0.0):
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=atol, rtol=rtol), key
    for key, value in a["ema"]["module"].items():
        assert torch.allclose(value.float(), b["ema"]["module"][key].float(), atol=atol, rtol=rtol), key


def test_train_loader_is_reproducible_with_workers_and_shards_per_rank(shapes, tmp_path):
    """The trainer's loader: the same batches from the same seed (in the main process too, to
    float noise: a worker resizes on one thread), others from another seed; whole batches only;
    disjoint per-rank shards of each epoch."""
    from efficientdet.config import get_config, override
    from efficientdet.data import load_dataset_yaml, load_split
    from efficientdet.train.build import train_loader

    split = load_split(load_dataset_yaml(shapes), "train")  # 16 images
    mcfg = override(get_config("efficientdet-lite0"), image_size=128)

    def run(seed, workers=2):
        loader = train_loader(base(shapes, tmp_path, seed=seed, workers=workers), split, mcfg)
        assert loader.persistent_workers == (workers > 0) and len(loader) == 4 and not loader.pin_memory
        loader.sampler.set_epoch(1)
        return [(b.images, [t["image_id"] for t in b.targets]) for b in loader]

    first, again, in_process, other = run(0), run(0), run(0, workers=0), run(1)
    assert all(len(ids) == 4 for _, ids in first)
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again))
    assert all(torch.allclose(a[0], b[0], atol=1e-5) and a[1] == b[1] for a, b in zip(first, in_process))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    shards = [list(train_loader(base(shapes, tmp_path, batch_size=2), split, mcfg, rank, 2).sampler)
              for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 8 and not set(shards[0]) & set(shards[1])


def test_resume_mid_epoch_is_exact(shapes, tmp_path):
    straight = train(base(shapes, tmp_path / "a", max_steps=6), log=lambda *_: None)
    assert straight["step"] == 6
    train(base(shapes, tmp_path / "b", max_steps=3), log=lambda *_: None)  # stops mid-epoch 1 (4 steps/epoch)
    state = final_state(tmp_path / "b")
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (0, 3, 3)
    resumed = train(base(shapes, tmp_path / "b", max_steps=6, resume=True), log=lambda *_: None)
    assert resumed["step"] == 6
    assert_same_weights(final_state(tmp_path / "a"), final_state(tmp_path / "b"))


def test_a_length_fixed_after_the_first_epoch_trains_as_if_set_from_the_start_and_resumes(shapes, tmp_path):
    """The first epoch is warm-up, whose learning rates do not depend on the length: a run that
    starts at 48 epochs and is told 3 after its first is the 3-epoch run, its schedule decaying to
    0 at the last step of the third; the length is saved, and a resume (told 5) keeps it."""
    straight = train(base(shapes, tmp_path / "a", epochs=3), log=lambda *_: None)
    seen = []

    def plan(cfg, record):
        seen.append(record)
        return dataclasses.replace(cfg, epochs=3)

    train(base(shapes, tmp_path / "b", epochs=48, max_steps=6), log=lambda *_: None, plan=plan)
    assert [r["epoch"] for r in seen] == [1] and seen[0]["train_s"] > 0
    assert (final_state(tmp_path / "b")["epochs"], final_state(tmp_path / "b")["step"]) == (3, 6)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["epochs"] == 3
    lines = []
    resumed = train(base(shapes, tmp_path / "b", epochs=5, resume=True), log=lines.append)
    assert "the run's length is its own: 3 epochs (epochs=5 is not used)" in lines
    assert resumed["step"] == straight["step"] == 12
    assert [r["lr"] for r in resumed["history"]] == [r["lr"] for r in straight["history"]]
    assert resumed["history"][-1]["lr"] == 0.0
    assert_same_weights(final_state(tmp_path / "a"), final_state(tmp_path / "b"))


def test_a_plan_needs_a_first_epoch_of_warm_up_and_may_change_only_the_length(shapes, tmp_path):
    def other_lr(cfg, record):
        return dataclasses.replace(cfg, epochs=2, lr=0.04)

    with pytest.raises(ValueError, match=r"TrainConfig.warmup_epochs must be >= 1 \(all warm-up\), got 0.5"):
        train(base(shapes, tmp_path / "short", warmup_epochs=0.5), log=lambda *_: None, plan=other_lr)
    assert not (tmp_path / "short").exists()
    with pytest.raises(ValueError, match="a plan may change TrainConfig.epochs and eval_every only"):
        train(base(shapes, tmp_path / "lr"), log=lambda *_: None, plan=other_lr)


def test_channels_last_trains_the_same_weights_as_nchw(shapes, tmp_path):
    """The layout (default channels_last, the fast one on CPU) changes speed, not the arithmetic: a
    step agrees with NCHW to float32 accumulation-order noise (the gradients of biases that feed a
    BN are 0 in exact arithmetic, ~1e-3 of noise either way; up to 1.4e-4 in a weight measured
    alone, over 3e-4 in two full-suite runs), and the run's weights load as usual. A layout bug
    changes gradients beyond their last bits, and BN's running statistics (up to ~200, where the
    noise is relative) with the forward pass."""
    train(base(shapes, tmp_path / "cl", max_steps=1), log=lambda *_: None)
    train(base(shapes, tmp_path / "nchw", max_steps=1, channels_last=False), log=lambda *_: None)
    assert_same_weights(final_state(tmp_path / "cl"), final_state(tmp_path / "nchw"), atol=1e-3, rtol=1e-5)
    model = create_model("efficientdet-lite0", weights=tmp_path / "cl" / "weights" / "last.safetensors")
    assert model.config.num_classes == 4


def test_sigint_saves_checkpoint_and_resume_finishes_identically(shapes, tmp_path, monkeypatch):
    import efficientdet.train.engine as engine

    full = base(shapes, tmp_path / "full")
    train(full, log=lambda *_: None)

    real = engine.detection_loss
    calls = {"n": 0}

    def interrupting(*args, **kw):  # deliver SIGINT during step 3, as Ctrl-C would
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kw)

    monkeypatch.setattr(engine, "detection_loss", interrupting)
    with pytest.raises(Interrupted, match="stopped by signal 2 at step 3; resume with --resume"):
        train(base(shapes, tmp_path / "cut"), log=lambda *_: None)
    monkeypatch.setattr(engine, "detection_loss", real)
    assert final_state(tmp_path / "cut")["step"] == 3
    train(base(shapes, tmp_path / "cut", resume=True), log=lambda *_: None)
    assert final_state(tmp_path / "cut")["step"] == final_state(tmp_path / "full")["step"] == 8
    assert_same_weights(final_state(tmp_path / "full"), final_state(tmp_path / "cut"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(shapes, tmp_path, monkeypatch):
    import efficientdet.train.engine as engine

    real = engine.detection_loss
    calls = {"n": 0}

    def poisoned(*args, **kw):
        calls["n"] += 1
        out = real(*args, **kw)
        if calls["n"] == 6:  # epoch 2, after epoch 1's checkpoint
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(engine, "detection_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 5 .*last good checkpoint is .*train_state.pt"):
        train(base(shapes, tmp_path / "nan"), log=lambda *_: None)
    state = final_state(tmp_path / "nan")
    assert (state["epoch"], state["step"]) == (1, 4)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    model = create_model("efficientdet-lite0", weights=tmp_path / "nan" / "weights" / "last.safetensors",
                         image_size=128)
    assert model.config.num_classes == 4


def test_run_folder_contents_and_weights_metadata(shapes, tmp_path):
    records = []
    summary = train(base(shapes, tmp_path / "run", epochs=1, eval_every=1), log=lambda *_: None,
                    on_epoch=records.append)
    run = tmp_path / "run"
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert records == summary["history"] == [record]  # the per-epoch callback receives each record
    assert {"epoch", "loss", "lr", "images_per_s", "AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(record)
    config = json.loads((run / "config.json").read_text())
    assert config["names"] == ["circle", "square", "triangle", "star"] and config["model"]["head"]["num_classes"] == 4
    from efficientdet.weights import read_metadata

    meta = read_metadata(run / "weights" / "best.safetensors")
    assert json.loads(meta["names"]) == config["names"] and meta["num_classes"] == "4"
    assert summary["best_AP"] == record["AP"]
    assert (run / "curves.png").stat().st_size > 0
    assert len(list((run / "val_images").glob("*.png"))) == 4  # every val image, truth and predictions


def test_fine_tune_from_other_class_count_reinitialises_only_the_class_head(shapes, tmp_path):
    from efficientdet.weights import save_safetensors

    torch.manual_seed(0)
    src = create_model("efficientdet-lite0", num_classes=7, image_size=128)
    path = save_safetensors(src, tmp_path / "src.safetensors")
    out = tmp_path / "ft"
    train(base(shapes, out, weights=str(path), max_steps=1, lr=0.0, warmup_init=0.0),
          log=lambda *_: None)
    state = final_state(out)["model"]
    for key, value in src.state_dict().items():
        if key.startswith("class_net.predict.pointwise"):
            assert state[key].shape[0] == 9 * 4 and value.shape[0] == 9 * 7
        elif key.startswith("class_net.predict."):
            assert not torch.equal(state[key], value)  # re-initialised with the rest of the head
        elif "running" not in key and "num_batches" not in key:
            assert torch.equal(state[key], value), key  # lr 0: untouched


def test_the_new_class_head_trains_at_its_factor_of_the_learning_rate(shapes, tmp_path):
    """From 7-class weights on the 4-class dataset, the re-initialised class predictor (depthwise and
    pointwise kernels, bias) steps at new_head_lr times the rate of the rest."""
    from efficientdet.weights import save_safetensors

    path = save_safetensors(create_model("efficientdet-lite0", num_classes=7, image_size=128),
                            tmp_path / "src.safetensors")
    train(base(shapes, tmp_path / "ft", recipe="finetune", new_head_lr=10.0, weights=str(path), max_steps=1),
          log=lambda *_: None)
    groups = final_state(tmp_path / "ft")["optimizer"]["param_groups"]
    assert [g.get("lr_scale") for g in groups] == [None, None, 10.0, 10.0]
    assert [len(g["params"]) for g in groups[2:]] == [2, 1]
    assert groups[2]["lr"] == groups[3]["lr"] == pytest.approx(10 * groups[0]["lr"]) and groups[0]["lr"] > 0


def test_other_aspect_ratios_start_both_predictors_afresh_and_the_weights_carry_them(shapes, tmp_path):
    """Five aspect ratios instead of three: 15 anchors per position, so the box and class predictors
    of the loaded weights do not fit and start afresh (the rest is loaded); the run's weights load
    back with its anchors."""
    from efficientdet.train.config import AnchorChoice
    from efficientdet.weights import save_safetensors

    torch.manual_seed(0)
    src = create_model("efficientdet-lite0", num_classes=4, image_size=128)
    path = save_safetensors(src, tmp_path / "src.safetensors")
    lines = []
    ratios = (1.0, 2.0, 0.5, 4.0, 0.25)
    train(base(shapes, tmp_path / "run", weights=str(path), anchors=AnchorChoice(aspect_ratios=ratios), max_steps=1,
               lr=0.0, warmup_init=0.0), log=lines.append)
    assert any("(box and class predictors re-initialised: 9 → 15 anchors per position)" in line for line in lines)
    state = final_state(tmp_path / "run")["model"]
    assert state["box_net.predict.pointwise.weight"].shape[0] == 15 * 4
    for key, value in src.state_dict().items():
        if not key.startswith(("class_net.predict.", "box_net.predict.")) and "running" not in key \
                and "num_batches" not in key:
            assert torch.equal(state[key], value), key  # lr 0: as loaded
    model = create_model("efficientdet-lite0", weights=tmp_path / "run" / "weights" / "last.safetensors",
                         image_size=128)
    assert model.config.anchors.aspect_ratios == ratios


def test_fine_tune_from_published_coco_weights_by_name(shapes, tmp_path, mirror_env, monkeypatch):
    from mirror import model_archive

    monkeypatch.delenv("EFFICIENTDET_OFFLINE")
    mirror_env.files["efficientdet-lite0.tgz"] = model_archive("efficientdet-lite0")
    out = tmp_path / "ft"
    train(base(shapes, out, weights="coco", max_steps=1, lr=0.0, warmup_init=0.0), log=lambda *_: None)
    coco = create_model("efficientdet-lite0", weights="coco", image_size=128).state_dict()  # now from the cache
    state = final_state(out)["model"]
    assert mirror_env.count("efficientdet-lite0.tgz") == 1
    assert state["class_net.predict.pointwise.weight"].shape[0] == 9 * 4  # 90 COCO classes → the dataset's 4
    for key, value in coco.items():
        if not key.startswith("class_net.predict.") and "running" not in key and "num_batches" not in key:
            assert torch.equal(state[key], value), key


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(cfg, log=lambda *_: None)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_equal_one_process_with_the_global_batch(shapes, tmp_path):
    """gloo on the CPU: 2 ranks × batch 2 give the weights of 1 rank × batch 4 (BN frozen, no drop path)."""
    from efficientdet.weights import save_safetensors

    start = lively(create_model("efficientdet-d0", num_classes=4, image_size=128))  # BN statistics "loaded"
    weights = save_safetensors(start, tmp_path / "start.safetensors")
    common = dict(model="efficientdet-d0", weights=str(weights), freeze_bn=True, max_steps=3)
    single = base(shapes, tmp_path / "one", batch_size=4, **common)
    train(single, log=lambda *_: None)
    double = base(shapes, tmp_path / "two", batch_size=2, **common)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), double), nprocs=2, start_method="spawn")
    one, two = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    assert one["step"] == two["step"] == 3
    assert_same_weights(one, two, atol=2e-5)
    moved = max((one["model"][k].float() - v.float()).abs().max() for k, v in start.state_dict().items()
                if v.is_floating_point())
    assert moved > 1e-3  # the weights really trained
    assert all(torch.equal(one["model"][k], v) for k, v in start.state_dict().items() if "running" in k)


def test_overfits_a_few_images(tmp_path):
    """Lite0 on its ImageNet backbone (frozen, as a quick fine-tune would) learns 4 images.

    All BN layers frozen keeps training and evaluation the same function at 80 steps (BN
    statistics at the official momentum would still be half-way); the BiFPN and heads start
    from :func:`lively` weights, under which their BN at initial statistics pass the signal on.
    """
    from efficientdet.data import load_dataset_yaml, load_split
    from efficientdet.weights import save_safetensors
    from efficientdet.weights.pretrained import load_pretrained_backbone

    data = make_shapes_dataset(tmp_path / "tiny", num_train=4, num_val=0, image_size=128, max_objects=2, seed=5)
    data.write_text(data.read_text().replace("val: {images: images, annotations: val.json}",
                                             "val: {images: images, annotations: train.json}"))
    num_classes = load_split(load_dataset_yaml(data), "train").num_classes
    start = lively(create_model("efficientdet-lite0", num_classes=num_classes, image_size=128))
    load_pretrained_backbone(start)
    weights = save_safetensors(start, tmp_path / "start.safetensors")
    cfg = TrainConfig(model="efficientdet-lite0", data=str(data), out=str(tmp_path / "run"), epochs=80,
                      batch_size=4, image_size=128, workers=0, eval_every=80, scale_range=(1.0, 1.0), hflip=0.0,
                      warmup_epochs=2, lr=0.16, ema_decay=0.0, weights=str(weights), freeze_backbone=True,
                      freeze_bn=True)
    summary = train(cfg, log=lambda *_: None)
    assert summary["history"][0]["loss"] > 3 * summary["history"][-1]["loss"]
    assert summary["history"][-1]["AP50"] >= 0.9, summary["history"][-1]


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("max_boxes", 0), ("workers", -1),
                                          ("mosaic", 1.5), ("hflip", -0.1), ("ema_decay", 1.0), ("lr", -0.1),
                                          ("clip_grad_norm", 0.0), ("scale_range", (2.0, 1.0)),
                                          ("max_steps", 0), ("image_size", 0), ("image_size", -5),
                                          ("image_size", 64)])
def test_config_refuses_values_that_would_fail_later(shapes, tmp_path, field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        base(shapes, tmp_path, **{field: value})


def test_max_boxes_is_applied_to_the_dataset(shapes, tmp_path):
    from efficientdet.data import DatasetError

    with pytest.raises(DatasetError, match=r"boxes in one image, over the limit of 1 \(max_boxes\)"):
        train(base(shapes, tmp_path, max_boxes=1), log=lambda *_: None)
    assert not (tmp_path / "weights").exists()


def test_freeze_bn_keeps_only_loaded_statistics(shapes, tmp_path):
    """From the ImageNet backbone, freeze_bn fixes the backbone's BN; the new BiFPN and heads' BN learn."""
    from efficientdet.weights.pretrained import load_pretrained_backbone

    lines = []
    train(base(shapes, tmp_path, freeze_bn=True, max_steps=1), log=lines.append)
    assert any("BN layers keep their loaded statistics (backbone only" in line for line in lines)
    imagenet = create_model("efficientdet-lite0", num_classes=4, image_size=128)
    load_pretrained_backbone(imagenet)
    state = final_state(tmp_path)["model"]
    for key, value in imagenet.state_dict().items():
        if key.endswith("running_mean"):
            assert torch.equal(state[key], value) == key.startswith("backbone."), key


def test_batch_of_one_trains_when_every_batch_norm_keeps_its_loaded_statistics(shapes, tmp_path):
    """With all BN layers frozen (freeze_bn from full weights) no BN needs batch statistics, so a
    batch of one image at 128 pixels, whose P7 is 1x1, trains; without freeze_bn it is refused."""
    from efficientdet.weights import save_safetensors

    weights = save_safetensors(create_model("efficientdet-lite0", num_classes=4, image_size=128),
                               tmp_path / "start.safetensors")
    with pytest.raises(ValueError, match="batch size 1: BatchNorm cannot train on the 1x1 P7 level"):
        train(base(shapes, tmp_path / "refused", batch_size=1, weights=str(weights)), log=lambda *_: None)
    assert not (tmp_path / "refused" / "weights").exists()
    summary = train(base(shapes, tmp_path / "run", batch_size=1, weights=str(weights), freeze_bn=True, max_steps=2),
                    log=lambda *_: None)
    assert summary["step"] == 2


def test_resume_under_other_anchors_is_refused_in_one_line(shapes, tmp_path):
    """The saved weights predict offsets from the run's anchors: a resume whose command gives
    others (here another anchor scale) is refused, naming config.json and the change."""
    from efficientdet.config import get_config
    from efficientdet.train.config import AnchorChoice

    train(base(shapes, tmp_path / "b", max_steps=2, anchors=AnchorChoice(anchor_scale=2.0)), log=lambda *_: None)
    with pytest.raises(ValueError) as refused:
        train(base(shapes, tmp_path / "b", max_steps=4, resume=True), log=lambda *_: None)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'b' / 'config.json'}: the run trained with other anchors")
    default = get_config("efficientdet-lite0").anchors.anchor_scale
    assert f"anchor_scale 2.0 → {default}" in message and "\n" not in message
    assert final_state(tmp_path / "b")["step"] == 2  # nothing trained on
