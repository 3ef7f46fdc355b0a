"""The dataset YAML: one format, a root, the class names, and each split's paths
(see :mod:`efficientdet.data.formats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..sample import EMPTY_SPLIT, DatasetError, DatasetSplit, Problems
from .coco import load_coco
from .common import DEFAULT_MAX_BOXES, show
from .voc import load_voc
from .yolo import load_yolo

FORMATS = ("coco", "voc", "yolo")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset YAML: the format, each split's resolved parser arguments, the names."""

    format: str
    splits: dict[str, dict[str, Any]]
    names: list[str] | None
    source: Path


_SPLIT_KEYS = {"coco": ("images", "annotations"), "voc": ("root", "split"), "yolo": ("images", "labels")}
_OPTIONAL_KEYS = {"split"}


def load_dataset_yaml(path: str | Path) -> DatasetSpec:
    """Read and check a dataset YAML (module docstring); every path it names must exist."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with 'format' and splits, got {show(data)}")
    unknown = [k for k in data if k not in ("format", "root", "names", *SPLITS)]
    if unknown:
        raise DatasetError(f"{path}: unknown key {show(unknown[0])} (known: format, root, names, {', '.join(SPLITS)})")
    fmt = data.get("format")
    if fmt not in FORMATS:
        raise DatasetError(f"{path}: format: expected one of {', '.join(FORMATS)}, got {show(fmt)}")
    root = _existing(path.parent, data.get("root", "."), path, "root")
    names = _names(data["names"], f"{path}: names") if data.get("names") is not None else None
    if fmt == "yolo" and names is None:
        raise DatasetError(f"{path}: names: required for the yolo format")
    splits = {s: _split(data[s], s, fmt, root, path) for s in SPLITS if s in data}
    if not splits:
        raise DatasetError(f"{path}: no split: give at least one of {', '.join(SPLITS)}")
    return DatasetSpec(fmt, splits, names, path)


def _existing(base: Path, value: Any, path: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{path}: {key}: expected a path, got {show(value)}")
    resolved = base / value
    if not resolved.exists():
        raise DatasetError(f"{path}: {key}: {resolved} does not exist")
    return resolved


def _split(value: Any, split: str, fmt: str, root: Path, path: Path) -> dict[str, Any]:
    keys = _SPLIT_KEYS[fmt]
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: {split}: expected a mapping with keys {', '.join(keys)}, got {show(value)}")
    for key in value:
        if key not in keys:
            raise DatasetError(f"{path}: {split}.{key}: unknown key for {fmt} (known: {', '.join(keys)})")
    args: dict[str, Any] = {}
    for key in keys:
        if key not in value:
            if key in _OPTIONAL_KEYS:
                continue
            raise DatasetError(f"{path}: {split}.{key}: missing")
        if key == "split":
            if not isinstance(value[key], str) or not value[key]:
                raise DatasetError(f"{path}: {split}.split: expected a split name, got {show(value[key])}")
            args[key] = value[key]
        else:
            args[key] = _existing(root, value[key], path, f"{split}.{key}")
    return args


def load_split(spec: DatasetSpec, split: str, max_boxes: int = DEFAULT_MAX_BOXES,
               problems: Problems | None = None) -> DatasetSplit:
    """Parse one split of a :class:`DatasetSpec` with its format's parser; with ``problems``, its
    malformed records are filed there and left out (only a file that cannot be read at all, or a
    split without images, raises)."""
    if split not in spec.splits:
        raise DatasetError(f"{spec.source}: {split}: no such split (has {', '.join(spec.splits)})")
    parser = {"coco": load_coco, "voc": load_voc, "yolo": load_yolo}[spec.format]
    args = spec.splits[split]
    parsed = parser(**args, names=spec.names, max_boxes=max_boxes, problems=problems)
    if not parsed.samples:  # nothing to train on or to score: say where, not fail later
        raise DatasetError(f"{split_source(spec, split)}: the {split} split has no images", EMPTY_SPLIT)
    return parsed


def split_source(spec: DatasetSpec, split: str) -> Path:
    """The file or folder that holds a split's annotations: what a message about the split names."""
    args = spec.splits[split]
    return args.get("annotations") or args.get("images") or args.get("root")


def _names(value: Any, where: str) -> list[str]:
    """A list of unique non-empty strings, or Ultralytics' ``{0: name, 1: name, ...}``."""
    if isinstance(value, dict):
        if set(value) != set(range(len(value))):
            raise DatasetError(f"{where}: a names mapping needs the keys 0..{len(value) - 1}")
        value = [value[i] for i in range(len(value))]
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n for n in value):
        raise DatasetError(f"{where}: must be a non-empty list of names, got {show(value)}")
    duplicates = sorted({n for n in value if value.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{where}: duplicate names {show(duplicates)}")
    return list(value)
