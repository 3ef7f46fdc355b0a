"""``efficientdet demo``: make a shapes-on-photos dataset, fine-tune Lite0 from its ImageNet backbone,
evaluate, and write curves, annotated validation images and the metrics table to ``runs/demo/``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .options import add_image_size, parse_image_size


def run(args: argparse.Namespace) -> int:
    from ..evaluate import format_metrics
    from ..shapes import make_shapes_dataset
    from ..train import Interrupted, TrainConfig, train

    start = time.perf_counter()
    out = Path(args.out)
    # Checked before the dataset is generated. exist_ok: a demo run replaces the previous one.
    cfg = TrainConfig(model="efficientdet-lite0", out=str(out), epochs=args.epochs, batch_size=args.batch_size,
                      image_size=parse_image_size(args.image_size), workers=args.workers,
                      eval_every=max(1, args.epochs // 4), seed=args.seed, lr=args.lr, exist_ok=True)
    _require_scikit_image()
    # Square pictures, as large as the network input's longer side.
    data = make_shapes_dataset(out / "data", args.train_images, args.val_images, max(cfg.image_size), seed=args.seed)
    print(f"dataset: {args.train_images} train / {args.val_images} val images at {data.parent}")
    try:
        summary = train(dataclasses.replace(cfg, data=str(data)))
    except Interrupted as e:
        print(f"efficientdet demo: {e}", file=sys.stderr)
        return 130
    metrics = summary["history"][-1]
    table = format_metrics(metrics)
    (out / "metrics.md").write_text(table + "\n")
    minutes = (time.perf_counter() - start) / 60
    print(table)
    print(f"{minutes:.1f} min; wrote {out}/metrics.md, {out}/curves.png, {out}/val_images/, {out}/weights/")
    return 0


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
    p.add_argument("--epochs", type=int, default=24,
                   help="the README gives the time and AP of the default, with the machine they were measured on")
    p.add_argument("--train-images", type=int, default=240)
    p.add_argument("--val-images", type=int, default=60)
    add_image_size(p, default="256")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.08, help="per 64 images (official 0.08)")
    p.set_defaults(func=run)
