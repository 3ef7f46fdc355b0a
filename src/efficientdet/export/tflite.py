"""LiteRT (TFLite) export through ``litert-torch``: float32, float16 weights or int8, batch 1.

Two kinds of file:

* raw (default): preprocessed pixels ``[1, 3, H, W]`` → the raw per-level outputs, as the ONNX
  file gives them; ``--backend litert`` decodes and runs our NMS on them.
* detection signature (``detection_signature=True``): the convention of the TFLite detection
  clients (the Object Detection API's ``TFLite_Detection_PostProcess`` outputs, which MediaPipe
  Tasks' ``ObjectDetector`` and the Task Library read): a normalised ``[1, H, W, 3]`` image in,
  and out ``boxes [1, K, 4]`` (ymin, xmin, ymax, xmax, in [0, 1] of the input), ``classes [1, K]``
  (class index as float), ``scores [1, K]``, ``count [1]``. Decoding and greedy hard NMS are in
  the graph (:class:`DetectionSignature`); the label map and the input normalisation are written
  as TFLite metadata by MediaPipe's own metadata writer, which is what its clients read.

float16 casts the weights (ai-edge-quantizer's float casting; arithmetic stays float32 where the
runtime has no fp16 kernels); int8 is ai-edge-quantizer's static int8 recipe (int8 weights and
activations, min/max ranges from the calibration images). Both start from the float32 file.

Every file also carries our string map (:mod:`.metadata`) in the flatbuffer's ``metadata``
table under :data:`METADATA_NAME`, so that ``predict`` and ``eval`` run it alone.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write
from ..coco import label_space
from ..config import ModelConfig, PostprocessConfig
from ..extras import require
from ..model import EfficientDet
from ..weights import stored_labels
from .metadata import ArtifactInfo, artifact_metadata
from .onnx import DecodedOutputs, RawOutputs

METADATA_NAME = "efficientdet"
PRECISIONS = ("float32", "float16", "int8")
SIGNATURE_OUTPUTS = ("boxes", "classes", "scores", "count")


class DetectionSignature(nn.Module):
    """Normalised NHWC image ``[1, H, W, 3]`` → the four outputs of the TFLite detection convention.

    NMS is greedy hard NMS, class-agnostic, over every anchor's best class, exactly as
    ``postprocess(method="hard")`` selects: each of the ``max_detections`` rounds takes the
    highest remaining score above the threshold and drops the boxes whose IoU with it exceeds
    the threshold. Written as a fixed loop of tensor ops because TFLite's NMS builtins have no
    lowering from PyTorch; its cost is bounded by ``max_detections`` × anchors, as ours.
    """

    def __init__(self, model: EfficientDet, post: PostprocessConfig):
        super().__init__()
        self.decoded = DecodedOutputs(model)
        self.post = post
        h, w = model.config.image_size
        self.register_buffer("size_xyxy", torch.tensor([w, h, w, h], dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores, classes = self.decoded(image.permute(0, 3, 1, 2))
        boxes, scores = boxes[0], scores[0]  # [A, 4] xyxy network pixels, [A]
        x1, y1, x2, y2 = boxes.unbind(-1)
        area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
        index = torch.arange(scores.shape[0])
        live = torch.where(scores > self.post.score_threshold, scores, torch.full_like(scores, -1.0))
        picks, picked = [], []
        for _ in range(self.post.max_detections):
            # Indices stay 1-element tensors: a 0-d index would need its value while tracing.
            i = torch.argmax(live, dim=0, keepdim=True)  # the first of equal scores, as postprocess's stable sort
            picks.append(i)
            picked.append(live.gather(0, i))
            b = boxes.index_select(0, i)[0]
            w = (torch.minimum(x2, b[2]) - torch.maximum(x1, b[0])).clamp(min=0)
            h = (torch.minimum(y2, b[3]) - torch.maximum(y1, b[1])).clamp(min=0)
            inter = w * h
            union = area + area.gather(0, i) - inter
            iou = inter / torch.clamp(union, min=torch.finfo(torch.float32).tiny)
            drop = (iou > self.post.iou_threshold) | (index == i)
            live = torch.where(drop, torch.full_like(live, -1.0), live)
        picks, picked = torch.cat(picks), torch.cat(picked)
        valid = picked >= 0
        chosen = torch.minimum(boxes.index_select(0, picks).clamp(min=0), self.size_xyxy) / self.size_xyxy
        yxyx = chosen[:, [1, 0, 3, 2]] * valid[:, None]  # clipped after NMS, as postprocess
        out_classes = torch.where(valid, classes[0].index_select(0, picks).float(), torch.zeros_like(picked))
        out_scores = torch.where(valid, picked, torch.zeros_like(picked))
        return yxyx[None], out_classes[None], out_scores[None], valid.sum().float()[None]


def signature_normalisation(config: ModelConfig) -> tuple[list[float], list[float]]:
    """The per-channel (mean, std) on 0–255 pixels that the detection-signature input expects:
    ``(pixel - mean) / std``, as our preprocessing normalises."""
    pre = config.preprocess
    return list(pre.mean), list(pre.std)


def export_tflite(model: EfficientDet, path: str | os.PathLike, *, precision: str = "float32",
                  calibration: Any = None, detection_signature: bool = False,
                  postprocess_config: PostprocessConfig | None = None) -> Path:
    """Write ``model`` (BN folded by the caller) to ``path`` as a ``.tflite`` file, atomically."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown TFLite precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if (precision == "int8") != (calibration is not None):
        raise ValueError("an int8 TFLite file needs calibration images, and only it does")
    post = postprocess_config or model.config.postprocess
    quantization = None if precision == "float32" else quantization_record(precision, calibration)
    info = ArtifactInfo(model.config, post if detection_signature else None, stored_labels(model), quantization)
    # Our metadata goes in before quantising: the quantiser keeps it, but writes the constants
    # after the flatbuffer (buffer offsets), which a re-packed flatbuffer would no longer reach.
    data = with_metadata(convert_tflite(model, post if detection_signature else None), artifact_metadata(info))
    if precision != "float32":
        data = quantize_tflite(data, precision, calibration)
    if detection_signature:
        data = _mediapipe_metadata(data, model, info)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def convert_tflite(model: EfficientDet, signature_nms: PostprocessConfig | None = None) -> bytes:
    """The float32 flatbuffer of ``model``'s raw outputs, or with ``signature_nms`` of its
    :class:`DetectionSignature`; no metadata yet."""
    litert_torch = require("litert_torch", "tflite")
    h, w = model.config.image_size
    if signature_nms is not None:
        if signature_nms.method != "hard" or not signature_nms.class_agnostic:
            raise ValueError("the detection signature's NMS is class-agnostic hard NMS (method='hard')")
        module, example = DetectionSignature(model, signature_nms).eval(), torch.zeros(1, h, w, 3)
    else:
        module, example = RawOutputs(model).eval(), torch.zeros(1, 3, h, w)
    try:
        # Its progress display writes to stdout, where our commands print results (``benchmark
        # --backend litert --json -``): it goes to stderr, as the quantisers' does.
        with contextlib.redirect_stdout(sys.stderr):
            converted = litert_torch.convert(module, (example,))
            return bytes(converted.model_content())
    except Exception as e:  # the converter raises many kinds; the first line says what failed
        raise ValueError(f"litert-torch could not convert {model.config.name}: {_first_line(e)}") from e


def quantization_record(precision: str, calibration: Any = None) -> dict[str, Any]:
    """What the metadata says of a quantised file: its precision and, for int8, its calibration."""
    if precision == "float16":
        return {"precision": "float16", "method": "float casting"}
    return {"precision": "int8", **calibration.record("minmax")}


def quantize_tflite(data: bytes, precision: str, calibration: Any = None) -> bytes:
    """ai-edge-quantizer on a float32 raw-output flatbuffer: float16 weights, or static int8
    calibrated on ``calibration``'s images. Its report (sizes, time) goes to stderr."""
    from .quantize import quiet_quantizers

    with quiet_quantizers():
        aeq = require("ai_edge_quantizer", "tflite")
        from ai_edge_quantizer import recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        quantizer = aeq.Quantizer(bytearray(data))
        if precision == "float16":
            quantizer.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                             algorithm_key=AlgorithmName.FLOAT_CASTING)
            return bytes(quantizer.quantize().quantized_model)
        if precision != "int8" or calibration is None:
            raise ValueError(f"quantize_tflite makes float16, or int8 from calibration images; got {precision!r}")
        quantizer.load_quantization_recipe(recipe.static_wi8_ai8())
        signature, input_name = _signature_input(data)
        samples = [{input_name: b} for b in calibration.batches(1)]
        ranges = quantizer.calibrate({signature: samples}, num_threads=torch.get_num_threads())
        return bytes(quantizer.quantize(ranges).quantized_model)


def _signature_input(data: bytes) -> tuple[str, str]:
    """The (signature key, input name) of a one-signature, one-input model."""
    interpreter = require("ai_edge_litert.interpreter", "tflite").Interpreter(model_content=data)
    (key, spec), = interpreter.get_signature_list().items()
    (name,) = spec["inputs"]
    return key, name


def with_metadata(data: bytes, props: dict[str, str]) -> bytes:
    """``data`` (a converter's output, every constant inside the flatbuffer) with ``props`` as JSON
    in its ``metadata`` table under :data:`METADATA_NAME`, replacing an earlier one. Edited with
    the TFLite schema's object API: the converters have no writer for a named metadata buffer."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    flatbuffers = require("flatbuffers", "tflite")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(props).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_properties(path: str | os.PathLike) -> dict[str, str]:
    """Our string map from a ``.tflite`` file's metadata table (empty when it has none)."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite")
    data = Path(path).read_bytes()
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 identifier")
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_NAME.encode():
                buffer = model.Buffers(entry.Buffer())
                if buffer.Offset() > 1:  # stored after the flatbuffer (a quantised file)
                    return json.loads(data[buffer.Offset():buffer.Offset() + buffer.Size()])
                return json.loads(buffer.DataAsNumpy().tobytes())
    except Exception as e:  # flatbuffers raises IndexError, struct.error, ... for what is not a model
        raise ValueError(f"{path}: not a readable TFLite file ({_first_line(e)})") from None
    return {}


def _mediapipe_metadata(data: bytes, model: EfficientDet, info: ArtifactInfo) -> bytes:
    """The TFLite metadata the detection clients read — the input's normalisation and the label
    map as an associated file — written by MediaPipe's object-detector metadata writer."""
    require("mediapipe", "tflite")
    _stand_in_for_metadata_version()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector

    _, names = label_space(model.config.num_classes, info.labels)
    mean, std = signature_normalisation(model.config)
    writer = object_detector.MetadataWriter.create_for_models_with_nms(
        bytearray(data), mean, std, metadata_writer.Labels().add(list(names)))
    out, _ = writer.populate()
    return bytes(out)


# Schema 1.2.0 added output tensor groups, the newest feature the detection metadata uses.
MIN_METADATA_PARSER_VERSION = "1.2.0"


def _stand_in_for_metadata_version() -> None:
    """MediaPipe's Linux wheels lack the one native module of its metadata writer, which only
    computes the minimum parser version the metadata needs; stand in for it with that version."""
    name = "mediapipe.tasks.cc.metadata.python"
    try:
        importlib.import_module(name + "._pywrap_metadata_version")
    except ImportError:
        version = types.ModuleType(name + "._pywrap_metadata_version")
        version.GetMinimumMetadataParserVersion = lambda buffer: MIN_METADATA_PARSER_VERSION
        package = types.ModuleType(name)
        package._pywrap_metadata_version = version
        sys.modules.setdefault(name, package)
        sys.modules.setdefault(version.__name__, version)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
