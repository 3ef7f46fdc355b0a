"""Training checkpoints that a crash or a full disk cannot corrupt.

Every file is written with :func:`~efficientdet.atomic.atomic_write`, so the previous checkpoint
stays intact until the new one is complete. Weights go to safetensors (loadable by
``create_model(weights=…)``); the training state (optimiser, scheduler, scaler, RNG, counters) is a
``torch.save`` file read back with ``weights_only=True``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write


def atomic_torch_save(obj: Any, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # numpy's key array as a tensor: ``weights_only`` loading accepts tensors, not numpy arrays.
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_state(path: Path) -> dict:
    """``weights_only=True``: a training state file cannot run code when loaded."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt / non-plain files
        raise ValueError(f"{path}: not a readable training state ({type(e).__name__}: {e})") from None
