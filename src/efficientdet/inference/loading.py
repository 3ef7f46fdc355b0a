"""Images decoded and preprocessed in ``DataLoader`` workers, so that decoding overlaps the network."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..config import ModelConfig
from ..data.images import DEFAULT_MAX_PIXELS, read_image
from ..preprocess import preprocess
from .sources import Failure, Source


@dataclasses.dataclass
class Loaded:
    """A decoded, preprocessed image or frame on its way from a DataLoader worker to the network."""

    source: Source
    frame: int | None
    pixels: torch.Tensor  # [3, H, W] float, preprocessed
    scale: float
    height: int
    width: int
    image: torch.Tensor | None
    fps: float | None = None


def load_item(source: Source, frame: int | None, image: torch.Tensor, config: ModelConfig, keep_image: bool,
              fps: float | None = None) -> Loaded:
    """``image`` ``[3, H, W]`` uint8 preprocessed for ``config``'s network; the image itself kept for drawing."""
    pixels, scales = preprocess([image], config.image_size, config.preprocess)
    return Loaded(source, frame, pixels[0], float(scales[0]), image.shape[1], image.shape[2],
                  image if keep_image else None, fps)


class ImageFiles(Dataset):
    """``dataset[i]`` → the i-th image decoded and preprocessed, or a :class:`Failure` naming it."""

    def __init__(self, sources: Sequence[Source], config: ModelConfig, keep_images: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.sources = list(sources)
        self.config = config
        self.keep_images = keep_images
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Loaded | Failure:
        source = self.sources[index]
        try:
            image = read_image(source.path, self.max_pixels)
        except (ValueError, OSError) as e:  # ImageError is a ValueError; a vanished file an OSError
            message = str(e)
            return Failure(source, message if str(source.path) in message else f"{source.path}: {message}")
        return load_item(source, None, image, self.config, self.keep_images)
