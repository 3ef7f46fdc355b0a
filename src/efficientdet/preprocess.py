"""The official inference preprocessing (``dataloader.DetectionInputProcessor``), image → tensor.

Normalise on 0..255, resize keeping the aspect ratio (bilinear, half-pixel centres, no
antialias — ``tf.image.resize``), pad zeros bottom/right to the network size. Data loading and
inference both call it, so it depends on the config alone: not on the model or postprocessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import PreprocessConfig


def resize_scale(height: int, width: int, out_size: tuple[int, int]) -> tuple[float, int, int]:
    """(scale, scaled height, scaled width), in float32 as the official TF graph computes them."""
    h, w = np.float32(height), np.float32(width)
    scale = np.minimum(np.float32(out_size[0]) / h, np.float32(out_size[1]) / w)
    return float(scale), int(h * scale), int(w * scale)


def preprocess(
    images: list[torch.Tensor], image_size: tuple[int, int], config: PreprocessConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[3, h, w]`` uint8 (or 0..255 float) RGB images → batch ``[B, 3, H, W]`` and ``image_scales [B]``.

    ``image_scales`` maps network pixels back to original pixels (official ``1 / scale``).
    """
    batch, scales = [], []
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"image {i}: expected a [3, H, W] RGB tensor, got shape {list(img.shape)}")
        mean = torch.tensor(config.mean, dtype=torch.float32, device=img.device).view(3, 1, 1)
        std = torch.tensor(config.std, dtype=torch.float32, device=img.device).view(3, 1, 1)
        x = (img.to(torch.float32) - mean) / std
        scale, sh, sw = resize_scale(img.shape[1], img.shape[2], image_size)
        x = F.interpolate(x[None], size=(sh, sw), mode="bilinear", align_corners=False, antialias=False)[0]
        x = F.pad(x, (0, image_size[1] - sw, 0, image_size[0] - sh))
        batch.append(x)
        scales.append(float(np.float32(1.0) / np.float32(scale)))
    return torch.stack(batch), torch.tensor(scales, dtype=torch.float32)


def to_chw_tensor(image: Any) -> torch.Tensor:
    """PIL image, ``[H, W, 3]`` numpy array or ``[3, H, W]`` tensor → ``[3, H, W]`` uint8 RGB tensor."""
    if isinstance(image, torch.Tensor):
        return image
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, -1)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected an [H, W, 3] image array, got shape {image.shape}")
        return torch.from_numpy(np.array(image[..., :3])).permute(2, 0, 1)  # copy: arrays may be read-only
    raise ValueError(f"unsupported image type {type(image).__name__}: use a PIL image, numpy array or tensor")
