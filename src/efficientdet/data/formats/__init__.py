"""Dataset formats → :class:`DatasetSplit`: COCO JSON (:mod:`.coco`), Pascal VOC XML (:mod:`.voc`),
YOLO txt (:mod:`.yolo`), and the YAML file that names one of them per split (:mod:`.spec`).

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

Every parser treats imperfect boxes the same way (:mod:`.common`) and counts it in
``DatasetSplit.report``: no area → dropped; partly outside the image → clipped to it (as COCO
tooling does); entirely outside → dropped; crowd / difficult → kept and flagged in
``Sample.crowd``. Images without boxes are kept (negatives). Malformed records (wrong types,
NaN/inf, negative sizes, unknown or duplicate ids, paths that leave the image folder, missing
files) raise :class:`DatasetError` naming the file and the record: a dataset is fixed once rather
than trained on half-read. Given a :class:`~efficientdet.data.sample.Problems` (``problems=``),
every parser instead files each such record there, under its kind, and goes on without it, so that
one pass finds them all; what still raises then is a file that cannot be read at all. An image with more than ``max_boxes`` objects (default
:data:`DEFAULT_MAX_BOXES`, counted before boxes are clipped or dropped) is a :class:`DatasetError`
naming it and the count: the loss and the anchor assignment hold a boxes × anchors matrix per
image, which such an image would blow up.
"""

from .coco import load_coco
from .common import DEFAULT_MAX_BOXES, Box, Object
from .spec import FORMATS, SPLITS, DatasetSpec, load_dataset_yaml, load_split, split_source
from .voc import VOC_CLASSES, load_voc
from .yolo import IMAGE_SUFFIXES, load_yolo

__all__ = [
    "DEFAULT_MAX_BOXES", "FORMATS", "IMAGE_SUFFIXES", "SPLITS", "VOC_CLASSES", "Box", "DatasetSpec", "Object",
    "load_coco", "load_dataset_yaml", "load_split", "load_voc", "load_yolo", "split_source",
]
