"""Label spaces: what each model output means; COCO's as the official checkpoints predict it.

The official models have 90 outputs: output ``c`` is COCO category id ``c + 1``
(``CLASS_OFFSET = 1`` in ``tf2/postprocess.py``). Ten ids of 1..90 are unused by COCO 2017
and have no name; detections of them are kept, named ``"unused-<id>"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

COCO_CATEGORIES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}

# The output count of the official checkpoints and of effdet's COCO models.
COCO_NUM_CLASSES = 90


def coco_label_space() -> tuple[list[int], list[str]]:
    """(category id, name) for each of the 90 outputs of an official checkpoint."""
    ids = list(range(1, COCO_NUM_CLASSES + 1))
    return ids, [COCO_CATEGORIES.get(i, f"unused-{i}") for i in ids]


def predicts_coco(num_classes: int) -> bool:
    """Whether a model whose weights name no label space predicts COCO's (:func:`coco_label_space`):
    one with 90 outputs does, as the official checkpoints and effdet's COCO models have them."""
    return num_classes == COCO_NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """Output ``c`` is category ``ids[c]`` named ``names[c]``: training stores its dataset's with the
    weights, so that detections carry the dataset's own ids and names, not output indices."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError(f"label_ids ({len(self.ids)}) and names ({len(self.names)}) must have as many entries")


def label_space(num_classes: int, stored: LabelSpace | None = None, label_ids: Sequence[int] | None = None,
                class_names: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Ids and names of a model's outputs: those given (either replaces ``stored``), else those
    stored with its weights, else COCO's for a 90-class model (official checkpoints: output ``c``
    is category id ``c + 1``), else ids ``0..C-1`` named by their index."""
    if label_ids is None and class_names is None:
        if stored is not None:
            label_ids, class_names = stored.ids, stored.names
        elif predicts_coco(num_classes):
            return coco_label_space()
    ids = list(label_ids) if label_ids is not None else list(range(num_classes))
    names = list(class_names) if class_names is not None else [str(i) for i in ids]
    if len(ids) != num_classes or len(names) != num_classes:
        raise ValueError(f"label_ids ({len(ids)}) and class_names ({len(names)}) must have "
                         f"num_classes={num_classes} entries")
    return ids, names
