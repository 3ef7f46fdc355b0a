"""Reading images: PIL decoding with EXIF orientation, colour modes to RGB, and a pixel limit.

Decoding is PIL's: EXIF orientation applied; greyscale, palette, RGBA/LA and CMYK converted to
RGB (alpha dropped); 16-bit scaled to 8-bit. Not ``torchvision.io.decode_image``: torchvision
0.29 deprecates its image decoders (a DeprecationWarning per call, removal announced, TorchCodec
named as the successor), and PIL reads every format in one code path, BMP and TIFF included, at
about 0.3 ms more per 640×640 JPEG, little next to the resize. The header is read first, so an
image over ``max_pixels`` is refused before a byte of it is decoded.

A source is a file path or, for a server's uploads, the encoded image as ``bytes``; errors name
it by ``name`` (default: the path, or "image").
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .sample import SIZE_MISMATCH, ImageError

# Refuse larger images: a 100 MP RGB image is 300 MB decoded, 1.2 GB as float. PIL refuses past
# 2 x Image.MAX_IMAGE_PIXELS (179 MP) on its own; raising our cap beyond that needs raising PIL's.
DEFAULT_MAX_PIXELS = 100_000_000
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_LISTED = 10  # bad files named in one error

ImageSource = str | Path | bytes  # a file, or an encoded image in memory


class TooManyPixels(ImageError):
    """An image over the pixel limit, refused from its header before any decoding."""


def _open(source: ImageSource) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _label(source: ImageSource, name: str | None) -> str:
    return name if name is not None else "image" if isinstance(source, bytes) else str(source)


def _reason(error: Exception, source: ImageSource) -> str:
    """PIL's message; for bytes without the repr of the in-memory file PIL names in it."""
    if isinstance(source, bytes) and isinstance(error, UnidentifiedImageError):
        return "cannot identify image file"
    return str(error)


def image_size(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> tuple[int, int]:
    """Upright ``(width, height)`` from the header, EXIF orientation applied; no pixels decoded."""
    try:
        with _open(source) as img:
            width, height = img.size
            orientation = _orientation(img)
    except Exception as e:  # PIL's plugins raise OSError, SyntaxError, struct.error, ... on bad files
        raise ImageError(f"{_label(source, name)}: cannot read the image header ({_reason(e, source)})") from None
    if orientation in _ROTATING_ORIENTATIONS:
        width, height = height, width
    if width * height > max_pixels:
        raise TooManyPixels(f"{_label(source, name)}: {width}x{height} is {width * height} pixels, over the "
                            f"limit of {max_pixels} (max_pixels, {max_pixels / 1e6:g} MP)")
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


def probe_images(paths: Sequence[Path], max_pixels: int = DEFAULT_MAX_PIXELS,
                 expected: Sequence[tuple[int | None, int | None]] | None = None) -> list[tuple[int, int] | ImageError]:
    """Every image's upright ``(width, height)`` from its header, read on threads (I/O bound), or
    the :class:`ImageError` that says what is wrong with it: unreadable, oversized, or of another
    size than ``expected`` (the annotation's ``(width, height)``, ``None`` = unknown)."""
    def probe(i: int) -> tuple[int, int] | ImageError:
        try:
            size = image_size(paths[i], max_pixels)
        except ImageError as e:
            return e
        problem = size_mismatch(paths[i], size, expected[i]) if expected is not None else None
        return ImageError(problem, SIZE_MISMATCH) if problem else size

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(probe, range(len(paths))))


def check_images(paths: Sequence[Path], max_pixels: int = DEFAULT_MAX_PIXELS,
                 expected: Sequence[tuple[int | None, int | None]] | None = None) -> list[tuple[int, int]]:
    """:func:`probe_images`, with one :class:`ImageError` listing every unreadable, oversized or
    mis-sized file, so that a dataset is fixed in one pass instead of one crash per epoch.
    """
    results = probe_images(paths, max_pixels, expected)
    problems = [str(r) for r in results if isinstance(r, ImageError)]
    if problems:
        more = f"\n  ... and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        raise ImageError(f"{len(problems)} of {len(paths)} images are unusable:\n  "
                         + "\n  ".join(problems[:_LISTED]) + more)
    return results


def read_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> torch.Tensor:
    """``[3, H, W]`` uint8 RGB, upright. Raises :class:`ImageError` naming the source when it cannot."""
    image_size(source, max_pixels, name)
    try:
        with _open(source) as img:
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode.startswith("I;16"):  # convert("RGB") would clip 16-bit values instead of scaling
                img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
            array = np.array(img if img.mode == "RGB" else img.convert("RGB"))
    except Exception as e:  # as in image_size: PIL's error types vary by plugin
        raise ImageError(f"{_label(source, name)}: cannot decode the image ({_reason(e, source)})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
