"""Detection loss of the official trainer (``tf2/train_lib.py`` FocalLoss, BoxLoss, BoxIouLoss,
``EfficientDetNetTrain._detection_loss``), as pure functions of flattened outputs and targets.

Every term is a *sum* over anchors; :func:`detection_loss` divides by the official
normalisers: the classification loss by ``P + 1`` and the box losses by ``(P + 1) · 4``, where
``P`` is the number of positive anchors in the whole batch. The loss is computed in float32
whatever the outputs' dtype (the official trainer casts fp16 outputs to fp32 first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

from . import box_coder
from .assign import IGNORE, Targets

IouLossType = Literal["none", "giou", "ciou"]


def flatten_outputs(
    cls_outputs: list[torch.Tensor], box_outputs: list[torch.Tensor], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level ``[B, A·C, H, W]`` / ``[B, A·4, H, W]`` → ``[B, N, C]`` / ``[B, N, 4]`` in anchor order
    (level, row, column, anchor): that of :func:`~efficientdet.anchors.generate_anchors`, so of the targets."""
    def flatten(outputs: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
        return torch.cat([x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, per_anchor) for x in outputs], 1)

    return flatten(cls_outputs, num_classes), flatten(box_outputs, 4)


@dataclass(frozen=True)
class LossConfig:
    """Official defaults (``hparams_config.py`` default_detection_configs)."""

    alpha: float = 0.25
    gamma: float = 1.5
    label_smoothing: float = 0.0
    delta: float = 0.1  # Huber: quadratic below, linear above (about the mean |code|)
    box_loss_weight: float = 50.0
    iou_loss_type: IouLossType = "none"
    iou_loss_weight: float = 1.0
    match_threshold: float = 0.5
    unmatched_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.iou_loss_type not in ("none", "giou", "ciou"):
            raise ValueError(f"iou_loss_type must be 'none', 'giou' or 'ciou', got {self.iou_loss_type!r}")
        if not 0.0 <= self.unmatched_threshold <= self.match_threshold:
            raise ValueError("need 0 <= unmatched_threshold <= match_threshold, got "
                             f"{self.unmatched_threshold} and {self.match_threshold}")


def focal_loss(
    logits: torch.Tensor,
    cls_targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 1.5,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Sigmoid focal loss summed over every non-ignored anchor and class → scalar.

    Args:
        logits: ``[B, N, C]``.
        cls_targets: ``[B, N]`` class index, BACKGROUND (−1: all-zero one-hot) or IGNORE (−2:
            contributes nothing).

    Official FocalLoss: ``α_t · (1 − p_t)^γ · BCE(logit, y_smooth)`` where ``p_t`` and ``α_t``
    come from the *unsmoothed* one-hot ``y`` and only the cross-entropy sees
    ``y_smooth = y · (1 − ε) + ε / 2``. ``torchvision.ops.sigmoid_focal_loss`` computes the same
    thing without smoothing but would take ``p_t`` from smoothed targets, hence this version
    (tests check that the two agree when ``ε = 0``).
    """
    assert logits.dim() == 3 and cls_targets.shape == logits.shape[:2], (logits.shape, cls_targets.shape)
    num_classes = logits.shape[-1]
    # One-hot in which BACKGROUND and IGNORE rows are all zero, as tf.one_hot of a negative index.
    y = (cls_targets[..., None] == torch.arange(num_classes, device=logits.device)).to(logits.dtype)
    prob = torch.sigmoid(logits)
    p_t = y * prob + (1 - y) * (1 - prob)
    alpha_t = y * alpha + (1 - y) * (1 - alpha)
    y_smooth = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    ce = F.binary_cross_entropy_with_logits(logits, y_smooth, reduction="none")
    loss = alpha_t * (1.0 - p_t) ** gamma * ce
    return (loss * (cls_targets != IGNORE)[..., None]).sum()


def huber_loss(
    box_pred: torch.Tensor, box_targets: torch.Tensor, positive_mask: torch.Tensor, delta: float = 0.1
) -> torch.Tensor:
    """Huber loss of the codes summed over positive anchors and coordinates → scalar.

    Args:
        box_pred, box_targets: ``[B, N, 4]`` (ty, tx, th, tw).
        positive_mask: ``[B, N]`` bool.

    Per coordinate ``0.5 x²`` if ``|x| ≤ δ`` else ``δ (|x| − δ/2)`` (Keras ``Huber``). As the
    official BoxLoss (whose mask is ``box_targets != 0``, train_lib.py:430), a coordinate whose
    target is exactly 0 is left out too, e.g. ``ty`` of a box centred on its anchor.
    """
    assert box_pred.shape == box_targets.shape and box_pred.shape[-1] == 4, (box_pred.shape, box_targets.shape)
    assert positive_mask.shape == box_pred.shape[:-1], (positive_mask.shape, box_pred.shape)
    mask = positive_mask[..., None] & (box_targets != 0)
    loss = F.huber_loss(box_pred, box_targets, reduction="none", delta=delta)
    return torch.where(mask, loss, 0.0).sum()


def iou_box_loss(
    box_pred: torch.Tensor,
    box_targets: torch.Tensor,
    anchors: torch.Tensor,
    positive_mask: torch.Tensor,
    loss_type: Literal["giou", "ciou"] = "giou",
) -> torch.Tensor:
    """``1 − GIoU`` (or ``1 − CIoU``) of decoded predicted and target boxes, summed over positives → scalar.

    Args:
        box_pred, box_targets: ``[B, N, 4]`` codes; anchors: ``[N, 4]``; positive_mask: ``[B, N]``.

    Differs from the official BoxIouLoss on purpose where that one is wrong: it pairs the
    outputs, concatenated level by level, with anchors tiled image by image (so only batch
    size 1 is right), and it zeroes each decoded coordinate whose *code* is exactly 0. The CIoU
    value is the official one; its gradient is plain autograd, not the official custom gradient
    of the aspect term.
    """
    assert box_pred.shape == box_targets.shape and positive_mask.shape == box_pred.shape[:-1]
    anchor_pos = anchors.expand(positive_mask.shape + (4,))[positive_mask]
    pred = box_coder.decode(box_pred[positive_mask], anchor_pos)
    target = box_coder.decode(box_targets[positive_mask], anchor_pos)
    fn = generalized_box_iou_loss if loss_type == "giou" else complete_box_iou_loss
    return fn(pred, target, reduction="sum")


def detection_loss(
    cls_outputs: list[torch.Tensor],
    box_outputs: list[torch.Tensor],
    anchors: torch.Tensor,
    targets: Targets,
    config: LossConfig = LossConfig(),
    num_positives_override: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Total loss ``cls + box_loss_weight · box + iou_loss_weight · box_iou`` and its parts.

    Args:
        cls_outputs, box_outputs: the model's per-level ``[B, A·C, H, W]`` / ``[B, A·4, H, W]``.
        anchors: ``[N, 4]`` (used by the IoU loss only).
        targets: from :func:`assign.assign_targets` for the same anchors.
        num_positives_override: replaces ``targets.num_positives.sum()``; under DDP pass its mean
            over replicas (the official ``positives_momentum < 0`` option, train_lib.py:532-533)
            so that every replica divides by the same number. 1 is added either way.

    Returns ``loss``, ``cls_loss``, ``box_loss`` (before its weight) and ``box_iou_loss`` (0
    when ``iou_loss_type`` is ``'none'``), all scalars.
    """
    num_classes = cls_outputs[0].shape[1] // (box_outputs[0].shape[1] // 4)
    logits, codes = flatten_outputs(cls_outputs, box_outputs, num_classes)
    logits, codes = logits.float(), codes.float()
    if logits.shape[:2] != targets.cls.shape or codes.shape != targets.box.shape:
        raise ValueError(f"outputs {tuple(logits.shape[:2])} do not match targets {tuple(targets.cls.shape)}")
    num_positives = targets.num_positives.sum() if num_positives_override is None else num_positives_override
    normalizer = num_positives.float() + 1.0  # official: never divide by 0 (train_lib.py:517)
    positive = targets.cls >= 0
    box_targets = targets.box.float()

    cls_loss = focal_loss(logits, targets.cls, config.alpha, config.gamma, config.label_smoothing) / normalizer
    box_loss = huber_loss(codes, box_targets, positive, config.delta) / (normalizer * 4.0)
    if config.iou_loss_type == "none":
        box_iou_loss = torch.zeros((), device=codes.device)
    else:
        iou_sum = iou_box_loss(codes, box_targets, anchors.float(), positive, config.iou_loss_type)
        box_iou_loss = iou_sum / (normalizer * 4.0)
    loss = cls_loss + config.box_loss_weight * box_loss + config.iou_loss_weight * box_iou_loss
    return {"loss": loss, "cls_loss": cls_loss, "box_loss": box_loss, "box_iou_loss": box_iou_loss}
