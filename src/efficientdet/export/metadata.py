"""What an exported file carries so that it runs, and is evaluated, without naming the model.

One map of strings: the model config (variant, image size, classes, normalisation), the label
space of its weights, the NMS inside the graph (ONNX ``--nms``, TFLite ``--detection-signature``)
and, for an int8 file, how it was quantised and calibrated. ONNX stores it as ``metadata_props``;
an OpenVINO IR in its ``rt_info`` (:mod:`.openvino`); a TFLite file in its ``metadata`` table
(:mod:`.tflite`); a TensorRT engine in a header before it (:mod:`.tensorrt`). Readers get it
back as an :class:`ArtifactInfo`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..coco import LabelSpace
from ..config import ModelConfig, PostprocessConfig, config_from_dict, config_to_dict
from ..weights import label_metadata, read_label_space

PREFIX = "efficientdet."
CONFIG_KEY = PREFIX + "config"
NMS_KEY = PREFIX + "nms"
QUANTIZATION_KEY = PREFIX + "quantization"
ARTIFACT_SUFFIXES = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite", ".engine": "tensorrt"}


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """An exported file's metadata, read back. ``quantization`` is None for a float32 file."""

    config: ModelConfig
    graph_nms: PostprocessConfig | None = None
    labels: LabelSpace | None = None
    quantization: dict[str, Any] | None = None

    @property
    def precision(self) -> str:
        """float32, or the quantisation's (int8 unless it says otherwise: TFLite float16)."""
        return self.quantization.get("precision", "int8") if self.quantization else "float32"


def artifact_metadata(info: ArtifactInfo) -> dict[str, str]:
    """``info`` as the string map a file stores (keys as in our safetensors: ``efficientdet.…``)."""
    meta = {CONFIG_KEY: json.dumps(config_to_dict(info.config)),
            **{PREFIX + k: v for k, v in label_metadata(info.labels).items()}}
    if info.graph_nms is not None:
        meta[NMS_KEY] = json.dumps(config_to_dict(info.graph_nms))
    if info.quantization is not None:
        meta[QUANTIZATION_KEY] = json.dumps(info.quantization)
    return meta


def parse_metadata(path: str | os.PathLike, props: dict[str, str]) -> ArtifactInfo:
    """:func:`artifact_metadata`'s map back; a file without it is refused, saying how to re-export it."""
    path = Path(path)
    if CONFIG_KEY not in props:
        fmt = ARTIFACT_SUFFIXES.get(path.suffix.lower(), "onnx")
        raise ValueError(f"{path}: no {CONFIG_KEY} metadata (model, image size, classes, normalisation), so it "
                         f"was not written by efficientdet export; re-export it: efficientdet export --model M "
                         f"--weights W --format {fmt} --out {path.name}")
    try:
        config = config_from_dict(json.loads(props[CONFIG_KEY]))
        nms = config_from_dict(json.loads(props[NMS_KEY]), PostprocessConfig) if NMS_KEY in props else None
        quantization = json.loads(props[QUANTIZATION_KEY]) if QUANTIZATION_KEY in props else None
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: unreadable {PREFIX}* metadata ({e}); re-export it") from None
    labels = {k: props[PREFIX + k] for k in ("label_ids", "names") if PREFIX + k in props}
    return ArtifactInfo(config, nms, read_label_space(path, labels, config.num_classes), quantization)


def artifact_format(path: str | os.PathLike) -> str:
    """``onnx``, ``openvino``, ``tflite`` or ``tensorrt``, by the file's suffix; anything else is refused."""
    fmt = ARTIFACT_SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: not an exported model (an .onnx file, an OpenVINO .xml, a .tflite file or a "
                         f"TensorRT .engine)")
    return fmt


def read_metadata(path: str | os.PathLike) -> ArtifactInfo:
    """The :class:`ArtifactInfo` of an ONNX file, OpenVINO IR, TFLite file or TensorRT engine written by
    :func:`efficientdet.export.export_model`."""
    fmt = artifact_format(path)
    if fmt == "onnx":
        from .onnx import read_onnx_properties

        return parse_metadata(path, read_onnx_properties(path))
    if fmt == "tflite":
        from .tflite import read_tflite_properties

        return parse_metadata(path, read_tflite_properties(path))
    if fmt == "tensorrt":
        from .tensorrt import read_tensorrt_properties

        return parse_metadata(path, read_tensorrt_properties(path))
    from .openvino import read_openvino_properties

    return parse_metadata(path, read_openvino_properties(path))
