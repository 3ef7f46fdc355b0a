"""EfficientDet = EfficientNet backbone → BiFPN → shared class/box nets (paper Fig. 3)."""

from __future__ import annotations

import torch
from torch import nn

from .backbone import build_backbone
from .bifpn import BiFPN
from .config import ModelConfig, min_input_size, validate
from .head import HeadNet


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
        self.class_net = HeadNet(outputs_per_anchor=config.head.num_classes, prior_prob=config.head.prior_prob, **head)
        self.box_net = HeadNet(outputs_per_anchor=4, **head)

    def reset_parameters(self) -> None:
        """The official initialisers: each part draws its own (backbone, BiFPN, heads)."""
        for part in (self.backbone, self.fpn, self.class_net, self.box_net):
            part.reset_parameters()

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
        min_size = min_input_size(self.config)
        if min(images.shape[-2:]) < min_size:
            raise ValueError(
                f"images of {images.shape[-2]}x{images.shape[-1]} are too small for level P{self.config.max_level}: "
                f"each side must be at least {min_size} pixels"
            )
