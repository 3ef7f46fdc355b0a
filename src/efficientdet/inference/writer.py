"""Predictions → files: annotated images and videos, COCO results, per-file JSON / text labels."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .sources import Prediction, Source, drawn_name
from .video import VideoWriter


def check_out_dir(out_dir: str | os.PathLike, sources: Sequence[Source]) -> None:
    """Refuse an output folder that is a file, or that holds an input at any depth: the outputs
    written there (annotated copies, ``detections.json``, ``labels/``) could overwrite it."""
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder; the output must go to a folder")
    for source in sources:
        if out in source.path.resolve().parents:
            raise ValueError(f"output folder {out_dir} holds the input {source.path}; "
                             f"choose another output folder so that no input can be overwritten")


# Distinct, readable colours; class c gets PALETTE[c % len(PALETTE)].
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40),
           (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128))


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                    names: Sequence[str], threshold: float = 0.4) -> np.ndarray:
    """``[3, H, W]`` uint8 → ``[H, W, 3]`` uint8 with the detections scoring ≥ ``threshold`` drawn:
    a box per object in its class colour and "name score" on a filled tag, sized to the image."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    draw = ImageDraw.Draw(canvas)
    side = min(canvas.size)
    line = max(1, round(side / 300))
    font = ImageFont.load_default(size=max(10, round(side / 40)))
    keep = (scores >= threshold).nonzero().flatten().tolist()
    for i in reversed(keep):  # the best box drawn last, on top
        colour = PALETTE[int(labels[i]) % len(PALETTE)]
        x1, y1, x2, y2 = boxes[i].tolist()
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        text = f"{names[i]} {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        th, tw = bottom - top + 2 * line, right - left + 2 * line
        ty = y1 - th if y1 - th >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((x1, ty, x1 + tw, ty + th), fill=colour)
        ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
        draw.text((x1 + line - left, ty + line - top), text, fill=ink, font=font)
    return np.asarray(canvas)


def _detections_json(pred: Prediction) -> list[dict[str, Any]]:
    return [{"box": [round(v, 2) for v in box], "score": round(score, 5), "category_id": label, "name": name}
            for box, score, label, name in zip(pred.boxes.tolist(), pred.scores.tolist(), pred.labels.tolist(),
                                               pred.names)]


@dataclasses.dataclass(frozen=True)
class Record:
    """One image or video frame as ``detections.json`` and ``images.json`` list it, before it has an
    id: ids are given in the order of all records, which under ``torchrun`` only rank 0 holds."""

    name: str  # the source's output name
    frame: int | None
    width: int
    height: int
    results: list[dict[str, Any]]  # COCO results without their image_id


class OutputWriter:
    """Writes predictions under ``out_dir`` as they arrive, and keeps a :class:`Record` of each for
    :func:`write_summaries`:

    * ``<name>`` — the image with its detections drawn (``<stem>.mp4`` for a video), unless ``draw`` is off;
      ``<name>`` keeps a file's path below the input folder it was found in (``sub/a.jpg``);
    * ``labels/<name>.json`` / ``labels/<name>.txt`` on request (``category_id score x1 y1 x2 y2`` per
      line, the frame index first for a video).
    """

    def __init__(self, out_dir: str | os.PathLike, draw: bool = True, draw_threshold: float = 0.4,
                 save_json: bool = False, save_txt: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.draw, self.draw_threshold = draw, draw_threshold
        self.save_json, self.save_txt = save_json, save_txt
        self.records: list[Record] = []
        self._video: tuple[Source, VideoWriter | None, list[dict[str, Any]], list[str]] | None = None
        if save_json or save_txt:
            (self.out_dir / "labels").mkdir(exist_ok=True)

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write(self, pred: Prediction) -> None:
        results = [{"category_id": label, "score": round(score, 5),
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]}
                   for (x1, y1, x2, y2), score, label in zip(pred.boxes.tolist(), pred.scores.tolist(),
                                                             pred.labels.tolist())]
        self.records.append(Record(pred.source.name, pred.frame, pred.width, pred.height, results))
        if pred.frame is None:
            self._finish_video()
            self._write_image(pred)
        else:
            self._write_frame(pred)

    def _drawn(self, pred: Prediction) -> np.ndarray:
        if pred.image is None:
            raise ValueError("predictions carry no image to draw: predict with keep_images=True")
        return draw_detections(pred.image, pred.boxes, pred.scores, pred.labels, pred.names, self.draw_threshold)

    def _path(self, name: str) -> Path:
        """``out_dir / name``, its folder created: names keep an input's path below its folder."""
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _write_image(self, pred: Prediction) -> None:
        from PIL import Image

        if self.draw:
            path = self._path(drawn_name(pred.source.name))
            fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
            Image.fromarray(self._drawn(pred)).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        if self.save_json:
            record = {"file": str(pred.source.path), "width": pred.width, "height": pred.height,
                      "detections": _detections_json(pred)}
            self._path(f"labels/{pred.source.name}.json").write_text(json.dumps(record, indent=1))
        if self.save_txt:
            lines = [_txt_line(pred, i) for i in range(len(pred.scores))]
            self._path(f"labels/{pred.source.name}.txt").write_text("".join(lines))

    def _write_frame(self, pred: Prediction) -> None:
        if self._video is None or self._video[0] != pred.source:
            self._finish_video()
            writer = None
            if self.draw:
                writer = VideoWriter(self._path(drawn_name(pred.source.name)), pred.fps or 25.0, pred.width,
                                     pred.height)
            self._video = (pred.source, writer, [], [])
        _, writer, frames, lines = self._video
        if writer is not None:
            writer.write(self._drawn(pred))
        if self.save_json:
            frames.append({"frame": pred.frame, "detections": _detections_json(pred)})
        if self.save_txt:
            lines.extend(f"{pred.frame} {_txt_line(pred, i)}" for i in range(len(pred.scores)))

    def _finish_video(self) -> None:
        if self._video is None:
            return
        source, writer, frames, lines = self._video
        self._video = None
        if writer is not None:
            writer.close()
        if self.save_json:
            record = {"file": str(source.path), "frames": frames}
            self._path(f"labels/{source.name}.json").write_text(json.dumps(record, indent=1))
        if self.save_txt:
            self._path(f"labels/{source.name}.txt").write_text("".join(lines))

    def close(self) -> None:
        self._finish_video()


def write_summaries(out_dir: str | os.PathLike, records: Sequence[Record], numeric_ids: bool = False) -> int:
    """``detections.json`` — COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) — and
    ``images.json`` — the COCO ``images`` entries naming each ``image_id``'s file (and frame) — of
    ``records`` in their order; returns the number of detections. The id is the file name's number
    when every image name is one (``numeric_ids``: COCO's own files), else the record's index."""
    results, images = [], []
    for index, record in enumerate(records):
        image_id = int(Path(record.name).stem) if numeric_ids and record.frame is None else index
        entry = {"id": image_id, "file_name": record.name, "width": record.width, "height": record.height}
        images.append(entry if record.frame is None else {**entry, "frame": record.frame})
        results += [{"image_id": image_id, **r} for r in record.results]
    Path(out_dir, "detections.json").write_text(json.dumps(results))
    Path(out_dir, "images.json").write_text(json.dumps(images, indent=1))
    return len(results)


def _txt_line(pred: Prediction, i: int) -> str:
    x1, y1, x2, y2 = pred.boxes[i].tolist()
    return f"{int(pred.labels[i])} {float(pred.scores[i]):.5f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f}\n"


def numeric_names(sources: Sequence[Source]) -> bool:
    """Whether every image is named by a distinct number (COCO's ``000000397133.jpg``): then that
    number is its ``image_id``, so the results file scores against the dataset's annotations."""
    if any(s.is_video for s in sources):  # frames are numbered by a running index, which could collide
        return False
    stems = [Path(s.name).stem for s in sources]
    # ASCII digits only: str.isdigit() also accepts '²' or '١', which int() may refuse or misread.
    numeric = all(s.isascii() and s.isdigit() for s in stems)
    return bool(stems) and numeric and len({int(s) for s in stems}) == len(stems)
