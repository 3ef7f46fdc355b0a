"""Raw head outputs → detections, vectorised over the batch (no per-image Python loop).

Official ``postprocess_global``: per anchor keep the best class, decode its box, one
class-agnostic NMS (gaussian soft-NMS by default, or hard NMS), at most ``max_detections``,
clip to the network input, scale to original-image pixels. Per-class NMS and a pre-NMS
top-k are options. Output is padded to ``max_detections`` rows (score 0, class -1) so that
it has a fixed shape for export; ``num_valid`` counts the real rows.

Speed without changing the result: NMS first runs on each image's best few hundred candidates
and is accepted when provably identical to NMS over all of them (:func:`exact_top_nms`), which
is almost always; the tens of thousands of anchors of a D0 are only visited when it is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torchvision.ops import batched_nms

from . import box_coder
from .config import PostprocessConfig

# Candidates per image of the first, usually final, NMS pass of :func:`exact_top_nms`.
FIRST_NMS_CANDIDATES = 512
# Most boxes for which soft-NMS precomputes the decay of every pair ([B, K, K] floats).
DENSE_SOFT_NMS_MAX = 2048


class Detections(NamedTuple):
    boxes: torch.Tensor  # [B, K, 4] xyxy
    scores: torch.Tensor  # [B, K], descending
    classes: torch.Tensor  # [B, K] int64 class index 0..C-1, -1 for padding
    num_valid: torch.Tensor  # [B] int64


def flatten_levels(outputs: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
    """Per-level ``[B, A·K, H, W]`` → ``[B, N, K]`` in anchor order (level, row, column, anchor)."""
    batch = outputs[0].shape[0]
    return torch.cat([x.permute(0, 2, 3, 1).reshape(batch, -1, per_anchor) for x in outputs], 1)


def flatten_outputs(
    cls_outputs: list[torch.Tensor], box_outputs: list[torch.Tensor], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level ``[B, A·C, H, W]`` / ``[B, A·4, H, W]`` → ``[B, N, C]`` / ``[B, N, 4]`` in anchor order."""
    return flatten_levels(cls_outputs, num_classes), flatten_levels(box_outputs, 4)


def best_class_per_anchor(cls_outputs: list[torch.Tensor], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's best logit and its class, ``[B, N]`` each, in anchor order.

    Reduced level by level before flattening, so the ``[B, N, C]`` logits (17 MB for a D0 image)
    are never copied; the values and the (first) argmax are those of ``flatten_outputs(...).max(-1)``.
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
    it is found afterwards for the few anchors kept (:func:`class_logits_at`)."""
    return torch.cat([x.unflatten(1, (-1, num_classes)).amax(2).permute(0, 2, 3, 1).flatten(1)
                      for x in cls_outputs], 1)


def class_logits_at(cls_outputs: list[torch.Tensor], index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The ``C`` logits ``[B, K, C]`` of the anchors at ``index [B, K]`` (anchor order), read from the
    per-level outputs: what ``flatten_levels(cls_outputs, C).gather(...)`` gives, without the copy."""
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


def _select_candidates(cls_outputs, num_classes, codes, anchors, config):
    """Candidates ``(logit [B, K], class [B, K] or None, anchor index [B, K] or None, code, anchor)``.

    Class-agnostic NMS needs no class: it is None and found later for the kept anchors only. The
    anchor index is None when every anchor is a candidate, in order (nothing gathered).
    """
    batch, num_anchors, _ = codes.shape
    if config.class_agnostic:
        best, classes = best_logit_per_anchor(cls_outputs, num_classes), None
        if not 0 < config.pre_nms_top_k < num_anchors:
            return best, None, None, codes, anchors
        best, idx = best.topk(config.pre_nms_top_k, 1)
    else:
        # Per-class: the top (anchor, class) pairs over all classes, as many as anchors by default.
        k = config.pre_nms_top_k if config.pre_nms_top_k > 0 else num_anchors
        logits = flatten_levels(cls_outputs, num_classes)
        best, flat = logits.reshape(batch, -1).topk(min(k, num_anchors * num_classes), 1)
        idx, classes = flat // num_classes, flat % num_classes
    codes = codes.gather(1, idx[..., None].expand(-1, -1, 4))
    return best, classes, idx, codes, anchors[idx]


def _pairwise_iou_one(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of ``box [B, 1, 4]`` with ``boxes [B, K, 4]`` → ``[B, K]``; 0 where an area is empty."""
    lt = torch.maximum(box[..., :2], boxes[..., :2])
    rb = torch.minimum(box[..., 2:], boxes[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda b: (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def _soft_nms_decay(boxes: torch.Tensor, sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``decay(best [B])`` → exp(-IoU(best, every box)² / σ) ``[B, K]``, the same numbers either way:

    up to :data:`DENSE_SOFT_NMS_MAX` boxes read from a table of every pair made once (a handful
    of tensor ops per selected box); beyond, computed per selection from contiguous coordinate
    planes and areas made once (a quarter of the memory traffic of ``[B, K, 4]`` slices).
    """
    if boxes.shape[1] <= DENSE_SOFT_NMS_MAX:
        iou = _pairwise_iou_one(boxes[:, :, None], boxes[:, None, :])  # [B, K, K]
        table = torch.exp(-(iou * iou) / sigma)

        def from_table(best: torch.Tensor) -> torch.Tensor:
            return table.gather(1, best[:, None, None].expand(-1, 1, table.shape[2]))[:, 0]

        return from_table
    x1, y1, x2, y2 = (c.contiguous() for c in boxes.unbind(-1))
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)

    def computed(best: torch.Tensor) -> torch.Tensor:
        bx1, by1, bx2, by2, barea = (t.gather(1, best[:, None]) for t in (x1, y1, x2, y2, area))
        inter = ((torch.minimum(bx2, x2) - torch.maximum(bx1, x1)).clamp(min=0)
                 * (torch.minimum(by2, y2) - torch.maximum(by1, y1)).clamp(min=0))
        union = barea + area - inter  # the operation order of _pairwise_iou_one: the same roundings
        iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))
        return torch.exp(-(iou * iou) / sigma)

    return computed


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, sigma: float, score_threshold: float, max_out: int):
    """Gaussian soft-NMS (Bodla et al.), batched: ``[B, K, 4]``, ``[B, K]`` → indices, scores ``[B, max_out]``.

    Greedy: take the best remaining box, decay every other score by exp(-IoU² / σ), repeat.
    This selects the same boxes with the same decayed scores as TF's lazy-update
    NonMaxSuppressionV5 (which the official model calls with σ/2 and the formula exp(-IoU²/2σ')).
    """
    decay = _soft_nms_decay(boxes, sigma)
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
        live = (live * decay(best)).scatter(1, best[:, None], float("-inf"))
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
    candidates = boxes.reshape(-1, 4)[flat]
    # batched_nms keeps groups apart by shifting each by (max coordinate + 1), which holds only for
    # non-negative coordinates; a translation changes no IoU, so move the boxes there first.
    if candidates.numel():
        candidates = candidates - candidates.min()
    keep = flat[batched_nms(candidates, scores.reshape(-1)[flat], ids, iou_threshold)]
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


def _nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None, config: PostprocessConfig):
    """The configured NMS kind → indices, scores ``[B, ≤max]`` (soft-NMS boxes already class-separated;
    ``classes`` None: class-agnostic)."""
    if config.method == "gaussian":
        return soft_nms(boxes, scores, config.soft_nms_sigma, config.score_threshold, config.max_detections)
    groups = torch.zeros_like(scores, dtype=torch.long) if classes is None else classes
    return hard_nms(boxes, scores, groups, config.iou_threshold, config.score_threshold, config.max_detections)


def exact_top_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None,
                  config: PostprocessConfig, candidates: int = FIRST_NMS_CANDIDATES):
    """The configured NMS over every box, run on each image's top ``candidates`` when provably the same.

    Both NMS kinds select boxes in order of their current score, and a score only ever goes
    down; a box left out can never be selected, nor change any other box's score, while each
    selected score beats the best score left out, ``bound``. So the result on the top ``k`` is
    the full result when, per image, the last selected score is above ``bound`` and either all
    ``max_detections`` were selected or nothing left out passes the score threshold. Otherwise
    ``k`` grows (8×, or to every box above the lowest score selected) and NMS is redone, at
    worst on every box. Candidates keep their anchor order, so ties between equal scores break
    as on the full set. ``classes`` is only used when the config is not class-agnostic.
    """
    if config.class_agnostic:
        classes = None  # the config decides; classes given for a class-agnostic config are ignored
    if config.method == "gaussian" and classes is not None:
        # Keep classes apart by shifting each to its own region; the shift is fixed here, on every
        # box, because its size changes how the IoUs round.
        boxes = boxes + (classes * (boxes.abs().max() * 2 + 1))[..., None]
    total = scores.shape[1]
    k = candidates
    while k < total:
        top, idx = scores.topk(k + 1, 1)
        bound = top[:, -1]
        idx = idx[:, :k].sort(1).values
        sub_classes = classes.gather(1, idx) if classes is not None else None
        sub_idx, sub_scores = _nms(boxes.gather(1, idx[..., None].expand(-1, -1, 4)), scores.gather(1, idx),
                                   sub_classes, config)
        num = (sub_scores > 0).sum(1)
        last = sub_scores.gather(1, (num - 1).clamp(min=0)[:, None])[:, 0] if sub_scores.shape[1] else bound
        complete = (num == config.max_detections) | (bound <= config.score_threshold)
        if bool(((num == 0) | (last > bound)).logical_and(complete).all()):
            return idx.gather(1, sub_idx), sub_scores
        # Every box scoring above the lowest score selected (or the threshold, when too few were)
        # was in the running: grow to at least all of them, so that one retry usually settles it.
        floor = torch.where(complete & (num > 0), last, torch.full_like(last, config.score_threshold))
        k = max(8 * k, int((scores > floor[:, None]).sum(1).max()) + 1)
    return _nms(boxes, scores, classes, config)


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
    best, classes, cand_index, codes, cand_anchors = _select_candidates(cls_outputs, num_classes, codes,
                                                                        anchors.to(codes.dtype), config)
    scores = torch.sigmoid(best)
    boxes = box_coder.decode(codes, cand_anchors)
    idx, det_scores = exact_top_nms(boxes, scores, classes, config)
    valid = det_scores > 0
    det_boxes = boxes.gather(1, idx[..., None].expand(-1, -1, 4))
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
