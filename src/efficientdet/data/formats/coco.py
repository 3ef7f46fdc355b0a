"""COCO ``instances_*.json``: category ids → contiguous indices in sorted id order, ``label_ids``
= the sorted ids; ``bbox [x, y, w, h]`` → xyxy; ``image_id`` = the COCO id. The official converter
(``create_coco_tfrecord.py``) drops boxes reaching past the image instead of clipping them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..sample import DatasetError, DatasetSplit, ParseReport
from .common import (
    DEFAULT_MAX_BOXES,
    MAX_SIDE,
    Object,
    build_sample,
    check_box_count,
    require_files,
    safe_join,
    show,
)

_MAX_ID = 2**63 - 1  # ids travel as int64 tensors


def load_coco(images: str | Path, annotations: str | Path, names: Sequence[str] | None = None,
              max_boxes: int = DEFAULT_MAX_BOXES) -> DatasetSplit:
    """COCO ``instances_*.json`` with its image folder; ``names`` replaces the categories' names."""
    images, annotations = Path(images), Path(annotations)
    data = _read_json(annotations)
    if not isinstance(data, dict):
        raise DatasetError(f"{annotations}: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{annotations}: missing key {key!r} (a list)" if key not in data
                               else f"{annotations}: {key!r} must be a list, got {type(data[key]).__name__}")
    categories = _coco_categories(data["categories"], annotations)
    ids = sorted(categories)
    if names is not None and len(names) != len(ids):
        raise DatasetError(f"{annotations}: {len(names)} names given for {len(ids)} categories")
    label_of = {category_id: c for c, category_id in enumerate(ids)}
    records = _coco_images(data["images"], images, annotations)
    objects: dict[int, list[Object]] = {image_id: [] for image_id in records}
    for i, ann in enumerate(data["annotations"]):
        image_id, obj = _coco_object(ann, f"{annotations}: {_record_name('annotation', ann, i)}", records, label_of)
        objects[image_id].append(obj)
    for image_id, (path, _, _) in records.items():
        check_box_count(len(objects[image_id]), max_boxes, f"{annotations}: image id {image_id} ({path.name})")
    report = ParseReport()
    samples = [build_sample(path, image_id, w, h, objects[image_id], report)
               for image_id, (path, w, h) in records.items()]
    require_files([s.image_path for s in samples], "images", annotations)
    return DatasetSplit(samples, list(names) if names is not None else [categories[i] for i in ids], ids, report)


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, integers over 4300 digits, deep nesting
        raise DatasetError(f"{path}: not valid JSON ({show(str(e))})") from None


def _record_name(kind: str, record: Any, index: int) -> str:
    """``annotation id 17`` where the record has an integer id, else its position ``annotation #3``."""
    has_id = isinstance(record, dict) and type(record.get("id")) is int
    return f"{kind} id {record['id']}" if has_id else f"{kind} #{index}"


def _require_keys(record: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: must be an object, got {show(record)}")
    for key in keys:
        if key not in record:
            raise DatasetError(f"{where}: missing key {key!r}")
    return record


def _coco_categories(records: list, path: Path) -> dict[int, str]:
    categories: dict[int, str] = {}
    for i, record in enumerate(records):
        where = f"{path}: {_record_name('category', record, i)}"
        _require_keys(record, ("id", "name"), where)
        category_id = _int(record["id"], f"{where}: id")
        if category_id in categories:
            raise DatasetError(f"{path}: duplicate category id {category_id}")
        if not isinstance(record["name"], str):
            raise DatasetError(f"{where}: name must be a string, got {show(record['name'])}")
        categories[category_id] = record["name"]
    if not categories:
        raise DatasetError(f"{path}: 'categories' is empty")
    return categories


def _coco_images(records: list, root: Path, path: Path) -> dict[int, tuple[Path, int, int]]:
    images: dict[int, tuple[Path, int, int]] = {}
    for i, record in enumerate(records):
        where = f"{path}: {_record_name('image', record, i)}"
        _require_keys(record, ("id", "file_name", "width", "height"), where)
        image_id = _int(record["id"], f"{where}: id")
        if image_id in images:
            raise DatasetError(f"{path}: duplicate image id {image_id}")
        file = safe_join(root, record["file_name"], where)
        width = _int(record["width"], f"{where}: width", 1, MAX_SIDE)
        height = _int(record["height"], f"{where}: height", 1, MAX_SIDE)
        images[image_id] = (file, width, height)
    return images


def _coco_object(ann: Any, where: str, images: dict, label_of: dict[int, int]) -> tuple[int, Object]:
    _require_keys(ann, ("image_id", "category_id", "bbox"), where)
    image_id = _int(ann["image_id"], f"{where}: image_id")
    if image_id not in images:
        raise DatasetError(f"{where}: image_id {image_id} is not in 'images'")
    category = _int(ann["category_id"], f"{where}: category_id")
    if category not in label_of:
        raise DatasetError(f"{where}: category_id {category} is not in 'categories'")
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DatasetError(f"{where}: bbox must be [x, y, width, height], got {show(bbox)}")
    x, y, w, h = (_number(v, f"{where}: bbox") for v in bbox)
    if w < 0 or h < 0:
        side, value = ("width", w) if w < 0 else ("height", h)
        raise DatasetError(f"{where}: bbox has negative {side} {value}")
    crowd = ann.get("iscrowd", 0)
    if type(crowd) is not int or crowd not in (0, 1):
        raise DatasetError(f"{where}: iscrowd must be 0 or 1, got {show(crowd)}")
    return image_id, ((x, y, x + w, y + h), label_of[category], bool(crowd))


def _int(value: Any, where: str, low: int = 0, high: int = _MAX_ID) -> int:
    if type(value) is not int or not low <= value <= high:  # type(): a JSON true is not an id
        raise DatasetError(f"{where} must be an integer in [{low}, {high}], got {show(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if type(value) not in (int, float):
        raise DatasetError(f"{where} must be a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise DatasetError(f"{where} must be finite, got {show(value)}")
    return number
