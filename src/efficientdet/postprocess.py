"""Raw head outputs → detections, vectorised over the batch (no per-image Python loop).

Official ``postprocess_global``: per anchor keep the best class, decode its box, one
class-agnostic NMS (gaussian soft-NMS by default, or hard NMS), at most ``max_detections``,
clip to the network input, scale to original-image pixels. Per-class NMS and a pre-NMS
top-k are options. Output is padded to ``max_detections`` rows (score 0, class -1) so that
it has a fixed shape for export; ``num_valid`` counts the real rows.

NMS (:func:`efficientdet.nms.nms`) is exact over every candidate and bounded as TF's is:
at most ``max_detections`` selections, each comparing one box with the candidates in play.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import box_coder
from .config import PostprocessConfig
from .nms import nms



class Detections(NamedTuple):
    boxes: torch.Tensor  # [B, K, 4] xyxy
    scores: torch.Tensor  # [B, K], descending
    classes: torch.Tensor  # [B, K] int64 class index 0..C-1, -1 for padding
    num_valid: torch.Tensor  # [B] int64


def flatten_levels(outputs: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
    """Per-level ``[B, A·K, H, W]`` → ``[B, N, K]`` in anchor order (level, row, column, anchor)."""
    batch = outputs[0].shape[0]
    return torch.cat([x.permute(0, 2, 3, 1).reshape(batch, -1, per_anchor) for x in outputs], 1)


def best_class_per_anchor(cls_outputs: list[torch.Tensor], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's best logit and its class, ``[B, N]`` each, in anchor order.

    Reduced level by level before flattening, so the ``[B, N, C]`` logits (17 MB for a D0 image)
    are never copied; the values and the (first) argmax are those of ``flatten_levels(...).max(-1)``.
    """
    best, classes = [], []
    for x in cls_outputs:
        value, index = x.unflatten(1, (-1, num_classes)).max(2)  # [B, A, H, W]
        best.append(value.permute(0, 2, 3, 1).flatten(1))
        classes.append(index.permute(0, 2, 3, 1).flatten(1))
    return torch.cat(best, 1), torch.cat(classes, 1)


def best_logit_per_anchor(cls_outputs: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Each anchor's best logit ``[B, N]``: :func:`best_class_per_anchor` without the class, which
    costs more than the maximum itself (an arg-max over strided memory); NMS does not need it, so
    it is found afterwards for the few anchors kept (:func:`class_logits_at`).

    On the CPU the maximum is taken by numpy, over the memory as it lies (the class axis inner for
    channels-last outputs, a row of pixels inner for NCHW ones): its reductions along either axis
    run several times faster there than torch's, and this one reads every logit of the image.
    """
    if _numpy_readable(cls_outputs[0]):
        return torch.from_numpy(np.concatenate([_numpy_best(x, num_classes) for x in cls_outputs], 1))
    return torch.cat([x.unflatten(1, (-1, num_classes)).amax(2).permute(0, 2, 3, 1).flatten(1)
                      for x in cls_outputs], 1)


def _numpy_readable(x: torch.Tensor) -> bool:
    """Whether numpy can read ``x`` in place (the CPU fast paths here): on the CPU, in a dtype it has."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _numpy_best(x: torch.Tensor, num_classes: int) -> np.ndarray:
    """One level's ``[B, A·C, H, W]`` logits → each anchor's best ``[B, H·W·A]``, in anchor order."""
    b, channels, h, w = x.shape
    x = x.detach()
    if x.is_contiguous(memory_format=torch.channels_last):  # [B, H, W, A·C] in memory
        return x.permute(0, 2, 3, 1).numpy().reshape(b, h * w * channels // num_classes, num_classes).max(2)
    best = x.contiguous().numpy().reshape(b, channels // num_classes, num_classes, h * w).max(2)  # [B, A, HW]
    return best.transpose(0, 2, 1).reshape(b, -1)


def class_logits_at(cls_outputs: list[torch.Tensor], index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The ``C`` logits ``[B, K, C]`` of the anchors at ``index [B, K]`` (anchor order), read from the
    per-level outputs: what ``flatten_levels(cls_outputs, C).gather(...)`` gives, without the copy.
    On the CPU read by numpy, whose indexing follows any memory layout at a fraction of torch's
    per-call cost (a handful of calls per level here)."""
    if _numpy_readable(cls_outputs[0]):
        return torch.from_numpy(_numpy_logits_at(cls_outputs, index.numpy(), num_classes))
    batch, k = index.shape
    images = torch.arange(batch, device=index.device)[:, None].expand(-1, k)
    out = cls_outputs[0].new_zeros(batch, k, num_classes)
    start = 0
    for x in cls_outputs:
        per_anchor = x.unflatten(1, (-1, num_classes))  # [B, A, C, H, W]
        anchors, width = per_anchor.shape[1], x.shape[3]
        count = anchors * x.shape[2] * width
        local = (index - start).clamp(0, count - 1)
        row, rest = local // (width * anchors), local % (width * anchors)
        values = per_anchor[images, rest % anchors, :, row, rest // anchors]  # [B, K, C]
        out = torch.where(((index >= start) & (index < start + count))[..., None], values, out)
        start += count
    return out


def _numpy_logits_at(cls_outputs: list[torch.Tensor], index: np.ndarray, num_classes: int) -> np.ndarray:
    """:func:`class_logits_at` for CPU outputs, level by level through numpy views of their memory."""
    batch, k = index.shape
    out = np.zeros((batch, k, num_classes), cls_outputs[0].numpy().dtype)
    start = 0
    for x in cls_outputs:
        b, channels, h, w = x.shape
        anchors = channels // num_classes
        at = np.nonzero((index >= start) & (index < start + anchors * h * w))
        local = index[at] - start  # anchor order within the level: (row, column, anchor)
        row, rest = np.divmod(local, w * anchors)
        column, anchor = np.divmod(rest, anchors)
        channel = anchor[:, None] * num_classes + np.arange(num_classes)
        out[at] = x.detach().numpy()[at[0][:, None], channel, row[:, None], column[:, None]]
        start += anchors * h * w
    return out


def _select_candidates(cls_outputs, num_classes, num_anchors, config):
    """Candidates ``(logit [B, K], class [B, K] or None, anchor index [B, K] or None)``.

    Class-agnostic NMS needs no class: it is None and found later for the kept anchors only. The
    anchor index is None when every anchor is a candidate, in order (nothing gathered).
    """
    if config.class_agnostic:
        best = best_logit_per_anchor(cls_outputs, num_classes)
        if not 0 < config.pre_nms_top_k < num_anchors:
            return best, None, None
        best, idx = best.topk(config.pre_nms_top_k, 1)
        return best, None, idx
    # Per-class: the top (anchor, class) pairs over all classes, as many as anchors by default.
    k = config.pre_nms_top_k if config.pre_nms_top_k > 0 else num_anchors
    logits = flatten_levels(cls_outputs, num_classes)
    best, flat = logits.reshape(logits.shape[0], -1).topk(min(k, num_anchors * num_classes), 1)
    return best, flat % num_classes, flat // num_classes


def postprocess(
    cls_outputs: list[torch.Tensor],
    box_outputs: list[torch.Tensor],
    anchors: torch.Tensor,
    config: PostprocessConfig,
    image_size: tuple[int, int],
    image_scales: torch.Tensor | None = None,
) -> Detections:
    """Detections in original-image pixels (network-input pixels when ``image_scales`` is None).

    Args:
        cls_outputs, box_outputs: the model's per-level outputs.
        anchors: ``[N, 4]`` xyxy from :func:`anchors.generate_anchors`.
        image_size: network input (height, width): boxes are clipped to it before scaling,
            as officially (so a box may extend past the original image into the padding).
        image_scales: ``[B]`` original / network scale, from preprocessing.
    """
    num_classes = cls_outputs[0].shape[1] // (box_outputs[0].shape[1] // 4)
    codes = flatten_levels(box_outputs, 4)
    if codes.shape[1] != anchors.shape[0]:
        raise ValueError(f"{codes.shape[1]} outputs per image but {anchors.shape[0]} anchors")
    best, classes, cand_index = _select_candidates(cls_outputs, num_classes, anchors.shape[0], config)
    scores = torch.sigmoid(best)
    anchors = anchors.to(codes.dtype)

    def boxes_at(index: torch.Tensor | None) -> torch.Tensor:
        """Candidates ``[B, K]`` (None: all of them) → their decoded boxes: NMS's windows decode only
        those they reach; its compiled kernel takes them all, which costs less than gathering."""
        if index is None:
            if cand_index is None:
                return box_coder.decode(codes, anchors)
            index = torch.arange(cand_index.shape[1]).expand(cand_index.shape[0], -1)
        index = index.to(codes.device)
        anchor_index = index if cand_index is None else cand_index.gather(1, index)
        return box_coder.decode(codes.gather(1, anchor_index[..., None].expand(-1, -1, 4)), anchors[anchor_index])

    idx, det_scores = nms(boxes_at, scores, classes, config)
    valid = det_scores > 0
    det_boxes = boxes_at(idx)
    if classes is None:  # class-agnostic: each kept anchor's best class, as argmax finds it first
        anchor_idx = idx if cand_index is None else cand_index.gather(1, idx)
        det_classes = class_logits_at(cls_outputs, anchor_idx, num_classes).argmax(-1)
    else:
        det_classes = classes.gather(1, idx)
    det_classes = torch.where(valid, det_classes, torch.full_like(idx, -1))
    h, w = image_size
    limit = torch.tensor([w, h, w, h], dtype=det_boxes.dtype, device=det_boxes.device)
    det_boxes = torch.minimum(det_boxes.clamp(min=0), limit)
    if image_scales is not None:
        det_boxes = det_boxes * image_scales.to(det_boxes.dtype)[:, None, None]
    det_boxes = det_boxes * valid[..., None]
    pad = config.max_detections - idx.shape[1]
    if pad:
        det_boxes = torch.nn.functional.pad(det_boxes, (0, 0, 0, pad))
        det_scores = torch.nn.functional.pad(det_scores, (0, pad))
        det_classes = torch.nn.functional.pad(det_classes, (0, pad), value=-1)
    return Detections(det_boxes, det_scores, det_classes, valid.sum(1))
