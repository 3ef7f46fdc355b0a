"""One training epoch and one evaluation pass, read top to bottom (DETR's ``engine.py``)."""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..assign import assign_targets
from ..config import PostprocessConfig
from ..data import DatasetSplit
from ..evaluate import coco_metrics, results_from_detections
from ..loss import LossConfig, detection_loss
from ..postprocess import postprocess


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf; the checkpoint on disk is the last good one."""


def _global_positives(num_positives: torch.Tensor) -> torch.Tensor:
    """Positives of the whole global batch: every rank normalises by the same count."""
    total = num_positives.sum()
    if dist.is_available() and dist.is_initialized():
        total = total.clone()
        dist.all_reduce(total)
    return total


def train_one_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    anchors: torch.Tensor,
    loss_config: LossConfig,
    *,
    step: int,
    ema=None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    clip_grad_norm: float = 10.0,
    world: int = 1,
    frozen_bn: Sequence[nn.Module] = (),
    on_step: Callable[[int, dict], bool] | None = None,
) -> int:
    """Train over ``batches``; returns the global step reached.

    The loss of each rank is normalised by the positives of the *global* batch and scaled by
    ``world``, so that DDP's gradient averaging gives exactly the gradient of one process with
    the whole global batch. ``on_step(step, stats)`` is called after every step and may return
    True to stop early (a signal asked for a checkpoint).
    """
    device = anchors.device
    model.train()
    for m in frozen_bn:  # BN layers kept in inference mode (fixed statistics)
        m.eval()
    for batch in batches:
        start = time.perf_counter()
        images = batch.images.to(device, non_blocking=True)
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        targets = assign_targets(anchors, batch.boxes.to(device), batch.labels.to(device),
                                 loss_config.match_threshold, loss_config.unmatched_threshold)
        positives = _global_positives(targets.num_positives)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            cls_out, box_out = model(images)
        losses = detection_loss([c.float() for c in cls_out], [b.float() for b in box_out], anchors, targets,
                                loss_config, num_positives_override=positives)
        loss = losses["loss"]
        if not math.isfinite(loss.item()):
            raise NonFiniteLoss(f"non-finite loss at step {step} (cls {losses['cls_loss'].item():.4g}, "
                                f"box {losses['box_loss'].item():.4g})")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss * world).backward()
            scaler.unscale_(optimizer)
        else:
            (loss * world).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update(model)
        step += 1
        stats = {"loss": loss.item(), "cls_loss": losses["cls_loss"].item(), "box_loss": losses["box_loss"].item(),
                 "lr": lr, "grad_norm": float(grad_norm), "images": len(images),
                 "seconds": time.perf_counter() - start}
        if on_step is not None and on_step(step, stats):
            break
    return step


@torch.inference_mode()
def predict_split(model: nn.Module, batches: Iterable, anchors: torch.Tensor, post: PostprocessConfig,
                  image_size: tuple[int, int], label_ids: list[int],
                  amp_dtype: torch.dtype | None = None) -> list[dict]:
    """COCO results (original pixels, the dataset's label ids) for every image of ``batches``."""
    model.eval()
    device = anchors.device
    ids = torch.tensor(label_ids)
    results = []
    for batch in batches:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            cls_out, box_out = model(batch.images.to(device))
        scales = torch.tensor([t["image_scale"] for t in batch.targets], device=device)
        dets = postprocess([c.float() for c in cls_out], [b.float() for b in box_out], anchors, post, image_size,
                           scales)
        for i, target in enumerate(batch.targets):
            n = int(dets.num_valid[i])
            classes = dets.classes[i, :n].cpu()
            results += results_from_detections(target["image_id"], dets.boxes[i, :n].cpu().numpy(),
                                               dets.scores[i, :n].cpu().numpy(), ids[classes].numpy())
    return results


def coco_ground_truth(split: DatasetSplit) -> dict:
    """A split as a COCO ground-truth dict (crowd / difficult objects as ``iscrowd``)."""
    from ..data import image_size

    images, annotations = [], []
    for sample in split.samples:
        width, height = sample.width, sample.height
        if width is None or height is None:
            width, height = image_size(sample.image_path)
        images.append({"id": sample.image_id, "width": width, "height": height,
                       "file_name": sample.image_path.name})
        for box, label, crowd in zip(sample.boxes.tolist(), sample.labels.tolist(), sample.crowd.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": sample.image_id,
                                "category_id": split.label_ids[label], "bbox": [box[0], box[1], w, h],
                                "area": w * h, "iscrowd": int(crowd)})
    categories = [{"id": i, "name": n} for i, n in zip(split.label_ids, split.names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def evaluate(model: nn.Module, batches: Iterable, split: DatasetSplit, anchors: torch.Tensor,
             post: PostprocessConfig, image_size: tuple[int, int], amp_dtype: torch.dtype | None = None,
             label_ids: list[int] | None = None) -> tuple[dict[str, float], list[dict]]:
    """COCO metrics of ``model`` on ``split``; ``label_ids`` maps the model's outputs to the split's
    category ids (default: the split's own, i.e. a model trained on this label space)."""
    results = predict_split(model, batches, anchors, post, image_size, label_ids or split.label_ids, amp_dtype)
    return coco_metrics(coco_ground_truth(split), results), results
