"""How well a model's anchors fit a set of ground-truth boxes.

A box whose best anchor reaches the matching IoU (``LossConfig.match_threshold``, official 0.5)
trains the anchors around it; any other box trains only the one anchor it is forced onto, whatever
their overlap (:mod:`.assign`). The *share* of boxes that reach it is the anchor fit: low when the
boxes are much smaller than the smallest anchor (``anchor_scale × stride`` at P3), much larger than
the largest, or more elongated than the aspect ratios. The IoUs are the assigner's own
(:func:`~.assign.batched_iou`).

Boxes are given in the pixels of their images, with each image's size, and are placed as the
inference resize places them (scaled to fit the network input, top-left): the nominal size that
training's scale jitter varies around.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .assign import batched_iou
from .config import ModelConfig, feature_sizes, override

SCALE_GRID = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)  # anchor_scale candidates of `anchors.anchor_scale=auto`
WIDE_ASPECTS = (1.0, 2.0, 0.5, 4.0, 0.25)  # the aspect ratios suggested for elongated boxes
LARGER_SIZES = (1.5, 2.0)  # image-size factors suggested for small boxes
LOW_FIT = 0.8  # below this share the check warns and lists the changes that would help
MAX_BOXES = 100_000  # beyond, the fit is that of a seeded sample: the share's standard error stays under 0.2 %
_PAIRS = 2**24  # box-shape pairs per IoU chunk: three float64 [chunk, A] tensors of 128 MB at most


def network_boxes(boxes: np.ndarray, image_sizes: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``boxes [M, 4]`` xyxy in the pixels of images of ``image_sizes [M, 2]`` (height, width) →
    float64 ``[M, 4]`` at the network input ``size`` (height, width), scaled as the inference
    resize scales their image (:func:`~.preprocess.resize_scale`: to fit, the scale in float32)."""
    assert boxes.shape[1:] == (4,) and image_sizes.shape == (len(boxes), 2)
    sizes = image_sizes.astype(np.float32)
    scale = np.minimum(np.float32(size[0]) / sizes[:, 0], np.float32(size[1]) / sizes[:, 1])
    return torch.from_numpy(boxes.astype(np.float64) * scale[:, None].astype(np.float64))


def sample_boxes(boxes: np.ndarray, image_sizes: np.ndarray, limit: int = MAX_BOXES) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` of the boxes and their image sizes, drawn by a generator of their own with a
    fixed seed: every process of a run, and every run, measures the same ones."""
    if len(boxes) <= limit:
        return boxes, image_sizes
    keep = np.sort(np.random.default_rng(0).choice(len(boxes), limit, replace=False))
    return boxes[keep], image_sizes[keep]


def _level_shapes(config: ModelConfig, level: int) -> tuple[float, float, torch.Tensor]:
    """The level's strides (y, x) and its anchor shapes ``[A, 4]`` centred at 0, as
    :func:`~.anchors.generate_anchors` makes them (float strides, octave-major order)."""
    height, width = config.image_size
    fh, fw = feature_sizes(config.image_size, config.max_level)[level]
    sy, sx = height / fh, width / fw
    a = config.anchors
    shapes = []
    for octave, aspect in itertools.product(range(a.num_scales), a.aspect_ratios):
        scale = a.anchor_scale * 2 ** (octave / a.num_scales)
        half_w, half_h = scale * sx * aspect**0.5 / 2.0, scale * sy / aspect**0.5 / 2.0
        shapes.append((-half_w, -half_h, half_w, half_h))
    return sy, sx, torch.tensor(shapes, dtype=torch.float64)


@torch.no_grad()
def best_anchors(boxes: torch.Tensor, config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box's best IoU ``[M]`` over all anchors of ``config`` and the level ``[M]`` of the anchor
    giving it (the lowest on ties); ``boxes [M, 4]`` xyxy network pixels.

    IoU falls as two boxes' centres move apart along either axis (the intersection shrinks, the
    union grows), so among the anchors of one shape on one level the best is the one centred at
    the grid point nearest the box's centre, row and column apart. Each box is moved so that this
    point is the origin and compared, by the assigner's IoU (:func:`~.assign.batched_iou`), with
    the level's shapes centred there: ``levels × A`` pairs per box instead of every anchor.
    """
    assert boxes.dim() == 2 and boxes.shape[-1] == 4
    boxes = boxes.to(torch.float64)
    sizes = feature_sizes(config.image_size, config.max_level)
    per_level = []
    for level in config.levels:
        sy, sx, shapes = _level_shapes(config, level)
        fh, fw = sizes[level]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        gx = ((cx - sx / 2) / sx).round().clamp(0, fw - 1) * sx + sx / 2
        gy = ((cy - sy / 2) / sy).round().clamp(0, fh - 1) * sy + sy / 2
        moved = boxes - torch.stack([gx, gy, gx, gy], 1)
        chunk = max(1, _PAIRS // len(shapes))
        per_level.append(torch.cat([batched_iou(part[None], shapes)[0].amax(1) for part in moved.split(chunk)])
                         if len(boxes) else boxes.new_zeros(0))
    best, index = torch.stack(per_level).max(0)
    return best, torch.tensor(list(config.levels))[index]


@dataclass(frozen=True)
class LevelFit:
    """The boxes whose best anchor lies on one pyramid level."""

    level: int
    anchor_sides: tuple[float, float]  # the square anchors' smallest and largest side, network pixels
    boxes: int
    matched: int  # of them, best IoU >= the threshold
    median_side: float | None  # sqrt(area) of the median box, network pixels; None without boxes


@dataclass(frozen=True)
class AnchorFit:
    image_size: tuple[int, int]
    anchor_scale: float
    aspect_ratios: tuple[float, ...]
    threshold: float
    boxes: int
    matched: int
    levels: tuple[LevelFit, ...]

    @property
    def share(self) -> float:
        return self.matched / self.boxes if self.boxes else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "share": self.share}


def fit_share(boxes: np.ndarray, image_sizes: np.ndarray, config: ModelConfig, threshold: float) -> float:
    """The share of the boxes whose best anchor of ``config`` has IoU >= ``threshold``."""
    if not len(boxes):
        return 0.0
    best, _ = best_anchors(network_boxes(boxes, image_sizes, config.image_size), config)
    return float((best >= threshold).double().mean())


def anchor_fit(boxes: np.ndarray, image_sizes: np.ndarray, config: ModelConfig, threshold: float) -> AnchorFit:
    """The fit of ``config``'s anchors to ``boxes [M, 4]`` (of images ``image_sizes [M, 2]``), per level."""
    scaled = network_boxes(boxes, image_sizes, config.image_size)
    best, level = best_anchors(scaled, config)
    matched = best >= threshold
    sides = ((scaled[:, 2] - scaled[:, 0]) * (scaled[:, 3] - scaled[:, 1])).sqrt()
    a = config.anchors
    levels = []
    for lv in config.levels:
        on = level == lv
        sy, sx, _ = _level_shapes(config, lv)
        octaves = [a.anchor_scale * math.sqrt(sy * sx) * 2 ** (o / a.num_scales) for o in range(a.num_scales)]
        median = round(float(sides[on].median()), 1) if on.any() else None
        levels.append(LevelFit(lv, (round(min(octaves), 1), round(max(octaves), 1)), int(on.sum()),
                               int((on & matched).sum()), median))
    return AnchorFit(tuple(config.image_size), a.anchor_scale, tuple(a.aspect_ratios), threshold, len(boxes),
                     int(matched.sum()), tuple(levels))


def scale_shares(boxes: np.ndarray, image_sizes: np.ndarray, config: ModelConfig, threshold: float,
                 grid: tuple[float, ...] = SCALE_GRID) -> dict[float, float]:
    """The fit share of each ``anchor_scale`` of ``grid``, the rest of ``config`` kept."""
    return {scale: fit_share(boxes, image_sizes, override(config, anchor_scale=scale), threshold) for scale in grid}


def best_scale(shares: dict[float, float], own: float) -> float:
    """The scale of the highest share; on a tie the one nearest (in ratio) to the model's own."""
    return max(shares, key=lambda s: (shares[s], -abs(math.log(s / own))))


def alternatives(boxes: np.ndarray, image_sizes: np.ndarray, config: ModelConfig,
                 threshold: float) -> list[tuple[str, float]]:
    """What each change the check suggests would give, as (the option, its fit share): larger
    inputs, the best anchor scale of :data:`SCALE_GRID`, the wider aspect ratios."""
    out = []
    for factor in LARGER_SIZES:
        size = tuple(max(32, round(side * factor / 32) * 32) for side in config.image_size)
        text = f"{size[0]}" if size[0] == size[1] else f"{size[0]}x{size[1]}"
        out.append((f"--image-size {text}", fit_share(boxes, image_sizes, override(config, image_size=size),
                                                     threshold)))
    own = config.anchors.anchor_scale
    shares = scale_shares(boxes, image_sizes, config, threshold, tuple(s for s in SCALE_GRID if s != own))
    scale = best_scale(shares, own)
    out.append((f"--set anchors.anchor_scale={scale:g}", shares[scale]))
    if tuple(config.anchors.aspect_ratios) != WIDE_ASPECTS:
        wide = override(config, aspect_ratios=WIDE_ASPECTS)
        out.append((f"--set anchors.aspect_ratios={','.join(f'{r:g}' for r in WIDE_ASPECTS)}",
                    fit_share(boxes, image_sizes, wide, threshold)))
    return out
