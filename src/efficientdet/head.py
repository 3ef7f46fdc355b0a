"""Class and box prediction nets: conv weights shared across levels, one BN per level."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import SeparableConv2d, activation, batch_norm


class HeadNet(nn.Module):
    """``repeats`` × [conv (shared) → BN (per level) → act], then a shared predictor conv.

    Output channel ``a * outputs_per_anchor + k`` is anchor ``a``'s k-th value, the official
    NHWC channel layout, so official weights load without permutation.
    """

    def __init__(self, channels: int, outputs_per_anchor: int, num_anchors: int, repeats: int,
                 num_levels: int, act: str, separable: bool = True):
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Module:
            return SeparableConv2d(cin, cout, 3) if separable else nn.Conv2d(cin, cout, 3, padding=1)

        self.convs = nn.ModuleList(conv(channels, channels) for _ in range(repeats))
        self.bns = nn.ModuleList(
            nn.ModuleList(batch_norm(channels) for _ in range(num_levels)) for _ in range(repeats)
        )
        self.act = activation(act)
        self.predict = conv(channels, num_anchors * outputs_per_anchor)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for level, x in enumerate(feats):
            for conv, bns in zip(self.convs, self.bns):
                x = self.act(bns[level](conv(x)))
            outputs.append(self.predict(x))
        return outputs


def class_prior_bias(module: HeadNet, prior_prob: float) -> None:
    """Focal-loss prior (paper RetinaNet §4.1): every class starts at probability ``prior_prob``."""
    last = module.predict.pointwise if hasattr(module.predict, "pointwise") else module.predict
    nn.init.constant_(last.bias, -math.log((1 - prior_prob) / prior_prob))
