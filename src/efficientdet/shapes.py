"""A small detection dataset made on the fly: coloured shapes on real photos.

Backgrounds are random crops of the photos scikit-image ships (public domain), so the detector
must find objects in real clutter; shapes vary in class, colour, size, aspect and rotation.
Written as an ordinary COCO dataset (JPEG images + ``train.json`` / ``val.json`` + ``data.yaml``)
so that it goes through exactly the code path of a user's own data.

Scenes (:data:`SCENES`) give the kinds of data fine-tuning recipes are judged on: ``large`` (the
demo's: a few large objects, never overlapping), ``small`` (many objects of at most 32 pixels at the
image size), ``crowded`` (many objects overlapping one another; a box is the whole shape, also where
a later one hides part of it, but never all of it) and ``thin`` (elongated objects, 3–8 times longer than wide).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "star")
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
           "camera", "page", "text", "brick", "grass", "gravel")


@dataclass(frozen=True)
class Scene:
    """How one kind of image is filled. Sizes are shape radii as fractions of the image side;
    ``objects`` None means 1..``max_objects`` (the demo's)."""

    radius: tuple[float, float] = (0.06, 0.2)
    objects: tuple[int, int] | None = None
    spacing: float = 1.0  # centres at least spacing · (r1 + r2) apart: 1 never overlaps; below, partly
    stretch: tuple[float, float] | None = None  # length / width of elongated shapes


SCENES = {
    "large": Scene(),
    "small": Scene(radius=(0.02, 0.06), objects=(6, 20)),  # ≤ 32 px at 256: radius ≤ 0.0625 of the side
    "crowded": Scene(radius=(0.06, 0.14), objects=(6, 14), spacing=0.5),  # overlapping, none hidden whole
    "thin": Scene(radius=(0.08, 0.22), objects=(1, 6), stretch=(3.0, 8.0)),
}


def _backgrounds() -> list[np.ndarray]:
    from skimage import data

    photos = []
    for name in _PHOTOS:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        photos.append(img[..., :3].astype(np.uint8))
    return photos


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if kind == "triangle":
        return [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
                for k in range(3)]
    points = []  # star: 5 outer, 5 inner points
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        a = angle + k * math.pi / 5
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx, cy, r, angle, color, stretch: float = 1.0) -> list[float]:
    """Draw one shape, ``stretch`` times longer than wide (then lying along x or y); returns its
    tight xyxy box."""
    if kind == "circle":
        rx, ry = (r, r / stretch) if angle < math.pi else (r / stretch, r)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=color)
        return [cx - rx, cy - ry, cx + rx, cy + ry]
    if stretch == 1.0:
        pts = _polygon(kind, cx, cy, r, angle)
    else:  # squeezed across the shape's axis, then laid along x or y: an elongated box, as thin objects have
        quarter = round(angle / (math.pi / 2)) * math.pi / 2
        cos, sin = math.cos(quarter), math.sin(quarter)
        pts = [(cx + x * cos - y / stretch * sin, cy + x * sin + y / stretch * cos)
               for x, y in _polygon(kind, 0.0, 0.0, r, 0.0)]
    draw.polygon(pts, fill=color)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [min(xs), min(ys), max(xs), max(ys)]


def make_image(rng: np.random.Generator, backgrounds: list[np.ndarray], size: int, max_objects: int,
               scene: Scene = SCENES["large"]):
    """One image and its objects: ``(uint8 HxWx3, [(xyxy, class index), ...])``."""
    bg = backgrounds[rng.integers(len(backgrounds))]
    h, w = bg.shape[:2]
    crop = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    canvas = Image.fromarray(bg[y0:y0 + crop, x0:x0 + crop]).resize((size, size), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    objects, placed = [], []
    low, high = scene.objects or (1, max_objects)
    for _ in range(int(rng.integers(low, high + 1))):
        r = float(rng.uniform(*scene.radius) * size)
        cx, cy = rng.uniform(r, size - r, 2)
        if any(math.hypot(cx - px, cy - py) < scene.spacing * (r + pr) for px, py, pr in placed):
            continue  # too close: the demo's scenes have no occlusion, crowded ones no object hidden whole
        kind = int(rng.integers(len(CLASSES)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        angle = float(rng.uniform(0, 2 * math.pi))
        stretch = float(rng.uniform(*scene.stretch)) if scene.stretch else 1.0
        box = _draw_shape(draw, CLASSES[kind], float(cx), float(cy), r, angle, color, stretch)
        box = [min(max(v, 0.0), float(size)) for v in box]
        placed.append((cx, cy, r))
        objects.append((box, kind))
    return np.asarray(canvas), objects


def make_shapes_dataset(out: str | Path, num_train: int = 240, num_val: int = 60, image_size: int = 256,
                        max_objects: int = 4, seed: int = 0, scene: str = "large") -> Path:
    """Write the dataset of ``scene`` (a name of :data:`SCENES`) under ``out``; returns the path of
    its ``data.yaml``."""
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    backgrounds = _backgrounds()
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    ann_id = 1
    for split, count, offset in (("train", num_train, 0), ("val", num_val, num_train)):
        coco = {"images": [], "annotations": [], "categories": categories}
        for i in range(count):
            image_id = offset + i + 1
            pixels, objects = make_image(rng, backgrounds, image_size, max_objects, SCENES[scene])
            name = f"{split}_{image_id:05d}.jpg"
            Image.fromarray(pixels).save(out / "images" / name, quality=92)
            coco["images"].append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
            for (x1, y1, x2, y2), kind in objects:
                coco["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": kind + 1,
                                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                            "iscrowd": 0})
                ann_id += 1
        (out / f"{split}.json").write_text(json.dumps(coco))
    yaml_path = out / "data.yaml"
    yaml_path.write_text(
        "format: coco\n"
        "train: {images: images, annotations: train.json}\n"
        "val: {images: images, annotations: val.json}\n"
    )
    return yaml_path
