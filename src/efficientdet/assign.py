"""Anchor target assignment of the official model, batched over images (no per-image Python loop).

Official pipeline (``tf2/anchors.py`` AnchorLabeler, ``object_detection/argmax_matcher.py``
ArgMaxMatcher with ``force_match_for_each_row=True``, ``target_assigner.py``):

1. IoU of every ground-truth box with every anchor (zero wherever the intersection is zero).
2. Each anchor takes the ground-truth box of highest IoU (the first one on ties).
   IoU ≥ ``match_threshold``: positive; IoU < ``unmatched_threshold``: background; in between:
   ignored (the official labeler sets both thresholds to 0.5, so it never ignores).
3. Each ground-truth box is then forced onto its best anchor (the first one on ties), whatever
   that anchor's IoU and whatever step 2 decided for it; when several boxes pick the same
   anchor, the box that comes first wins (the later one keeps only its threshold matches,
   if any).
4. Positives get the class of their box and its (ty, tx, th, tw) code against the anchor.

Memory: at most three ``[B, M, N]`` float32 tensors at once (the IoU matrix and two
temporaries), e.g. 3 × 157 MB for B=8 images × M=100 boxes × N=49,104 anchors (D0 at 512).
Run it on the training device; split the batch if M is very large.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import box_coder

# Class targets other than a class index (the values of torchvision's Matcher
# BELOW_LOW_THRESHOLD and BETWEEN_THRESHOLDS, and of the official matcher).
BACKGROUND = -1  # below ``unmatched_threshold``: trains the classifier towards "no object"
IGNORE = -2  # between the thresholds: excluded from the classification loss
_POSITIVE = 0  # match state only; a positive's class target is its box's class


class Targets(NamedTuple):
    cls: torch.Tensor  # [B, N] int64: class index 0..C-1 for positives, BACKGROUND or IGNORE
    box: torch.Tensor  # [B, N, 4] (ty, tx, th, tw) codes, zero where not positive
    num_positives: torch.Tensor  # [B] float32


def batched_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of ``boxes [B, M, 4]`` with ``anchors [N, 4]`` (xyxy) → ``[B, M, N]``.

    As the official ``region_similarity_calculator.iou``: areas are not clamped, and a pair
    with zero intersection has IoU 0 even when its union is degenerate (no NaN for empty
    boxes). In place, so that at most three ``[B, M, N]`` float tensors are alive at once.
    """
    assert boxes.dim() == 3 and boxes.shape[-1] == 4 and anchors.dim() == 2 and anchors.shape[-1] == 4
    b = boxes[..., None, :]  # [B, M, 1, 4]
    inter = torch.minimum(b[..., 2], anchors[:, 2]).sub_(torch.maximum(b[..., 0], anchors[:, 0])).clamp_(min=0)
    inter.mul_(torch.minimum(b[..., 3], anchors[:, 3]).sub_(torch.maximum(b[..., 1], anchors[:, 1])).clamp_(min=0))
    empty = inter == 0
    box_area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # [B, M]
    anchor_area = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])  # [N]
    union = (box_area[..., None] + anchor_area).sub_(inter)
    return inter.div_(union).masked_fill_(empty, 0.0)


def _match(iou: torch.Tensor, valid: torch.Tensor, match_threshold: float, unmatched_threshold: float):
    """ArgMaxMatcher with forced matches: ``iou [B, M, N]``, ``valid [B, M]`` → (box index, state), ``[B, N]``.

    The state is _POSITIVE, BACKGROUND or IGNORE; the index is only meaningful for positives.
    Padding rows get IoU −1, below any real box, so they change neither an anchor's argmax nor
    its tie-breaking among real boxes, and are never forced.
    """
    batch, num_boxes, _ = iou.shape
    iou = iou.masked_fill_(~valid[..., None], -1.0)
    best_iou, matches = iou.max(1)  # first box on ties, as tf.argmax
    state = torch.full_like(matches, IGNORE)
    state[best_iou >= match_threshold] = _POSITIVE
    state[best_iou < unmatched_threshold] = BACKGROUND

    # Forced matches: box m claims anchor argmax_n iou[m, n] (first anchor on ties); an anchor
    # claimed by several boxes goes to the lowest m (the official matcher takes the argmax
    # over rows of the one-hot claims, which is the first claiming row).
    best_anchor = iou.argmax(2)  # [B, M]
    rows = torch.arange(num_boxes, device=iou.device).expand(batch, -1)
    claims = torch.full_like(matches, num_boxes)  # num_boxes = "no claim"
    claims.scatter_reduce_(1, best_anchor, torch.where(valid, rows, num_boxes), reduce="amin")
    forced = claims < num_boxes
    matches = torch.where(forced, claims, matches)
    state = torch.where(forced, _POSITIVE, state)
    return matches, state


@torch.no_grad()
def assign_targets(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    match_threshold: float = 0.5,
    unmatched_threshold: float = 0.5,
) -> Targets:
    """Classification and box targets for every anchor of every image.

    Args:
        anchors: ``[N, 4]`` xyxy, from :func:`anchors.generate_anchors`.
        gt_boxes: ``[B, M, 4]`` xyxy in the same (network-input) pixels.
        gt_labels: ``[B, M]`` class index 0..C-1; negative (−1) marks padding, which never
            matches. An image with no real box is all background.
        match_threshold, unmatched_threshold: IoU ≥ the first is positive, < the second is
            background, in between is IGNORE.

    A box whose best IoU is 0 (empty, or outside every anchor) is still forced onto its
    argmax anchor (the first one), as officially; drop such boxes before assignment.
    ``num_positives`` counts positives only. (The official count is ``match != -1``, which
    would include ignored anchors, but the official labeler never ignores any.)
    """
    if not 0.0 <= unmatched_threshold <= match_threshold:
        raise ValueError(f"need 0 <= unmatched_threshold <= match_threshold, got "
                         f"{unmatched_threshold} and {match_threshold}")
    batch, num_boxes = gt_labels.shape
    assert gt_boxes.shape == (batch, num_boxes, 4), f"gt_boxes {tuple(gt_boxes.shape)} vs labels {(batch, num_boxes)}"
    assert anchors.dim() == 2 and anchors.shape[1] == 4
    num_anchors = anchors.shape[0]
    device = anchors.device
    if num_boxes == 0:
        return Targets(
            torch.full((batch, num_anchors), BACKGROUND, dtype=torch.int64, device=device),
            torch.zeros(batch, num_anchors, 4, dtype=anchors.dtype, device=device),
            torch.zeros(batch, dtype=torch.float32, device=device),
        )
    gt_boxes = gt_boxes.to(anchors.dtype)
    valid = gt_labels >= 0
    matches, state = _match(batched_iou(gt_boxes, anchors), valid, match_threshold, unmatched_threshold)
    positive = state == _POSITIVE
    cls = torch.where(positive, gt_labels.long().gather(1, matches), state)
    matched_boxes = gt_boxes.gather(1, matches[..., None].expand(-1, -1, 4))
    # ``where``, not a product: codes of boxes matched to padding may be NaN (log of a negative size).
    box = torch.where(positive[..., None], box_coder.encode(matched_boxes, anchors), 0.0)
    return Targets(cls, box, positive.sum(1, dtype=torch.float32))
