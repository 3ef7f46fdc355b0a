"""Official google/automl checkpoint names → our parameter names, with the layout transposes.

The map is generated from the model's own config (block count, BiFPN nodes, levels), so it
holds for every variant. Loading checks every key and shape both ways: a tensor the model
needs that the checkpoint lacks, a model-like tensor the model has no place for, or a shape
mismatch is an error naming it. The ExponentialMovingAverage shadow copies are used when the
checkpoint has them, as the official inference does (``inference.restore_ckpt``).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from ..backbone import EfficientNet
from ..bifpn import bifpn_nodes
from ..model import EfficientDet
from .errors import WeightsError

EMA_SUFFIX = "/ExponentialMovingAverage"

# TF layouts → torch, named in one place.
LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # [kh, kw, in, out] → [out, in, kh, kw]
    "depthwise": lambda a: a.transpose(2, 3, 0, 1),  # [kh, kw, in, 1] → [in, 1, kh, kw]
    "vector": lambda a: a,  # biases, BN statistics
}

_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}

# Checkpoint entries that are not model variables.
_IGNORED = ("global_step",)
_IGNORED_SUFFIXES = ("/Momentum", "/RMSProp", "/RMSProp_1", "/Adam", "/Adam_1")


def _bn(torch_prefix: str, tf_prefix: str) -> dict[str, tuple[str, str]]:
    return {f"{torch_prefix}.{t}": (f"{tf_prefix}/{k}", "vector") for t, k in _BN.items()}


def _sepconv(torch_prefix: str, tf_prefix: str) -> dict[str, tuple[str, str]]:
    return {
        f"{torch_prefix}.depthwise.weight": (f"{tf_prefix}/depthwise_kernel", "depthwise"),
        f"{torch_prefix}.pointwise.weight": (f"{tf_prefix}/pointwise_kernel", "conv"),
        f"{torch_prefix}.pointwise.bias": (f"{tf_prefix}/bias", "vector"),
    }


def _conv(torch_prefix: str, tf_prefix: str, bias: bool = False) -> dict[str, tuple[str, str]]:
    out = {f"{torch_prefix}.weight": (f"{tf_prefix}/kernel", "conv")}
    if bias:
        out[f"{torch_prefix}.bias"] = (f"{tf_prefix}/bias", "vector")
    return out


def backbone_names(backbone: EfficientNet, tf_name: str, prefix: str = "backbone") -> dict[str, tuple[str, str]]:
    """EfficientNet: Keras numbers the convs and BNs of each block in creation order."""
    names = {
        **_conv(f"{prefix}.stem_conv", f"{tf_name}/stem/conv2d"),
        **_bn(f"{prefix}.stem_bn", f"{tf_name}/stem/tpu_batch_normalization"),
    }
    for i, block in enumerate(backbone.blocks):
        tp, fp = f"{prefix}.blocks.{i}", f"{tf_name}/blocks_{i}"
        bns = iter(["tpu_batch_normalization", "tpu_batch_normalization_1", "tpu_batch_normalization_2"])
        convs = iter(["conv2d", "conv2d_1"])
        if block.expand:
            names.update(_conv(f"{tp}.expand_conv", f"{fp}/{next(convs)}"))
            names.update(_bn(f"{tp}.expand_bn", f"{fp}/{next(bns)}"))
        names[f"{tp}.dw_conv.weight"] = (f"{fp}/depthwise_conv2d/depthwise_kernel", "depthwise")
        names.update(_bn(f"{tp}.dw_bn", f"{fp}/{next(bns)}"))
        if block.se is not None:
            names.update(_conv(f"{tp}.se.reduce", f"{fp}/se/conv2d", bias=True))
            names.update(_conv(f"{tp}.se.expand", f"{fp}/se/conv2d_1", bias=True))
        names.update(_conv(f"{tp}.project_conv", f"{fp}/{next(convs)}"))
        names.update(_bn(f"{tp}.project_bn", f"{fp}/{next(bns)}"))
    return names


def official_names(model: EfficientDet) -> dict[str, tuple[str, str]]:
    """``{torch state_dict key: (official variable name, layout)}`` for every tensor of ``model``."""
    cfg = model.config
    if not isinstance(model.backbone, EfficientNet):
        raise WeightsError("official checkpoints need the built-in EfficientNet backbone, not a timm one")
    if not (cfg.bifpn.separable and cfg.head.separable):
        raise WeightsError("official checkpoints use separable convolutions (bifpn/head.separable=True)")
    names = backbone_names(model.backbone, cfg.backbone.name)
    for i, resample in enumerate(model.fpn.extra):
        tf = f"resample_p{cfg.min_level + len(model.backbone.feature_channels) + i}"
        if resample.conv is not None:
            names.update(_conv(f"fpn.extra.{i}.conv", f"{tf}/conv2d", bias=True))
            names.update(_bn(f"fpn.extra.{i}.bn", f"{tf}/bn"))
    num_levels = cfg.max_level - cfg.min_level + 1
    nodes = bifpn_nodes(cfg.min_level, cfg.max_level)
    for k, cell in enumerate(model.fpn.cells):
        for i, (fnode, node) in enumerate(zip(cell.fnodes, nodes)):
            tp, fp = f"fpn.cells.{k}.fnodes.{i}", f"fpn_cells/cell_{k}/fnode{i}"
            num_feats = num_levels + i
            for j, (offset, resample) in enumerate(zip(node.inputs, fnode.resample)):
                if resample.conv is not None:
                    rp = f"{fp}/resample_{j}_{offset}_{num_feats}"
                    names.update(_conv(f"{tp}.resample.{j}.conv", f"{rp}/conv2d", bias=True))
                    names.update(_bn(f"{tp}.resample.{j}.bn", f"{rp}/bn"))
            if fnode.weights is not None:
                # One torch vector holds the official scalars WSM, WSM_1, ...
                names[f"{tp}.weights"] = (f"{fp}/WSM", "stack")
            names.update(_sepconv(f"{tp}.conv", f"{fp}/op_after_combine{num_feats}/conv"))
            names.update(_bn(f"{tp}.bn", f"{fp}/op_after_combine{num_feats}/bn"))
    for net, short in (("class_net", "class"), ("box_net", "box")):
        for i in range(cfg.head.repeats):
            names.update(_sepconv(f"{net}.convs.{i}", f"{net}/{short}-{i}"))
            for j, level in enumerate(cfg.levels):
                names.update(_bn(f"{net}.bns.{i}.{j}", f"{net}/{short}-{i}-bn-{level}"))
        names.update(_sepconv(f"{net}.predict", f"{net}/{short}-predict"))
    return names


def _source(tensors: Mapping[str, np.ndarray], name: str, use_ema: bool) -> str:
    """The name to read for ``name``: its EMA shadow copy when there is one."""
    if use_ema and name + EMA_SUFFIX in tensors:
        return name + EMA_SUFFIX
    if name not in tensors:
        raise WeightsError(f"checkpoint has no tensor {name!r}")
    return name


def _read(tensors: Mapping[str, np.ndarray], name: str, use_ema: bool) -> np.ndarray:
    return np.asarray(tensors[_source(tensors, name, use_ema)])


def _converted_shape(tensors: Mapping[str, np.ndarray], name: str, layout: str, use_ema: bool) -> tuple | None:
    """The shape a tensor will have after conversion, from its declaration alone (no data read), for
    mappings that can tell it (``declared_shape``): an absurd declared size is refused before reading."""
    declared = getattr(tensors, "declared_shape", None)
    if declared is None:
        return None
    shape = declared(_source(tensors, name, use_ema))
    try:
        return LAYOUTS[layout](np.broadcast_to(np.float32(0), shape)).shape  # a view: no memory
    except ValueError:  # wrong rank for the layout's transpose
        return shape


def convert_official(
    model: EfficientDet, tensors: Mapping[str, np.ndarray], use_ema: bool = True
) -> dict[str, torch.Tensor]:
    """Official tensors (name → array, e.g. ``TFCheckpoint``) → a state dict for ``model``.

    ``tensors`` may be lazy: only the names the model needs are read.
    """
    names = official_names(model)
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(names))
    if missing:  # a module the map does not know: a bug here, not in the checkpoint
        raise WeightsError(f"no official name for model tensor(s): {', '.join(missing[:5])}")
    used = set()
    state = {}
    for key, (tf_name, layout) in names.items():
        if layout == "stack":
            count = expected[key].numel()
            parts = [f"{tf_name}" if j == 0 else f"{tf_name}_{j}" for j in range(count)]
            array = np.stack([_read(tensors, p, use_ema).reshape(()) for p in parts])
            used.update(parts)
        else:
            shape = _converted_shape(tensors, tf_name, layout, use_ema)
            if shape is not None and tuple(shape) != tuple(expected[key].shape):
                raise WeightsError(f"tensor {tf_name!r} is declared with shape {list(shape)} after conversion, "
                                   f"model's {key} needs {list(expected[key].shape)}")
            array = LAYOUTS[layout](_read(tensors, tf_name, use_ema))
            used.add(tf_name)
        if tuple(array.shape) != tuple(expected[key].shape):
            raise WeightsError(
                f"tensor {tf_name!r} has shape {list(array.shape)} after conversion, "
                f"model's {key} needs {list(expected[key].shape)}"
            )
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    extra = []
    for name in tensors.keys():
        base = name[: -len(EMA_SUFFIX)] if name.endswith(EMA_SUFFIX) else name
        if base in used or base in _IGNORED or base.endswith(_IGNORED_SUFFIXES):
            continue
        extra.append(name)
    if extra:
        raise WeightsError(
            f"checkpoint has {len(extra)} tensor(s) the model has no place for, e.g. {sorted(extra)[:3]} "
            f"(wrong variant or number of classes?)"
        )
    return state
