"""Evaluation: a model's COCO results on a dataset split, the split as COCO ground truth, and the
COCO box metrics through ``faster-coco-eval`` (the same numbers as pycocotools, much faster).

The training loop and ``efficientdet eval`` both score through :func:`evaluate`, in one process or
under ``torchrun``: each rank predicts its shard of the split, rank 0 scores them all. Everything meets
in COCO dicts: the ground truth (``images``, ``annotations``, ``categories``) and a results list
(``image_id``, ``category_id``, ``bbox`` as [x, y, w, h], ``score``), the format every COCO tool
reads and writes.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .config import ModelConfig
from .data import DatasetSplit, DetectionDataset, EvalTransform, build_loader
from .data import image_size as image_file_size
from .distributed import broadcast_from_main, gather_sorted, shard

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)


def results_from_detections(image_id: int, boxes, scores, label_ids) -> list[dict[str, Any]]:
    """One image's detections (xyxy in original pixels, label ids) → COCO results entries."""
    xywh = xyxy_to_xywh(np.asarray(boxes))
    return [
        {"image_id": int(image_id), "category_id": int(c), "bbox": [round(float(v), 3) for v in b],
         "score": round(float(s), 5)}
        for b, s, c in zip(xywh, np.asarray(scores).reshape(-1), np.asarray(label_ids).reshape(-1))
    ]


def load_results(path: str | Path, valid_image_ids: Iterable[int], valid_category_ids: Iterable[int]) -> list[dict]:
    """A COCO-results JSON file, checked against the ground truth so that mismatches are named."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read COCO results ({e})") from None
    if not isinstance(results, list):
        raise ValueError(f"{path}: COCO results must be a JSON list of detections, got {type(results).__name__}")
    images, cats = set(valid_image_ids), set(valid_category_ids)
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise ValueError(f"{path}: entry {i} needs image_id, category_id, bbox and score")
        if r["image_id"] not in images:
            raise ValueError(f"{path}: entry {i}: image_id {r['image_id']} is not in the ground truth")
        if r["category_id"] not in cats:
            raise ValueError(f"{path}: entry {i}: category_id {r['category_id']} is not in the ground truth")
        bbox = r["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
                and all(np.isfinite(bbox))):
            raise ValueError(f"{path}: entry {i}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{path}: entry {i}: bbox width and height must be >= 0, got {bbox!r}")
        score = r["score"]
        if not (isinstance(score, (int, float)) and not isinstance(score, bool) and 0 <= score <= 1):
            raise ValueError(f"{path}: entry {i}: score must be a number in [0, 1], got {score!r}")
    return results


def coco_metrics(ground_truth: dict, results: list[dict]) -> dict[str, float]:
    """The 12 COCO box metrics (AP@[.5:.95], AP50, AP75, AP by size, AR@1/10/100, AR by size)."""
    from faster_coco_eval import COCO, COCOeval_faster

    # No results is scored too (faster-coco-eval accepts it, pycocotools does not): 0 where there is
    # ground truth, -1 where there is none, as for any other results.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ground_truth)
        dt = gt.loadRes(results)
        ev = COCOeval_faster(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # As in pycocotools, -1 means "no ground truth in this size range".
    return {k: float(v) for k, v in zip(METRIC_KEYS, ev.stats[: len(METRIC_KEYS)])}


def format_metrics(metrics: dict[str, float]) -> str:
    head = " | ".join(f"{k:>5s}" for k in METRIC_KEYS[:6])
    vals = " | ".join(f"{metrics[k]:5.3f}" for k in METRIC_KEYS[:6])
    return f"{head}\n{vals}"


def eval_loader(split: DatasetSplit, mcfg: ModelConfig, batch_size: int = 8, workers: int = 0, rank: int = 0,
                world: int = 1) -> DataLoader:
    """Rank ``rank``'s shard of ``split`` (every image once, in order, with one process), as
    ``mcfg``'s model sees it at evaluation."""
    transform = EvalTransform(mcfg.image_size, mcfg.preprocess)
    dataset = DetectionDataset(shard(split.samples, rank, world), transform, validate=True)
    return build_loader(dataset, batch_size, workers=workers)


@torch.inference_mode()
def predict_split(detector: Any, batches: Iterable) -> list[dict]:
    """COCO results (original pixels, the detector's label ids) for every image of ``batches``.

    ``detector`` is an :class:`efficientdet.inference.Detector` (or anything with its ``predict``):
    the caller builds it, so that evaluation runs the one inference front end without importing it.
    Boxes are the official postprocessing's, not clipped, as the official evaluation scores them.
    """
    results = []
    for batch in batches:
        scales = torch.tensor([t["image_scale"] for t in batch.targets])
        for target, found in zip(batch.targets, detector.predict(batch.images, scales)):
            results += results_from_detections(target["image_id"], found.boxes.numpy(), found.scores.numpy(),
                                               found.labels.numpy())
    return results


def coco_ground_truth(split: DatasetSplit) -> dict:
    """A split as a COCO ground-truth dict (crowd / difficult objects as ``iscrowd``)."""
    images, annotations = [], []
    for sample in split.samples:
        width, height = sample.width, sample.height
        if width is None or height is None:
            width, height = image_file_size(sample.image_path)
        images.append({"id": sample.image_id, "width": width, "height": height,
                       "file_name": sample.image_path.name})
        for box, label, crowd in zip(sample.boxes.tolist(), sample.labels.tolist(), sample.crowd.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": sample.image_id,
                                "category_id": split.label_ids[label], "bbox": [box[0], box[1], w, h],
                                "area": w * h, "iscrowd": int(crowd)})
    categories = [{"id": i, "name": n} for i, n in zip(split.label_ids, split.names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def evaluate(detector: Any, batches: Iterable, split: DatasetSplit) -> tuple[dict[str, float], list[dict] | None]:
    """COCO metrics of ``detector`` (:func:`predict_split`) on ``split``, and its results; the
    detector's label ids must be the split's category ids.

    Under ``torchrun``, ``batches`` is this rank's shard (:func:`eval_loader` with its rank and
    world): rank 0 gathers the results in the split's order, so that its metrics are those of one
    process, and sends them to every rank; the results stay on rank 0 (None elsewhere).
    """
    position = {sample.image_id: i for i, sample in enumerate(split.samples)}
    results = gather_sorted(predict_split(detector, batches), key=lambda r: position[r["image_id"]])
    metrics = coco_metrics(coco_ground_truth(split), results) if results is not None else None
    return broadcast_from_main(metrics), results
