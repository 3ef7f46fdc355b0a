"""Training and evaluation data: dataset formats → :class:`Sample` → transforms → batches.

Boxes are xyxy in absolute pixels (float32), labels contiguous class indices ``0..C-1``; each
split carries ``names`` and ``label_ids`` (index → the dataset's own category id).
"""

from .formats import (
    VOC_CLASSES,
    DatasetSpec,
    load_coco,
    load_dataset_yaml,
    load_split,
    load_voc,
    load_yolo,
)
from .loader import Batch, DetectionDataset, build_loader, collate
from .sample import DatasetError, DatasetSplit, ImageError, ParseReport, Problems, Sample
from .images import DEFAULT_MAX_PIXELS, check_images, image_size, read_image
from .transforms import EvalTransform, TrainTransform, Transformed

__all__ = [
    "Batch", "DEFAULT_MAX_PIXELS", "DatasetError", "DatasetSpec", "DatasetSplit", "DetectionDataset",
    "EvalTransform", "ImageError", "ParseReport", "Problems", "Sample", "TrainTransform", "Transformed",
    "VOC_CLASSES", "build_loader", "check_images", "collate", "image_size", "load_coco", "load_dataset_yaml",
    "load_split", "load_voc", "load_yolo", "read_image",
]
