"""The dataset check: every problem of a dataset in one pass, the statistics to read before
training, and how the model's anchors fit the training boxes (``efficientdet data check``;
``efficientdet train`` runs the same at its start and refuses a dataset with errors).

Errors are records that cannot be used (each parser files them, see :mod:`.formats`), a split
that cannot be read or has nothing to train on, and training boxes that no anchor can match;
warnings are boxes that parsing changed, classes without a training box and a low anchor fit.
Box sizes are measured at the network input, as the inference resize scales each image
(training's scale jitter varies them around that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..anchor_fit import LOW_FIT, AnchorFit, alternatives, anchor_fit, network_boxes, sample_boxes
from ..config import ModelConfig
from .formats import DatasetSpec, load_split, split_source
from .images import DEFAULT_MAX_PIXELS, probe_images
from .sample import (EMPTY_SPLIT, ERROR, LOW_ANCHOR_FIT, NO_MATCH, UNUSED_CLASS, WARNING, DatasetError, DatasetSplit,
                     Problems)

SMALL, LARGE = 32, 96  # COCO's box-size classes (sqrt of area, pixels), here at the network input


def read_splits(spec: DatasetSpec, names: Iterable[str], max_boxes: int, problems: Problems) -> dict[str, DatasetSplit]:
    """The named splits, their malformed records filed in ``problems`` and left out; a split that
    cannot be read at all, or that has no images, is filed as one problem and left out."""
    splits = {}
    for name in names:
        try:
            splits[name] = load_split(spec, name, max_boxes, problems)
        except DatasetError as e:
            problems.error(e)
    return splits


def probe_split_images(splits: dict[str, DatasetSplit], problems: Problems,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Read every image header once (not the pixels): each unreadable, oversized or mis-sized
    image is filed and its sample left out, as training's loader would refuse it."""
    wanted = {(s.image_path, s.width, s.height) for split in splits.values() for s in split.samples}
    order = sorted(wanted, key=str)
    found = probe_images([p for p, _, _ in order], max_pixels, [(w, h) for _, w, h in order])
    bad = set()
    for key, result in zip(order, found):
        if isinstance(result, DatasetError):
            problems.error(result)
            bad.add(key)
    for split in splits.values():
        split.samples = [s for s in split.samples if (s.image_path, s.width, s.height) not in bad]


def training_problem(split: DatasetSplit, spec: DatasetSpec) -> DatasetError | None:
    """A train split without one box to learn from would train the background only, and end as if
    it had worked."""
    report = split.report
    if report.boxes > report.crowd:
        return None
    if report.crowd:
        why = f"all its {report.crowd} boxes are crowd / difficult, which training ignores"
    elif report.missing_labels == report.images:
        why = f"none of its {report.images} images has a label file in {spec.splits['train'].get('labels')}"
    else:
        why = f"none of its {report.images} images has a box"
    return DatasetError(f"{spec.source}: the train split has nothing to train on: {why}", EMPTY_SPLIT)


class _Objects(NamedTuple):
    """Every object of a split in one array each (numpy, not a loop per image, for large datasets)."""

    boxes: np.ndarray  # [M, 4] xyxy image pixels
    sizes: np.ndarray  # [M, 2] (height, width) of each object's image
    labels: np.ndarray  # [M]
    crowd: np.ndarray  # [M] bool
    image: np.ndarray  # [M] index of each object's image in the split


def _objects(split: DatasetSplit) -> _Objects:
    samples = split.samples
    counts = np.array([len(s.labels) for s in samples], np.int64)
    if not counts.sum():
        return _Objects(np.zeros((0, 4), np.float32), np.zeros((0, 2), np.int64), np.zeros(0, np.int64),
                        np.zeros(0, bool), np.zeros(0, np.int64))
    sizes = np.array([(s.height, s.width) for s in samples], np.int64)
    return _Objects(np.concatenate([s.boxes for s in samples]), np.repeat(sizes, counts, axis=0),
                    np.concatenate([s.labels for s in samples]), np.concatenate([s.crowd for s in samples]),
                    np.repeat(np.arange(len(samples)), counts))


def training_boxes(split: DatasetSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes training learns from (crowd left out): ``[M, 4]`` xyxy image pixels, the size
    ``[M, 2]`` (height, width) of each one's image, and the labels ``[M]``."""
    objects = _objects(split)
    keep = ~objects.crowd
    return objects.boxes[keep], objects.sizes[keep], objects.labels[keep]


def split_stats(split: DatasetSplit, image_size: tuple[int, int]) -> dict:
    """Images and boxes per class, boxes per image and box sides at the network input ``image_size``."""
    objects = _objects(split)
    keep, num = ~objects.crowd, split.num_classes
    labels, crowd = objects.labels[keep], objects.labels[objects.crowd]
    per_image = np.bincount(objects.image[keep], minlength=len(split.samples))
    image_class = np.unique(objects.image[keep] * num + labels)  # the (image, class) pairs present
    counts = {what: np.bincount(values, minlength=num).tolist()
              for what, values in (("images", image_class % num), ("boxes", labels), ("crowd", crowd))}
    classes = [{"name": name, "id": label_id, **{what: counts[what][c] for what in counts}}
               for c, (name, label_id) in enumerate(zip(split.names, split.label_ids))]
    scaled = network_boxes(objects.boxes[keep], objects.sizes[keep], image_size).numpy()
    sides = np.sqrt((scaled[:, 2] - scaled[:, 0]) * (scaled[:, 3] - scaled[:, 1]))
    quantiles = dict(zip(("min", "p10", "median", "p90", "max"), np.percentile(sides, [0, 10, 50, 90, 100])
                         .round(1).tolist())) if len(sides) else {}
    report = split.report
    return {
        "images": len(split.samples), "images_without_boxes": int((per_image == 0).sum()),
        "boxes": len(labels), "crowd": len(crowd),
        "clipped": report.clipped, "dropped_zero_area": report.zero_area, "dropped_outside": report.outside,
        "boxes_per_image": {"mean": round(float(per_image.mean()), 2) if len(per_image) else 0.0,
                            "median": float(np.median(per_image)) if len(per_image) else 0.0,
                            "max": int(per_image.max()) if len(per_image) else 0},
        "box_side": {**quantiles, "small": int((sides < SMALL).sum()),
                     "medium": int(((sides >= SMALL) & (sides < LARGE)).sum()), "large": int((sides >= LARGE).sum())},
        "classes": classes,
    }


@dataclass
class DatasetCheck:
    """What :func:`check_dataset` found: the problems, each split's statistics, the anchor fit of
    the train split's boxes and, when it is low, what each suggested change would give."""

    source: Path
    format: str
    config: ModelConfig
    splits: dict[str, DatasetSplit]
    problems: Problems
    stats: dict[str, dict]
    fit: AnchorFit | None
    suggestions: list[tuple[str, float]]

    def to_dict(self) -> dict:
        fit = None if self.fit is None else {
            **self.fit.to_dict(), "would_give": [{"option": o, "share": s} for o, s in self.suggestions]}
        return {"dataset": str(self.source), "format": self.format, "model": self.config.name,
                "image_size": list(self.config.image_size), "problems": self.problems.to_dict(),
                "splits": self.stats, "anchor_fit": fit}

    def lines(self) -> list[str]:
        """The report as text: problems by kind, each split's statistics, the anchor fit."""
        errors, warnings = self.problems.total(ERROR), self.problems.total(WARNING)
        out = [f"{self.source} ({self.format}; {', '.join(self.splits) or 'no split read'}): "
               f"{errors} errors, {warnings} warnings"]
        for name, severity, count in (("errors", ERROR, errors), ("warnings", WARNING, warnings)):
            if count:
                out += [f"{name}:"] + [f"  {line}" for line in self.problems.lines(severity)]
        for split, stats in self.stats.items():
            out += _stats_lines(split, stats, self.config.image_size)
        if self.fit is not None:
            out += fit_lines(self.fit, self.config.name, self.suggestions, self.stats["train"]["boxes"])
        return out


def summarise(spec: DatasetSpec, splits: dict[str, DatasetSplit], problems: Problems, config: ModelConfig,
              threshold: float) -> DatasetCheck:
    """The split-level problems (nothing to train on, classes without a training box, a low or
    zero anchor fit) filed in ``problems``, and the statistics of ``splits`` at ``config``'s input."""
    stats = {name: split_stats(split, config.image_size) for name, split in splits.items()}
    fit, suggestions = None, []
    train = splits.get("train")
    if train is not None:
        empty = training_problem(train, spec)
        if empty is not None:
            problems.error(empty)
        for c in stats["train"]["classes"]:
            if not c["boxes"]:
                problems.warn(UNUSED_CLASS, f"{split_source(spec, 'train')}: class {c['name']!r} (id {c['id']}) "
                                            "has no box to train on")
        boxes, sizes = sample_boxes(*training_boxes(train)[:2])
        if len(boxes):
            fit = anchor_fit(boxes, sizes, config, threshold)
            if fit.share < LOW_FIT:
                suggestions = alternatives(boxes, sizes, config, threshold)
                _file_fit(fit, config, suggestions, stats["train"]["boxes"], spec, problems)
    return DatasetCheck(spec.source, spec.format, config, splits, problems, stats, fit, suggestions)


def check_dataset(spec: DatasetSpec, config: ModelConfig, threshold: float, max_boxes: int,
                  read_images: bool = True) -> DatasetCheck:
    """Every split of ``spec`` read in one pass, every problem filed (every image header read too,
    unless ``read_images`` is False), then :func:`summarise`."""
    problems = Problems()
    splits = read_splits(spec, spec.splits, max_boxes, problems)
    if read_images and spec.format != "yolo":  # the YOLO parser reads every header for the sizes
        probe_split_images(splits, problems)
    return summarise(spec, splits, problems, config, threshold)


def _file_fit(fit: AnchorFit, config: ModelConfig, suggestions: list[tuple[str, float]], total: int,
              spec: DatasetSpec, problems: Problems) -> None:
    """A low fit is a warning naming the best change; none matched at all, an error: no box of the
    dataset would train more than the one anchor it is forced onto. ``total``: the train boxes."""
    setting = (f"{config.name} at {config.image_size[0]}x{config.image_size[1]}, anchor_scale "
               f"{config.anchors.anchor_scale:g}")
    what = (f"{spec.source}: {fit.share:.1%} of the {total} training boxes have an anchor with IoU >= "
            f"{fit.threshold:g} ({setting})")
    option, share = max(suggestions, key=lambda s: s[1])
    fix = (f"{option} would give {share:.1%}" if share > fit.share else
           "no larger --image-size, anchors.anchor_scale or anchors.aspect_ratios tried gives more; are the "
           "boxes in the pixels of their images?")
    if fit.matched == 0:
        problems.error(DatasetError(f"{what}: none can be matched; {fix}", NO_MATCH))
    else:
        problems.warn(LOW_ANCHOR_FIT, f"{what}; {fix}")


def fit_lines(fit: AnchorFit, model: str, suggestions: list[tuple[str, float]], total: int) -> list[str]:
    """The anchor fit as text: the share, a row per level, what each suggestion would give;
    ``total``: the train boxes the fit's were sampled from."""
    h, w = fit.image_size
    aspects = ", ".join(f"{r:g}" for r in fit.aspect_ratios)
    sampled = f" (a seeded sample of the {total})" if fit.boxes < total else ""
    out = [f"anchor fit ({model} at {h}x{w}, anchor_scale {fit.anchor_scale:g}, aspect ratios {aspects}): "
           f"{fit.share:.1%} of {fit.boxes} train boxes{sampled} have an anchor with IoU >= {fit.threshold:g}",
           f"  {'level':<6}{'anchor sides':>14}{'boxes':>8}{'matched':>9}{'median side':>13}"]
    for lv in fit.levels:
        sides = f"{lv.anchor_sides[0]:g}-{lv.anchor_sides[1]:g}"
        median = "-" if lv.median_side is None else f"{lv.median_side:g}"
        out.append(f"  P{lv.level:<5}{sides:>14}{lv.boxes:>8}{lv.matched:>9}{median:>13}")
    if suggestions:
        out.append("  would give: " + "; ".join(f"{option} {share:.1%}" for option, share in suggestions))
    return out


def _stats_lines(split: str, stats: dict, image_size: tuple[int, int]) -> list[str]:
    per_image, side = stats["boxes_per_image"], stats["box_side"]
    changed = [f"{n} {what}" for what, n in (("clipped", stats["clipped"]),
                                             ("dropped: no area", stats["dropped_zero_area"]),
                                             ("dropped: outside", stats["dropped_outside"])) if n]
    changes = f"; {', '.join(changed)}" if changed else ""
    out = [f"{split}: {stats['images']} images ({stats['images_without_boxes']} without boxes), "
           f"{stats['boxes']} boxes, {stats['crowd']} crowd / difficult{changes}",
           f"  boxes per image: mean {per_image['mean']:g}, median {per_image['median']:g}, max {per_image['max']}"]
    if stats["boxes"]:
        out.append(f"  box side at {image_size[0]}x{image_size[1]} (sqrt of area, pixels): min {side['min']:g}, "
                   f"10% {side['p10']:g}, median {side['median']:g}, 90% {side['p90']:g}, max {side['max']:g}; "
                   f"small (< {SMALL}) {side['small']}, medium {side['medium']}, large (>= {LARGE}) {side['large']}")
    width = max([5] + [len(c["name"]) for c in stats["classes"]])
    out.append(f"  {'class':<{width}}{'id':>8}{'images':>8}{'boxes':>8}{'crowd':>7}")
    out += [f"  {c['name']:<{width}}{c['id']:>8}{c['images']:>8}{c['boxes']:>8}{c['crowd']:>7}"
            for c in stats["classes"]]
    return out
