"""The one sample type every dataset format parses into, the report of what parsing changed, and
the errors of the data pipeline.

Conventions: boxes are ``xyxy`` in absolute pixels of the (EXIF-upright) image, float32; labels
are contiguous class indices ``0..C-1``; ``DatasetSplit.label_ids[c]`` is the dataset's own id
of class ``c`` (COCO category ids, 1..90 with gaps) and ``names[c]`` its name.

A parser given a :class:`Problems` records each malformed record there and goes on without it,
so that a dataset's problems are all found in one pass (``efficientdet data check``, the start of
``train``); without one, the first problem raises, naming the file and the record.

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


ERROR, WARNING = "error", "warning"  # a record left out / a change or a risk to know of

# Kinds of problem: the headings under which a check lists them, errors first.
INVALID = "invalid value"  # wrong type, missing key, NaN / inf, out of range
NEGATIVE_SIZE = "negative box size"
UNKNOWN_CLASS = "unknown class"
UNKNOWN_IMAGE = "unknown image id"
DUPLICATE_ID = "duplicate id"
OUTSIDE_FOLDER = "file name outside its folder"
MISSING_FILE = "missing file"
UNREADABLE_FILE = "unreadable file"
UNREADABLE_IMAGE = "unreadable image"
SIZE_MISMATCH = "image size differs from its annotation"
TOO_MANY_BOXES = "too many boxes in one image"
EMPTY_SPLIT = "nothing to train on or to score"
NO_MATCH = "no box matches an anchor"
# Warnings: what parsing changed, and what a run would be better without.
CLIPPED = "box clipped to the image"
ZERO_AREA = "box without area (dropped)"
OUTSIDE = "box outside the image (dropped)"
NO_LABEL_FILE = "image without a label file"
UNUSED_CLASS = "class without a training box"
LOW_ANCHOR_FIT = "low anchor fit"


class DatasetError(ValueError):
    """A dataset that cannot be read as given; the message names the file and the record, ``kind``
    the kind of problem (one of the names above) a check files it under."""

    def __init__(self, message: str, kind: str = INVALID):
        super().__init__(message)
        self.kind = kind


class ImageError(DatasetError):
    """An image file that cannot be decoded (corrupt, truncated, empty, too large); names the path."""

    def __init__(self, message: str, kind: str = UNREADABLE_IMAGE):
        super().__init__(message, kind)


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


class Problems:
    """Every problem of a dataset, found in one pass and filed by kind: errors (a record that cannot
    be used, left out by the parser) and warnings (a box that parsing changed, a class without
    boxes). The first ``listed`` messages of each kind are kept with the count of all. A message
    seen before is not counted again: two splits over one annotation file find the same problems.
    """

    def __init__(self, listed: int = 20):
        self.listed = listed
        self.counts: dict[tuple[str, str], int] = {}  # (ERROR | WARNING, kind) → count
        self.first: dict[tuple[str, str], list[str]] = {}
        self.unlisted: dict[tuple[str, str], int] = {}  # messages past the first ``listed``
        self._seen: set[str] = set()

    def error(self, error: DatasetError, count: int = 1) -> None:
        self._add(ERROR, error.kind, str(error), count)

    def warn(self, kind: str, message: str, count: int = 1) -> None:
        self._add(WARNING, kind, message, count)

    def _add(self, severity: str, kind: str, message: str, count: int) -> None:
        if message in self._seen:
            return
        self._seen.add(message)
        key = (severity, kind)
        self.counts[key] = self.counts.get(key, 0) + count
        listed = self.first.setdefault(key, [])
        if len(listed) < self.listed:
            listed.append(message)
        else:
            self.unlisted[key] = self.unlisted.get(key, 0) + 1

    def total(self, severity: str) -> int:
        return sum(n for (s, _), n in self.counts.items() if s == severity)

    def kinds(self, severity: str) -> dict[str, int]:
        """Kind → count, in the order first found."""
        return {kind: n for (s, kind), n in self.counts.items() if s == severity}

    def lines(self, severity: str) -> list[str]:
        """Each kind with its count, then its first messages, indented."""
        lines = []
        for kind, count in self.kinds(severity).items():
            shown = self.first[severity, kind]
            more = f" (the first {len(shown)} listed)" if self.unlisted.get((severity, kind)) else ""
            lines += [f"{kind}: {count}{more}"] + [f"  {m}" for m in shown]
        return lines

    def raise_errors(self, source: object) -> None:
        """One :class:`DatasetError` for every error found: a single problem as its own line, several
        as a list under a line naming ``source`` (the dataset YAML) and their count."""
        messages = [m for (s, _), listed in self.first.items() if s == ERROR for m in listed]
        if not messages:
            return
        if len(messages) == 1:
            (kind,) = self.kinds(ERROR)
            raise DatasetError(messages[0], kind)
        raise DatasetError(f"{source}: {self.total(ERROR)} problems in the dataset, the first {self.listed} of "
                           "each kind listed (`efficientdet data check` adds the statistics):\n  "
                           + "\n  ".join(self.lines(ERROR)))

    def to_dict(self) -> dict[str, dict[str, dict]]:
        """``{"errors": {kind: {"count": n, "first": [...]}}, "warnings": {...}}``."""
        return {name: {kind: {"count": n, "first": self.first[severity, kind]}
                       for kind, n in self.kinds(severity).items()}
                for name, severity in (("errors", ERROR), ("warnings", WARNING))}


@dataclass
class ParseReport:
    """What a parser dropped or changed, and why. Counts objects unless the name says images.

    ``problems``: where the parser files a malformed record (:meth:`skip`) and each box it changed;
    None (the default) makes the first malformed record raise.
    """

    images: int = 0
    boxes: int = 0  # kept, crowd included
    crowd: int = 0  # kept, flagged in Sample.crowd: COCO iscrowd=1, VOC difficult=1
    clipped: int = 0  # kept, clipped to the image
    zero_area: int = 0  # dropped: no area (before or after clipping)
    outside: int = 0  # dropped: entirely outside the image
    empty_images: int = 0  # images kept with no boxes (negatives)
    missing_labels: int = 0  # YOLO images without a label file (also counted in empty_images)
    problems: Problems | None = field(default=None, repr=False, compare=False)

    def skip(self, error: DatasetError, count: int = 1) -> None:
        """A record that cannot be used: raised without a collector, else filed and left out."""
        if self.problems is None:
            raise error
        self.problems.error(error, count)

    def warn(self, kind: str, message: str) -> None:
        if self.problems is not None:
            self.problems.warn(kind, message)

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
