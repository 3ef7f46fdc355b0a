"""Weight loading: official TF checkpoints, our safetensors, effdet state dicts, pretrained backbones.

``load_weights(model, path)`` recognises the format from the path:

* a directory, a checkpoint prefix (``dir/model``) or a ``.index`` file → official google/automl
  checkpoint, read without TensorFlow (EMA shadow values preferred, as officially);
* ``.safetensors`` → our own format, whose metadata names the variant and class count;
* ``.pth`` / ``.pt`` / ``.bin`` → an effdet ``tf_efficientdet_*`` state dict (loaded with
  ``weights_only=True``: no code in the file can run).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..coco import LabelSpace
from ..config import AnchorConfig, config_to_dict
from ..model import EfficientDet
from .errors import WeightsError
from .remap import remap_state
from .zoo import TAGS

FORMAT = "efficientdet"
_EFFDET_SUFFIXES = (".pth", ".pt", ".bin")


class _LazyCheckpoint(Mapping):
    """A TF checkpoint as a mapping that reads (and CRC-checks) a tensor only when asked for."""

    def __init__(self, checkpoint):
        self._ckpt = checkpoint

    def __getitem__(self, name: str) -> np.ndarray:
        return self._ckpt.read(name)

    def __contains__(self, name: object) -> bool:
        return name in self._ckpt

    def __iter__(self):
        return iter(self._ckpt.keys())

    def __len__(self) -> int:
        return len(self._ckpt.keys())

    def declared_shape(self, name: str) -> tuple[int, ...]:
        return self._ckpt.info(name).shape


def is_official_checkpoint(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() or p.suffix == ".index" or Path(f"{p}.index").is_file()


TF2_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def read_official(model: EfficientDet, path: str | os.PathLike, use_ema: bool = True,
                  what: str | None = None) -> dict[str, torch.Tensor]:
    """``what`` names the checkpoint in errors (default: its prefix)."""
    from .official import convert_official
    from .tf_checkpoint import CheckpointError, TFCheckpoint

    ckpt = TFCheckpoint(path)
    what = what or str(ckpt.prefix)
    if TF2_OBJECT_GRAPH in ckpt:
        raise CheckpointError(f"{what}: a TF2 object-based checkpoint (it has {TF2_OBJECT_GRAPH}); only the "
                              f"name-based TF1 checkpoints of the official releases are read")
    return convert_official(model, _LazyCheckpoint(ckpt), use_ema=use_ema, what=what)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of one of our ``.safetensors`` files (variant, num_classes, config, source)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def read_own_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of a ``.safetensors`` file that this library wrote; another library's file is refused
    with what it lacks (such a file cannot be converted: its layout and variant are unknown)."""
    meta = read_metadata(path)
    missing = [key for key in ("variant", "num_classes") if key not in meta]
    if meta.get("format") != FORMAT or missing:
        raise WeightsError(f"{path}: no efficientdet metadata: the file lacks format={FORMAT!r}, variant and "
                           f"num_classes (it has {sorted(meta) or 'no metadata'}); only files written by "
                           f"efficientdet convert / train load; convert the checkpoint this one came from")
    return meta


def read_label_space(path: str | os.PathLike, meta: Mapping[str, str], num_classes: int) -> LabelSpace | None:
    """The dataset's category ids and names that training stores (``label_ids``, ``names``: JSON
    lists), or None for a file without them (official checkpoints, random init)."""
    if "label_ids" not in meta and "names" not in meta:
        return None
    try:
        ids = json.loads(meta["label_ids"]) if "label_ids" in meta else list(range(num_classes))
        names = json.loads(meta["names"]) if "names" in meta else [str(i) for i in ids]
    except ValueError as e:
        raise WeightsError(f"{path}: label_ids / names metadata is not JSON ({e})") from None
    if not (isinstance(ids, list) and isinstance(names, list) and len(ids) == len(names) == num_classes
            and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            and all(isinstance(n, str) for n in names)):
        raise WeightsError(f"{path}: label_ids / names metadata must be {num_classes} integers and {num_classes} "
                           f"strings, one per class")
    return LabelSpace(tuple(ids), tuple(names))


def read_anchors(path: str | os.PathLike, meta: Mapping[str, str]) -> dict[str, object]:
    """The anchor settings (``AnchorConfig`` fields) of the config stored with the weights, which
    their box and class outputs are relative to; empty for a file without a stored config."""
    if "config" not in meta:
        return {}
    try:
        anchors = json.loads(meta["config"])["anchors"]
        stored = AnchorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in anchors.items()})
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: the stored config's anchors cannot be read ({e})") from None
    return dataclasses.asdict(stored)


def label_metadata(labels: LabelSpace | None) -> dict[str, str]:
    """``labels`` as the safetensors / ONNX metadata that :func:`read_label_space` reads back."""
    if labels is None:
        return {}
    return {"label_ids": json.dumps(list(labels.ids)), "names": json.dumps(list(labels.names))}


def stored_labels(model: EfficientDet) -> LabelSpace | None:
    """The label space ``create_model`` kept from the weights file (None for a model built otherwise)."""
    return getattr(model, "labels", None)


def read_safetensors(model: EfficientDet, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    meta = read_own_metadata(path)
    cfg = model.config
    if meta.get("variant") != cfg.name or int(meta.get("num_classes", -1)) != cfg.num_classes:
        raise WeightsError(
            f"{path}: holds {meta.get('variant')} with {meta.get('num_classes')} classes, "
            f"the model is {cfg.name} with {cfg.num_classes} classes"
        )
    try:
        state = load_file(str(path))
    except Exception as e:
        raise WeightsError(f"{path}: cannot read tensors ({e})") from None
    return remap_state(state, model.state_dict(), str(path))


def read_effdet(model: EfficientDet, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from .effdet import convert_effdet, load_effdet_file

    return convert_effdet(model, load_effdet_file(path), what=str(path))


def read_weights(model: EfficientDet, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` from any supported file, every key and shape checked
    (:func:`~.remap.remap_state`); errors name the file."""
    p = Path(path)
    if not p.exists() and not Path(f"{p}.index").is_file():
        raise WeightsError(f"{p}: no such file or directory, nor a name of published weights "
                           f"({', '.join(TAGS)}; `efficientdet weights list`)")
    if p.suffix == ".safetensors":
        return read_safetensors(model, p)
    if p.suffix in _EFFDET_SUFFIXES:
        return read_effdet(model, p)
    if is_official_checkpoint(p):
        return read_official(model, p)
    raise WeightsError(
        f"{p}: unknown weights format; expected an official checkpoint directory or prefix, "
        f"a .safetensors file or an effdet .pth state dict"
    )


def load_weights(model: EfficientDet, path: str | os.PathLike) -> EfficientDet:
    model.load_state_dict(read_weights(model, path))
    return model


def save_safetensors(model: EfficientDet, path: str | os.PathLike, source: str = "",
                     extra: Mapping[str, str] | None = None) -> Path:
    """Write our format atomically (:func:`~efficientdet.atomic.atomic_write`), with the metadata later
    loads need."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    cfg = model.config
    meta = {"format": FORMAT, "variant": cfg.name, "num_classes": str(cfg.num_classes), "source": source,
            "config": json.dumps(config_to_dict(cfg)), **label_metadata(stored_labels(model)), **(extra or {})}

    def write(tmp: Path) -> None:
        save_file(state, str(tmp), metadata=meta)
        os.chmod(tmp, default_file_mode())  # safetensors creates 0600; other outputs follow the umask

    return atomic_write(path, write)


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process umask (read by setting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
