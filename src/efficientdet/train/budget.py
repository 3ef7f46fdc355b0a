"""A run that fits a time budget: time the first epoch, then choose the most epochs that end in time.

The first epoch is warm-up, whose learning rates do not depend on the run's length, so the length
(and with it the cosine schedule) can be fixed after it: :func:`fit_to_budget` is the ``plan``
that :func:`~efficientdet.train.train` calls then.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

from .config import TrainConfig, validates
from .trainer import Plan

VALIDATIONS = 4  # per run, besides the one after the last epoch


def eval_every_for(epochs: int) -> int:
    """Validate about :data:`VALIDATIONS` times in a run (and after its last epoch): curves with a
    few points, at a small share of the run's time."""
    return max(1, epochs // VALIDATIONS)


def seconds_after_first(epochs: int, epoch_s: float, eval_s: float) -> float:
    """What epochs 2 to ``epochs`` take: ``epoch_s`` of training each, and ``eval_s`` for each
    validation at :func:`eval_every_for`'s cadence."""
    every = eval_every_for(epochs)
    validations = sum(validates(epoch, epochs, every) for epoch in range(2, epochs + 1))
    return (epochs - 1) * epoch_s + validations * eval_s


def epochs_within(budget_s: float, elapsed_s: float, epoch_s: float, eval_s: float, low: int, high: int) -> int:
    """The most epochs in [``low``, ``high``] that end within ``budget_s``, ``elapsed_s`` being spent
    with the first epoch done; ``low`` when none does (a budget too small still runs the least).

    A search, not a division: the validation cadence follows the length, so a longer run can cost
    less (7 epochs validate 6 times after the first, 8 epochs 4 times).
    """
    if not 1 <= low <= high:
        raise ValueError(f"epochs_within needs 1 <= low <= high, got {low}, {high}")
    fitting = (n for n in range(high, low - 1, -1) if elapsed_s + seconds_after_first(n, epoch_s, eval_s) <= budget_s)
    return next(fitting, low)


def fit_to_budget(budget_s: float, started: float, low: int, high: int, finish_s: float,
                  log: Callable[[str], None] = print) -> Plan:
    """``train``'s plan: the most epochs in [``low``, ``high``] that end ``finish_s`` (what follows
    the last epoch) before ``budget_s`` after ``started`` (a ``time.perf_counter()``), at the speed
    of the first epoch; it logs what it measured and chose. The first epoch should validate
    (``eval_every=1``) so that a validation is timed too; the run then validates at
    :func:`eval_every_for`'s cadence."""

    def plan(cfg: TrainConfig, record: dict) -> TrainConfig:
        elapsed = time.perf_counter() - started
        epoch_s, eval_s = record["train_s"], record.get("eval_s", 0.0)
        epochs = epochs_within(budget_s - finish_s, elapsed, epoch_s, eval_s, low, high)
        end = elapsed + seconds_after_first(epochs, epoch_s, eval_s) + finish_s
        every = eval_every_for(epochs)
        bound = " (the most)" if epochs == high else " (the least: over the budget)" if end > budget_s else ""
        cadence = "after every epoch" if every == 1 else f"every {every} epochs and after the last"
        log(f"time budget {budget_s / 60:g} min: {elapsed:.0f} s spent up to the end of epoch 1; an epoch trains in "
            f"{epoch_s:.1f} s ({record['images_per_s']:.1f} images/s), a validation takes {eval_s:.1f} s; "
            f"{epochs} epochs{bound}, validating {cadence}, end in ≈ {end / 60:.1f} min")
        return dataclasses.replace(cfg, epochs=epochs, eval_every=every)

    return plan
