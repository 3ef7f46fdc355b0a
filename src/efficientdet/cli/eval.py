"""``efficientdet eval``: COCO metrics of a model on a dataset split, or of an existing results file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..inference.backends import FILE_BACKENDS
from .options import (add_device, add_image_size, add_model, add_nms, add_threads, add_weights,
                      postprocess_overrides, resolve_image_size)


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
    """(metrics, results) of ``--model``/``--weights`` on this rank's shard of ``split`` (see evaluate):
    a PyTorch model as it is, or an exported file (ONNX, OpenVINO; float32 or int8) through its
    runtime, with the same preprocessing, postprocessing and metrics."""
    from .. import create_model
    from ..config import evaluation_postprocess, override
    from ..evaluate import eval_loader, evaluate
    from ..inference import Detector
    from ..inference.backends import model_backend
    from .exported import exported_detector, file_backend

    def post(config):
        cfg = override(config, **nms)
        return cfg.postprocess if args.nms_scope == "global" else evaluation_postprocess(cfg.postprocess)

    backend = file_backend(args)
    if backend is not None:
        from ..export import read_metadata

        info = read_metadata(args.weights)
        label_ids = model_label_ids(info.config, info.labels, split, args) or split.label_ids
        detector = exported_detector(args, backend, device, overrides.get("image_size"),
                                     lambda config, graph_nms: post(config), label_ids=label_ids)
    else:
        if not args.model or not args.weights:
            raise ValueError("give --model and --weights (or an exported --weights FILE), or --predictions RESULTS.json")
        import torch

        from ..weights import stored_labels

        if args.threads:
            torch.set_num_threads(args.threads)
        model = create_model(args.model, weights=args.weights, **overrides)
        label_ids = model_label_ids(model.config, stored_labels(model), split, args) or split.label_ids
        detector = Detector(model_backend(model, device), post(model.config), label_ids=label_ids)
    loader = eval_loader(split, detector.config, args.batch_size, args.workers, rank, world)
    return evaluate(detector, loader, split)


def model_label_ids(config, stored, split, args: argparse.Namespace) -> list[int] | None:
    """The split's category id of each output of a model with ``config`` and ``stored`` labels:
    those stored with the weights (training's), else COCO's for a 90-class model on a COCO-id
    dataset (official checkpoints: output c is id c + 1), else None (output c is the split's c-th
    category, which needs as many classes)."""
    from ..coco import coco_label_space, predicts_coco

    if stored is not None:
        unknown = sorted(set(stored.ids) - set(split.label_ids))
        if unknown:
            raise ValueError(f"{args.weights}: trained on category ids {unknown} that {args.data} does not have "
                             f"(it has {split.label_ids})")
        return list(stored.ids)
    coco_ids = coco_label_space()[0]
    if predicts_coco(config.num_classes) and set(split.label_ids) <= set(coco_ids):
        return coco_ids
    if config.num_classes != split.num_classes:
        raise ValueError(f"{args.weights}: the model has {config.num_classes} classes, "
                         f"{args.data} has {split.num_classes}")
    return None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="COCO AP of a model (or of a COCO results file) on a dataset split")
    p.add_argument("--data", required=True, help="dataset YAML")
    p.add_argument("--split", default="val")
    add_model(p, note=" (with --weights; an exported file names its own)")
    add_weights(p, note=" (with --model); or an exported .onnx / OpenVINO .xml / .tflite / TensorRT .engine, float32 "
                        "or int8")
    p.add_argument("--backend", choices=list(FILE_BACKENDS.values()),
                   help="runtime of an exported --weights file (default: by its suffix, .onnx: onnxruntime, "
                        ".xml: openvino, .tflite: litert, .engine: tensorrt; openvino also runs .onnx)")
    add_threads(p)
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
