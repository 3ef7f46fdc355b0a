"""Pascal VOC XML.

Coordinates are 1-based inclusive pixel indices, so a box ``xmin=1, xmax=W`` covers the whole
image, ``[0, W]`` in continuous coordinates: xyxy = ``(xmin - 1, ymin - 1, xmax, ymax)``,
detectron2's reading (mmdet subtracts 1 from all four; the official converter none).
``difficult=1`` → crowd, i.e. ignored in training and evaluation as VOC's own evaluation and mmdet
do (the official converter and detectron2 train on them). The image is ``<filename>`` in
``JPEGImages`` (``<id>.jpg`` without it); the size is ``<size>``, or the image header where
``<size>`` is missing or zero. ``image_id`` = position in the split (VOC ids are strings). XML is
parsed with defusedxml: entity declarations and external references are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from defusedxml import DefusedXmlException, ElementTree

from ..sample import (NEGATIVE_SIZE, UNKNOWN_CLASS, UNREADABLE_FILE, DatasetError, DatasetSplit, ParseReport,
                      Problems)
from ..images import image_size
from . import common

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def load_voc(root: str | Path, split: str | None = None, names: Sequence[str] | None = None,
             max_boxes: int = common.DEFAULT_MAX_BOXES, problems: Problems | None = None) -> DatasetSplit:
    """``root`` = ``VOCdevkit/VOC2012``; ``split`` names ``ImageSets/Main/<split>.txt``, or every
    ``Annotations/*.xml`` when None; ``names`` default to the 20 VOC classes.

    With ``problems``, a malformed XML file or object is filed there and left out; so is an image
    whose file is missing."""
    root = Path(root)
    names = list(names) if names is not None else list(VOC_CLASSES)
    label_of = {name: c for c, name in enumerate(names)}
    annotations = root / "Annotations"
    if split is None:
        xmls, source = sorted(annotations.glob("*.xml")), annotations
    else:
        source = common.safe_join(root / "ImageSets" / "Main", f"{split}.txt", f"{root}: split")
        xmls = [common.safe_join(annotations, f"{i}.xml", f"{source}: id {i!r}") for i in _read_ids(source)]
    report = ParseReport(problems=problems)
    missing_xmls = common.require_files(xmls, "annotation files", source, report)
    records = []
    for index, xml in enumerate(xmls):
        if xml in missing_xmls:
            continue
        try:
            records.append((index, *_voc_record(xml, root / "JPEGImages", label_of, report, max_boxes)))
        except DatasetError as e:
            report.skip(e)
    missing = common.require_files([image for _, image, _, _, _ in records], "images", source, report)
    samples = [common.build_sample(image, index, width, height, objects, report)
               for index, image, width, height, objects in records if image not in missing]
    return DatasetSplit(samples, names, list(range(len(names))), report)


def _read_ids(path: Path) -> list[str]:
    """First column of each non-empty line (``Main/<split>.txt`` has one; ``<class>_<split>.txt`` two)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})", UNREADABLE_FILE) from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})", UNREADABLE_FILE) from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _voc_record(xml: Path, image_dir: Path, label_of: dict[str, int], report: ParseReport,
                max_boxes: int) -> tuple[Path, int, int, list[common.Object]]:
    """One XML file: its image, the image's size and its objects (a malformed one filed in
    ``report`` and left out)."""
    try:
        root = ElementTree.parse(xml).getroot()
    except DefusedXmlException as e:
        raise DatasetError(f"{xml}: refused: {type(e).__name__} ({e}); entity declarations and external "
                           "references are not allowed", UNREADABLE_FILE) from None
    except ElementTree.ParseError as e:
        raise DatasetError(f"{xml}: not well-formed XML ({e})", UNREADABLE_FILE) from None
    except OSError as e:
        raise DatasetError(f"{xml}: cannot read ({e.strerror})", UNREADABLE_FILE) from None
    filename = (root.findtext("filename") or "").strip()
    image = common.safe_join(image_dir, filename, f"{xml}: <filename>") if filename else image_dir / f"{xml.stem}.jpg"
    width, height = _voc_size(root, xml, image)
    found = root.findall("object")
    common.check_box_count(len(found), max_boxes, str(xml))
    objects = []
    for i, obj in enumerate(found):
        try:
            objects.append(_voc_object(obj, f"{xml}: object #{i}", label_of))
        except DatasetError as e:
            report.skip(e)
    return image, width, height, objects


def _voc_size(root: Any, xml: Path, image: Path) -> tuple[int, int]:
    """``<size>``, or the image header where the annotation tool left it out or wrote zeros."""
    size = [_xml_number(root, f"size/{tag}", str(xml)) if root.find(f"size/{tag}") is not None else 0.0
            for tag in ("width", "height")]
    if all(size):
        if not all(s.is_integer() and 0 < s <= common.MAX_SIDE for s in size):
            raise DatasetError(f"{xml}: <size> must be positive whole pixels, got {size[0]}x{size[1]}")
        return int(size[0]), int(size[1])
    return image_size(image, max_pixels=2**62)  # only the size is wanted here: no pixel cap


def _voc_object(obj: Any, where: str, label_of: dict[str, int]) -> common.Object:
    name = (obj.findtext("name") or "").strip()
    if name not in label_of:
        raise DatasetError(f"{where}: class {common.show(name)} is not one of the {len(label_of)} names",
                           UNKNOWN_CLASS)
    if obj.find("bndbox") is None:
        raise DatasetError(f"{where}: missing <bndbox>")
    x1, y1, x2, y2 = (_xml_number(obj, f"bndbox/{tag}", where) for tag in ("xmin", "ymin", "xmax", "ymax"))
    if x2 < x1 or y2 < y1:
        raise DatasetError(f"{where}: bndbox has xmax < xmin or ymax < ymin: ({x1}, {y1}, {x2}, {y2})",
                           NEGATIVE_SIZE)
    difficult = (obj.findtext("difficult") or "0").strip()
    if difficult not in ("0", "1"):
        raise DatasetError(f"{where}: <difficult> must be 0 or 1, got {common.show(difficult)}")
    # 1-based inclusive pixel indices → continuous coordinates (see the module docstring).
    return (x1 - 1, y1 - 1, x2, y2), label_of[name], difficult == "1", where


def _xml_number(node: Any, tag: str, where: str) -> float:
    text = node.findtext(tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: <{tag}> must be a number, got {common.show(text)}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: <{tag}> must be finite, got {common.show(text)}")
    return value
