"""effdet (rwightman/efficientdet-pytorch) checkpoints → our state dict.

effdet's ``tf_efficientdet_d0..d7, d7x`` and ``tf_efficientdet_lite0..4, lite3x`` are ports
of the official weights into a PyTorch model of the same architecture, so the conversion is
a renaming:

* backbone: timm EfficientNet names (``blocks.{stage}.{block}``, see :data:`~.names.TIMM`);
* BiFPN: ``fpn.resample.{level}`` (extra levels), ``fpn.cell.{k}.fnode.{i}.combine.resample.
  {input offset}`` (keyed by the node's input *offset*, ours by input position),
  ``combine.edge_weights``, ``after_combine.conv.{conv_dw,conv_pw,bn}``;
* heads: ``conv_rep.{r}``, ``bn_rep.{r}.{level}.bn`` (effdet's default, repeat-first) or
  ``bn_rep.{level}.{r}`` (after ``toggle_head_bn_level_first``, for torchscript), ``predict``.

Layouts: none change. Both sides are PyTorch (OIHW kernels, per-channel vectors, one vector
of fusion weights per node), so every tensor is copied as it is. effdet's head outputs
already use the official layout, anchor-major channels ``a·C + c`` (its post-processing
reshapes NHWC to ``[-1, num_classes]``) and box channels (ty, tx, th, tw) (its
``decode_box_outputs`` unbinds them in that order), so no permutation is needed: our raw
per-level outputs equal effdet's channel for channel.

Wrappers: keys may carry ``model.`` (effdet's ``DetBenchTrain``/``DetBenchPredict``, whose
``anchors.boxes`` buffer is then dropped: anchors are recomputed from the config),
``module.`` (DataParallel, timm's ``ModelEmaV2``) or ``_orig_mod.`` (``torch.compile``).
A training checkpoint (timm's ``CheckpointSaver``: ``state_dict``, ``state_dict_ema``, ...)
gives its EMA weights when it has them, as the official inference takes the EMA shadows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..backbone import EfficientNet
from ..model import EfficientDet
from .errors import WeightsError
from .names import TIMM, backbone_names, torch_names
from .pretrained import read_state_file
from .remap import remap_state, tensor_dict

# Checkpoint entries holding a state dict, in order of preference (EMA first).
CHECKPOINT_ENTRIES = ("state_dict_ema", "state_dict", "model")
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")
# Buffers of effdet's DetBench* wrappers, not model weights.
BENCH_BUFFERS = ("anchors.boxes",)


def load_effdet_file(path: str | Path) -> dict[str, torch.Tensor]:
    """An effdet ``.pth`` (plain state dict or training checkpoint), read without running code."""
    return dict(effdet_state_dict(read_state_file(path), str(path)))


def effdet_state_dict(obj: object, what: str = "effdet state dict") -> Mapping[str, torch.Tensor]:
    """The model tensors of a state dict or checkpoint, wrappers' prefixes removed."""
    if isinstance(obj, Mapping):
        for entry in CHECKPOINT_ENTRIES:
            if isinstance(obj.get(entry), Mapping):
                obj = obj[entry]
                break
    return _strip_wrappers(tensor_dict(obj, what))


def _strip_wrappers(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    while True:
        keys = [k for k in state if k not in BENCH_BUFFERS]
        prefix = next((p for p in WRAPPER_PREFIXES if keys and all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            return state
        # A bench's own buffers sit beside its "model." and go with the wrapper.
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def convert_effdet(model: EfficientDet, state_dict: Mapping[str, torch.Tensor],
                   what: str = "effdet state dict") -> dict[str, torch.Tensor]:
    """An effdet ``tf_efficientdet_*`` state dict (or checkpoint) → a state dict for ``model``.

    ``model`` must be the matching variant (``tf_efficientdet_d0`` → ``efficientdet-d0``,
    same ``num_classes``); a missing, unexpected or mis-shaped tensor is a WeightsError naming
    ``what`` (the file).
    """
    state = effdet_state_dict(state_dict, what)
    try:
        names = effdet_names(model, _bn_level_first(state))
    except WeightsError as e:
        raise WeightsError(f"{what}: {e}") from None
    return remap_state(state, model.state_dict(), what, names)


def _bn_level_first(state: Mapping[str, torch.Tensor]) -> bool:
    """effdet's repeat-first head BNs sit in a ``Sequential`` (``.bn.``); level-first ones do not."""
    return not any(k.startswith(("class_net.bn_rep.", "box_net.bn_rep.")) and ".bn." in k for k in state)


def effdet_names(model: EfficientDet, bn_level_first: bool = False) -> dict[str, str]:
    """``{our key: effdet key}`` for every tensor of ``model``."""
    cfg = model.config
    if not isinstance(model.backbone, EfficientNet):
        raise WeightsError("effdet's tf_efficientdet weights need the built-in EfficientNet backbone, not a timm one")
    if not (cfg.bifpn.separable and cfg.head.separable):
        raise WeightsError("effdet's tf_efficientdet weights use separable convolutions (bifpn/head.separable=True)")
    names = {f"backbone.{k}": f"backbone.{v}" for k, v in backbone_names(model.backbone, TIMM).items()}
    num_backbone = len(model.backbone.feature_channels)
    for i, resample in enumerate(model.fpn.extra):
        if resample.conv is not None:
            names.update(_resample_names(f"fpn.extra.{i}", f"fpn.resample.{num_backbone + i}.conv"))
    for k, cell in enumerate(model.fpn.cells):
        for i, fnode in enumerate(cell.fnodes):
            ours, theirs = f"fpn.cells.{k}.fnodes.{i}", f"fpn.cell.{k}.fnode.{i}"
            for j, (offset, resample) in enumerate(zip(fnode.node.inputs, fnode.resample)):
                if resample.conv is not None:
                    names.update(_resample_names(f"{ours}.resample.{j}", f"{theirs}.combine.resample.{offset}.conv"))
            if fnode.weights is not None:
                names[f"{ours}.weights"] = f"{theirs}.combine.edge_weights"
            names.update(_sepconv(f"{ours}.conv", f"{theirs}.after_combine.conv"))
            names.update(torch_names(f"{ours}.bn", f"{theirs}.after_combine.conv.bn", "bn"))
    for net in ("class_net", "box_net"):
        head = getattr(model, net)
        for r, bns in enumerate(head.bns):
            names.update(_sepconv(f"{net}.convs.{r}", f"{net}.conv_rep.{r}"))
            for level in range(len(bns)):
                theirs = f"{net}.bn_rep.{level}.{r}" if bn_level_first else f"{net}.bn_rep.{r}.{level}.bn"
                names.update(torch_names(f"{net}.bns.{r}.{level}", theirs, "bn"))
        names.update(_sepconv(f"{net}.predict", f"{net}.predict"))
    return names


def _resample_names(ours: str, theirs: str) -> dict[str, str]:
    """Our resample ``conv``/``bn`` ↔ effdet's ``ConvBnAct2d`` (``conv.conv``, ``conv.bn``)."""
    return {**torch_names(f"{ours}.conv", f"{theirs}.conv", "conv_bias"),
            **torch_names(f"{ours}.bn", f"{theirs}.bn", "bn")}


def _sepconv(ours: str, theirs: str) -> dict[str, str]:
    return {
        f"{ours}.depthwise.weight": f"{theirs}.conv_dw.weight",
        f"{ours}.pointwise.weight": f"{theirs}.conv_pw.weight",
        f"{ours}.pointwise.bias": f"{theirs}.conv_pw.bias",
    }
