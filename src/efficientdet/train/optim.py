"""Optimiser and learning-rate schedule of the official recipe (``tf2/train_lib.py``)."""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, scaled: Collection[nn.Parameter] = (),
                 lr_scale: float = 1.0) -> list[dict]:
    """Weight decay on convolution kernels only (official: variables matching ``kernel|weight``).

    Biases, BN parameters and the BiFPN fusion weights are not decayed. The parameters in ``scaled``
    (prediction layers initialised afresh over loaded weights) get ``lr_scale`` times the learning
    rate, in groups of their own (``"lr_scale"``, which the training step reads).
    """
    scaled_ids = {id(p) for p in scaled} if lr_scale != 1.0 else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(d, s): [] for s in (False, True) for d in (True, False)}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            decay = isinstance(module, nn.Conv2d) and name == "weight"
            groups[decay, id(p) in scaled_ids].append(p)
    out = [{"params": groups[True, False], "weight_decay": weight_decay},
           {"params": groups[False, False], "weight_decay": 0.0}]
    out += [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": lr_scale}
            for (decay, new), params in groups.items() if new and params]
    return out


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    scaled: Collection[nn.Parameter] = (), lr_scale: float = 1.0) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay, scaled, lr_scale)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Official: the learning rate is given per 64 images and scaled linearly with the batch."""
    return base_lr * batch_size / 64


def cosine_lr(step: int, lr: float, warmup_init: float, warmup_steps: int, total_steps: int,
              official: bool = False) -> float:
    """Linear warm-up from ``warmup_init``, then a cosine from ``lr`` down to 0 at ``total_steps``.

    The decay's phase is ``(step - warmup) / (total - warmup)``, so that every step after warm-up
    has a smaller, positive learning rate. ``official=True`` is the official ``CosineLrSchedule``:
    its phase ``step / (total - warmup)`` is not shifted by the warm-up and passes pi in the last
    ``warmup`` steps, where the learning rate rises again.
    """
    if step < warmup_steps:
        return warmup_init + step / warmup_steps * (lr - warmup_init)
    decay_steps = max(total_steps - warmup_steps, 1)
    phase = step / decay_steps if official else min(step - warmup_steps, decay_steps) / decay_steps
    return 0.5 * lr * (1 + math.cos(math.pi * phase))
