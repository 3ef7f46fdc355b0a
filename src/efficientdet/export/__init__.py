"""Export: one module per format, BatchNorm folded, a dynamic batch size.

* :mod:`.onnx` — ONNX (raw outputs, or decoding + hard NMS in the graph), float32 or int8;
* :mod:`.openvino` — OpenVINO IR converted from that ONNX graph, float32 or int8;
* :mod:`.torchscript` — TorchScript and ``torch.export``;
* :mod:`.tflite` — LiteRT (TFLite), float32 / float16 / int8, raw or with the detection signature;
* :mod:`.coreml` — a Core ML ``.mlpackage`` (image input, the model's normalisation inside);
* :mod:`.tensorrt` — a TensorRT engine built on the GPU, float32 / float16 / int8;
* :mod:`.quantize` — int8 calibration and the layers kept in float, shared by ONNX and OpenVINO;
* :mod:`.metadata` — what an ONNX file or IR carries so that it runs and is evaluated on its own.

Every file is written atomically: it appears only once the export has succeeded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..config import PostprocessConfig
from ..extras import require
from ..fuse import fuse_model
from ..model import EfficientDet
from .metadata import ArtifactInfo, artifact_format, read_metadata
from .onnx import DETECTION_OUTPUTS, INPUT_NAME, raw_output_names
from .quantize import Calibration, load_calibration

FORMATS = ("onnx", "openvino", "torchscript", "torch-export", "tflite", "coreml", "tensorrt")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt", "torch-export": ".pt2", "tflite": ".tflite",
            "coreml": ".mlpackage", "tensorrt": ".engine"}
INT8_FORMATS = ("onnx", "openvino", "tflite", "tensorrt")
FP16_FORMATS = ("tflite", "coreml", "tensorrt")
KEEP_FLOAT_FORMATS = ("onnx", "openvino", "tensorrt")  # those quantised from our ONNX graph, node by node
BATCH_ONE_FORMATS = ("tflite", "coreml")  # files for devices: one image per call

__all__ = ["BATCH_ONE_FORMATS", "DETECTION_OUTPUTS", "FORMATS", "FP16_FORMATS", "INPUT_NAME", "INT8_FORMATS",
           "KEEP_FLOAT_FORMATS", "SUFFIXES", "ArtifactInfo", "Calibration",
           "artifact_format", "check_options", "export_model", "load_calibration", "raw_output_names", "read_metadata",
           "require_runtimes"]


def check_options(fmt: str, nms: bool, int8: bool = False, fp16: bool = False,
                  detection_signature: bool = False) -> None:
    """Refuse a format / option pair before any work is done."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if detection_signature and fmt != "tflite":
        raise ValueError(f"--detection-signature is for --format tflite, not {fmt!r}")
    if fp16 and fmt not in FP16_FORMATS:
        raise ValueError(f"--fp16 is for {', '.join(FP16_FORMATS)}, not {fmt!r}")
    if fp16 and int8:
        raise ValueError("--fp16 and --int8 exclude each other")
    if detection_signature and (fp16 or int8):
        raise ValueError("--detection-signature files are float32: the quantiser rewrites the file and drops the "
                         "label map the detection clients read; quantise the raw file instead")
    if nms and fmt != "onnx":
        extra = "; for TFLite use --detection-signature" if fmt == "tflite" else ""
        raise ValueError(f"NMS inside the exported file is only supported for --format onnx, not {fmt!r} "
                         f"(export raw outputs and run efficientdet.postprocess on them{extra})")
    if int8 and fmt not in INT8_FORMATS:
        raise ValueError(f"--format {fmt} cannot hold an int8 model; --int8 is for {', '.join(INT8_FORMATS)}")
    if int8 and nms:
        raise ValueError("--int8 quantises the network's raw outputs; export it without --nms")


def require_runtimes(fmt: str, int8: bool = False, detection_signature: bool = False) -> None:
    """Import what exporting to ``fmt`` needs, so that a missing extra (or TensorRT's GPU) is named
    before any work."""
    if fmt == "tensorrt":
        from .tensorrt import require_cuda

        require_cuda()
    modules = {"onnx": [("onnx", "export")] + ([("onnxruntime.quantization", "export")] if int8 else []),
               "openvino": [("onnx", "openvino"), ("openvino", "openvino")] + ([("nncf", "openvino")] if int8 else []),
               "tflite": [("litert_torch", "tflite"), ("ai_edge_quantizer", "tflite")]
               + ([("mediapipe", "tflite")] if detection_signature else []),
               "coreml": [("coremltools", "coreml")],
               "tensorrt": [("onnx", "export"), ("tensorrt", "tensorrt")]
               + ([("onnxruntime.quantization", "export")] if int8 else [])}
    for module, extra in modules.get(fmt, []):
        require(module, extra)


def export_model(model: EfficientDet, path: str | os.PathLike, fmt: str, *, nms: bool = False,
                 postprocess_config: PostprocessConfig | None = None, calibration: Calibration | None = None,
                 keep_float: Sequence[str] | None = None, fp16: bool = False,
                 detection_signature: bool = False, max_batch: int | None = None) -> Path:
    """Write ``model`` (BN folded, eval mode) to ``path`` in format ``fmt``: a dynamic batch size,
    batch 1 for the device formats (:data:`BATCH_ONE_FORMATS`).

    ``nms`` (ONNX only) puts decoding and hard NMS with ``postprocess_config``'s IoU threshold,
    score threshold and ``max_detections`` into the graph; its ``method`` must be ``"hard"``.
    ``calibration`` (:data:`INT8_FORMATS`; :func:`~.quantize.load_calibration`) makes the file int8,
    ``keep_float`` naming the rules of :data:`~.quantize.FLOAT_RULES` whose layers stay in float
    (default :data:`~.quantize.DEFAULT_KEEP_FLOAT`; :data:`KEEP_FLOAT_FORMATS` only). ``fp16``
    stores float16 weights (TFLite, Core ML) or makes the whole network float16 (TensorRT);
    ``detection_signature`` (TFLite) puts decoding and hard NMS inside with the four outputs of
    the TFLite detection convention (:mod:`.tflite`). ``max_batch`` (TensorRT) is the largest
    batch the engine takes.
    """
    check_options(fmt, nms, calibration is not None, fp16, detection_signature)
    if keep_float is not None and fmt not in KEEP_FLOAT_FORMATS:
        raise ValueError(f"--keep-float applies to {', '.join(KEEP_FLOAT_FORMATS)}; --format {fmt} quantises "
                         f"every layer it can")
    if max_batch is not None and fmt != "tensorrt":
        raise ValueError(f"--max-batch is for --format tensorrt; --format {fmt} files take any batch size"
                         if fmt not in BATCH_ONE_FORMATS else f"--format {fmt} files hold batch 1")
    require_runtimes(fmt, calibration is not None, detection_signature)
    fused = fuse_model(model).cpu().float()
    precision = "int8" if calibration is not None else "float16" if fp16 else "float32"
    if fmt == "tflite":
        from .tflite import export_tflite

        return export_tflite(fused, path, precision=precision, calibration=calibration,
                             detection_signature=detection_signature, postprocess_config=postprocess_config)
    if fmt == "tensorrt":
        from .tensorrt import DEFAULT_MAX_BATCH, export_tensorrt

        return export_tensorrt(fused, path, precision=precision, calibration=calibration,
                               keep_float=None if keep_float is None else tuple(keep_float),
                               max_batch=DEFAULT_MAX_BATCH if max_batch is None else max_batch)
    if fmt == "coreml":
        from .coreml import export_coreml

        return export_coreml(fused, path, fp16=fp16)
    if fmt == "onnx":
        from .onnx import export_onnx

        return export_onnx(fused, path, nms=nms, postprocess_config=postprocess_config, calibration=calibration,
                           keep_float=keep_float)
    if fmt == "openvino":
        from .openvino import export_openvino

        return export_openvino(fused, path, calibration, keep_float)
    from .torchscript import export_program, export_torchscript

    return export_torchscript(fused, path) if fmt == "torchscript" else export_program(fused, path)
