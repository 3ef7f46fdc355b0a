"""The one sample type every dataset format parses into, the report of what parsing changed, and
the errors of the data pipeline.

Conventions: boxes are ``xyxy`` in absolute pixels of the (EXIF-upright) image, float32; labels
are contiguous class indices ``0..C-1``; ``DatasetSplit.label_ids[c]`` is the dataset's own id
of class ``c`` (COCO category ids, 1..90 with gaps) and ``names[c]`` its name.

Ignored objects (COCO ``iscrowd=1``, VOC ``difficult=1``) stay in the sample, with the same
boxes and labels as the others, flagged by ``Sample.crowd``. They are not training targets —
the official trainer drops crowd boxes (``skip_crowd_during_training``) and ``DetectionDataset``
does the same — and an evaluator gives them COCO's ``iscrowd`` treatment (a detection matching
one is neither a true nor a false positive). Keeping them flagged, rather than in separate
arrays, lets an evaluator match them per class with the labels it already has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset that cannot be read as given; the message names the file and the record."""


class ImageError(DatasetError):
    """An image file that cannot be decoded (corrupt, truncated, empty, too large); names the path."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One image and its objects. ``eq=False``: numpy fields make ``==`` ambiguous, compare arrays.

    ``crowd`` ``[N]`` bool flags ignored objects (see the module docstring); ``None`` means none
    are, and is stored as an all-False array so that consumers never branch on it.
    ``width``/``height`` are the upright image size when the annotation states it.
    """

    image_path: Path
    boxes: np.ndarray  # [N, 4] float32 xyxy pixels
    labels: np.ndarray  # [N] int64 class indices
    image_id: int
    width: int | None = None
    height: int | None = None
    crowd: np.ndarray | None = None  # [N] bool

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        crowd = np.zeros(len(labels), bool) if self.crowd is None else np.asarray(self.crowd, dtype=bool)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != (len(boxes),) or crowd.shape != labels.shape:
            raise ValueError(f"{self.image_path}: boxes {boxes.shape}, labels {labels.shape} and crowd "
                             f"{crowd.shape} must be [N, 4], [N] and [N]")
        # frozen: the normalised arrays replace what was given, once, here.
        object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "crowd", crowd)


@dataclass
class ParseReport:
    """What a parser dropped or changed, and why. Counts objects unless the name says images."""

    images: int = 0
    boxes: int = 0  # kept, crowd included
    crowd: int = 0  # kept, flagged in Sample.crowd: COCO iscrowd=1, VOC difficult=1
    clipped: int = 0  # kept, clipped to the image
    zero_area: int = 0  # dropped: no area (before or after clipping)
    outside: int = 0  # dropped: entirely outside the image
    empty_images: int = 0  # images kept with no boxes (negatives)
    missing_labels: int = 0  # YOLO images without a label file (also counted in empty_images)

    def summary(self) -> str:
        """One line, e.g. ``3 images (1 without boxes), 6 boxes (1 crowd); clipped to the image: 2;
        dropped: 2 zero-area, 1 outside the image``."""
        empty = [f"{n} {what}" for what, n in (("without boxes", self.empty_images),
                                               ("without a label file", self.missing_labels)) if n]
        images = f"{self.images} images" + (f" ({', '.join(empty)})" if empty else "")
        crowd = f" ({self.crowd} crowd)" if self.crowd else ""
        parts = [f"{images}, {self.boxes} boxes{crowd}"]
        if self.clipped:
            parts.append(f"clipped to the image: {self.clipped}")
        dropped = [f"{n} {why}" for why, n in (("zero-area", self.zero_area), ("outside the image", self.outside)) if n]
        if dropped:
            parts.append("dropped: " + ", ".join(dropped))
        return "; ".join(parts)


@dataclass
class DatasetSplit:
    """The parsed samples of one split plus its label space (``names[c]``, ``label_ids[c]``)."""

    samples: list[Sample]
    names: list[str]
    label_ids: list[int]
    report: ParseReport = field(default_factory=ParseReport)

    @property
    def num_classes(self) -> int:
        return len(self.names)
