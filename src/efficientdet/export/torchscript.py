"""The two PyTorch formats: TorchScript (``torch.jit.trace``) and ``torch.export``, raw per-level
outputs, a dynamic batch size. Neither holds our metadata or int8 weights."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..model import EfficientDet
from .onnx import RawOutputs, example_input


def export_torchscript(model: EfficientDet, path: str | os.PathLike) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        # The branches it warns of (SAME padding, resampling) depend on the image size only,
        # which the export fixes: recording them as constants is right.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(RawOutputs(model), example_input(model, 2), check_trace=False)
    return atomic_write(path, lambda tmp: traced.save(str(tmp)))


def export_program(model: EfficientDet, path: str | os.PathLike) -> Path:
    program = torch.export.export(RawOutputs(model), (example_input(model, 2),),
                                  dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1024)}})
    return atomic_write(path, lambda tmp: torch.export.save(program, str(tmp)))
