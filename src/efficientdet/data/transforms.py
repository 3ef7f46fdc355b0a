"""The official training / evaluation transforms, on decoded images (:mod:`.images` reads them).

The transforms are plain tensor ops rather than a ``transforms.v2`` pipeline: the official
augmentation (google/automl ``dataloader.py``, ``InputProcessor``) draws the random scale, the
scaled size and the crop offset with float32 truncations, resizes with TF's bilinear (half-pixel
centres, no antialias) *after* normalising, pads bottom/right with zeros, maps boxes through
normalised coordinates, clips them to ``size - 1`` and drops the empty ones. ``v2.RandomResize``,
``RandomCrop`` and ``SanitizeBoundingBoxes`` each round, antialias or clip differently, and
bending them to it would take more code than the few steps themselves. Flipping and the optional
photometric jitter (no official counterpart to match) are torchvision's.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..config import PreprocessConfig
from ..preprocess import preprocess, resize_scale


class Transformed(NamedTuple):
    image: torch.Tensor  # [3, H, W] float32, normalised, padded with zeros bottom/right
    boxes: torch.Tensor  # [N, 4] float32 xyxy in network pixels
    labels: torch.Tensor  # [N] int64
    image_scale: float  # network pixel → original pixel (official ``image_scale_to_original``)


def resize_crop_boxes(boxes: torch.Tensor, labels: torch.Tensor, size: tuple[int, int],
                      scaled_size: tuple[int, int], offset: tuple[int, int],
                      out_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``resize_and_crop_boxes``: ``[N, 4]`` xyxy boxes of an image of ``size`` (h, w) →
    the resized (``scaled_size``), cropped (``offset`` y, x) and padded ``out_size`` image.

    Boxes go through normalised coordinates as the official ones do, are clipped to
    ``[0, size - 1]`` (the official clip) and dropped where nothing is left.
    """
    (h, w), (sh, sw), (oy, ox) = size, scaled_size, offset
    boxes = boxes.to(torch.float32) / torch.tensor([w, h, w, h], dtype=torch.float32) * torch.tensor([sw, sh, sw, sh],
                                                                                  dtype=torch.float32)
    boxes = boxes - torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
    high = torch.tensor([out_size[1] - 1, out_size[0] - 1] * 2, dtype=torch.float32)
    boxes = boxes.clamp(min=0).minimum(high)
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    return boxes[keep], labels[keep]


def random_scale_crop(height: int, width: int, out_size: tuple[int, int],
                      scale_range: tuple[float, float]) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Official ``set_training_random_scale_factors``, in float32 as the TF graph computes it.

    Returns ``(scale, (scaled h, scaled w), (crop y, crop x))``: the image is resized by ``scale``
    to fit ``random factor × out_size`` keeping its aspect, then cropped at a random offset where
    it is larger than ``out_size``. Draws from torch's generator (seeded per DataLoader worker).
    """
    low, high = np.float32(scale_range[0]), np.float32(scale_range[1])
    factor = low + (high - low) * np.float32(torch.rand(()).item())
    target_h, target_w = int(factor * np.float32(out_size[0])), int(factor * np.float32(out_size[1]))
    h, w = np.float32(height), np.float32(width)
    scale = min(np.float32(target_h) / h, np.float32(target_w) / w)
    # At least one pixel: a tiny factor on a very elongated image would otherwise resize to nothing.
    sh, sw = max(1, int(h * scale)), max(1, int(w * scale))
    oy = int(np.float32(max(0, sh - out_size[0])) * np.float32(torch.rand(()).item()))
    ox = int(np.float32(max(0, sw - out_size[1])) * np.float32(torch.rand(()).item()))
    return float(scale), (sh, sw), (oy, ox)


def mosaic(images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor],
           cell: tuple[int, int], center: tuple[int, int],
           fill: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four images on one ``2h × 2w`` canvas (YOLOv4's mosaic), meeting at ``center`` (y, x).

    Each ``[3, H, W]`` uint8 image is resized to fit the ``cell`` (h, w), keeping its aspect, and
    placed in its quadrant (top-left, top-right, bottom-left, bottom-right) against the centre;
    what falls off the canvas is cut, its boxes (``[N, 4]`` xyxy) clipped and dropped where
    nothing is left. The rest of the canvas is ``fill`` (the normalisation mean, so it reads as
    the zero padding the crop adds). The canvas then goes through the usual scale jitter and crop.
    Hand-written: torchvision's v2 transforms have no mosaic.
    """
    (ch, cw), (cy, cx) = cell, center
    canvas = torch.tensor([round(f) for f in fill], dtype=torch.uint8).view(3, 1, 1).repeat(1, 2 * ch, 2 * cw)
    out_boxes, out_labels = [], []
    for quadrant, (image, b, l) in enumerate(zip(images, boxes, labels)):
        h, w = image.shape[-2:]
        scale = min(ch / h, cw / w)
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        tile = TF.resize(image, [sh, sw], antialias=True)
        top = cy - sh if quadrant < 2 else cy
        left = cx - sw if quadrant % 2 == 0 else cx
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + sh, 2 * ch), min(left + sw, 2 * cw)
        canvas[:, y0:y1, x0:x1] = tile[:, y0 - top:y1 - top, x0 - left:x1 - left]
        b = b.to(torch.float32) * torch.tensor([sw / w, sh / h] * 2) + torch.tensor([left, top] * 2, dtype=torch.float32)
        b = torch.maximum(b, torch.tensor([x0, y0] * 2, dtype=torch.float32))
        b = torch.minimum(b, torch.tensor([x1, y1] * 2, dtype=torch.float32))
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        out_boxes.append(b[keep])
        out_labels.append(l[keep])
    return canvas, torch.cat(out_boxes), torch.cat(out_labels)


class TrainTransform:
    """The official training augmentation: flip, random scale, random crop, pad (``InputProcessor``).

    ``image [3, h, w]`` uint8, ``boxes [N, 4]`` xyxy original pixels, ``labels [N]`` →
    :class:`Transformed` at ``image_size`` (h, w). ``scale_range`` is the official
    ``train_scale_min/max`` (0.1, 2.0); ``photometric`` adds a mild ``v2.ColorJitter`` before
    normalising (not in the official recipe, whose extra augmentation is AutoAugment).
    """

    def __init__(self, image_size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 scale_range: tuple[float, float] = (0.1, 2.0), hflip: float = 0.5, photometric: bool = False):
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.fill = tuple(float(m) for m in mean)  # uint8 colour that normalises to the zero padding
        self.scale_range = scale_range
        self.hflip = hflip
        self.jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02) if photometric else None

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> Transformed:
        height, width = image.shape[-2:]
        if self.jitter is not None:
            image = self.jitter(image)
        x = (image.to(torch.float32) - self.mean) / self.std
        if torch.rand(()) < self.hflip:
            x = TF.horizontal_flip(x)
            boxes = TF.horizontal_flip_bounding_boxes(boxes, format=tv_tensors.BoundingBoxFormat.XYXY,
                                                      canvas_size=(height, width))
        scale, (sh, sw), (oy, ox) = random_scale_crop(height, width, self.image_size, self.scale_range)
        # Channels-last: PyTorch's bilinear kernel vectorises over the 3 channels there, about 2x
        # faster on the CPU than NCHW, with the same values (each pixel's formula is unchanged).
        x = x[None].contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=False)[0]
        out_h, out_w = self.image_size
        x = x[:, oy:oy + out_h, ox:ox + out_w]
        x = F.pad(x, (0, out_w - x.shape[2], 0, out_h - x.shape[1]))
        boxes, labels = resize_crop_boxes(boxes, labels, (height, width), (sh, sw), (oy, ox), self.image_size)
        return Transformed(x, boxes, labels, float(np.float32(1) / np.float32(scale)))


class EvalTransform:
    """The official inference preprocessing (:func:`efficientdet.preprocess.preprocess`), plus boxes.

    ``image [3, h, w]`` uint8 → :class:`Transformed`; ``boxes`` (optional) go into network pixels
    the way the official evaluation input does (``resize_and_crop_boxes`` without a crop).
    """

    def __init__(self, image_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.config = PreprocessConfig(tuple(mean), tuple(std))

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> Transformed:
        height, width = image.shape[-2:]
        batch, scales = preprocess([image], self.image_size, self.config)
        if boxes is None:
            boxes, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
        elif labels is None:
            raise ValueError("EvalTransform: labels must come with boxes")
        _, sh, sw = resize_scale(height, width, self.image_size)
        boxes, labels = resize_crop_boxes(boxes, labels, (height, width), (sh, sw), (0, 0), self.image_size)
        return Transformed(batch[0], boxes, labels, float(scales[0]))
