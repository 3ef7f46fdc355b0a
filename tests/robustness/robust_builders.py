"""Inputs of the robustness suite, all generated: good and bad images, tiny datasets, CLI helpers.

Every bad input is a small file written into a temporary folder; nothing is downloaded. The
model used end to end is ``efficientdet-lite0`` at 128×128 with random weights: what is checked
is how files are read, not what is detected.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from efficientdet.cli import main

IMAGE_SIZE = "128"
NAMES = ["circle", "square", "triangle", "star"]  # 4 classes, COCO ids 1..4
MODEL_ARGS = ["--model", "efficientdet-lite0", "--image-size", IMAGE_SIZE]
PROGRESS = re.compile(r"^\s*epoch \d+/\d+: ")  # a training progress bar's redraw


# ---------------------------------------------------------------- running the CLI


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys, *argv: object) -> CliResult:
    """``efficientdet ARGV`` in-process, with what it printed."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def run_cli_captured(*argv: object) -> CliResult:
    """As :func:`run_cli`, for module-scoped fixtures, where pytest's ``capsys`` is not available."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


# Child processes get one torch thread too (see conftest.one_torch_thread); unbuffered output so
# that a test can watch a run's progress while it runs.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli_command(*argv: object) -> list[str]:
    return [sys.executable, "-m", "efficientdet.cli", *map(str, argv)]


def run_cli_subprocess(*argv: object, cwd: Path, timeout: float = 300) -> CliResult:
    """``python -m efficientdet.cli ARGV`` as a user runs it: what reaches the terminal, exit status."""
    proc = subprocess.run(cli_command(*argv), cwd=cwd, env=CHILD_ENV, capture_output=True, text=True,
                          timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def message_lines(err: str) -> list[str]:
    r"""What stderr says once training's progress bar is left out: tqdm redraws it with ``\r`` and
    clears it on a terminal, so only the lines after it are read."""
    return [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS.match(line)]


def assert_user_error(result: CliResult, command: str, *needles: str) -> str:
    """The CLI's contract for a user error: exit 2, exactly one line on stderr, no traceback, the
    line naming what it must (file, record, problem). Returns the line."""
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err, result.err
    lines = message_lines(result.err)
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"efficientdet {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------- images


def picture(height: int = 48, width: int = 72, seed: int = 0) -> np.ndarray:
    """``[H, W, 3]`` uint8 noise: no symmetry, so a lost flip or rotation changes the detections."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def halved(data: bytes) -> bytes:
    """The first half of a file: its header reads, its pixels stop short."""
    return data[: len(data) // 2]


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG header declaring ``width x height`` RGB pixels and no pixel data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def jpeg_declaring(path: Path, width: int, height: int) -> None:
    """A small real JPEG whose frame header (SOF0) is patched to declare ``width x height``."""
    data = bytearray(jpeg_bytes(picture(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


# The EXIF orientations as the standard defines them: how the stored pixels relate to the upright
# image (stored = f(upright)); a viewer applies the inverse.
EXIF_STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


def exif_png(path: Path, upright: np.ndarray, orientation: int) -> None:
    """The upright image stored turned as ``orientation`` says, with that EXIF tag (PNG: lossless)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(EXIF_STORED[orientation](upright))).save(path, exif=exif)


def write_good_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Every image kind that must decode (to upright RGB) → ``{file name: upright (width, height)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = picture()
    Image.fromarray(rgb).save(folder / "upright.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "one-pixel.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + 3).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette-transparent.png",
                                                                          transparency=0)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 90, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb[..., 1]).save(folder / "grey.png")
    Image.fromarray(rgb).save(folder / "ünïcödé 名前 with spaces.png")
    for orientation in EXIF_STORED:
        exif_png(folder / f"exif-{orientation}.png", rgb, orientation)
    return {p.name: (1, 1) if p.name == "one-pixel.png" else (72, 48) for p in folder.iterdir()}


# name → (writer, the problem its error line must state)
BAD_IMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero-byte.jpg": (lambda p: p.write_bytes(b""), "cannot identify image file"),
    "truncated.jpg": (lambda p: p.write_bytes(halved(jpeg_bytes(picture()))), "image file is truncated"),
    "truncated.png": (lambda p: p.write_bytes(halved(png_bytes(picture()))), "image file is truncated"),
    "text-named.jpg": (lambda p: p.write_text("these are notes, not pixels\n"), "cannot identify image file"),
    "bomb-120mp.png": (lambda p: png_header_only(p, 12_000, 10_000),
                       "12000x10000 is 120000000 pixels, over the limit of 100000000"),
    "bomb-3600mp.jpg": (lambda p: jpeg_declaring(p, 60_000, 60_000), "could be decompression bomb"),
}


# Bad files whose header reads: a dataset's up-front check passes them, decoding finds them.
DECODE_TIME = ("truncated.jpg", "truncated.png")


def write_bad_images(folder: Path) -> dict[str, str]:
    """Every bad image of :data:`BAD_IMAGES` → ``{file name: expected problem}``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (write, _) in BAD_IMAGES.items():
        write(folder / name)
    return {name: problem for name, (_, problem) in BAD_IMAGES.items()}


# ---------------------------------------------------------------- datasets


def coco_record(sizes: dict[str, tuple[int, int]]) -> dict:
    """A COCO record of the images ``{file name: (width, height)}``, one centred box each."""
    images, annotations = [], []
    for i, (name, (width, height)) in enumerate(sorted(sizes.items())):
        image_id = 1 + i
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        box = [width / 4, height / 4, width / 2, height / 2]
        annotations.append({"id": image_id, "image_id": image_id, "category_id": 1 + i % 4, "bbox": box,
                            "iscrowd": 0})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_dataset(root: Path, images: Path, record: dict) -> Path:
    """``root/data.yaml``: train and val splits both the COCO ``record`` over the folder ``images``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(json.dumps(record))
    split = {"images": str(images), "annotations": "annotations.json"}
    (root / "data.yaml").write_text(json.dumps({"format": "coco", "train": split, "val": split}))  # JSON is YAML
    return root / "data.yaml"


# ---------------------------------------------------------------- one small valid dataset per format
# Two images, train and val splits over the same files, 4 classes; each test breaks one thing.

SIZES = {"a.png": (48, 32), "b.png": (40, 30)}  # (width, height)


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, (width, height)) in enumerate(SIZES.items()):
        Image.fromarray(picture(height, width, seed)).save(folder / name)


def write_yaml(root: Path, fmt: str, split: dict, names: bool) -> Path:
    spec = {"format": fmt, "train": split, "val": split, **({"names": NAMES} if names else {})}
    (root / "data.yaml").write_text(json.dumps(spec))
    return root / "data.yaml"


def coco_dataset(root: Path) -> Path:
    write_images(root / "images")
    images = [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, (w, h)) in enumerate(SIZES.items())]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10], "iscrowd": 0},
                   {"id": 2, "image_id": 2, "category_id": 3, "bbox": [10, 5, 8, 8], "iscrowd": 0}]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return write_yaml(root, "coco", {"images": "images", "annotations": "annotations.json"}, names=False)


VOC_OBJECT = ("<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>2</ymin>"
              "<xmax>{x2}</xmax><ymax>12</ymax></bndbox></object>")


def voc_xml(name: str, objects: str) -> str:
    width, height = SIZES[name]
    return (f"<annotation><filename>{name}</filename><size><width>{width}</width><height>{height}</height>"
            f"</size>{objects}</annotation>")


def voc_dataset(root: Path) -> Path:
    voc = root / "VOC"
    write_images(voc / "JPEGImages")
    (voc / "Annotations").mkdir()
    (voc / "ImageSets/Main").mkdir(parents=True)
    for name in SIZES:
        (voc / "Annotations" / f"{Path(name).stem}.xml").write_text(
            voc_xml(name, VOC_OBJECT.format(name="square", x1=2, x2=20)))
    (voc / "ImageSets/Main/train.txt").write_text("a\nb\n")
    return write_yaml(root, "voc", {"root": "VOC", "split": "train"}, names=True)


def yolo_dataset(root: Path) -> Path:
    write_images(root / "images")
    (root / "labels").mkdir()
    (root / "labels/a.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "labels/b.txt").write_text("2 0.3 0.4 0.2 0.2\n1 0.6 0.6 0.1 0.1\n")
    return write_yaml(root, "yolo", {"images": "images", "labels": "labels"}, names=True)


DATASETS = {"coco": coco_dataset, "voc": voc_dataset, "yolo": yolo_dataset}
