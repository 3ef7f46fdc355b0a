"""Core ML export through ``coremltools``: an ``.mlpackage`` (ML program) for iOS 15 / macOS 12 on.

The input is an RGB image (``image``, ``[1, 3, H, W]`` at the model's size, pixels 0–255, as
Core ML's ``ImageType`` hands it over): the model's per-channel normalisation is the graph's
first operation, since ``ImageType`` offers one scale for all channels. The outputs are the raw
per-level outputs (``cls_p3`` … ``box_p7``), as the ONNX file gives them; the app letterboxes the
image to the model size and decodes and runs NMS on them. Our string map (:mod:`.metadata`) is
in the package's user-defined metadata.

Conversion runs on Linux; loading and running the model needs macOS or iOS, so here a file is
checked by its spec (:func:`coreml_summary`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write_folder
from ..extras import require
from ..model import EfficientDet
from ..weights import stored_labels
from .metadata import ArtifactInfo, artifact_metadata
from .onnx import RawOutputs, raw_output_names

IMAGE_INPUT = "image"


class NormalisedRawOutputs(nn.Module):
    """0–255 RGB ``[1, 3, H, W]`` → the raw per-level outputs, normalised as our preprocessing does."""

    def __init__(self, model: EfficientDet):
        super().__init__()
        self.raw = RawOutputs(model)
        pre = model.config.preprocess
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.raw((image - self.mean) / self.std)


def export_coreml(model: EfficientDet, path: str | os.PathLike, fp16: bool = False) -> Path:
    """Write ``model`` (BN folded by the caller) to ``path`` (``.mlpackage``), float32 unless ``fp16``."""
    ct = require("coremltools", "coreml")
    h, w = model.config.image_size
    module = NormalisedRawOutputs(model).eval()
    example = torch.zeros(1, 3, h, w)
    try:
        # torch.export, not jit.trace: the traced graph's shape arithmetic (aten::Int on
        # 1-element tensors) is one the TorchScript frontend cannot convert.
        program = torch.export.export(module, (example,)).run_decompositions({})
        converted = ct.convert(
            program, inputs=[ct.ImageType(name=IMAGE_INPUT, shape=example.shape, color_layout=ct.colorlayout.RGB)],
            outputs=[ct.TensorType(name=n) for n in raw_output_names(model.config)],
            convert_to="mlprogram", minimum_deployment_target=ct.target.iOS15,
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32)
    except Exception as e:  # coremltools raises many kinds; its first line says what failed
        text = str(e).strip()
        raise ValueError(f"coremltools could not convert {model.config.name}: "
                         f"{text.splitlines()[0] if text else type(e).__name__}") from e
    converted.short_description = f"{model.config.name} raw outputs (efficientdet)"
    info = ArtifactInfo(model.config, None, stored_labels(model),
                        {"precision": "float16"} if fp16 else None)
    converted.user_defined_metadata.update(artifact_metadata(info))
    return atomic_write_folder(path, lambda tmp: converted.save(str(tmp)))


def coreml_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What a ``.mlpackage``'s spec says — inputs and outputs with their shapes, the user-defined
    metadata, the spec version — read without loading the model (which needs macOS)."""
    ct = require("coremltools", "coreml")
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as e:  # a missing or foreign folder fails inside protobuf / coremltools
        raise ValueError(f"{path}: not a readable Core ML package ({e})") from None
    desc = spec.description

    def shape(feature: Any) -> list[int]:
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            return [1, 3, feature.type.imageType.height, feature.type.imageType.width]
        return list(feature.type.multiArrayType.shape)

    return {"inputs": {f.name: (f.type.WhichOneof("Type"), shape(f)) for f in desc.input},
            "outputs": {f.name: shape(f) for f in desc.output},
            "metadata": dict(desc.metadata.userDefined), "spec_version": spec.specificationVersion}
