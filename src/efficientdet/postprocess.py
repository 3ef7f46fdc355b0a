"""Raw head outputs → detections, vectorised over the batch (no per-image Python loop).

Official ``postprocess_global``: per anchor keep the best class, decode its box, one
class-agnostic NMS (gaussian soft-NMS by default, or hard NMS), at most ``max_detections``,
clip to the network input, scale to original-image pixels. Per-class NMS and a pre-NMS
top-k are options. Output is padded to ``max_detections`` rows (score 0, class -1) so that
it has a fixed shape for export; ``num_valid`` counts the real rows.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision.ops import batched_nms

from . import box_coder
from .config import PostprocessConfig


class Detections(NamedTuple):
    boxes: torch.Tensor  # [B, K, 4] xyxy
    scores: torch.Tensor  # [B, K], descending
    classes: torch.Tensor  # [B, K] int64 class index 0..C-1, -1 for padding
    num_valid: torch.Tensor  # [B] int64


def flatten_outputs(
    cls_outputs: list[torch.Tensor], box_outputs: list[torch.Tensor], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level ``[B, A·C, H, W]`` / ``[B, A·4, H, W]`` → ``[B, N, C]`` / ``[B, N, 4]`` in anchor order."""
    batch = cls_outputs[0].shape[0]
    logits = torch.cat([x.permute(0, 2, 3, 1).reshape(batch, -1, num_classes) for x in cls_outputs], 1)
    codes = torch.cat([x.permute(0, 2, 3, 1).reshape(batch, -1, 4) for x in box_outputs], 1)
    return logits, codes


def _select_candidates(logits, codes, anchors, config):
    """Candidates ``(logit, class, code, anchor)``, each ``[B, K, ...]``."""
    batch, num_anchors, num_classes = logits.shape
    if config.class_agnostic:
        best, classes = logits.max(-1)
        if 0 < config.pre_nms_top_k < num_anchors:
            best, idx = best.topk(config.pre_nms_top_k, 1)
            classes = classes.gather(1, idx)
        else:
            idx = torch.arange(num_anchors, device=logits.device).expand(batch, -1)
    else:
        # Per-class: the top (anchor, class) pairs over all classes, as many as anchors by default.
        k = config.pre_nms_top_k if config.pre_nms_top_k > 0 else num_anchors
        best, flat = logits.reshape(batch, -1).topk(min(k, num_anchors * num_classes), 1)
        idx, classes = flat // num_classes, flat % num_classes
    codes = codes.gather(1, idx[..., None].expand(-1, -1, 4))
    return best, classes, codes, anchors[idx]


def _pairwise_iou_one(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of ``box [B, 1, 4]`` with ``boxes [B, K, 4]`` → ``[B, K]``; 0 where an area is empty."""
    lt = torch.maximum(box[..., :2], boxes[..., :2])
    rb = torch.minimum(box[..., 2:], boxes[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda b: (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, sigma: float, score_threshold: float, max_out: int):
    """Gaussian soft-NMS (Bodla et al.), batched: ``[B, K, 4]``, ``[B, K]`` → indices, scores ``[B, max_out]``.

    Greedy: take the best remaining box, decay every other score by exp(-IoU² / σ), repeat.
    This selects the same boxes with the same decayed scores as TF's lazy-update
    NonMaxSuppressionV5 (which the official model calls with σ/2 and the formula exp(-IoU²/2σ')).
    """
    batch = scores.shape[0]
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    live = torch.where(scores > score_threshold, scores, neg_inf)
    out_idx = torch.zeros(batch, max_out, dtype=torch.long, device=scores.device)
    out_scores = torch.zeros(batch, max_out, dtype=scores.dtype, device=scores.device)
    for i in range(max_out):
        best_score, best = live.max(1)
        valid = best_score > score_threshold
        if not bool(valid.any()):
            out_idx, out_scores = out_idx[:, :i], out_scores[:, :i]
            break
        out_idx[:, i] = best
        out_scores[:, i] = torch.where(valid, best_score, torch.zeros_like(best_score))
        chosen = boxes.gather(1, best[:, None, None].expand(-1, 1, 4))
        iou = _pairwise_iou_one(chosen, boxes)
        live = live * torch.exp(-(iou * iou) / sigma)
        live = live.scatter(1, best[:, None], float("-inf"))
        live = torch.where(live > score_threshold, live, neg_inf)
    return out_idx, out_scores


def hard_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float,
             score_threshold: float, max_out: int):
    """Greedy NMS per image (and per group), batched through one ``torchvision.ops.batched_nms``."""
    batch, k = scores.shape
    image = torch.arange(batch, device=scores.device)[:, None].expand(batch, k)
    keep_mask = scores > score_threshold
    flat = keep_mask.reshape(-1).nonzero().squeeze(1)
    ids = (image.reshape(-1) * (int(groups.max()) + 1 if groups.numel() else 1) + groups.reshape(-1))[flat]
    keep = flat[batched_nms(boxes.reshape(-1, 4)[flat], scores.reshape(-1)[flat], ids, iou_threshold)]
    # ``keep`` is sorted by score; rank each kept box within its image, keep the first max_out.
    img = keep // k
    img, order = img.sort(stable=True)
    keep = keep[order]
    counts = torch.bincount(img, minlength=batch)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(len(keep), device=keep.device) - starts[img]
    sel = rank < max_out
    out_idx = torch.zeros(batch, max_out, dtype=torch.long, device=scores.device)
    out_scores = torch.zeros(batch, max_out, dtype=scores.dtype, device=scores.device)
    out_idx[img[sel], rank[sel]] = keep[sel] % k
    out_scores[img[sel], rank[sel]] = scores.reshape(-1)[keep[sel]]
    width = int(counts.clamp(max=max_out).max()) if batch else 0
    return out_idx[:, :width], out_scores[:, :width]


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
    logits, codes = flatten_outputs(cls_outputs, box_outputs, num_classes)
    if logits.shape[1] != anchors.shape[0]:
        raise ValueError(f"{logits.shape[1]} outputs per image but {anchors.shape[0]} anchors")
    best, classes, codes, cand_anchors = _select_candidates(logits, codes, anchors.to(codes.dtype), config)
    scores = torch.sigmoid(best)
    boxes = box_coder.decode(codes, cand_anchors)
    if config.method == "gaussian":
        nms_boxes = boxes
        if not config.class_agnostic:  # keep classes apart: shift each class to its own region
            nms_boxes = boxes + (classes * (boxes.abs().max() * 2 + 1))[..., None]
        idx, det_scores = soft_nms(nms_boxes, scores, config.soft_nms_sigma, config.score_threshold,
                                   config.max_detections)
    else:
        groups = torch.zeros_like(classes) if config.class_agnostic else classes
        idx, det_scores = hard_nms(boxes, scores, groups, config.iou_threshold, config.score_threshold,
                                   config.max_detections)
    valid = det_scores > 0
    det_boxes = boxes.gather(1, idx[..., None].expand(-1, -1, 4))
    det_classes = torch.where(valid, classes.gather(1, idx), torch.full_like(idx, -1))
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
