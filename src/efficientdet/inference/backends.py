"""How a :class:`~efficientdet.inference.Detector` runs its network: a :class:`Backend`.

* :func:`model_backend` — the model as it is, unfused (the Python API; validation during training);
* :func:`torch_backend` — ``eager`` (BN folded, channels-last) or ``compile`` (the same through
  ``torch.compile``), in float32, float16 or bfloat16;
* :func:`onnx_backend` — an ONNX file from :mod:`efficientdet.export` through ONNX Runtime;
* :func:`openvino_backend` — an OpenVINO IR (or that ONNX file) through OpenVINO, on the CPU;
* :func:`litert_backend` — a ``.tflite`` file through the LiteRT interpreter, on the CPU;
* :func:`tensorrt_backend` — a TensorRT engine (``.engine``), on the NVIDIA GPU it was built for.

An exported file, float32 or int8, brings its config, label space and (``--nms``) in-graph NMS
in its metadata (:mod:`efficientdet.export.metadata`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import torch

from ..coco import LabelSpace
from ..config import ModelConfig, PostprocessConfig
from ..devices import resolve_device
from ..extras import require
from ..fuse import fuse_model
from ..model import EfficientDet
from ..postprocess import Detections
from ..weights import stored_labels

BACKENDS = ("eager", "compile", "onnxruntime", "openvino", "litert", "tensorrt")
# export format → the backend that runs it
FILE_BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert", "tensorrt": "tensorrt"}
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Preprocessed ``[B, 3, H, W]`` → float32 (class outputs, box outputs) per level, or Detections
# where NMS is inside the network.
Network = Callable[[torch.Tensor], Any]


@dataclasses.dataclass(frozen=True)
class Backend:
    """A runnable network and what the detector needs to know about it.

    ``device`` is where its outputs are postprocessed (and images preprocessed); ``labels`` the
    label space stored with its weights; ``graph_nms`` the NMS inside it (ONNX ``--nms``), if any.
    """

    config: ModelConfig
    network: Network
    device: torch.device
    labels: LabelSpace | None = None
    graph_nms: PostprocessConfig | None = None


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """float16 convolutions exist on CUDA only; bfloat16 runs on both (fast on CPUs with AVX-512 BF16/AMX)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "float16" and device.type != "cuda":
        raise ValueError("float16 (--half) needs a CUDA device; on the CPU use bfloat16 (--bf16)")
    return PRECISIONS[precision]


def model_backend(model: EfficientDet, device: str | torch.device | None = None,
                  amp_dtype: torch.dtype | None = None) -> Backend:
    """``model`` itself in eval mode, moved to ``device`` (default: where it is), not copied or fused,
    so that it sees later weight updates: validation during training runs it (under autocast in
    ``amp_dtype`` when training is mixed-precision); build another after training switched it back."""
    model.eval()
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device

    def run(batch: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            cls_out, box_out = model(batch.to(device))
        return [c.float() for c in cls_out], [b.float() for b in box_out]

    return Backend(model.config, run, device, stored_labels(model))


def torch_backend(model: EfficientDet, backend: str = "eager", device: str | torch.device | None = None,
                  precision: str = "float32", channels_last: bool = True) -> Backend:
    """A copy of ``model`` as a fast inference function: BN folded, cast, channels-last, optionally compiled.

    Channels-last (NHWC) lets oneDNN / cuDNN run the depthwise and 1×1 convolutions, which are
    most of EfficientDet's, without layout conversions in between.
    """
    device = resolve_device(device)
    dtype = check_precision(precision, device)
    fused = fuse_model(model.eval()).to(device=device, dtype=dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    fused = fused.to(memory_format=memory_format)
    if backend == "compile":
        # Freezing lets inductor treat the weights as constants: it pre-packs them for oneDNN.
        fused = torch.compile(fused, options={"freezing": True} if device.type == "cpu" else None)
    elif backend != "eager":
        raise ValueError(f"unknown torch backend {backend!r}; valid: eager, compile")

    def run(batch: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = batch.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
        cls_out, box_out = fused(x)
        return [c.float() for c in cls_out], [b.float() for b in box_out]

    return Backend(model.config, run, device, stored_labels(model))


def onnx_session(path: str | os.PathLike, device: torch.device, threads: int | None = None) -> Any:
    """An ONNX Runtime session on ``device`` (CUDA provider when asked for and installed)."""
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: spinning ones hold the cores through the
    # decoding and NMS that follow each run, which then take markedly longer.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("onnxruntime has no CUDA provider here: install onnxruntime-gpu or use --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def onnx_backend(path: str | os.PathLike, device: str | torch.device | None = None,
                 threads: int | None = None) -> Backend:
    """A file from :func:`efficientdet.export.export_model` (``onnx``): raw per-level outputs, or
    Detections (in network pixels) when NMS is inside. Outputs come back as numpy on the host, so
    postprocessing runs there whatever ``device`` the session runs on."""
    from ..export import artifact_format, read_metadata

    fmt = artifact_format(path)
    if fmt != "onnx":
        raise ValueError(f"{path}: ONNX Runtime runs .onnx files; run this one with --backend {FILE_BACKENDS[fmt]}")
    info = read_metadata(path)
    session = onnx_session(path, resolve_device(device or "cpu"), threads)
    input_name = session.get_inputs()[0].name

    def run(batch: torch.Tensor) -> Any:
        return _outputs(info, session.run(None, {input_name: batch.float().cpu().numpy()}))

    return Backend(info.config, run, torch.device("cpu"), info.labels, info.graph_nms)


def openvino_model(path: str | os.PathLike, threads: int | None = None) -> Any:
    """A compiled OpenVINO model of ``path`` on the CPU (:func:`compile_openvino`)."""
    from ..export.openvino import read_openvino_model

    return compile_openvino(read_openvino_model(path), threads)


def compile_openvino(model: Any, threads: int | None = None, **properties: Any) -> Any:
    """``openvino.Model`` compiled for the CPU, with ``threads`` inference threads (default: torch's)
    and float32 arithmetic: OpenVINO would otherwise pick bfloat16 on CPUs that have it. Further
    ``properties`` go to the plugin as they are (``PERF_COUNT=True``: per-layer counters)."""
    from ..export.openvino import openvino_core

    config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32"}
    return openvino_core().compile_model(model, "CPU", config | properties)


def fixed_batch(model: Any, size: int) -> Any:
    """A copy of ``model`` whose input takes batches of ``size`` only."""
    fixed, shape = model.clone(), model.inputs[0].get_partial_shape()
    shape[0] = size
    fixed.reshape({fixed.inputs[0]: shape})
    return fixed


def channels_last_outputs(model: Any) -> set[str]:
    """Edit ``model`` in place so that each output made by a 1×1 convolution (the head's
    predictors, with a bias or not) comes channels-last, ``[B, H, W, C]``: the convolution as a
    MatMul over its input transposed.

    Why: OpenVINO's CPU plugin computes the head channels-last and then reorders each output to
    ``[B, C, H, W]``, a strided copy of every class logit (D0's ``cls_p3`` is 810 × 64 × 64 floats)
    that costs as much as the network's largest layers; transposing the 64-channel input instead
    is a small fraction of it (README, "What makes inference fast"). The values are those of the
    convolution, to the bit (a test pins it). Returns the names of the outputs changed; those of
    another form are left as they are.
    """
    import numpy as np

    changed = set()
    ops = require("openvino.opset13", "openvino")
    for result in model.get_results():
        head = result.input_value(0).get_node()
        bias = None
        if head.get_type_name() == "Add" and head.input_value(1).get_node().get_type_name() == "Constant":
            bias, head = head.input_value(1).get_node().get_data(), head.input_value(0).get_node()
        if head.get_type_name() != "Convolution" or head.input_value(1).get_node().get_type_name() != "Constant":
            continue
        weight = head.input_value(1).get_node().get_data()
        attrs = head.get_attributes()
        if weight.shape[2:] != (1, 1) or any(v != 1 for v in attrs["strides"] + attrs["dilations"]) or any(
                attrs["pads_begin"] + attrs["pads_end"]) or (bias is not None and bias.size != weight.shape[0]):
            continue
        transposed = ops.transpose(head.input_value(0), ops.constant(np.array([0, 2, 3, 1], np.int64)))
        out = ops.matmul(transposed, ops.constant(np.ascontiguousarray(weight[:, :, 0, 0].T)), False, False)
        if bias is not None:
            out = ops.add(out, ops.constant(bias.reshape(-1)))
        names = result.input_value(0).get_names()
        result.input(0).replace_source_output(out.output(0))
        out.output(0).set_names(names)
        changed |= names
    model.validate_nodes_and_infer_types()
    return changed


def openvino_backend(path: str | os.PathLike, device: str | torch.device | None = None,
                     threads: int | None = None) -> Backend:
    """An IR (or ONNX file) from :func:`efficientdet.export.export_model` through OpenVINO on the
    CPU, any batch size; outputs as :func:`onnx_backend` gives them (those computed channels-last,
    :func:`channels_last_outputs`, as channels-last views: the same values and shapes)."""
    from ..export import DETECTION_OUTPUTS, artifact_format, raw_output_names, read_metadata
    from ..export.openvino import read_openvino_model

    if resolve_device(device or "cpu").type != "cpu":
        raise ValueError("the openvino backend runs on the CPU; drop --device or give --device cpu")
    fmt = artifact_format(path)
    if fmt not in ("openvino", "onnx"):
        raise ValueError(f"{path}: OpenVINO runs .xml and .onnx files; run this one with --backend {FILE_BACKENDS[fmt]}")
    info = read_metadata(path)
    model = read_openvino_model(path)
    names = DETECTION_OUTPUTS if info.graph_nms else raw_output_names(info.config)
    changed = set() if info.graph_nms else channels_last_outputs(model)
    nhwc = [name in changed for name in names]
    # A batch of one runs a copy compiled for that shape: a dynamic batch costs OpenVINO shape work
    # in every layer at each call, which shows at batch 1 (README, "What makes inference fast");
    # larger batches, where it is a small share, run the dynamic model, compiled when first met.
    if model.inputs[0].get_partial_shape()[0].is_dynamic:
        compiled = {1: compile_openvino(fixed_batch(model, 1), threads)}
    else:
        compiled = {None: compile_openvino(model, threads)}
    lock = threading.Lock()

    def run(batch: torch.Tensor) -> Any:
        key = 1 if len(batch) == 1 and 1 in compiled else None
        with lock:
            if key not in compiled:
                compiled[key] = compile_openvino(model, threads)
            network = compiled[key]
        result = network(batch.float().cpu().numpy())
        outputs = [result[network.output(name)] for name in names]
        return _outputs(info, [out.transpose(0, 3, 1, 2) if last else out for out, last in zip(outputs, nhwc)])

    return Backend(info.config, run, torch.device("cpu"), info.labels, info.graph_nms)


def litert_backend(path: str | os.PathLike, device: str | torch.device | None = None,
                   threads: int | None = None) -> Backend:
    """A ``.tflite`` file from :func:`efficientdet.export.export_model` through the LiteRT
    interpreter on the CPU, one image at a time (the file holds batch 1). A detection-signature
    file (NHWC input, decoding and NMS inside) gives Detections as an ONNX file with NMS does."""
    from ..export import artifact_format, read_metadata

    fmt = artifact_format(path)
    if fmt != "tflite":
        raise ValueError(f"{path}: LiteRT runs .tflite files; run this one with --backend {FILE_BACKENDS[fmt]}")
    if resolve_device(device or "cpu").type != "cpu":
        raise ValueError("the litert backend runs on the CPU; drop --device or give --device cpu")
    info = read_metadata(path)
    interpreter = require("ai_edge_litert.interpreter", "tflite").Interpreter(
        model_path=str(path), num_threads=threads or torch.get_num_threads())
    runner = interpreter.get_signature_runner()
    ((input_name, input_detail),) = runner.get_input_details().items()
    output_details = runner.get_output_details()
    outputs = [f"output_{i}" for i in range(len(output_details))]
    nhwc = info.graph_nms is not None
    h, w = info.config.image_size

    def run(batch: torch.Tensor) -> Any:
        per_image = []
        for image in batch.float().cpu():
            x = image.permute(1, 2, 0) if nhwc else image
            result = runner(**{input_name: _quantized(x[None].contiguous().numpy(), input_detail)})
            per_image.append([torch.from_numpy(_dequantized(result[name], output_details[name])) for name in outputs])
        joined = [torch.cat(parts) for parts in zip(*per_image)]
        if not nhwc:
            levels = len(info.config.levels)
            return joined[:levels], joined[levels:]
        yxyx, classes, scores, count = joined
        num_valid = count.long()
        padding = torch.arange(classes.shape[1])[None] >= num_valid[:, None]
        boxes = yxyx[..., [1, 0, 3, 2]] * torch.tensor([w, h, w, h], dtype=yxyx.dtype)
        return Detections(boxes, scores, classes.long().masked_fill(padding, -1), num_valid)

    return Backend(info.config, run, torch.device("cpu"), info.labels, info.graph_nms)


def tensorrt_backend(path: str | os.PathLike, device: str | torch.device | None = None,
                     threads: int | None = None) -> Backend:
    """An engine from :func:`efficientdet.export.export_model` (``tensorrt``) on the GPU, any batch
    size (run in chunks of the engine's largest); its raw outputs stay on the GPU, where they are
    postprocessed. ``threads`` is accepted for the common signature: the GPU does the work.

    One execution context serves every call, so calls from several threads (``serve --workers``)
    take turns, on the backend's own stream, as TensorRT asks (the default stream adds a
    device-wide synchronisation), ordered after and before the caller's stream.
    """
    from ..export.metadata import artifact_format, parse_metadata
    from ..export.onnx import INPUT_NAME, raw_output_names
    from ..export.tensorrt import ENGINE_KEY, check_engine, read_engine_file, require_cuda

    fmt = artifact_format(path)
    if fmt != "tensorrt":
        raise ValueError(f"{path}: TensorRT runs .engine files; run this one with --backend {FILE_BACKENDS[fmt]}")
    cuda = require_cuda()
    if device is not None:
        cuda = resolve_device(device)
    if cuda.type != "cuda":
        raise ValueError("the tensorrt backend runs on an NVIDIA GPU; give --device cuda")
    props, serialized = read_engine_file(path)
    info = parse_metadata(path, props)
    check_engine(path, props, cuda)
    trt = require("tensorrt", "tensorrt")
    with torch.cuda.device(cuda):
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
        if engine is None:
            raise ValueError(f"{path}: TensorRT could not load the engine (its log above says why)")
        context = engine.create_execution_context()
        stream = torch.cuda.Stream(cuda)
    names = raw_output_names(info.config)
    levels, max_batch = len(info.config.levels), int(json.loads(props[ENGINE_KEY])["max_batch"])
    turn = threading.Lock()

    def run_chunk(x: torch.Tensor) -> list[torch.Tensor]:
        context.set_input_shape(INPUT_NAME, tuple(x.shape))
        context.set_tensor_address(INPUT_NAME, x.data_ptr())
        outputs = [torch.empty(tuple(context.get_tensor_shape(n)), dtype=torch.float32, device=cuda) for n in names]
        for name, out in zip(names, outputs):
            context.set_tensor_address(name, out.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{path}: TensorRT failed to run the engine (its log above says why)")
        return outputs

    def run(batch: torch.Tensor) -> Any:
        with torch.cuda.device(cuda), turn:
            caller = torch.cuda.current_stream(cuda)
            x = batch.to(device=cuda, dtype=torch.float32).contiguous()
            stream.wait_stream(caller)
            with torch.cuda.stream(stream):
                chunks = [run_chunk(x[i:i + max_batch]) for i in range(0, x.shape[0], max_batch)]
            caller.wait_stream(stream)
            x.record_stream(stream)
            for out in (o for chunk in chunks for o in chunk):
                out.record_stream(caller)
        outputs = chunks[0] if len(chunks) == 1 else [torch.cat(parts) for parts in zip(*chunks)]
        return outputs[:levels], outputs[levels:]

    return Backend(info.config, run, cuda, info.labels)


def _quantized(x: Any, detail: dict[str, Any]) -> Any:
    """Float input → the tensor's type: int8 files take int8 in, at the input's scale and zero point."""
    import numpy as np

    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantized(a: Any, detail: dict[str, Any]) -> Any:
    """An output back to float32 (int8 files give int8 at the output's scale and zero point)."""
    import numpy as np

    if not np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    return ((a.astype(np.float32) - zero) * scale).astype(np.float32)


def _outputs(info: Any, arrays: list[Any]) -> Any:
    """A file's outputs in order as the detector takes them: Detections, or (class, box) levels."""
    outputs = [torch.from_numpy(a) for a in arrays]
    if info.graph_nms is not None:
        return Detections(*outputs)
    levels = len(info.config.levels)
    return outputs[:levels], outputs[levels:]
