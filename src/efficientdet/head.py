"""Class and box prediction nets: conv weights shared across levels, one BN per level."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import SeparableConv2d, activation, batch_norm, conv_layers, variance_scaling_


class HeadNet(nn.Module):
    """``repeats`` × [conv (shared) → BN (per level) → act], then a shared predictor conv.

    Output channel ``a * outputs_per_anchor + k`` is anchor ``a``'s k-th value, the official
    NHWC channel layout, so official weights load without permutation. ``prior_prob`` (the class
    net's) starts every output at that probability (focal-loss prior, RetinaNet §4.1).
    """

    def __init__(self, channels: int, outputs_per_anchor: int, num_anchors: int, repeats: int,
                 num_levels: int, act: str, separable: bool = True, prior_prob: float | None = None):
        super().__init__()
        self.separable = separable
        self.prior_prob = prior_prob

        def conv(cin: int, cout: int) -> nn.Module:
            return SeparableConv2d(cin, cout, 3) if separable else nn.Conv2d(cin, cout, 3, padding=1)

        self.convs = nn.ModuleList(conv(channels, channels) for _ in range(repeats))
        self.bns = nn.ModuleList(
            nn.ModuleList(batch_norm(channels) for _ in range(num_levels)) for _ in range(repeats)
        )
        self.act = activation(act)
        self.predict = conv(channels, num_anchors * outputs_per_anchor)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official: Keras variance scaling (separable), else normal(0.01); biases zero, but the prior's."""
        for conv in conv_layers(self):
            if self.separable:
                variance_scaling_(conv)
            else:
                nn.init.normal_(conv.weight, 0.0, 0.01)
                nn.init.zeros_(conv.bias)
        if self.prior_prob is not None:
            last = self.predict.pointwise if self.separable else self.predict
            nn.init.constant_(last.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for level, x in enumerate(feats):
            for conv, bns in zip(self.convs, self.bns):
                x = self.act(bns[level](conv(x)))
            outputs.append(self.predict(x))
        return outputs

