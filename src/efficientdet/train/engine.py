"""One training epoch, read top to bottom (DETR's ``engine.py``), and the loss it steps on.

The loss is an argument, ``loss_fn(model, batch) -> {"loss": …, other parts…}`` (forward pass
included), so that another model's forward and loss (effdet's, in benchmarks/bench_training.py)
run through the same loop: schedule, clipping, AMP scaling, EMA and the non-finite guard.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..assign import assign_targets
from ..data import Batch
from ..loss import LossConfig, detection_loss

LossFn = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf; the checkpoint on disk is the last good one."""


def _global_positives(num_positives: torch.Tensor) -> torch.Tensor:
    """Positives of the whole global batch: every rank normalises by the same count."""
    total = num_positives.sum()
    if dist.is_available() and dist.is_initialized():
        total = total.clone()
        dist.all_reduce(total)
    return total


def efficientdet_loss(anchors: torch.Tensor, loss_config: LossConfig,
                      amp_dtype: torch.dtype | None = None) -> LossFn:
    """Our forward and loss: targets assigned to ``anchors`` (their device is the batch's), the
    forward under autocast when ``amp_dtype`` is set, the loss in float32."""
    device = anchors.device

    def loss_fn(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.images.to(device, non_blocking=True)
        targets = assign_targets(anchors, batch.boxes.to(device), batch.labels.to(device),
                                 loss_config.match_threshold, loss_config.unmatched_threshold)
        positives = _global_positives(targets.num_positives)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            cls_out, box_out = model(images)
        return detection_loss([c.float() for c in cls_out], [b.float() for b in box_out], anchors, targets,
                              loss_config, num_positives_override=positives)

    return loss_fn


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    loss_fn: LossFn,
    *,
    step: int,
    ema=None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float = 10.0,
    world: int = 1,
    frozen_bn: Sequence[nn.Module] = (),
    on_step: Callable[[int, dict], bool] | None = None,
) -> int:
    """Train over ``batches``; returns the global step reached.

    The loss of each rank is normalised by the positives of the *global* batch and scaled by
    ``world``, so that DDP's gradient averaging gives exactly the gradient of one process with
    the whole global batch. ``on_step(step, stats)`` is called after every step (stats: every
    part of the loss, ``lr``, ``grad_norm``, ``images``, ``seconds``) and may return True to stop
    early (a signal asked for a checkpoint).
    """
    model.train()
    for m in frozen_bn:  # BN layers kept in inference mode (fixed statistics)
        m.eval()
    for batch in batches:
        start = time.perf_counter()
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # new heads' factor (optim.param_groups)
        losses = loss_fn(model, batch)
        loss = losses["loss"]
        if not math.isfinite(loss.item()):
            parts = ", ".join(f"{k.removesuffix('_loss')} {v.item():.4g}" for k, v in losses.items() if k != "loss")
            raise NonFiniteLoss(f"non-finite loss at step {step} ({parts})")
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
        stats = {k: v.item() for k, v in losses.items()} | {
            "lr": lr, "grad_norm": float(grad_norm), "images": len(batch.images),
            "seconds": time.perf_counter() - start}
        if on_step is not None and on_step(step, stats):
            break
    return step
