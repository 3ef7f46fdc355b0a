"""Dataset formats → :class:`DatasetSplit`: COCO JSON, Pascal VOC XML, YOLO txt, and the YAML
file that names one of them per split.

The YAML (``root`` is relative to the YAML's folder and defaults to it; split paths are relative
to ``root``)::

    format: coco                  # coco | voc | yolo
    root: datasets/coco           # optional
    names: [person, bicycle]      # yolo: required (a list, or Ultralytics' {0: person, ...});
                                  # voc: optional, default the 20 VOC classes;
                                  # coco: optional, replaces the categories' names (same count)
    train: {images: train2017, annotations: annotations/instances_train2017.json}   # coco
    val:   {root: VOCdevkit/VOC2012, split: val}      # voc: ImageSets/Main/val.txt lists the ids;
                                                      # no split: every Annotations/*.xml
    test:  {images: images/test, labels: labels/test} # yolo, Ultralytics layout

Every parser treats imperfect boxes the same way and counts it in ``DatasetSplit.report``:
no area → dropped; partly outside the image → clipped to it (as COCO tooling does); entirely
outside → dropped; crowd / difficult → kept and flagged in ``Sample.crowd``. Images without
boxes are kept (negatives). Malformed records (wrong types, NaN/inf, negative sizes, unknown or
duplicate ids, paths that leave the image folder, missing files) raise :class:`DatasetError`
naming the file and the record: a dataset is fixed once rather than trained on half-read.
An image with more than ``max_boxes`` objects (default :data:`DEFAULT_MAX_BOXES`, counted before
boxes are clipped or dropped) is a :class:`DatasetError` naming it and the count: the loss and the
anchor assignment hold a boxes × anchors matrix per image, which such an image would blow up.

Per format:

- COCO: category ids → contiguous indices in sorted id order, ``label_ids`` = the sorted ids;
  ``bbox [x, y, w, h]`` → xyxy; ``image_id`` = the COCO id. The official converter
  (``create_coco_tfrecord.py``) drops boxes reaching past the image instead of clipping them.
- VOC: coordinates are 1-based inclusive pixel indices, so a box ``xmin=1, xmax=W`` covers the
  whole image, ``[0, W]`` in continuous coordinates: xyxy = ``(xmin - 1, ymin - 1, xmax, ymax)``,
  detectron2's reading (mmdet subtracts 1 from all four; the official converter none).
  ``difficult=1`` → crowd, i.e. ignored in training and evaluation as VOC's own evaluation and
  mmdet do (the official converter and detectron2 train on them). The image is ``<filename>`` in
  ``JPEGImages`` (``<id>.jpg`` without it); the size is ``<size>``, or the image header where
  ``<size>`` is missing or zero. ``image_id`` = position in the split (VOC ids are strings).
  XML is parsed with defusedxml: entity declarations and external references are refused.
- YOLO: ``class cx cy w h`` per line, normalised to the upright image, whose size comes from the
  image header (EXIF orientation applied, as Ultralytics does); an image without a label file has
  no objects. ``label_ids`` = ``0..C-1``; ``image_id`` = position in the sorted image list.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

import numpy as np
import yaml
from defusedxml import DefusedXmlException
from defusedxml import ElementTree

from .sample import DatasetError, DatasetSplit, ParseReport, Sample
from .transforms import DEFAULT_MAX_PIXELS, check_images, image_size

FORMATS = ("coco", "voc", "yolo")
SPLITS = ("train", "val", "test")
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

DEFAULT_MAX_BOXES = 10_000  # objects per image; COCO's most is 93, LVIS's under 1,000
_MAX_ID = 2**63 - 1  # ids travel as int64 tensors
_MAX_SIDE = 2**31 - 1
_LISTED = 5  # missing files named in one error
_show = reprlib.repr  # values in messages, shortened

Box = tuple[float, float, float, float]
Object = tuple[Box, int, bool]  # (xyxy box in pixels, class index, crowd)


# ---------------------------------------------------------------- shared checks


def _fit_box(box: Box, width: int, height: int, report: ParseReport) -> np.ndarray | None:
    """The box clipped to the image as float32, or None (counted) when nothing of it is left."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        report.zero_area += 1
        return None
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        report.outside += 1
        return None
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    fitted = np.array(clipped, dtype=np.float32)
    if fitted[2] <= fitted[0] or fitted[3] <= fitted[1]:  # a sliver that float32 cannot hold apart
        report.zero_area += 1
        return None
    report.clipped += clipped != box
    return fitted


def _sample(path: Path, image_id: int, width: int, height: int, objects: list[Object],
            report: ParseReport) -> Sample:
    """Fit the objects' boxes to the image (counted in ``report``) and build the :class:`Sample`."""
    boxes, labels, crowd = [], [], []
    for box, label, is_crowd in objects:
        fitted = _fit_box(box, width, height, report)
        if fitted is not None:
            boxes.append(fitted)
            labels.append(label)
            crowd.append(is_crowd)
    report.images += 1
    report.boxes += len(boxes)
    report.crowd += sum(crowd)
    report.empty_images += not boxes
    return Sample(path, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), image_id,
                  width, height, np.array(crowd, bool))


def _check_box_count(count: int, max_boxes: int, where: str) -> None:
    """Refuse an image with more than ``max_boxes`` objects (module docstring), naming the count."""
    if count > max_boxes:
        raise DatasetError(f"{where}: {count} boxes in one image, over the limit of {max_boxes} (max_boxes)")


def _safe_join(root: Path, name: Any, where: str) -> Path:
    """``root / name``, refusing names that leave ``root``: an annotation file must not make the
    loader read arbitrary files (absolute paths, ``..``, drive letters)."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise DatasetError(f"{where}: file name must be a non-empty string, got {_show(name)}")
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or PureWindowsPath(name).drive:
        raise DatasetError(f"{where}: file name {_show(name)} leaves the folder {root}")
    return root / relative


def _require_files(paths: Sequence[Path], what: str, source: Path) -> None:
    """One error with the count and the first few names, rather than a crash later in a worker."""
    missing = [p for p in paths if not os.path.isfile(p)]  # isfile: False (no raise) on odd names
    if missing:
        shown = ", ".join(str(p) for p in missing[:_LISTED])
        more = f", ... and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
        raise DatasetError(f"{source}: {len(missing)} of {len(paths)} {what} missing: {shown}{more}")


def _int(value: Any, where: str, low: int = 0, high: int = _MAX_ID) -> int:
    if type(value) is not int or not low <= value <= high:  # type(): a JSON true is not an id
        raise DatasetError(f"{where} must be an integer in [{low}, {high}], got {_show(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if type(value) not in (int, float):
        raise DatasetError(f"{where} must be a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise DatasetError(f"{where} must be finite, got {_show(value)}")
    return number


def _names(value: Any, where: str) -> list[str]:
    """A list of unique non-empty strings, or Ultralytics' ``{0: name, 1: name, ...}``."""
    if isinstance(value, dict):
        if set(value) != set(range(len(value))):
            raise DatasetError(f"{where}: a names mapping needs the keys 0..{len(value) - 1}")
        value = [value[i] for i in range(len(value))]
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n for n in value):
        raise DatasetError(f"{where}: must be a non-empty list of names, got {_show(value)}")
    duplicates = sorted({n for n in value if value.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{where}: duplicate names {_show(duplicates)}")
    return list(value)


# ---------------------------------------------------------------- COCO


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
        _check_box_count(len(objects[image_id]), max_boxes, f"{annotations}: image id {image_id} ({path.name})")
    report = ParseReport()
    samples = [_sample(path, image_id, w, h, objects[image_id], report)
               for image_id, (path, w, h) in records.items()]
    _require_files([s.image_path for s in samples], "images", annotations)
    return DatasetSplit(samples, list(names) if names is not None else [categories[i] for i in ids], ids, report)


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, integers over 4300 digits, deep nesting
        raise DatasetError(f"{path}: not valid JSON ({_show(str(e))})") from None


def _record_name(kind: str, record: Any, index: int) -> str:
    """``annotation id 17`` where the record has an integer id, else its position ``annotation #3``."""
    has_id = isinstance(record, dict) and type(record.get("id")) is int
    return f"{kind} id {record['id']}" if has_id else f"{kind} #{index}"


def _require_keys(record: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: must be an object, got {_show(record)}")
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
            raise DatasetError(f"{where}: name must be a string, got {_show(record['name'])}")
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
        file = _safe_join(root, record["file_name"], where)
        width = _int(record["width"], f"{where}: width", 1, _MAX_SIDE)
        height = _int(record["height"], f"{where}: height", 1, _MAX_SIDE)
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
        raise DatasetError(f"{where}: bbox must be [x, y, width, height], got {_show(bbox)}")
    x, y, w, h = (_number(v, f"{where}: bbox") for v in bbox)
    if w < 0 or h < 0:
        side, value = ("width", w) if w < 0 else ("height", h)
        raise DatasetError(f"{where}: bbox has negative {side} {value}")
    crowd = ann.get("iscrowd", 0)
    if type(crowd) is not int or crowd not in (0, 1):
        raise DatasetError(f"{where}: iscrowd must be 0 or 1, got {_show(crowd)}")
    return image_id, ((x, y, x + w, y + h), label_of[category], bool(crowd))


# ---------------------------------------------------------------- Pascal VOC


def load_voc(root: str | Path, split: str | None = None, names: Sequence[str] | None = None,
             max_boxes: int = DEFAULT_MAX_BOXES) -> DatasetSplit:
    """``root`` = ``VOCdevkit/VOC2012``; ``split`` names ``ImageSets/Main/<split>.txt``, or every
    ``Annotations/*.xml`` when None; ``names`` default to the 20 VOC classes."""
    root = Path(root)
    names = list(names) if names is not None else list(VOC_CLASSES)
    label_of = {name: c for c, name in enumerate(names)}
    annotations = root / "Annotations"
    if split is None:
        xmls, source = sorted(annotations.glob("*.xml")), annotations
    else:
        source = _safe_join(root / "ImageSets" / "Main", f"{split}.txt", f"{root}: split")
        xmls = [_safe_join(annotations, f"{i}.xml", f"{source}: id {i!r}") for i in _read_ids(source)]
    _require_files(xmls, "annotation files", source)
    report = ParseReport()
    samples = [_voc_sample(xml, index, root / "JPEGImages", label_of, report, max_boxes)
               for index, xml in enumerate(xmls)]
    _require_files([s.image_path for s in samples], "images", source)
    return DatasetSplit(samples, names, list(range(len(names))), report)


def _read_ids(path: Path) -> list[str]:
    """First column of each non-empty line (``Main/<split>.txt`` has one; ``<class>_<split>.txt`` two)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _voc_sample(xml: Path, index: int, image_dir: Path, label_of: dict[str, int], report: ParseReport,
                max_boxes: int) -> Sample:
    try:
        root = ElementTree.parse(xml).getroot()
    except DefusedXmlException as e:
        raise DatasetError(f"{xml}: refused: {type(e).__name__} ({e}); entity declarations and external "
                           "references are not allowed") from None
    except ElementTree.ParseError as e:
        raise DatasetError(f"{xml}: not well-formed XML ({e})") from None
    except OSError as e:
        raise DatasetError(f"{xml}: cannot read ({e.strerror})") from None
    filename = (root.findtext("filename") or "").strip()
    image = _safe_join(image_dir, filename, f"{xml}: <filename>") if filename else image_dir / f"{xml.stem}.jpg"
    width, height = _voc_size(root, xml, image)
    found = root.findall("object")
    _check_box_count(len(found), max_boxes, str(xml))
    objects = [_voc_object(obj, f"{xml}: object #{i}", label_of) for i, obj in enumerate(found)]
    return _sample(image, index, width, height, objects, report)


def _voc_size(root: Any, xml: Path, image: Path) -> tuple[int, int]:
    """``<size>``, or the image header where the annotation tool left it out or wrote zeros."""
    size = [_xml_number(root, f"size/{tag}", str(xml)) if root.find(f"size/{tag}") is not None else 0.0
            for tag in ("width", "height")]
    if all(size):
        if not all(s.is_integer() and 0 < s <= _MAX_SIDE for s in size):
            raise DatasetError(f"{xml}: <size> must be positive whole pixels, got {size[0]}x{size[1]}")
        return int(size[0]), int(size[1])
    return image_size(image, max_pixels=2**62)  # only the size is wanted here: no pixel cap


def _voc_object(obj: Any, where: str, label_of: dict[str, int]) -> Object:
    name = (obj.findtext("name") or "").strip()
    if name not in label_of:
        raise DatasetError(f"{where}: class {_show(name)} is not one of the {len(label_of)} names")
    if obj.find("bndbox") is None:
        raise DatasetError(f"{where}: missing <bndbox>")
    x1, y1, x2, y2 = (_xml_number(obj, f"bndbox/{tag}", where) for tag in ("xmin", "ymin", "xmax", "ymax"))
    if x2 < x1 or y2 < y1:
        raise DatasetError(f"{where}: bndbox has xmax < xmin or ymax < ymin: ({x1}, {y1}, {x2}, {y2})")
    difficult = (obj.findtext("difficult") or "0").strip()
    if difficult not in ("0", "1"):
        raise DatasetError(f"{where}: <difficult> must be 0 or 1, got {_show(difficult)}")
    # 1-based inclusive pixel indices → continuous coordinates (see the module docstring).
    return (x1 - 1, y1 - 1, x2, y2), label_of[name], difficult == "1"


def _xml_number(node: Any, tag: str, where: str) -> float:
    text = node.findtext(tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: <{tag}> must be a number, got {_show(text)}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: <{tag}> must be finite, got {_show(text)}")
    return value


# ---------------------------------------------------------------- YOLO


def load_yolo(images: str | Path, labels: str | Path, names: Sequence[str],
              max_pixels: int = DEFAULT_MAX_PIXELS, max_boxes: int = DEFAULT_MAX_BOXES) -> DatasetSplit:
    """Ultralytics layout: ``images/<split>/**/*.jpg`` and ``labels/<split>/**/*.txt`` of the same stem."""
    images, labels = Path(images), Path(labels)
    # not is_dir(): a dangling symlink stays in the list, for check_images to name it as unreadable.
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    sizes = check_images(files, max_pixels)  # the boxes are normalised: the sizes are needed now
    report = ParseReport()
    samples = []
    for index, (image, (width, height)) in enumerate(zip(files, sizes)):
        label_file = labels / image.relative_to(images).with_suffix(".txt")
        objects: list[Object] = []
        if label_file.is_file():
            objects = _yolo_objects(label_file, width, height, len(names), max_boxes)
        else:
            report.missing_labels += 1
        samples.append(_sample(image, index, width, height, objects, report))
    return DatasetSplit(samples, list(names), list(range(len(names))), report)


def _yolo_objects(path: Path, width: int, height: int, num_classes: int, max_boxes: int) -> list[Object]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    _check_box_count(len(rows), max_boxes, str(path))  # counted before any line is split or parsed
    return [_yolo_object(line.split(), f"{path}:{number}", width, height, num_classes) for number, line in rows]


def _yolo_object(fields: list[str], where: str, width: int, height: int, num_classes: int) -> Object:
    if len(fields) != 5:
        raise DatasetError(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}")
    try:
        label = int(fields[0])
    except ValueError:
        raise DatasetError(f"{where}: class {_show(fields[0])} is not an integer") from None
    if not 0 <= label < num_classes:
        raise DatasetError(f"{where}: class {label} is not in 0..{num_classes - 1} ({num_classes} names)")
    try:
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        raise DatasetError(f"{where}: cx cy w h must be numbers, got {_show(' '.join(fields[1:]))}") from None
    if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):  # also refuses NaN
        raise DatasetError(f"{where}: cx cy w h must be normalised to [0, 1], got {_show(' '.join(fields[1:]))}")
    box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
    return box, label, False


# ---------------------------------------------------------------- the YAML


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset YAML: the format, each split's resolved parser arguments, the names."""

    format: str
    splits: dict[str, dict[str, Any]]
    names: list[str] | None
    source: Path


_SPLIT_KEYS = {"coco": ("images", "annotations"), "voc": ("root", "split"), "yolo": ("images", "labels")}
_OPTIONAL_KEYS = {"split"}


def load_dataset_yaml(path: str | Path) -> DatasetSpec:
    """Read and check a dataset YAML (module docstring); every path it names must exist."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with 'format' and splits, got {_show(data)}")
    unknown = [k for k in data if k not in ("format", "root", "names", *SPLITS)]
    if unknown:
        raise DatasetError(f"{path}: unknown key {_show(unknown[0])} (known: format, root, names, {', '.join(SPLITS)})")
    fmt = data.get("format")
    if fmt not in FORMATS:
        raise DatasetError(f"{path}: format: expected one of {', '.join(FORMATS)}, got {_show(fmt)}")
    root = _existing(path.parent, data.get("root", "."), path, "root")
    names = _names(data["names"], f"{path}: names") if data.get("names") is not None else None
    if fmt == "yolo" and names is None:
        raise DatasetError(f"{path}: names: required for the yolo format")
    splits = {s: _split(data[s], s, fmt, root, path) for s in SPLITS if s in data}
    if not splits:
        raise DatasetError(f"{path}: no split: give at least one of {', '.join(SPLITS)}")
    return DatasetSpec(fmt, splits, names, path)


def _existing(base: Path, value: Any, path: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{path}: {key}: expected a path, got {_show(value)}")
    resolved = base / value
    if not resolved.exists():
        raise DatasetError(f"{path}: {key}: {resolved} does not exist")
    return resolved


def _split(value: Any, split: str, fmt: str, root: Path, path: Path) -> dict[str, Any]:
    keys = _SPLIT_KEYS[fmt]
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: {split}: expected a mapping with keys {', '.join(keys)}, got {_show(value)}")
    for key in value:
        if key not in keys:
            raise DatasetError(f"{path}: {split}.{key}: unknown key for {fmt} (known: {', '.join(keys)})")
    args: dict[str, Any] = {}
    for key in keys:
        if key not in value:
            if key in _OPTIONAL_KEYS:
                continue
            raise DatasetError(f"{path}: {split}.{key}: missing")
        if key == "split":
            if not isinstance(value[key], str) or not value[key]:
                raise DatasetError(f"{path}: {split}.split: expected a split name, got {_show(value[key])}")
            args[key] = value[key]
        else:
            args[key] = _existing(root, value[key], path, f"{split}.{key}")
    return args


def load_split(spec: DatasetSpec, split: str, max_boxes: int = DEFAULT_MAX_BOXES) -> DatasetSplit:
    """Parse one split of a :class:`DatasetSpec` with its format's parser."""
    if split not in spec.splits:
        raise DatasetError(f"{spec.source}: {split}: no such split (has {', '.join(spec.splits)})")
    parser = {"coco": load_coco, "voc": load_voc, "yolo": load_yolo}[spec.format]
    args = spec.splits[split]
    parsed = parser(**args, names=spec.names, max_boxes=max_boxes)
    if not parsed.samples:  # nothing to train on or to score: say where, not fail later
        source = args.get("annotations") or args.get("images") or args.get("root")
        raise DatasetError(f"{source}: the {split} split has no images")
    return parsed
