"""Official google/automl checkpoint names → our parameter names, with the layout transposes.

The map is generated from the model's own config (block count, BiFPN nodes, levels), so it
holds for every variant. The checkpoint is seen through :class:`OfficialTensors` (torch layout,
EMA shadows, fusion scalars stacked) and loaded by :func:`~.remap.remap_state`, which checks
every key and shape both ways. The ExponentialMovingAverage shadow copies are used when the
checkpoint has them, as the official inference does (``inference.restore_ckpt``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from ..backbone import EfficientNet
from ..bifpn import bifpn_nodes
from ..model import EfficientDet
from .errors import WeightsError
from .names import official_backbone_names, tf_names
from .remap import remap_state

EMA_SUFFIX = "/ExponentialMovingAverage"

# TF layouts → torch, named in one place.
LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # [kh, kw, in, out] → [out, in, kh, kw]
    "depthwise": lambda a: a.transpose(2, 3, 0, 1),  # [kh, kw, in, 1] → [in, 1, kh, kw]
    "vector": lambda a: a,  # biases, BN statistics
}
STACK = "stack"  # one torch vector holds the official scalars WSM, WSM_1, ... of a BiFPN node

# Checkpoint entries that are not model variables.
_IGNORED = ("global_step",)
_IGNORED_SUFFIXES = ("/Momentum", "/RMSProp", "/RMSProp_1", "/Adam", "/Adam_1")


def official_names(model: EfficientDet) -> dict[str, tuple[str, str]]:
    """``{torch state_dict key: (official variable name, layout)}`` for every tensor of ``model``."""
    cfg = model.config
    if not isinstance(model.backbone, EfficientNet):
        raise WeightsError("official checkpoints need the built-in EfficientNet backbone, not a timm one")
    if not (cfg.bifpn.separable and cfg.head.separable):
        raise WeightsError("official checkpoints use separable convolutions (bifpn/head.separable=True)")
    names = official_backbone_names(model.backbone, cfg.backbone.name)
    for i, resample in enumerate(model.fpn.extra):
        tf = f"resample_p{cfg.min_level + len(model.backbone.feature_channels) + i}"
        if resample.conv is not None:
            names.update(tf_names(f"fpn.extra.{i}.conv", f"{tf}/conv2d", "conv_bias"))
            names.update(tf_names(f"fpn.extra.{i}.bn", f"{tf}/bn", "bn"))
    num_levels = cfg.max_level - cfg.min_level + 1
    nodes = bifpn_nodes(cfg.min_level, cfg.max_level)
    for k, cell in enumerate(model.fpn.cells):
        for i, (fnode, node) in enumerate(zip(cell.fnodes, nodes)):
            tp, fp = f"fpn.cells.{k}.fnodes.{i}", f"fpn_cells/cell_{k}/fnode{i}"
            num_feats = num_levels + i
            for j, (offset, resample) in enumerate(zip(node.inputs, fnode.resample)):
                if resample.conv is not None:
                    rp = f"{fp}/resample_{j}_{offset}_{num_feats}"
                    names.update(tf_names(f"{tp}.resample.{j}.conv", f"{rp}/conv2d", "conv_bias"))
                    names.update(tf_names(f"{tp}.resample.{j}.bn", f"{rp}/bn", "bn"))
            if fnode.weights is not None:
                names[f"{tp}.weights"] = (f"{fp}/WSM", STACK)
            names.update(tf_names(f"{tp}.conv", f"{fp}/op_after_combine{num_feats}/conv", "separable"))
            names.update(tf_names(f"{tp}.bn", f"{fp}/op_after_combine{num_feats}/bn", "bn"))
    for net, short in (("class_net", "class"), ("box_net", "box")):
        for i in range(cfg.head.repeats):
            names.update(tf_names(f"{net}.convs.{i}", f"{net}/{short}-{i}", "separable"))
            for j, level in enumerate(cfg.levels):
                names.update(tf_names(f"{net}.bns.{i}.{j}", f"{net}/{short}-{i}-bn-{level}", "bn"))
        names.update(tf_names(f"{net}.predict", f"{net}/{short}-predict", "separable"))
    return names


class OfficialTensors(Mapping):
    """An official checkpoint as torch tensors under their official names, read lazily.

    A name reads its EMA shadow copy when there is one (``use_ema``); its TF layout is
    transposed to torch's; a ``stack`` name holds its scalars ``WSM``, ``WSM_1``, ... (as far
    as they go) as one vector. Training-only entries (the step counter, optimizer slots) are not
    listed. Shapes are known without reading (:meth:`declared_shape`) where ``tensors`` tells
    them, so that :func:`~.remap.remap_state` refuses a wrong one before reading it.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], layouts: Mapping[str, str], use_ema: bool = True):
        self._tensors, self._layouts, self._use_ema = tensors, layouts, use_ema
        self._keys: list[str] | None = None

    def _source(self, name: str) -> str:
        """The entry to read for ``name``: its EMA shadow copy when there is one."""
        ema = name + EMA_SUFFIX
        return ema if self._use_ema and ema in self._tensors else name

    def _parts(self, name: str) -> list[str]:
        """The checkpoint entries behind ``name``: itself, or a stack's scalars."""
        parts = [name]
        while self._layouts.get(name) == STACK and f"{name}_{len(parts)}" in self:
            parts.append(f"{name}_{len(parts)}")
        return parts

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._source(name) in self._tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self:
            raise KeyError(name)
        arrays = [np.asarray(self._tensors[self._source(part)]) for part in self._parts(name)]
        layout = self._layouts.get(name, "vector")
        array = np.concatenate([a.reshape(-1) for a in arrays]) if layout == STACK else LAYOUTS[layout](arrays[0])
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def declared_shape(self, name: str) -> tuple[int, ...]:
        """The shape ``self[name]`` will have, from the checkpoint's declarations (no data read)."""
        shapes = [self._raw_shape(self._source(part)) for part in self._parts(name)]
        layout = self._layouts.get(name, "vector")
        if layout == STACK:
            return (sum(int(np.prod(s)) for s in shapes),)
        try:
            return LAYOUTS[layout](np.broadcast_to(np.float32(0), shapes[0])).shape  # a view: no memory
        except ValueError:  # wrong rank for the layout's transpose: refused as it is
            return tuple(shapes[0])

    def _raw_shape(self, entry: str) -> tuple[int, ...]:
        declared = getattr(self._tensors, "declared_shape", None)
        return tuple(declared(entry)) if declared is not None else np.shape(self._tensors[entry])

    def __iter__(self) -> Iterator[str]:
        if self._keys is None:
            self._keys = self._model_names()
        return iter(self._keys)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _model_names(self) -> list[str]:
        """Every model variable of the checkpoint once: EMA copies and a stack's later scalars folded."""
        bases = dict.fromkeys(n.removesuffix(EMA_SUFFIX) for n in self._tensors)
        stacked = {part for n, layout in self._layouts.items() if layout == STACK and n in self
                   for part in self._parts(n)[1:]}
        return [n for n in bases if n in self and n not in stacked and n not in _IGNORED
                and not n.endswith(_IGNORED_SUFFIXES)]


def convert_official(model: EfficientDet, tensors: Mapping[str, np.ndarray], use_ema: bool = True,
                     what: str = "checkpoint", ignore: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Official tensors (name → array, e.g. a ``TFCheckpoint``) → a state dict for ``model``.

    ``tensors`` may be lazy: only the names the model needs are read. ``what`` names the
    checkpoint in errors; ``ignore``: see :func:`~.remap.remap_state`.
    """
    try:
        table = official_names(model)
    except WeightsError as e:
        raise WeightsError(f"{what}: {e}") from None
    view = OfficialTensors(tensors, {tf: layout for tf, layout in table.values()}, use_ema)
    return remap_state(view, model.state_dict(), what, {key: tf for key, (tf, _) in table.items()}, ignore)
