"""Image decoding and the official training / evaluation transforms.

Decoding is PIL's: EXIF orientation applied; greyscale, palette, RGBA/LA and CMYK converted to
RGB (alpha dropped); 16-bit scaled to 8-bit. Not ``torchvision.io.decode_image``: torchvision
0.29 deprecates its image decoders (a DeprecationWarning per call, removal announced, TorchCodec
named as the successor), and PIL reads every format in one code path, BMP and TIFF included, at
about 0.3 ms more per 640×640 JPEG, little next to the resize. The header is read first, so an
image over ``max_pixels`` is refused before a byte of it is decoded.

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

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..config import PreprocessConfig
from ..detector import preprocess, resize_scale
from .sample import ImageError

# Refuse larger images: a 100 MP RGB image is 300 MB decoded, 1.2 GB as float. PIL refuses past
# 2 x Image.MAX_IMAGE_PIXELS (179 MP) on its own; raising our cap beyond that needs raising PIL's.
DEFAULT_MAX_PIXELS = 100_000_000
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_LISTED = 10  # bad files named in one error


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Upright ``(width, height)`` from the file header, EXIF orientation applied; no pixels decoded."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = _orientation(img)
    except Exception as e:  # PIL's plugins raise OSError, SyntaxError, struct.error, ... on bad files
        raise ImageError(f"{path}: cannot read the image header ({e})") from None
    if orientation in _ROTATING_ORIENTATIONS:
        width, height = height, width
    if width * height > max_pixels:
        raise ImageError(f"{path}: {width}x{height} is {width * height} pixels, over the limit of "
                         f"{max_pixels} (max_pixels, {max_pixels / 1e6:g} MP)")
    return width, height


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation the header parse found. A PNG's comes from its header chunks only:
    ``getexif()`` would decode the whole image to look for an eXIf chunk after the pixels."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    return img.getexif().get(ExifTags.Base.Orientation, 1)


def size_mismatch(path: str | Path, size: tuple[int, int], expected: tuple[int | None, int | None]) -> str | None:
    """What is wrong when an image's ``(width, height)`` is not its annotation's (``None``: not
    stated): its boxes would land in the wrong place."""
    if any(e is not None and e != s for e, s in zip(expected, size)):
        return f"{path}: image is {size[0]}x{size[1]} but its annotation says {expected[0]}x{expected[1]}"
    return None


def check_images(paths: Sequence[Path], max_pixels: int = DEFAULT_MAX_PIXELS,
                 expected: Sequence[tuple[int | None, int | None]] | None = None) -> list[tuple[int, int]]:
    """Every image's upright ``(width, height)`` from its header, read on threads (I/O bound).

    One :class:`ImageError` lists every unreadable or oversized file, and every file whose size
    differs from ``expected`` (the annotation's ``(width, height)``, ``None`` = unknown), so that
    a dataset is fixed in one pass instead of one crash per epoch.
    """
    def probe(i: int) -> tuple[int, int] | str:
        try:
            size = image_size(paths[i], max_pixels)
        except ImageError as e:
            return str(e)
        problem = size_mismatch(paths[i], size, expected[i]) if expected is not None else None
        return problem or size

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(probe, range(len(paths))))
    problems = [r for r in results if isinstance(r, str)]
    if problems:
        more = f"\n  ... and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        raise ImageError(f"{len(problems)} of {len(paths)} images are unusable:\n  "
                         + "\n  ".join(problems[:_LISTED]) + more)
    return results


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """``[3, H, W]`` uint8 RGB, upright. Raises :class:`ImageError` naming ``path`` when it cannot."""
    image_size(path, max_pixels)
    try:
        with Image.open(path) as img:
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode.startswith("I;16"):  # convert("RGB") would clip 16-bit values instead of scaling
                img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
            array = np.array(img if img.mode == "RGB" else img.convert("RGB"))
    except Exception as e:  # as in image_size: PIL's error types vary by plugin
        raise ImageError(f"{path}: cannot decode the image ({e})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


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
    """The official inference preprocessing (:func:`efficientdet.detector.preprocess`), plus boxes.

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
