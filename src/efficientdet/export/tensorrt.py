"""TensorRT engines, built from our ONNX graph by TensorRT's own ONNX parser on an NVIDIA GPU.

The network is *strongly typed* (TensorRT 10's recommended mode, 11's only one): each layer runs
in the type the ONNX graph gives it, so the precision is chosen in the graph we hand over —

* float32: the raw-output graph of :mod:`.onnx`;
* float16: the same network computing in float16 between float32 input and outputs
  (:class:`~.onnx.HalfInside`);
* int8: QDQ from ONNX Runtime's calibrator (:func:`.quantize.quantize_onnx` ``for_tensorrt``:
  symmetric int8, the form TensorRT's explicit quantisation reads), the layers of ``keep_float``
  left in float32.

The engine takes ``[B, 3, H, W]`` preprocessed pixels for ``1 ≤ B ≤ max_batch`` and gives the raw
per-level outputs, decoded and NMS-ed after it on the GPU by ``postprocess``. An engine only runs
with the TensorRT version and GPU architecture it was built with, and its format has no place for
our metadata, so the file is our header — :data:`MAGIC`, a little-endian ``uint32`` length, that
many bytes of JSON (:mod:`.metadata`'s map, with the TensorRT version and the GPU) — then the
engine as TensorRT serialised it.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write
from ..extras import require
from ..model import EfficientDet
from ..weights import stored_labels
from .metadata import PREFIX, ArtifactInfo, artifact_metadata
from .onnx import INPUT_NAME, onnx_graph

MAGIC = b"EDETTRT\x01"
ENGINE_KEY = PREFIX + "tensorrt"
PRECISIONS = ("float32", "float16", "int8")
DEFAULT_MAX_BATCH = 8
WORKSPACE_BYTES = 4 << 30


def require_cuda() -> torch.device:
    """The GPU TensorRT builds for and runs on, or a one-line refusal saying what to do instead."""
    if not torch.cuda.is_available():
        raise ValueError("TensorRT builds and runs engines on an NVIDIA GPU and torch sees none here; export "
                         "--format onnx and build the engine on the GPU machine (efficientdet export --format "
                         "tensorrt there, or trtexec --onnx=FILE)")
    return torch.device("cuda", torch.cuda.current_device())


def engine_graph(model: EfficientDet, precision: str = "float32", calibration: Any = None,
                 keep_float: tuple[str, ...] | None = None) -> tuple[Any, dict[str, Any] | None]:
    """The ONNX graph TensorRT parses for ``precision`` (module docstring), and the quantisation
    record for the metadata (None in float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown TensorRT precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if (precision == "int8") != (calibration is not None):
        raise ValueError("an int8 engine needs calibration images, and only it does")
    if precision == "float16":
        return onnx_graph(model, float16=True), {"precision": "float16", "method": "float16 network"}
    proto = onnx_graph(model)
    if precision == "float32":
        return proto, None
    from .quantize import quantize_onnx

    return quantize_onnx(proto, calibration, keep_float, for_tensorrt=True)


def build_engine(onnx_bytes: bytes, image_size: tuple[int, int], max_batch: int = DEFAULT_MAX_BATCH) -> bytes:
    """A serialised engine of the ONNX graph ``onnx_bytes`` for batches 1 to ``max_batch``, tuned
    for ``max_batch``. TensorRT's parser and builder errors come back as one ValueError."""
    require_cuda()
    trt = require("tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT's ONNX parser refused the graph: {errors}")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)  # on by default: float32 layers would round their inputs to TF32
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    h, w = image_size
    profile.set_shape(INPUT_NAME, (1, 3, h, w), (max_batch, 3, h, w), (max_batch, 3, h, w))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ValueError("TensorRT could not build the engine (its log above says why)")
    return bytes(engine)


def runtime_here(device: torch.device) -> dict[str, str]:
    """What an engine is tied to: the TensorRT version and ``device``'s GPU architecture."""
    trt = require("tensorrt", "tensorrt")
    major, minor = torch.cuda.get_device_capability(device)
    return {"tensorrt": trt.__version__, "compute_capability": f"{major}.{minor}"}


def engine_record(max_batch: int) -> dict[str, Any]:
    """What the engine was built with: it runs only there (same TensorRT, same GPU architecture)."""
    device = torch.device("cuda", torch.cuda.current_device())
    return {**runtime_here(device), "gpu": torch.cuda.get_device_name(device), "max_batch": max_batch}


def export_tensorrt(model: EfficientDet, path: str | os.PathLike, *, precision: str = "float32",
                    calibration: Any = None, keep_float: tuple[str, ...] | None = None,
                    max_batch: int = DEFAULT_MAX_BATCH) -> Path:
    """Write ``model`` (BN folded by the caller) to ``path`` as our framed engine, atomically."""
    onnx = require("onnx", "export")
    require_cuda()
    if max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {max_batch}")
    proto, quantization = engine_graph(model, precision, calibration, keep_float)
    onnx.checker.check_model(proto)
    engine = build_engine(proto.SerializeToString(), model.config.image_size, max_batch)
    props = artifact_metadata(ArtifactInfo(model.config, None, stored_labels(model), quantization))
    props[ENGINE_KEY] = json.dumps(engine_record(max_batch))
    data = frame_engine(engine, props)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def frame_engine(engine: bytes, props: dict[str, str]) -> bytes:
    """Our header (module docstring) and ``engine``."""
    header = json.dumps(props).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + engine


def read_engine_file(path: str | os.PathLike, header_only: bool = False) -> tuple[dict[str, str], bytes]:
    """A framed engine file → (our string map, the serialised engine). ``header_only`` reads the
    map and a byte of the engine (metadata readers: an engine may be hundreds of MB)."""
    start = len(MAGIC) + 4
    with open(path, "rb") as f:
        data = f.read(start)
        if not data.startswith(MAGIC):
            raise ValueError(f"{path}: not an engine written by efficientdet export (no {MAGIC[:-1].decode()} "
                             f"header); re-export it: efficientdet export --format tensorrt --model M --weights W "
                             f"--out {Path(path).name}")
        length = struct.unpack_from("<I", data, len(MAGIC))[0] if len(data) == start else 0
        data += f.read(length + 1 if header_only else -1)
    if len(data) <= start + length:
        raise ValueError(f"{path}: truncated engine file (no engine after the header)")
    try:
        props = json.loads(data[start:start + length])
    except ValueError as e:
        raise ValueError(f"{path}: unreadable engine header ({e})") from None
    if not isinstance(props, dict):
        raise ValueError(f"{path}: engine header is not a map of strings")
    return props, data[start + length:]


def read_tensorrt_properties(path: str | os.PathLike) -> dict[str, str]:
    return read_engine_file(path, header_only=True)[0]


def check_engine(path: str | os.PathLike, props: dict[str, str], device: torch.device) -> None:
    """Refuse, in one line, an engine built with another TensorRT or for another GPU architecture
    than ``device``'s (TensorRT's own message for it is a long log)."""
    built = json.loads(props.get(ENGINE_KEY, "{}"))
    for key, value in runtime_here(device).items():
        if built.get(key) != value:
            raise ValueError(f"{path}: engine built with {key} {built.get(key)}, this machine has {value}; "
                             f"an engine runs only where it was built: export it again here")
