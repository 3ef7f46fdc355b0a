"""``--device`` text → a ``torch.device`` that exists on this machine, or one clear error."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``None`` → CUDA when available, else the CPU; otherwise the named device, checked here so
    that a typo or a missing GPU is one line naming it rather than a failure deep in a run."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(name)!r}; valid: cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(name)!r}: no Apple MPS device is available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"device {str(name)!r}: unsupported device type; valid: cpu, cuda, cuda:N, mps")
    return device
