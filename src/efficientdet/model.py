"""EfficientDet = EfficientNet backbone → BiFPN → shared class/box nets (paper Fig. 3)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .backbone import build_backbone
from .bifpn import BiFPN
from .config import ModelConfig, validate
from .head import HeadNet, class_prior_bias


class EfficientDet(nn.Module):
    """The network alone: no resizing, anchors or NMS (see ``detector.Detector``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        validate(config)
        self.config = config
        num_levels = config.max_level - config.min_level + 1
        num_anchors = config.anchors.num_anchors
        self.backbone = build_backbone(config.backbone, config.act)
        self.fpn = BiFPN(self.backbone.feature_channels, config.bifpn, config.act, config.min_level, config.max_level)
        head = dict(channels=config.bifpn.channels, num_anchors=num_anchors, repeats=config.head.repeats,
                    num_levels=num_levels, act=config.act, separable=config.head.separable)
        self.class_net = HeadNet(outputs_per_anchor=config.head.num_classes, **head)
        self.box_net = HeadNet(outputs_per_anchor=4, **head)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisers, with Keras' fan counts.

        Backbone: He-normal on fan-out (replaced by pretrained weights in practice). BiFPN: Keras'
        default glorot-uniform. Heads: Keras ``variance_scaling`` (truncated normal, fan-in), or
        normal(0.01) when not separable. Keras counts a depthwise kernel ``(k, k, C, 1)`` as
        fan-in ``k·k·C``, so the official depthwise weights start ≈ √C times smaller than a
        per-group count gives; that scale sets the effective step size of the BN-followed convs
        and the spread of the first class logits around the prior, which short fine-tunes feel.
        """
        for name, m in self.named_modules():
            if not isinstance(m, nn.Conv2d):
                continue
            k = m.kernel_size[0] * m.kernel_size[1]
            fan_in, fan_out = k * m.in_channels, k * m.out_channels // m.groups
            if name.startswith("backbone."):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif name.startswith("fpn."):
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                nn.init.uniform_(m.weight, -limit, limit)
            elif not self.config.head.separable:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                # Keras truncates at two standard deviations and rescales so the std is √(1/fan_in).
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
                nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        class_prior_bias(self.class_net, self.config.head.prior_prob)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Raw per-level outputs, levels min..max.

        Args:
            images: ``[B, 3, H, W]`` float, already normalised (see ``detector.preprocess``).
        Returns:
            class logits ``[B, A·C, H_l, W_l]`` and box regressions ``[B, A·4, H_l, W_l]`` per
            level; channel ``a·C + c`` / ``a·4 + k`` with k over (ty, tx, th, tw).
        """
        self._check_input(images)
        feats = self.fpn(self.backbone(images))
        return self.class_net(feats), self.box_net(feats)

    def _check_input(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W], got {list(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor (normalised), got dtype {images.dtype}")
        min_size = 2 ** (self.config.max_level - 1) + 1
        if min(images.shape[-2:]) < min_size:
            raise ValueError(
                f"images of {images.shape[-2]}x{images.shape[-1]} are too small for level P{self.config.max_level}: "
                f"each side must be at least {min_size} pixels"
            )
