"""effdet's tf_efficientdet models, converted, give our model effdet's raw outputs exactly."""

from __future__ import annotations

import argparse
import copy
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

import efficientdet
from efficientdet.weights.effdet import convert_effdet, load_effdet_file
from efficientdet.weights.errors import WeightsError

effdet = pytest.importorskip("effdet", reason="effdet is the reference for its own checkpoints (test extra)")

SIZE = 256  # small but every variant's P7 (and D7x's P8) still exists


def random_effdet(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """effdet model with every weight random and BN statistics calibrated on random images.

    Calibrated statistics keep activations near unit scale through all the layers, so the
    outputs depend strongly on every tensor (a swapped fusion weight moves them by ~0.4),
    which default init and raw random statistics would not give.
    """
    config = effdet.get_efficientdet_config(name)
    config.image_size = (SIZE, SIZE)  # effdet bakes resampling sizes in at build time
    for key, value in overrides.items():
        config[key] = value
    model = effdet.EfficientDet(config, pretrained_backbone=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() > 1:  # conv kernels: variance-preserving
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif pname.endswith(("weight", "edge_weights")):  # BN scales, fusion weights
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
        model.train()
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # drop-path draws
            model(torch.randn(4, 3, SIZE, SIZE, generator=g))
    return model.eval()


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [t.shape for t in a] == [t.shape for t in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(scope="module")
def d0() -> torch.nn.Module:
    return random_effdet("tf_efficientdet_d0")


@pytest.fixture(scope="module")
def ours_d0() -> efficientdet.EfficientDet:
    return efficientdet.create_model("efficientdet-d0").eval()


@pytest.mark.parametrize(
    "theirs, ours",
    [
        ("tf_efficientdet_d0", "efficientdet-d0"),
        ("tf_efficientdet_lite0", "efficientdet-lite0"),  # relu6, sum fusion, anchor scale 3
        ("tf_efficientdet_d3", "efficientdet-d3"),  # 4 head repeats, B3 widths
        ("tf_efficientdet_lite3x", "efficientdet-lite3x"),  # unscaled Lite stem into a scaled stage
        ("tf_efficientdet_d7x", "efficientdet-d7x"),  # P3-P8, two pooled extra levels, B7
    ],
)
def test_outputs_match_effdet(theirs: str, ours: str) -> None:
    reference = random_effdet(theirs)
    model = efficientdet.create_model(ours).eval()
    model.load_state_dict(convert_effdet(model, reference.state_dict()))
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_cls, ref_box = reference(x)
        cls, box = model(x)
    assert len(cls) == len(ref_cls) == model.config.max_level - 2
    assert max_abs_diff(cls, ref_cls) <= 1e-5
    assert max_abs_diff(box, ref_box) <= 1e-5


def test_fusion_weights_reach_their_inputs(d0, ours_d0) -> None:
    """Swapping one node's two fusion weights must show: the test above is not blind to order."""
    state = d0.state_dict()
    key = "fpn.cell.0.fnode.1.combine.edge_weights"
    state[key] = state[key].flip(0)
    ours_d0.load_state_dict(convert_effdet(ours_d0, state))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert max_abs_diff(ours_d0(x)[0], d0(x)[0]) > 1e-2


def training_checkpoint(d0: torch.nn.Module) -> dict:
    """What timm's CheckpointSaver writes for effdet's train.py: bench keys, EMA beside raw."""
    ema_bench = effdet.DetBenchTrain(d0)
    raw = {k: v + 1.0 if v.is_floating_point() else v for k, v in ema_bench.state_dict().items()}
    return {
        "epoch": 3,
        "arch": "tf_efficientdet_d0",
        "state_dict": raw,
        "state_dict_ema": ema_bench.state_dict(),
        "version": 2,
        "args": argparse.Namespace(model="tf_efficientdet_d0", lr=0.01),
        "metric": 0.33,
    }


def test_training_checkpoint_file_gives_ema_weights(d0, ours_d0, tmp_path: Path) -> None:
    path = tmp_path / "model_best.pth.tar"
    checkpoint = training_checkpoint(d0)
    assert any(k.startswith("model.") for k in checkpoint["state_dict_ema"])
    assert "anchors.boxes" in checkpoint["state_dict_ema"]
    torch.save(checkpoint, path)
    state = convert_effdet(ours_d0, load_effdet_file(path))
    expected = convert_effdet(ours_d0, d0.state_dict())
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_wrapper_prefixes_are_removed(d0, ours_d0) -> None:
    expected = convert_effdet(ours_d0, d0.state_dict())
    wrapped = {f"module.model.{k}": v for k, v in d0.state_dict().items()}
    state = convert_effdet(ours_d0, wrapped)
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_level_first_head_batchnorms(d0, ours_d0) -> None:
    toggled = copy.deepcopy(d0)
    toggled.toggle_head_bn_level_first()
    assert "class_net.bn_rep.4.2.weight" in toggled.state_dict()
    expected = convert_effdet(ours_d0, d0.state_dict())
    state = convert_effdet(ours_d0, toggled.state_dict())
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_missing_key_is_named(d0, ours_d0) -> None:
    state = dict(d0.state_dict())
    del state["fpn.cell.1.fnode.3.after_combine.conv.bn.running_var"]
    key = r"fpn\.cell\.1\.fnode\.3\.after_combine\.conv\.bn\.running_var"
    with pytest.raises(WeightsError, match=rf"missing tensor '{key}'"):
        convert_effdet(ours_d0, state)


def test_unexpected_key_is_named(d0, ours_d0) -> None:
    state = dict(d0.state_dict())
    state["fpn.cell.9.fnode.0.combine.edge_weights"] = torch.ones(2)
    with pytest.raises(WeightsError, match=r"no place for.*fpn\.cell\.9\.fnode\.0\.combine\.edge_weights"):
        convert_effdet(ours_d0, state)


def test_bench_buffer_without_bench_prefix_is_unexpected(d0, ours_d0) -> None:
    state = {**d0.state_dict(), "anchors.boxes": torch.zeros(10, 4)}
    with pytest.raises(WeightsError, match=r"anchors\.boxes"):
        convert_effdet(ours_d0, state)


def test_wrong_number_of_classes_is_a_shape_error(ours_d0) -> None:
    reference = effdet.EfficientDet(
        effdet.get_efficientdet_config("tf_efficientdet_d0"), pretrained_backbone=False
    )
    reference.reset_head(num_classes=20)
    message = r"'class_net\.predict\.conv_pw\.weight' has shape \[180, 64, 1, 1\].*needs \[810, 64, 1, 1\]"
    with pytest.raises(WeightsError, match=message):
        convert_effdet(ours_d0, reference.state_dict())


def test_wrong_variant_is_refused(ours_d0) -> None:
    lite0 = effdet.EfficientDet(effdet.get_efficientdet_config("tf_efficientdet_lite0"), pretrained_backbone=False)
    with pytest.raises(WeightsError, match=r"effdet state dict: "):
        convert_effdet(ours_d0, lite0.state_dict())


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_that_needs_code_is_refused_and_not_run(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"backbone.conv_stem.weight": _RunsCode(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(WeightsError, match=r"evil\.pth: not a plain state dict"):
        load_effdet_file(path)
    assert not marker.exists()


def test_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match=r"list\.pth: not a state dict \(got a list\)"):
        load_effdet_file(path)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth: not a torch file"):
        load_effdet_file(junk)
