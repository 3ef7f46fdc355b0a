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

from ..model import EfficientDet
from .errors import WeightsError

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


def read_official(model: EfficientDet, path: str | os.PathLike, use_ema: bool = True) -> dict[str, torch.Tensor]:
    from .official import convert_official
    from .tf_checkpoint import TFCheckpoint

    ckpt = TFCheckpoint(path)
    try:
        return convert_official(model, _LazyCheckpoint(ckpt), use_ema=use_ema)
    except WeightsError as e:
        raise WeightsError(f"{ckpt.prefix}: {e}") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of one of our ``.safetensors`` files (variant, num_classes, config, source)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def read_safetensors(model: EfficientDet, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: no efficientdet metadata (format={meta.get('format')!r}); "
                           f"convert the file with 'efficientdet convert'")
    cfg = model.config
    if meta.get("variant") != cfg.name or int(meta.get("num_classes", -1)) != cfg.num_classes:
        raise WeightsError(
            f"{path}: holds {meta.get('variant')} with {meta.get('num_classes')} classes, "
            f"the model is {cfg.name} with {cfg.num_classes} classes"
        )
    try:
        return load_file(str(path))
    except Exception as e:
        raise WeightsError(f"{path}: cannot read tensors ({e})") from None


def read_effdet(model: EfficientDet, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from .effdet import convert_effdet, load_effdet_file

    try:
        return convert_effdet(model, load_effdet_file(path))
    except WeightsError as e:
        message = str(e)
        raise WeightsError(message if str(path) in message else f"{path}: {message}") from None


def read_weights(model: EfficientDet, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` from any supported file, every key and shape checked."""
    p = Path(path)
    if not p.exists() and not Path(f"{p}.index").is_file():
        raise WeightsError(f"{p}: no such file or directory")
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
    state = read_weights(model, path)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise WeightsError(f"{path}: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
    for key, value in model.state_dict().items():
        if key in state and state[key].shape != value.shape:
            raise WeightsError(f"{path}: tensor {key} has shape {list(state[key].shape)}, "
                               f"the model needs {list(value.shape)}")
    model.load_state_dict(state, strict=False)
    return model


def save_safetensors(model: EfficientDet, path: str | os.PathLike, source: str = "",
                     extra: Mapping[str, str] | None = None) -> Path:
    """Write our format atomically (temp file + fsync + rename), with the metadata later loads need."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    cfg = model.config
    meta = {"format": FORMAT, "variant": cfg.name, "num_classes": str(cfg.num_classes), "source": source,
            "config": json.dumps(dataclasses.asdict(cfg)), **(extra or {})}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path} ({e.strerror or e}); the previous file is intact") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
