"""Inference-time rewrite of the network: every BatchNorm folded into the convolution before it.

In eval mode a BN is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) · γ + β``,
so it can be merged into the preceding convolution's weight and bias once, instead of costing a
pass over every feature map on every forward. The heads share their convolutions across levels
but keep one BN per level (official layout), so folding gives each level its own pointwise conv
(the depthwise conv before it stays shared). The result computes the same function up to float
rounding (≤ 1e-5 on the raw outputs); it is a copy, the original model is left untouched and
still loads and saves official weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbone import EfficientNet, MBConv
from .bifpn import FNode, Resample
from .head import HeadNet
from .layers import SeparableConv2d
from .model import EfficientDet


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` (same class, padding and groups) whose output equals ``bn(conv(x))`` in eval mode.

    Folded in float64 so that the only rounding is the final cast back to the weight's dtype.
    """
    fused = copy.deepcopy(conv)
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return fused


def _fold_into(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """Fold into a plain conv, or into the pointwise (last) conv of a separable one."""
    if isinstance(conv, SeparableConv2d):
        fused = copy.deepcopy(conv)
        fused.pointwise = fold_bn(conv.pointwise, bn)
        return fused
    return fold_bn(conv, bn)


class FusedHeadNet(nn.Module):
    """:class:`HeadNet` with each level's BN folded into a per-level copy of the shared conv."""

    def __init__(self, head: HeadNet):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.ModuleList(_fold_into(conv, bn) for bn in bns) for conv, bns in zip(head.convs, head.bns)
        )
        self.act = head.act
        self.predict = head.predict

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for level, x in enumerate(feats):
            for convs in self.convs:
                x = self.act(convs[level](x))
            outputs.append(self.predict(x))
        return outputs


def _fold_module(module: nn.Module) -> None:
    """Fold the (conv, BN) pairs of one known block in place, BN replaced by ``Identity``."""
    pairs: list[tuple[str, str]] = []
    if isinstance(module, EfficientNet):
        pairs = [("stem_conv", "stem_bn")]
    elif isinstance(module, MBConv):
        pairs = [("dw_conv", "dw_bn"), ("project_conv", "project_bn")]
        if module.expand:
            pairs.append(("expand_conv", "expand_bn"))
    elif isinstance(module, (Resample, FNode)) and getattr(module, "bn", None) is not None:
        pairs = [("conv", "bn")]
    for conv_name, bn_name in pairs:
        setattr(module, conv_name, _fold_into(getattr(module, conv_name), getattr(module, bn_name)))
        setattr(module, bn_name, nn.Identity())


def fuse_model(model: EfficientDet) -> EfficientDet:
    """An eval-mode copy of ``model`` with every BN folded (a timm backbone keeps its own BNs)."""
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        _fold_module(module)
    fused.class_net = FusedHeadNet(fused.class_net)
    fused.box_net = FusedHeadNet(fused.box_net)
    return fused.requires_grad_(False)
