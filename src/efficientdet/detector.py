"""Preprocess → model → postprocess, with boxes in original-image pixels.

Preprocessing is the official inference path (``dataloader.DetectionInputProcessor``):
normalise on 0..255, resize keeping the aspect ratio (bilinear, half-pixel centres, no
antialias — ``tf.image.resize``), pad zeros bottom/right to the network size.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .anchors import generate_anchors
from .coco import COCO_NUM_CLASSES, LabelSpace, coco_label_space
from .config import PostprocessConfig, PreprocessConfig
from .model import EfficientDet
from .postprocess import Detections, postprocess
from .weights import stored_labels


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


def label_space(num_classes: int, stored: LabelSpace | None = None, label_ids: Sequence[int] | None = None,
                class_names: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Ids and names of a model's outputs: those given (either replaces ``stored``), else those
    stored with its weights, else COCO's for a 90-class model (official checkpoints: output ``c``
    is category id ``c + 1``), else ids ``0..C-1`` named by their index."""
    if label_ids is None and class_names is None:
        if stored is not None:
            label_ids, class_names = stored.ids, stored.names
        elif num_classes == COCO_NUM_CLASSES:
            return coco_label_space()
    ids = list(label_ids) if label_ids is not None else list(range(num_classes))
    names = list(class_names) if class_names is not None else [str(i) for i in ids]
    if len(ids) != num_classes or len(names) != num_classes:
        raise ValueError(f"label_ids ({len(ids)}) and class_names ({len(names)}) must have "
                         f"num_classes={num_classes} entries")
    return ids, names


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[K, 4]`` xyxy clipped to a ``height`` × ``width`` image. ``postprocess`` clips to the padded
    network input, as the official code does; scaled back, that overruns the image on its padded side."""
    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), limit)


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


class Detector:
    """A model plus its anchors, pre/postprocessing and label space; ``detector(images)`` → dicts.

    ``label_ids``/``class_names`` name the model's outputs; by default those stored with its
    weights (``create_model(weights=…)`` keeps them), else COCO's for a 90-class model, else
    ids ``0..C-1`` named by their index (:func:`label_space`).
    """

    def __init__(self, model: EfficientDet, postprocess_config: PostprocessConfig | None = None,
                 device: str | torch.device | None = None, label_ids: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None):
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.device = next(model.parameters()).device
        cfg = model.config
        self.postprocess_config = postprocess_config or cfg.postprocess
        self.anchors = generate_anchors(cfg.image_size, cfg.min_level, cfg.max_level, cfg.anchors).to(self.device)
        self.label_ids, self.class_names = label_space(cfg.num_classes, stored_labels(model), label_ids,
                                                       class_names)

    @torch.inference_mode()
    def detect_batch(self, images: list[torch.Tensor]) -> Detections:
        """Padded detections (class indices, not label ids) for a list of images."""
        cfg = self.model.config
        batch, scales = preprocess([to_chw_tensor(i).to(self.device) for i in images], cfg.image_size,
                                   cfg.preprocess)
        cls_out, box_out = self.model(batch)
        return postprocess(cls_out, box_out, self.anchors, self.postprocess_config, cfg.image_size,
                           scales.to(self.device))

    def __call__(self, images: Any) -> Any:
        """One image → a dict, a list → a list of dicts: ``boxes [K, 4]`` xyxy in original pixels,
        ``scores [K]``, ``labels [K]`` (label ids), ``names`` (K strings); boxes lie within the image."""
        single = not isinstance(images, (list, tuple))
        tensors = [to_chw_tensor(i) for i in ([images] if single else images)]
        dets = self.detect_batch(tensors)
        ids = torch.tensor(self.label_ids)
        results = []
        for b, image in enumerate(tensors):
            n = int(dets.num_valid[b])
            classes = dets.classes[b, :n].cpu()
            boxes = clip_boxes(dets.boxes[b, :n].cpu(), image.shape[1], image.shape[2])
            results.append({"boxes": boxes, "scores": dets.scores[b, :n].cpu(),
                            "labels": ids[classes], "names": [self.class_names[c] for c in classes.tolist()]})
        return results[0] if single else results
