"""Builders of tiny datasets from real photos: the same objects in COCO, VOC and YOLO layouts."""

import json
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from skimage import data

NAMES = ["person", "cat", "cup"]
COCO_IDS = [1, 17, 47]
PHOTOS = {"a.jpg": "astronaut", "b.png": "chelsea", "c.jpg": "coffee"}  # 512x512, 300x451, 400x600
# xyxy pixel boxes (whole pixels, so that VOC's integers hold them), class index, crowd / difficult.
OBJECTS = {
    "a.jpg": [((10, 20, 200, 300), 0, False), ((100, 100, 150, 180), 2, True)],
    "b.png": [((0, 0, 451, 300), 1, False), ((30, 40, 60, 90), 2, False)],
    "c.jpg": [],
}


def coco_dict(photos: Path) -> dict:
    """A valid COCO record of the photos; annotation ids start at 17."""
    images, annotations = [], []
    for image_id, name in enumerate(PHOTOS):
        width, height = Image.open(photos / name).size
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for (x1, y1, x2, y2), label, crowd in OBJECTS[name]:
            annotations.append({"id": 17 + len(annotations), "image_id": image_id, "category_id": COCO_IDS[label],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": int(crowd)})
    categories = [{"id": i, "name": n} for i, n in zip(COCO_IDS, NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(root: Path, photos: Path) -> Path:
    (root / "annotations.json").write_text(json.dumps(coco_dict(photos)))
    return write_yaml(root, {"format": "coco", "train": {"images": str(photos), "annotations": "annotations.json"}})


def voc_xml(name: str, width: int, height: int, objects) -> str:
    """VOC XML: 1-based inclusive pixel indices, so xmin = x1 + 1, xmax = x2."""
    parts = [f"<annotation><filename>{name}</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for (x1, y1, x2, y2), label, difficult in objects:
        parts.append(f"<object><name>{NAMES[label]}</name><difficult>{int(difficult)}</difficult>"
                     f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"
                     "</object>")
    return "".join(parts) + "</annotation>"


def write_voc(root: Path, photos: Path) -> Path:
    voc = root / "VOC"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(photos / name, voc / "JPEGImages" / name)
        width, height = Image.open(photos / name).size
        (voc / "Annotations" / f"{Path(name).stem}.xml").write_text(voc_xml(name, width, height, OBJECTS[name]))
    (voc / "ImageSets/Main/train.txt").write_text("".join(f"{Path(n).stem}\n" for n in PHOTOS))
    return write_yaml(root, {"format": "voc", "names": NAMES, "train": {"root": "VOC", "split": "train"}})


def yolo_line(box, label: int, width: int, height: int) -> str:
    x1, y1, x2, y2 = box
    return f"{label} {(x1 + x2) / 2 / width} {(y1 + y2) / 2 / height} {(x2 - x1) / width} {(y2 - y1) / height}\n"


def write_yolo(root: Path, photos: Path) -> Path:
    """YOLO has no crowd flag: crowd objects are written as ordinary ones; c.jpg has no label file."""
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(photos / name, root / "images/train" / name)
        width, height = Image.open(photos / name).size
        if OBJECTS[name]:
            lines = [yolo_line(box, label, width, height) for box, label, _ in OBJECTS[name]]
            (root / "labels/train" / f"{Path(name).stem}.txt").write_text("".join(lines))
    return write_yaml(root, {"format": "yolo", "names": NAMES, "train": {"images": "images/train",
                                                                        "labels": "labels/train"}})


def write_yaml(root: Path, spec: dict) -> Path:
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def rectangle_image(height: int, width: int, box) -> np.ndarray:
    """Black ``[H, W, 3]`` uint8 image with a white filled rectangle at the xyxy ``box``."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def save_photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, photo in PHOTOS.items():
        Image.fromarray(getattr(data, photo)()).save(folder / name)
    return folder
