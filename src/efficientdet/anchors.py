"""Anchor boxes, in the library's one box convention: xyxy in network-input pixels."""

from __future__ import annotations

import itertools

import torch

from .config import ModelConfig, feature_sizes


def generate_anchors(config: ModelConfig) -> torch.Tensor:
    """All anchors ``[N, 4]`` (x1, y1, x2, y2), float32, of ``config``'s image size, levels and
    anchor settings, in the official order.

    Order: level, then row, then column, then ``a = octave · len(aspects) + aspect`` — the
    order of the head outputs reshaped to ``[-1, C]`` per level and concatenated. Computed in
    float64 and rounded once, as the official numpy code does (``tf2/anchors.py``). The stride
    is the float ``image_size / feature_size``, so sizes that are not multiples of 2^level
    give the official (non-integer) strides.
    """
    height, width = config.image_size
    sizes = feature_sizes(config.image_size, config.max_level)
    anchors = config.anchors
    levels = []
    for level in config.levels:
        fh, fw = sizes[level]
        sy, sx = height / fh, width / fw
        y = torch.arange(sy / 2, height, sy, dtype=torch.float64)
        x = torch.arange(sx / 2, width, sx, dtype=torch.float64)
        if len(y) != fh or len(x) != fw:
            raise AssertionError(f"anchor grid {len(y)}x{len(x)} != feature map {fh}x{fw} at P{level}")
        cy, cx = torch.meshgrid(y, x, indexing="ij")
        per_anchor = []
        for octave, aspect in itertools.product(range(anchors.num_scales), anchors.aspect_ratios):
            scale = anchors.anchor_scale * 2 ** (octave / anchors.num_scales)
            ax = aspect**0.5
            half_w = scale * sx * ax / 2.0
            half_h = scale * sy / ax / 2.0
            per_anchor.append(torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1))
        levels.append(torch.stack(per_anchor, 2).reshape(-1, 4))  # [fh, fw, A, 4] → rows
    return torch.cat(levels).to(torch.float32)
