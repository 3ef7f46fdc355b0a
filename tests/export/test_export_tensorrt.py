"""TensorRT: everything up to the GPU is tested here — the ONNX graphs handed to TensorRT's parser
(float16 typed, symmetric int8 QDQ), the engine file's header, and the one-line refusals; the
engines themselves are built and compared with CUDA eager only where an NVIDIA GPU and the
``tensorrt`` extra are (``benchmarks/bench_tensorrt.py`` measures them)."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from efficientdet import Detector, create_model
from efficientdet.export import load_calibration, read_metadata
from efficientdet.export.metadata import ArtifactInfo, artifact_metadata
from efficientdet.export.onnx import raw_output_names
from efficientdet.export.tensorrt import ENGINE_KEY, MAGIC, engine_graph, frame_engine, read_engine_file
from efficientdet.fuse import fuse_model
from efficientdet.weights import stored_labels
from export_builders import MODEL_ARGS, cli, val_batch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

GPU = torch.cuda.is_available()


def lite0(exported):
    """The shared 128-px Lite0 with its lively random weights and the dataset's label space."""
    return create_model("efficientdet-lite0", weights=str(exported.weights), image_size=128).eval()


def run_onnx(proto, batch: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch.numpy()})


def test_float16_graph_computes_in_float16_between_float32_edges(exported):
    """A strongly typed network runs each layer in its graph type: every weight is float16, the
    input and the raw outputs stay float32 (a caller's buffers do not change with precision)."""
    model = lite0(exported)
    proto, record = engine_graph(fuse_model(model), "float16")
    floats = collections.Counter(onnx.helper.tensor_dtype_to_np_dtype(t.data_type) for t in proto.graph.initializer
                                 if onnx.helper.tensor_dtype_to_np_dtype(t.data_type).kind == "f")
    assert set(floats) == {np.dtype(np.float16)}, floats
    assert [o.name for o in proto.graph.output] == raw_output_names(model.config)
    edges = [*proto.graph.input, *proto.graph.output]
    assert {e.type.tensor_type.elem_type for e in edges} == {onnx.TensorProto.FLOAT}
    assert record == {"precision": "float16", "method": "float16 network"}


def test_int8_graph_is_symmetric_qdq_that_tracks_float32(exported):
    """TensorRT's explicit quantisation reads QDQ of int8 only, with zero points of 0; ONNX Runtime runs the
    same graph on the CPU here, and its outputs track float32's as the ONNX int8 file's do (the
    bound of ``test_int8_outputs_stay_close_to_float32``, measured there)."""
    model = lite0(exported)
    fused = fuse_model(model)
    calibration = load_calibration(exported.data, model.config, 8)
    proto, record = engine_graph(fused, "int8", calibration)
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    points = [initializers[n.input[2]] for n in proto.graph.node
              if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert len(points) > 50
    assert all(p.dtype == np.int8 and not p.any() for p in points)
    dequantized = [initializers[n.input[0]] for n in proto.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in initializers]
    assert dequantized and {d.dtype for d in dequantized} == {np.dtype(np.int8)}  # no int32 biases: TensorRT has none
    assert record["runtime"] == "tensorrt" and record["calibration"]["images"] == 8
    assert record["kept_float"]["stem"] > 0 and record["kept_float"]["predictors"] > 0
    batch = val_batch(exported)
    float32, _ = engine_graph(fused, "float32")
    for ref, got in zip(run_onnx(float32, batch), run_onnx(proto, batch)):
        assert float(np.sqrt(((got - ref) ** 2).mean()) / ref.std()) < 0.5


def test_engine_graph_checks_its_precision(exported):
    fused = fuse_model(lite0(exported))
    with pytest.raises(ValueError, match="valid: float32, float16, int8"):
        engine_graph(fused, "int4")
    with pytest.raises(ValueError, match="needs calibration images"):
        engine_graph(fused, "int8")


def framed(tmp_path, exported, engine: bytes = b"\x00serialized engine\xff") -> tuple:
    model = lite0(exported)
    props = artifact_metadata(ArtifactInfo(model.config, None, stored_labels(model), None))
    props[ENGINE_KEY] = json.dumps({"tensorrt": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0",
                                    "max_batch": 8})
    path = tmp_path / "lite0.engine"
    path.write_bytes(frame_engine(engine, props))
    return path, model, props


def test_engine_file_carries_our_metadata_before_the_engine(exported, tmp_path):
    engine = b"\x00serialized engine\xff" * 100
    path, model, props = framed(tmp_path, exported, engine)
    assert read_engine_file(path) == (props, engine)
    info = read_metadata(path)
    assert info.config == model.config and info.labels == stored_labels(model) and info.precision == "float32"


@pytest.mark.parametrize("data,message", [
    (b"a plan TensorRT wrote", "not an engine written by efficientdet export"),
    (MAGIC + b"\x10", "truncated engine file"),
    (MAGIC + (100).to_bytes(4, "little") + b"{}", "truncated engine file"),
    (MAGIC + (2).to_bytes(4, "little") + b"{}", "truncated engine file"),
    (MAGIC + (3).to_bytes(4, "little") + b"{x}engine", "unreadable engine header"),
    (MAGIC + (2).to_bytes(4, "little") + b"[]engine", "not a map"),
])
def test_a_bad_engine_file_is_named_in_one_line(exported, tmp_path, data, message):
    path = tmp_path / "bad.engine"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message):
        read_engine_file(path)
    code, _, err = cli("eval", "--weights", path, "--data", exported.data)
    assert code == 2 and message in err and str(path) in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(GPU, reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_export_and_the_backend_refuse_in_one_line(exported, tmp_path):
    out = tmp_path / "m.engine"
    code, _, err = cli("export", *MODEL_ARGS, "--weights", exported.weights, "--format", "tensorrt", "--out", out)
    assert code == 2 and "NVIDIA GPU" in err and "--format onnx" in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
    path, _, _ = framed(tmp_path, exported)
    code, _, err = cli("predict", str(exported.data.parent / "images"), "--weights", path, "--out", tmp_path / "p")
    assert code == 2 and "NVIDIA GPU" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ValueError, match="NVIDIA GPU and torch sees none"):
        Detector.from_tensorrt(path, device="cpu")


@pytest.mark.parametrize("argv,message", [
    (["--nms"], "only supported for --format onnx"),
    (["--detection-signature"], "--detection-signature is for --format tflite"),
    (["--max-batch", "0"], "--max-batch must be >= 1"),
])
def test_tensorrt_options_that_cannot_apply_are_one_line_errors(tmp_path, argv, message):
    code, _, err = cli("export", *MODEL_ARGS, "--format", "tensorrt", *argv, "--out", tmp_path / "m.engine")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_max_batch_is_for_tensorrt_only(tmp_path):
    code, _, err = cli("export", *MODEL_ARGS, "--format", "onnx", "--max-batch", "4", "--out", tmp_path / "m.onnx")
    assert code == 2 and "--max-batch is for --format tensorrt" in err and not (tmp_path / "m.onnx").exists()


def test_other_backends_send_an_engine_to_tensorrt(exported, tmp_path):
    path, _, _ = framed(tmp_path, exported)
    for backend in ("onnxruntime", "openvino", "litert"):
        code, _, err = cli("eval", "--weights", path, "--data", exported.data, "--backend", backend)
        assert code == 2 and "run this one with --backend tensorrt" in err, (backend, err)


# ---- on a GPU with the tensorrt extra: the engines themselves ----

needs_tensorrt = pytest.mark.skipif(not GPU, reason="TensorRT builds and runs engines on an NVIDIA GPU; none here")


@needs_tensorrt
@pytest.mark.parametrize("precision,bound", [("float32", 1e-3), ("float16", 0.05), ("int8", 0.5)])
def test_engine_matches_cuda_eager(exported, tmp_path, monkeypatch, precision, bound):
    """Against eager float32 (TF32 off there too, as in the engine): float32 to 1e-3 of the
    outputs' spread (kernels differ, not arithmetic); float16 to 5 % of it; int8 as the CPU int8
    files (RMS error / spread < 0.5)."""
    pytest.importorskip("tensorrt")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    from efficientdet.export import export_model

    model = lite0(exported).cuda()
    calibration = load_calibration(exported.data, model.config, 8) if precision == "int8" else None
    path = export_model(model, tmp_path / f"m-{precision}.engine", "tensorrt", calibration=calibration,
                        fp16=precision == "float16", max_batch=4)
    batch = val_batch(exported).cuda()
    detector = Detector.from_tensorrt(path)
    with torch.no_grad():
        want = fuse_model(model).eval()(batch)
    got = detector.network(torch.cat([batch, batch, batch]))  # 12 images: chunks of the engine's 4
    for ref, out in zip([*want[0], *want[1]], [*got[0], *got[1]]):
        ref = torch.cat([ref, ref, ref])
        assert float((out - ref).pow(2).mean().sqrt() / ref.std()) < bound
