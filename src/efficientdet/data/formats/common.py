"""What every format's parser shares: boxes fitted to the image and counted, one image's
:class:`Sample`, the box limit, and file names that must stay inside their folder.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ..sample import (CLIPPED, MISSING_FILE, OUTSIDE, OUTSIDE_FOLDER, TOO_MANY_BOXES, ZERO_AREA, DatasetError,
                      ParseReport, Sample)

DEFAULT_MAX_BOXES = 10_000  # objects per image; COCO's most is 93, LVIS's under 1,000
MAX_SIDE = 2**31 - 1
_LISTED = 5  # missing files named in one error
show = reprlib.repr  # values in messages, shortened

Box = tuple[float, float, float, float]
Object = tuple[Box, int, bool, str]  # (xyxy box in pixels, class index, crowd, file and record)


def _fit_box(box: Box, width: int, height: int, where: str, report: ParseReport) -> np.ndarray | None:
    """The box clipped to the image as float32, or None (counted) when nothing of it is left."""
    x1, y1, x2, y2 = box

    def warn(kind: str) -> None:
        report.warn(kind, f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) in a {width}x{height} image")

    if x2 <= x1 or y2 <= y1:
        report.zero_area += 1
        warn(ZERO_AREA)
        return None
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        report.outside += 1
        warn(OUTSIDE)
        return None
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    fitted = np.array(clipped, dtype=np.float32)
    if fitted[2] <= fitted[0] or fitted[3] <= fitted[1]:  # a sliver that float32 cannot hold apart
        report.zero_area += 1
        warn(ZERO_AREA)
        return None
    if clipped != box:
        report.clipped += 1
        warn(CLIPPED)
    return fitted


def build_sample(path: Path, image_id: int, width: int, height: int, objects: list[Object],
            report: ParseReport) -> Sample:
    """Fit the objects' boxes to the image (counted in ``report``) and build the :class:`Sample`."""
    boxes, labels, crowd = [], [], []
    for box, label, is_crowd, where in objects:
        fitted = _fit_box(box, width, height, where, report)
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


def check_box_count(count: int, max_boxes: int, where: str) -> None:
    """Refuse an image with more than ``max_boxes`` objects (see :mod:`efficientdet.data.formats`), naming the count."""
    if count > max_boxes:
        raise DatasetError(f"{where}: {count} boxes in one image, over the limit of {max_boxes} (max_boxes)",
                           TOO_MANY_BOXES)


def safe_join(root: Path, name: Any, where: str) -> Path:
    """``root / name``, refusing names that leave ``root``: an annotation file must not make the
    loader read arbitrary files (absolute paths, ``..``, drive letters)."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise DatasetError(f"{where}: file name must be a non-empty string, got {show(name)}")
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or PureWindowsPath(name).drive:
        raise DatasetError(f"{where}: file name {show(name)} leaves the folder {root}", OUTSIDE_FOLDER)
    return root / relative


def require_files(paths: Sequence[Path], what: str, source: Path, report: ParseReport) -> set[Path]:
    """One error with the count and the first few names, rather than a crash later in a worker
    (the first ``problems.listed`` names when the report collects problems); returns the missing."""
    missing = [p for p in paths if not os.path.isfile(p)]  # isfile: False (no raise) on odd names
    if missing:
        listed = _LISTED if report.problems is None else report.problems.listed
        shown = ", ".join(str(p) for p in missing[:listed])
        more = f", ... and {len(missing) - listed} more" if len(missing) > listed else ""
        report.skip(DatasetError(f"{source}: {len(missing)} of {len(paths)} {what} missing: {shown}{more}",
                                 MISSING_FILE), count=len(missing))
    return set(missing)
