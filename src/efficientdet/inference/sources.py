"""Input files for ``predict``: files, globs and folders → :class:`Source`\\ s with unique output names,
and what comes back for each: a :class:`Prediction` per image or frame, or a :class:`Failure`."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


@dataclasses.dataclass(frozen=True)
class Source:
    """One input file and the unique file name (suffix kept) its outputs are written under."""

    path: Path
    name: str

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


@dataclasses.dataclass
class Prediction:
    """Detections of one image or video frame; boxes ``[K, 4]`` xyxy in original pixels."""

    source: Source
    frame: int | None  # index in the video, None for an image
    height: int
    width: int
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor  # label ids (COCO category ids for an official model)
    names: list[str]
    image: torch.Tensor | None = None  # [3, H, W] uint8, kept only for drawing
    fps: float | None = None  # videos only


@dataclasses.dataclass(frozen=True)
class Failure:
    """A file (or the rest of a video) that could not be read; the run continues without it."""

    source: Source
    error: str


def collect_sources(inputs: Sequence[str | os.PathLike]) -> list[Source]:
    """The sources of :func:`scan_inputs`, without the files it left out."""
    return scan_inputs(inputs)[0]


def scan_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Source], list[Path]]:
    """(sources, files left out): files as given, globs as their matches, folders as the image and
    video files in them and in all their subfolders (sorted); a folder's other files are left out.

    A path that does not exist, or a folder / glob with no image or video in it, is a user
    error (``ValueError``): nothing would be processed for it. Output names are unique: a file
    in a folder keeps its path below that folder (``sub/a.jpg``), and a name already taken gets
    ``_1``, ``_2``, … before its suffix.
    """
    found: list[tuple[Path, str]] = []
    left_out: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            media = [p for p in files if p.suffix.lower() in MEDIA_SUFFIXES]
            if not media:
                raise ValueError(f"{path}: no image or video files in this folder or its subfolders")
            left_out.extend(p for p in files if p.suffix.lower() not in MEDIA_SUFFIXES)
            found.extend((p, p.relative_to(path).as_posix()) for p in media)
        elif path.exists():
            found.append((path, path.name))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise ValueError(f"{text}: no file matches this pattern")
            found.extend((p, p.name) for p in matches)
        else:
            raise ValueError(f"{path}: no such file or directory")
    return _unique_names(found), left_out


def drawn_name(name: str) -> str:
    """Where the annotated copy of ``name`` goes: a video as MP4, an image other than JPEG / PNG as PNG."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return str(PurePosixPath(name).with_suffix(".mp4"))
    return name if suffix in (".jpg", ".jpeg", ".png") else f"{name}.png"


def _unique_names(found: list[tuple[Path, str]]) -> list[Source]:
    used: set[str] = set()
    sources = []
    for path, name in found:
        stem, count, candidate = name[: len(name) - len(path.suffix)], 0, name
        # Case-insensitively, outputs may land on such a file system; the drawn copy counts too.
        while {candidate.lower(), drawn_name(candidate).lower()} & used:
            count += 1
            candidate = f"{stem}_{count}{path.suffix}"
        used |= {candidate.lower(), drawn_name(candidate).lower()}
        sources.append(Source(path, candidate))
    return sources
