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

from ..sample import DatasetError, ParseReport, Sample

DEFAULT_MAX_BOXES = 10_000  # objects per image; COCO's most is 93, LVIS's under 1,000
MAX_SIDE = 2**31 - 1
_LISTED = 5  # missing files named in one error
show = reprlib.repr  # values in messages, shortened

Box = tuple[float, float, float, float]
Object = tuple[Box, int, bool]  # (xyxy box in pixels, class index, crowd)


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


def build_sample(path: Path, image_id: int, width: int, height: int, objects: list[Object],
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


def check_box_count(count: int, max_boxes: int, where: str) -> None:
    """Refuse an image with more than ``max_boxes`` objects (see :mod:`efficientdet.data.formats`), naming the count."""
    if count > max_boxes:
        raise DatasetError(f"{where}: {count} boxes in one image, over the limit of {max_boxes} (max_boxes)")


def safe_join(root: Path, name: Any, where: str) -> Path:
    """``root / name``, refusing names that leave ``root``: an annotation file must not make the
    loader read arbitrary files (absolute paths, ``..``, drive letters)."""
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise DatasetError(f"{where}: file name must be a non-empty string, got {show(name)}")
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or PureWindowsPath(name).drive:
        raise DatasetError(f"{where}: file name {show(name)} leaves the folder {root}")
    return root / relative


def require_files(paths: Sequence[Path], what: str, source: Path) -> None:
    """One error with the count and the first few names, rather than a crash later in a worker."""
    missing = [p for p in paths if not os.path.isfile(p)]  # isfile: False (no raise) on odd names
    if missing:
        shown = ", ".join(str(p) for p in missing[:_LISTED])
        more = f", ... and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
        raise DatasetError(f"{source}: {len(missing)} of {len(paths)} {what} missing: {shown}{more}")
