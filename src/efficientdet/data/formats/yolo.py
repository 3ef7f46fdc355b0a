"""YOLO txt (Ultralytics layout): ``class cx cy w h`` per line, normalised to the upright image,
whose size comes from the image header (EXIF orientation applied, as Ultralytics does); an image
without a label file has no objects. ``label_ids`` = ``0..C-1``; ``image_id`` = position in the
sorted image list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..images import DEFAULT_MAX_PIXELS, check_images, probe_images
from ..sample import (NO_LABEL_FILE, UNKNOWN_CLASS, UNREADABLE_FILE, DatasetError, DatasetSplit, ImageError,
                      ParseReport, Problems)
from .common import DEFAULT_MAX_BOXES, Object, build_sample, check_box_count, show

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def load_yolo(images: str | Path, labels: str | Path, names: Sequence[str],
              max_pixels: int = DEFAULT_MAX_PIXELS, max_boxes: int = DEFAULT_MAX_BOXES,
              problems: Problems | None = None) -> DatasetSplit:
    """Ultralytics layout: ``images/<split>/**/*.jpg`` and ``labels/<split>/**/*.txt`` of the same stem.

    With ``problems``, an unreadable image or label file is filed there and its image left out; a
    malformed line is filed and left out."""
    images, labels = Path(images), Path(labels)
    # not is_dir(): a dangling symlink stays in the list, for the header check to name it as unreadable.
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    report = ParseReport(problems=problems)
    if problems is None:
        sizes = check_images(files, max_pixels)  # the boxes are normalised: the sizes are needed now
    else:
        sizes = probe_images(files, max_pixels)
    samples = []
    for index, (image, size) in enumerate(zip(files, sizes)):
        if isinstance(size, ImageError):
            report.skip(size)
            continue
        width, height = size
        label_file = labels / image.relative_to(images).with_suffix(".txt")
        objects: list[Object] = []
        if label_file.is_file():
            try:
                objects = _yolo_objects(label_file, width, height, len(names), max_boxes, report)
            except DatasetError as e:
                report.skip(e)
                continue
        else:
            report.missing_labels += 1
            report.warn(NO_LABEL_FILE, f"{image}: no label file {label_file}")
        samples.append(build_sample(image, index, width, height, objects, report))
    return DatasetSplit(samples, list(names), list(range(len(names))), report)


def _yolo_objects(path: Path, width: int, height: int, num_classes: int, max_boxes: int,
                  report: ParseReport) -> list[Object]:
    """The objects of one label file, a malformed line filed in ``report`` and left out."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})", UNREADABLE_FILE) from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})", UNREADABLE_FILE) from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    check_box_count(len(rows), max_boxes, str(path))  # counted before any line is split or parsed
    objects = []
    for number, line in rows:
        try:
            objects.append(_yolo_object(line.split(), f"{path}:{number}", width, height, num_classes))
        except DatasetError as e:
            report.skip(e)
    return objects


def _yolo_object(fields: list[str], where: str, width: int, height: int, num_classes: int) -> Object:
    if len(fields) != 5:
        raise DatasetError(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}")
    try:
        label = int(fields[0])
    except ValueError:
        raise DatasetError(f"{where}: class {show(fields[0])} is not an integer") from None
    if not 0 <= label < num_classes:
        raise DatasetError(f"{where}: class {label} is not in 0..{num_classes - 1} ({num_classes} names)",
                           UNKNOWN_CLASS)
    try:
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        raise DatasetError(f"{where}: cx cy w h must be numbers, got {show(' '.join(fields[1:]))}") from None
    if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):  # also refuses NaN
        raise DatasetError(f"{where}: cx cy w h must be normalised to [0, 1], got {show(' '.join(fields[1:]))}")
    box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
    return box, label, False, where
