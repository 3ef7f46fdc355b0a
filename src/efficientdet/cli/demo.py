"""``efficientdet demo``: make a shapes-on-photos dataset, fine-tune Lite0 from its ImageNet backbone,
evaluate, and write curves, annotated validation images and the metrics table to ``runs/demo/``.

The whole demo fits ``--time-budget`` minutes on any machine: the first epoch is timed, and the
run's length (and so its learning-rate schedule) is fixed after it to end in time; ``--epochs N``
fixes the length instead, for figures comparable between machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from ..train.recipes import AUTO, RECIPE_NAMES
from .options import add_image_size, parse_image_size

DEFAULT_BUDGET_MINUTES = 8.0
MIN_EPOCHS, MAX_EPOCHS = 4, 48  # what a budget may choose: fewer learn next to nothing, more gain little
# What the epochs' own times leave out: a checkpoint after each, then curves, annotated images and
# metrics.md (a few seconds on a 2-core machine).
FINISH_S = 10.0
# Per 64 images: 8x the official 0.08, which in a run of minutes has not yet left the background
# (the README has the measured runs at the default budget).
DEFAULT_LR = 0.64


def run(args: argparse.Namespace) -> int:
    from ..evaluate import format_metrics
    from ..shapes import make_shapes_dataset
    from ..train import Interrupted, TrainConfig, train
    from ..train.budget import eval_every_for, fit_to_budget

    start = process_start()
    out = Path(args.out)
    budget_s = budget_seconds(args.time_budget, args.epochs)
    # A budgeted run starts as the longest it may be and validates its first epoch, to time a
    # validation too; the plan then fixes both. Checked before the dataset is generated.
    # exist_ok: a demo run replaces the previous one.
    epochs = MAX_EPOCHS if budget_s is not None else args.epochs
    cfg = TrainConfig(model="efficientdet-lite0", out=str(out), epochs=epochs, batch_size=args.batch_size,
                      image_size=parse_image_size(args.image_size), workers=args.workers,
                      eval_every=1 if budget_s is not None else eval_every_for(epochs), seed=args.seed, lr=args.lr,
                      recipe=args.recipe, exist_ok=True)
    _require_scikit_image()
    # Square pictures, as large as the network input's longer side.
    data = make_shapes_dataset(out / "data", args.train_images, args.val_images, max(cfg.image_size), seed=args.seed)
    print(f"dataset: {args.train_images} train / {args.val_images} val images at {data.parent}")
    plan = None
    if budget_s is not None:
        plan = fit_to_budget(budget_s, start, MIN_EPOCHS, MAX_EPOCHS, FINISH_S)
        print(f"time budget {budget_s / 60:g} min: the first epoch is timed, then the run's length is fixed to fit "
              f"({MIN_EPOCHS} to {MAX_EPOCHS} epochs; --epochs N fixes it instead)")
    try:
        summary = train(dataclasses.replace(cfg, data=str(data)), plan=plan)
    except Interrupted as e:
        print(f"efficientdet demo: {e}", file=sys.stderr)
        return 130
    metrics = summary["history"][-1]
    table = format_metrics(metrics)
    (out / "metrics.md").write_text(table + "\n")
    minutes = (time.perf_counter() - start) / 60
    budget = f" (budget {budget_s / 60:g} min)" if budget_s is not None else ""
    print(table)
    print(f"{summary['epochs']} epochs, {minutes:.1f} min{budget}; wrote {out}/metrics.md, {out}/curves.png, "
          f"{out}/val_images/, {out}/weights/")
    return 0


def budget_seconds(time_budget: str | None, epochs: int | None) -> float | None:
    """``--time-budget`` in seconds; None when ``--epochs`` fixes the length instead. Given as
    text, so that a bad value is one line naming the option (argparse adds its usage)."""
    if epochs is not None:
        if time_budget is not None:
            raise ValueError("--epochs fixes the length, --time-budget fits it to the time: give one of them")
        return None
    text = str(DEFAULT_BUDGET_MINUTES) if time_budget is None else time_budget
    try:
        minutes = float(text)
    except ValueError:
        minutes = float("nan")
    if not 0 < minutes < float("inf"):
        raise ValueError(f"--time-budget must be a positive number of minutes, got {text!r}")
    return minutes * 60


def process_start() -> float:
    """When this process started, on the ``time.perf_counter()`` clock: the budget and the time
    printed count the interpreter's start and imports too (seconds; minutes on a busy machine,
    measured). Linux; elsewhere, now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return time.perf_counter()
    return time.perf_counter() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))


def _require_scikit_image() -> None:
    """The shapes are drawn on scikit-image's photos, which only the demo extra installs."""
    try:
        import skimage  # noqa: F401
    except ImportError:
        raise ImportError("the demo draws its dataset on scikit-image's sample photos: "
                          "pip install 'efficientdet[demo]'") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="fine-tune Lite0 on a generated dataset, evaluate, draw")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--time-budget", metavar="MINUTES",
                   help=f"the whole demo's time: the epochs are chosen to fit it (default {DEFAULT_BUDGET_MINUTES:g})")
    p.add_argument("--epochs", type=int,
                   help="fix the epochs instead of fitting them to --time-budget (the README's comparable figure: 24)")
    p.add_argument("--train-images", type=int, default=240)
    p.add_argument("--val-images", type=int, default=60)
    add_image_size(p, default="256")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipe", default=AUTO, choices=RECIPE_NAMES,
                   help="training settings (default auto: finetune for the demo's 240 images, as train picks)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR,
                   help=f"per 64 images (default {DEFAULT_LR:g}: a short run needs more than the official 0.08)")
    p.set_defaults(func=run)
