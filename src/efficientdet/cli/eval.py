"""``efficientdet eval``: COCO metrics of a model on a dataset split, or of an existing results file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import (add_device, add_image_size, add_model, add_nms, add_weights, postprocess_overrides,
                      resolve_image_size)


def run(args: argparse.Namespace) -> int:
    """Under ``torchrun`` each rank predicts its shard of the split; rank 0 alone prints and writes."""
    from ..data import load_dataset_yaml, load_split
    from ..distributed import init_distributed
    from ..evaluate import coco_ground_truth, coco_metrics, format_metrics, load_results

    # Options first: a bad one fails before the dataset is read.
    nms = postprocess_overrides(args)
    image_size = resolve_image_size(args, args.model)
    overrides = {"image_size": image_size} if image_size else {}
    rank, world, device = init_distributed(args.device if args.predictions is None else "cpu")
    split = load_split(load_dataset_yaml(args.data), args.split)
    if rank == 0:
        print(f"{args.split}: {split.report.summary()}")
    if args.predictions:
        if rank != 0:
            return 0
        gt = coco_ground_truth(split)
        results = load_results(args.predictions, [i["id"] for i in gt["images"]], split.label_ids)
        if "score_threshold" in nms:  # as NMS keeps them: above the threshold
            results = [r for r in results if r["score"] > nms["score_threshold"]]
        metrics = coco_metrics(gt, results)
    else:
        metrics, results = _evaluate_model(args, split, nms, overrides, device, rank, world)
        if rank != 0:
            return 0
        if args.save_predictions:
            Path(args.save_predictions).write_text(json.dumps(results))
    print(format_metrics(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def _evaluate_model(args: argparse.Namespace, split, nms: dict, overrides: dict, device, rank: int, world: int):
    """(metrics, results) of ``--model``/``--weights`` on this rank's shard of ``split`` (see evaluate)."""
    from .. import create_model
    from ..config import evaluation_postprocess, override
    from ..evaluate import eval_loader, evaluate
    from ..inference import Detector
    from ..inference.backends import model_backend

    if not args.model or not args.weights:
        raise ValueError("give --model and --weights, or --predictions RESULTS.json")
    model = create_model(args.model, weights=args.weights, **overrides)
    label_ids = model_label_ids(model, split, args) or split.label_ids
    cfg = override(model.config, **nms)
    post = cfg.postprocess if args.nms_scope == "global" else evaluation_postprocess(cfg.postprocess)
    detector = Detector(model_backend(model, device), post, label_ids=label_ids)
    return evaluate(detector, eval_loader(split, cfg, args.batch_size, args.workers, rank, world), split)


def model_label_ids(model, split, args: argparse.Namespace) -> list[int] | None:
    """The split's category id of each model output: those stored with the weights (training's),
    else COCO's for a 90-class model on a COCO-id dataset (official checkpoints: output c is id
    c + 1), else None (output c is the split's c-th category, which needs as many classes)."""
    from ..coco import coco_label_space, predicts_coco
    from ..weights import stored_labels

    stored = stored_labels(model)
    if stored is not None:
        unknown = sorted(set(stored.ids) - set(split.label_ids))
        if unknown:
            raise ValueError(f"{args.weights}: trained on category ids {unknown} that {args.data} does not have "
                             f"(it has {split.label_ids})")
        return list(stored.ids)
    coco_ids = coco_label_space()[0]
    if predicts_coco(model.config.num_classes) and set(split.label_ids) <= set(coco_ids):
        return coco_ids
    if model.config.num_classes != split.num_classes:
        raise ValueError(f"{args.weights}: the model has {model.config.num_classes} classes, "
                         f"{args.data} has {split.num_classes}")
    return None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO AP of a model (or of a COCO results file) on a dataset split")
    p.add_argument("--data", required=True, help="dataset YAML")
    p.add_argument("--split", default="val")
    add_model(p, note=" (with --weights)")
    add_weights(p, note=" (with --model)")
    p.add_argument("--predictions", help="score this COCO-results JSON instead of running a model "
                   "(--score-threshold filters it)")
    add_image_size(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    add_device(p)
    add_nms(p)
    p.add_argument("--nms-scope", choices=["per-class", "global"], default="per-class",
                   help="per-class: official COCO evaluation (top 5000 anchor-class pairs, NMS per class); "
                        "global: the inference default (each anchor's best class, one class-agnostic NMS)")
    p.add_argument("--json", help="write the metrics (AP, AP50, AP75, APs, APm, APl, AR…) here")
    p.add_argument("--save-predictions", help="write the model's COCO results here")
    p.set_defaults(func=run)
