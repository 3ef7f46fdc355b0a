"""Backbone parameter names in the three namings that ship EfficientNet weights.

The MBConv walk is written once (:func:`_backbone_layers`): every conv and BatchNorm of our
backbone in creation order, with its block's place in the network. Each naming is a
:class:`Scheme`, a small table of that walk:

* **official TF** (google/automl, Keras): flat ``blocks_{i}``; Keras numbers a block's convs and
  BNs in creation order (``conv2d``, ``conv2d_1``; ``tpu_batch_normalization``, ``_1``, ``_2``),
  so a block without an expansion conv starts its numbering one layer later.
* **timm** (``tf_efficientnet_*``, also effdet's backbones): blocks nested by stage,
  ``blocks.{stage}.{block}``; ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``, or ``conv_dw/bn1/conv_pw/
  bn2`` in a block without expansion (timm's DepthwiseSeparableConv).
* **efficientnet_pytorch** (lukemelas'): flat ``_blocks.{i}``, one name per layer in every block.

PyTorch namings keep our parameter names (``weight``, ``running_mean``, ...); TF names them and
lays them out its own way, both given by :data:`TF_PARAMS` (the transposes are
:data:`~.official.LAYOUTS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ..backbone import EfficientNet

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")

# Kind of layer → its parameters: ours, and TF's (variable name, layout).
TORCH_PARAMS: dict[str, tuple[str, ...]] = {
    "conv": ("weight",), "conv_bias": ("weight", "bias"), "depthwise": ("weight",), "bn": BN_PARAMS,
}
TF_PARAMS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "conv": (("weight", "kernel", "conv"),),
    "conv_bias": (("weight", "kernel", "conv"), ("bias", "bias", "vector")),
    "depthwise": (("weight", "depthwise_kernel", "depthwise"),),
    "separable": (("depthwise.weight", "depthwise_kernel", "depthwise"),
                  ("pointwise.weight", "pointwise_kernel", "conv"), ("pointwise.bias", "bias", "vector")),
    "bn": (("weight", "gamma", "vector"), ("bias", "beta", "vector"),
           ("running_mean", "moving_mean", "vector"), ("running_var", "moving_variance", "vector")),
}


def torch_names(ours: str, theirs: str, kind: str) -> dict[str, str]:
    """``{our key: their key}`` of one layer, both PyTorch modules of the same kind."""
    return {f"{ours}.{p}": f"{theirs}.{p}" for p in TORCH_PARAMS[kind]}


def tf_names(ours: str, theirs: str, kind: str) -> dict[str, tuple[str, str]]:
    """``{our key: (TF variable, layout)}`` of one layer."""
    return {f"{ours}.{p}": (f"{theirs}/{v}", layout) for p, v, layout in TF_PARAMS[kind]}


@dataclass(frozen=True)
class Scheme:
    """One naming of the backbone's layers; ``unexpanded`` defaults to ``expanded``."""

    stem_conv: str
    stem_bn: str
    block: Callable[[int, int, int], str]  # (flat index, stage, index in stage) → the block's name
    expanded: Mapping[str, str]  # our layer → theirs, in a block with an expansion conv
    unexpanded: Mapping[str, str] | None = None  # ... in a block without one
    sep: str = "."


_TF_BN = ("tpu_batch_normalization", "tpu_batch_normalization_1", "tpu_batch_normalization_2")
_TF_SE = {"se.reduce": "se/conv2d", "se.expand": "se/conv2d_1"}
_TIMM_SE = {"se.reduce": "se.conv_reduce", "se.expand": "se.conv_expand"}

TIMM = Scheme(
    "conv_stem", "bn1", lambda i, stage, pos: f"blocks.{stage}.{pos}",
    expanded={"expand_conv": "conv_pw", "expand_bn": "bn1", "dw_conv": "conv_dw", "dw_bn": "bn2", **_TIMM_SE,
              "project_conv": "conv_pwl", "project_bn": "bn3"},
    unexpanded={"dw_conv": "conv_dw", "dw_bn": "bn1", **_TIMM_SE, "project_conv": "conv_pw", "project_bn": "bn2"},
)
LUKEMELAS = Scheme(
    "_conv_stem", "_bn0", lambda i, stage, pos: f"_blocks.{i}",
    expanded={"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dw_conv": "_depthwise_conv", "dw_bn": "_bn1",
              "se.reduce": "_se_reduce", "se.expand": "_se_expand", "project_conv": "_project_conv",
              "project_bn": "_bn2"},
)


def official_scheme(tf_name: str) -> Scheme:
    """The official naming of backbone ``tf_name`` (``efficientnet-b0``, ``efficientnet-lite0``, ...)."""
    return Scheme(
        f"{tf_name}/stem/conv2d", f"{tf_name}/stem/{_TF_BN[0]}", lambda i, stage, pos: f"{tf_name}/blocks_{i}",
        expanded={"expand_conv": "conv2d", "expand_bn": _TF_BN[0], "dw_conv": "depthwise_conv2d", "dw_bn": _TF_BN[1],
                  **_TF_SE, "project_conv": "conv2d_1", "project_bn": _TF_BN[2]},
        unexpanded={"dw_conv": "depthwise_conv2d", "dw_bn": _TF_BN[0], **_TF_SE, "project_conv": "conv2d",
                    "project_bn": _TF_BN[1]},
        sep="/",
    )


def _stages(backbone: EfficientNet) -> Iterator[tuple[int, int, int]]:
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


def _block_layers(expand: bool, se: bool) -> list[tuple[str, str]]:
    """A block's (layer, kind) in creation order: [expand] → depthwise → [SE] → project."""
    layers = [("expand_conv", "conv"), ("expand_bn", "bn")] if expand else []
    layers += [("dw_conv", "depthwise"), ("dw_bn", "bn")]
    if se:
        layers += [("se.reduce", "conv_bias"), ("se.expand", "conv_bias")]
    return layers + [("project_conv", "conv"), ("project_bn", "bn")]


def _backbone_layers(backbone: EfficientNet, scheme: Scheme) -> Iterator[tuple[str, str, str]]:
    """(our module, its name in ``scheme``, kind) for every conv and BN of ``backbone``."""
    yield "stem_conv", scheme.stem_conv, "conv"
    yield "stem_bn", scheme.stem_bn, "bn"
    for i, stage, pos in _stages(backbone):
        block = backbone.blocks[i]
        table = scheme.expanded if block.expand or scheme.unexpanded is None else scheme.unexpanded
        theirs = scheme.block(i, stage, pos)
        for layer, kind in _block_layers(block.expand, block.se is not None):
            yield f"blocks.{i}.{layer}", f"{theirs}{scheme.sep}{table[layer]}", kind


def backbone_names(backbone: EfficientNet, scheme: Scheme) -> dict[str, str]:
    """``{our backbone key: its key in a PyTorch naming}`` (:data:`TIMM`, :data:`LUKEMELAS`)."""
    return {k: v for ours, theirs, kind in _backbone_layers(backbone, scheme)
            for k, v in torch_names(ours, theirs, kind).items()}


def official_backbone_names(backbone: EfficientNet, tf_name: str,
                            prefix: str = "backbone") -> dict[str, tuple[str, str]]:
    """``{our key under prefix: (official variable, layout)}`` for backbone ``tf_name``."""
    return {k: v for ours, theirs, kind in _backbone_layers(backbone, official_scheme(tf_name))
            for k, v in tf_names(f"{prefix}.{ours}", theirs, kind).items()}
