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

from ..sample import (DUPLICATE_ID, NEGATIVE_SIZE, UNKNOWN_CLASS, UNKNOWN_IMAGE, UNREADABLE_FILE, DatasetError,
                      DatasetSplit, ParseReport, Problems)
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
              max_boxes: int = DEFAULT_MAX_BOXES, problems: Problems | None = None) -> DatasetSplit:
    """COCO ``instances_*.json`` with its image folder; ``names`` replaces the categories' names.

    With ``problems``, a malformed category, image or annotation is filed there and left out, with
    the annotations of a category or image left out (not filed again); an image whose file is
    missing or that has too many boxes is left out.
    """
    images, annotations = Path(images), Path(annotations)
    data = _read_json(annotations)
    if not isinstance(data, dict):
        raise DatasetError(f"{annotations}: expected a JSON object, got {type(data).__name__}", UNREADABLE_FILE)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{annotations}: missing key {key!r} (a list)" if key not in data
                               else f"{annotations}: {key!r} must be a list, got {type(data[key]).__name__}")
    report = ParseReport(problems=problems)
    categories, bad_categories = _coco_categories(data["categories"], annotations, report)
    ids = sorted(categories)
    if names is not None and len(names) != len(ids):
        raise DatasetError(f"{annotations}: {len(names)} names given for {len(ids)} categories")
    label_of = {category_id: c for c, category_id in enumerate(ids)}
    records, bad_images = _coco_images(data["images"], images, annotations, report)
    objects: dict[int, list[Object]] = {image_id: [] for image_id in records}
    for i, ann in enumerate(data["annotations"]):
        if _refers_to(ann, "image_id", bad_images) or _refers_to(ann, "category_id", bad_categories):
            continue  # its image or category is already filed as a problem
        try:
            image_id, obj = _coco_object(ann, f"{annotations}: {_record_name('annotation', ann, i)}", records,
                                         label_of)
        except DatasetError as e:
            report.skip(e)
            continue
        objects[image_id].append(obj)
    for image_id, (path, _, _) in list(records.items()):
        try:
            check_box_count(len(objects[image_id]), max_boxes, f"{annotations}: image id {image_id} ({path.name})")
        except DatasetError as e:
            report.skip(e)
            del records[image_id]
    missing = require_files([path for path, _, _ in records.values()], "images", annotations, report)
    samples = [build_sample(path, image_id, w, h, objects[image_id], report)
               for image_id, (path, w, h) in records.items() if path not in missing]
    return DatasetSplit(samples, list(names) if names is not None else [categories[i] for i in ids], ids, report)


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})", UNREADABLE_FILE) from None
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, integers over 4300 digits, deep nesting
        raise DatasetError(f"{path}: not valid JSON ({show(str(e))})", UNREADABLE_FILE) from None


def _refers_to(record: Any, key: str, ids: set[int]) -> bool:
    """Whether ``record[key]`` is one of ``ids`` (records already filed as problems)."""
    return bool(ids) and isinstance(record, dict) and type(record.get(key)) is int and record[key] in ids


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


def _coco_categories(records: list, path: Path, report: ParseReport) -> tuple[dict[int, str], set[int]]:
    """Category id → name; and the ids of malformed categories (filed in ``report``)."""
    categories: dict[int, str] = {}
    bad: set[int] = set()
    for i, record in enumerate(records):
        where = f"{path}: {_record_name('category', record, i)}"
        try:
            _require_keys(record, ("id", "name"), where)
            category_id = _int(record["id"], f"{where}: id")
            if category_id in categories:
                raise DatasetError(f"{path}: duplicate category id {category_id}", DUPLICATE_ID)
            if not isinstance(record["name"], str):
                raise DatasetError(f"{where}: name must be a string, got {show(record['name'])}")
        except DatasetError as e:
            report.skip(e)
            bad |= _own_id(record, categories)
            continue
        categories[category_id] = record["name"]
    if not categories:
        raise DatasetError(f"{path}: 'categories' is empty" if not records else f"{path}: no usable category")
    return categories, bad


def _coco_images(records: list, root: Path, path: Path,
                 report: ParseReport) -> tuple[dict[int, tuple[Path, int, int]], set[int]]:
    """Image id → (file, width, height); and the ids of malformed image records (filed in ``report``)."""
    images: dict[int, tuple[Path, int, int]] = {}
    bad: set[int] = set()
    for i, record in enumerate(records):
        where = f"{path}: {_record_name('image', record, i)}"
        try:
            _require_keys(record, ("id", "file_name", "width", "height"), where)
            image_id = _int(record["id"], f"{where}: id")
            if image_id in images:
                raise DatasetError(f"{path}: duplicate image id {image_id}", DUPLICATE_ID)
            file = safe_join(root, record["file_name"], where)
            width = _int(record["width"], f"{where}: width", 1, MAX_SIDE)
            height = _int(record["height"], f"{where}: height", 1, MAX_SIDE)
        except DatasetError as e:
            report.skip(e)
            bad |= _own_id(record, images)
            continue
        images[image_id] = (file, width, height)
    return images, bad


def _own_id(record: Any, kept: dict[int, Any]) -> set[int]:
    """The integer id of a record left out, unless a record kept has it (a duplicate's records stay
    with the first): what the records referring to it are skipped by."""
    if isinstance(record, dict) and type(record.get("id")) is int and record["id"] not in kept:
        return {record["id"]}
    return set()


def _coco_object(ann: Any, where: str, images: dict, label_of: dict[int, int]) -> tuple[int, Object]:
    _require_keys(ann, ("image_id", "category_id", "bbox"), where)
    image_id = _int(ann["image_id"], f"{where}: image_id")
    if image_id not in images:
        raise DatasetError(f"{where}: image_id {image_id} is not in 'images'", UNKNOWN_IMAGE)
    category = _int(ann["category_id"], f"{where}: category_id")
    if category not in label_of:
        raise DatasetError(f"{where}: category_id {category} is not in 'categories'", UNKNOWN_CLASS)
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DatasetError(f"{where}: bbox must be [x, y, width, height], got {show(bbox)}")
    x, y, w, h = (_number(v, f"{where}: bbox") for v in bbox)
    if w < 0 or h < 0:
        side, value = ("width", w) if w < 0 else ("height", h)
        raise DatasetError(f"{where}: bbox has negative {side} {value}", NEGATIVE_SIZE)
    crowd = ann.get("iscrowd", 0)
    if type(crowd) is not int or crowd not in (0, 1):
        raise DatasetError(f"{where}: iscrowd must be 0 or 1, got {show(crowd)}")
    return image_id, ((x, y, x + w, y + h), label_of[category], bool(crowd), where)


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
