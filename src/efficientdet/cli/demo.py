"""``efficientdet demo``: make a shapes-on-photos dataset, fine-tune Lite0 from its ImageNet backbone,
evaluate, and write curves, annotated validation images and the metrics table to ``runs/demo/``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import create_model
    from ..anchors import generate_anchors
    from ..data import DetectionDataset, EvalTransform, build_loader, load_dataset_yaml, load_split
    from ..evaluate import format_metrics
    from ..shapes import make_shapes_dataset
    from ..train import TrainConfig, train
    from ..train.engine import evaluate
    from ..train.report import draw_predictions, plot_curves

    start = time.perf_counter()
    out = Path(args.out)
    data = make_shapes_dataset(out / "data", args.train_images, args.val_images, args.image_size, seed=args.seed)
    print(f"dataset: {args.train_images} train / {args.val_images} val images at {data.parent}")
    cfg = TrainConfig(model="efficientdet-lite0", data=str(data), out=str(out), epochs=args.epochs,
                      batch_size=args.batch_size, image_size=args.image_size, workers=args.workers,
                      eval_every=args.epochs, seed=args.seed)
    summary = train(cfg)
    split = load_split(load_dataset_yaml(data), "val")
    model = create_model("efficientdet-lite0", weights=out / "weights" / "best.safetensors",
                         image_size=args.image_size)
    mcfg = model.config
    anchors = generate_anchors(mcfg.image_size, mcfg.min_level, mcfg.max_level, mcfg.anchors)
    loader = build_loader(DetectionDataset(split.samples, EvalTransform(mcfg.image_size, mcfg.preprocess.mean,
                                                                        mcfg.preprocess.std)), 8, train=False)
    with torch.inference_mode():
        metrics, results = evaluate(model, loader, split, anchors, mcfg.postprocess, mcfg.image_size)
    table = format_metrics(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "metrics.md").write_text(table + "\n")
    images = draw_predictions(split, results, out / "val_images")
    curves = plot_curves(summary["history"], out / "curves.png")
    minutes = (time.perf_counter() - start) / 60
    print(table)
    print(f"{minutes:.1f} min; wrote {out}/metrics.md, {len(images)} images in {out}/val_images"
          + (f", {curves}" if curves else ""))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="fine-tune Lite0 on a generated dataset, evaluate, draw (≈ 10 min on 2 CPUs)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train-images", type=int, default=240)
    p.add_argument("--val-images", type=int, default=60)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
