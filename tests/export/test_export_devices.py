"""The device formats — TFLite (raw float32, float16, int8; the detection signature) and Core ML —
from the shared small Lite0 (``exported``), run here wherever a runtime exists on Linux: the LiteRT
interpreter, MediaPipe Tasks' ObjectDetector; Core ML only by its spec (running it needs macOS).

Each conversion costs tens of seconds, so each file is made once per session (``devices``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from efficientdet import Detector, create_model
from efficientdet.config import PostprocessConfig
from efficientdet.data import load_dataset_yaml, load_split
from efficientdet.export import (FORMATS, FP16_FORMATS, INT8_FORMATS, SUFFIXES, check_options, load_calibration,
                                 read_metadata)
from efficientdet.export.onnx import raw_output_names
from efficientdet.fuse import fuse_model
from efficientdet.inference.backends import litert_backend
from efficientdet.preprocess import preprocess
from export_builders import MODEL_ARGS, assert_same_detections, cli, cli_processes, evaluate

litert = pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("litert_torch")
pytest.importorskip("coremltools")

MAX_DETECTIONS = 10  # NMS rounds unrolled in the signature's graph: few, for a quick conversion


@dataclass
class Devices:
    files: dict[str, Path]
    stdout: dict[str, str]


@pytest.fixture(scope="session")
def devices(exported, tmp_path_factory) -> Devices:
    root = tmp_path_factory.mktemp("devices")
    # Slowest first: two processes at a time then finish together.
    runs = {"signature": ["--format", "tflite", "--detection-signature", "--max-detections", MAX_DETECTIONS],
            "tflite-int8": ["--format", "tflite", "--int8", "--calibration", exported.data, "--calibration-images", 8],
            "tflite": ["--format", "tflite"],
            "coreml": ["--format", "coreml"]}
    files = {name: root / f"lite0-{name}{SUFFIXES[argv[1]]}" for name, argv in runs.items()}
    results = cli_processes({name: ["export", *MODEL_ARGS, "--weights", exported.weights, *argv, "--out", files[name]]
                             for name, argv in runs.items()})
    for name, (code, _, err) in results.items():
        assert code == 0, (name, err)
    return Devices(files, {name: out for name, (_, out, _) in results.items()})


def trained(exported):
    return create_model("efficientdet-lite0", weights=str(exported.weights), image_size=128).eval()


def val_batch(exported) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The validation images (at the model's 128 px: no letterbox), preprocessed, and as they are."""
    split = load_split(load_dataset_yaml(exported.data), "val")
    model = trained(exported)
    images = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in (s.image_path for s in split.samples)]
    batch, scales = preprocess(images, model.config.image_size, model.config.preprocess)
    return batch, scales, images


def run_tflite(path: Path, image: torch.Tensor) -> list[np.ndarray]:
    """One preprocessed image through the file (int8 in and out quantised by the backend)."""
    cls_out, box_out = litert_backend(path).network(image[None])
    return [t.numpy() for t in [*cls_out, *box_out]]


def test_tflite_float32_gives_pytorchs_raw_outputs(exported, devices):
    model = fuse_model(trained(exported)).eval()
    batch, _, _ = val_batch(exported)
    with torch.no_grad():
        cls_out, box_out = model(batch)
    for b in range(len(batch)):
        outputs = run_tflite(devices.files["tflite"], batch[b])
        for got, want in zip(outputs, [*cls_out, *box_out]):
            np.testing.assert_allclose(got[0], want[b].numpy(), atol=1e-4)
    info = read_metadata(devices.files["tflite"])
    assert info.precision == "float32" and list(info.labels.names) == load_split(load_dataset_yaml(exported.data), "val").names
    assert "batch 1" in devices.stdout["tflite"]


def test_the_converters_progress_stays_off_stdout(devices):
    """stdout carries results only (``benchmark --json -``): litert-torch's progress display goes to stderr."""
    for name, out in devices.stdout.items():
        assert out.startswith("wrote ") and len(out.strip().splitlines()) == 1, (name, out)


def test_eval_and_predict_run_a_tflite_file_as_the_pytorch_model(exported, devices, tmp_path):
    eager, eager_preds = evaluate(exported, tmp_path, "eager", *MODEL_ARGS, "--weights", exported.weights)
    metrics, preds = evaluate(exported, tmp_path, "litert", "--weights", devices.files["tflite"])
    assert all(abs(metrics[k] - eager[k]) <= 1e-3 for k in eager)
    assert_same_detections(preds, eager_preds)
    code, _, err = cli("predict", exported.data.parent / "images", "--weights", devices.files["tflite"],
                       "--out", tmp_path / "pred", "--backend", "litert")
    assert code == 0, err


def test_tflite_int8_holds_int8_weights_and_stays_close_to_float32(exported, devices):
    """int8 tensors throughout (the input too: full-integer, which the backend quantises), and
    outputs within test_export_quantize's bound of the float32 file's (measured 0.09–0.21)."""
    details = litert.Interpreter(model_path=str(devices.files["tflite-int8"])).get_tensor_details()
    assert sum(d["dtype"] == np.int8 for d in details) > 100
    batch, _, _ = val_batch(exported)
    for b in range(len(batch)):
        float_out = run_tflite(devices.files["tflite"], batch[b])
        int8_out = run_tflite(devices.files["tflite-int8"], batch[b])
        for part in (slice(0, 5), slice(5, 10)):  # class levels, box levels
            ref, got = np.concatenate([f.ravel() for f in float_out[part]]), np.concatenate([q.ravel() for q in int8_out[part]])
            assert np.sqrt(np.mean((got - ref) ** 2)) / ref.std() < 0.5  # as test_export_quantize's bound
    info = read_metadata(devices.files["tflite-int8"])
    assert info.precision == "int8" and info.quantization["images"] == 8


def test_tflite_float16_weights_from_the_float32_file(exported, devices, tmp_path):
    from efficientdet.export.tflite import quantize_tflite

    path = tmp_path / "fp16.tflite"
    path.write_bytes(quantize_tflite(devices.files["tflite"].read_bytes(), "float16"))
    details = litert.Interpreter(model_path=str(path)).get_tensor_details()
    assert sum(d["dtype"] == np.float16 for d in details) > 100
    assert read_metadata(path).config == read_metadata(devices.files["tflite"]).config  # kept through quantising
    batch, _, _ = val_batch(exported)
    for f, h in zip(run_tflite(devices.files["tflite"], batch[0]), run_tflite(path, batch[0])):
        np.testing.assert_allclose(h, f, atol=2e-2)


def test_detection_signature_gives_predicts_hard_nms_detections(exported, devices):
    """Same classes, boxes within 1e-3 of the input side, scores within 1e-4, as ``predict --nms
    hard`` with the same number of detections."""
    post = PostprocessConfig(method="hard", max_detections=MAX_DETECTIONS)
    ours = Detector.from_model(trained(exported), postprocess_config=post)
    theirs = Detector.from_litert(devices.files["signature"])
    assert theirs.graph_nms and theirs.class_names == ours.class_names
    batch, scales, _ = val_batch(exported)
    want, got = ours.detect(batch), theirs.detect(batch)
    side = float(max(ours.config.image_size))
    assert torch.equal(got.num_valid, want.num_valid)
    for b in range(len(batch)):
        n = int(want.num_valid[b])
        assert torch.equal(got.classes[b, :n], want.classes[b, :n])
        torch.testing.assert_close(got.boxes[b, :n] / side, want.boxes[b, :n] / side, atol=1e-3, rtol=0)
        torch.testing.assert_close(got.scores[b, :n], want.scores[b, :n], atol=1e-4, rtol=0)
        assert (got.classes[b, n:] == -1).all()


def test_mediapipe_object_detector_reads_the_signature_file(exported, devices):
    """A stock client: the label map and normalisation come from the TFLite metadata alone."""
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    batch, _, images = val_batch(exported)
    model = trained(exported)
    h, w = model.config.image_size
    image = images[0]
    assert image.shape[1:] == (h, w)  # the client resizes; at the model's size nothing changes
    detector = Detector.from_litert(devices.files["signature"])
    want = detector(image)
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=str(devices.files["signature"])),
                                           score_threshold=0.0, max_results=MAX_DETECTIONS)
    with vision.ObjectDetector.create_from_options(options) as client:
        result = client.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                        data=np.ascontiguousarray(image.permute(1, 2, 0).numpy())))
    assert len(result.detections) == len(want["scores"]) > 0
    for det, box, score, name in zip(result.detections, want["boxes"], want["scores"], want["names"]):
        assert det.categories[0].category_name == name
        assert det.categories[0].score == pytest.approx(float(score), abs=1e-4)
        bb = det.bounding_box
        np.testing.assert_allclose([bb.origin_x, bb.origin_y, bb.origin_x + bb.width, bb.origin_y + bb.height],
                                   box.numpy(), atol=2)  # MediaPipe rounds to whole pixels


def test_coreml_package_passes_the_structural_checks(exported, devices):
    from efficientdet.export.coreml import IMAGE_INPUT, coreml_summary

    summary = coreml_summary(devices.files["coreml"])
    model = trained(exported)
    h, w = model.config.image_size
    assert summary["inputs"] == {IMAGE_INPUT: ("imageType", [1, 3, h, w])}
    with torch.no_grad():
        cls_out, box_out = model.eval()(torch.zeros(1, 3, h, w))
    assert summary["outputs"] == {n: list(t.shape) for n, t in zip(raw_output_names(model.config), [*cls_out, *box_out])}
    from efficientdet.export.metadata import parse_metadata

    info = parse_metadata(devices.files["coreml"], summary["metadata"])
    assert info.config == model.config and list(info.labels.names) == load_split(load_dataset_yaml(exported.data), "val").names


MATRIX = [(fmt, precision, nms) for fmt in FORMATS for precision in ("float32", "float16", "int8")
          for nms in (False, True)]


@pytest.mark.parametrize("fmt,precision,nms", MATRIX)
def test_export_matrix_every_cell_runs_or_is_refused_in_one_line(fmt, precision, nms):
    """Which cells exist; those that do are exported and compared above or in the ONNX/OpenVINO tests."""
    int8, fp16 = precision == "int8", precision == "float16"
    signature = nms and fmt == "tflite"
    supported = ((not int8 or fmt in INT8_FORMATS) and (not fp16 or fmt in FP16_FORMATS)
                 and (not nms or fmt in ("onnx", "tflite")) and not (nms and (int8 or fp16)))
    if supported:
        check_options(fmt, nms and not signature, int8, fp16, signature)
    else:
        with pytest.raises(ValueError) as e:
            check_options(fmt, nms and fmt != "tflite", int8, fp16, signature)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("argv,message", [
    (["--format", "onnx", "--detection-signature"], "--detection-signature is for --format tflite"),
    (["--format", "onnx", "--fp16"], "--fp16 is for tflite, coreml, tensorrt"),
    (["--format", "coreml", "--int8", "--calibration", "x"], "--int8 is for onnx, openvino, tflite"),
    (["--format", "tflite", "--nms"], "for TFLite use --detection-signature"),
    (["--format", "tflite", "--int8", "--calibration", "x", "--keep-float", "stem"], "--keep-float applies to onnx"),
    (["--format", "tflite", "--int8", "--calibration", "x", "--calibration-method", "entropy"], "valid: minmax"),
    (["--format", "tflite", "--fp16", "--int8", "--calibration", "x"], "exclude each other"),
    (["--format", "tflite", "--max-detections", "5"], "only apply with --nms or --detection-signature"),
    (["--format", "tflite", "--detection-signature", "--fp16"], "--detection-signature files are float32"),
])
def test_unsupported_combinations_are_one_line_errors(tmp_path, argv, message):
    out = tmp_path / ("m" + SUFFIXES[argv[1]])
    code, _, err = cli("export", *MODEL_ARGS, *argv, "--out", out)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_missing_runtime_names_the_extra(tmp_path, monkeypatch):
    import efficientdet.extras as extras

    real = extras.importlib.import_module

    def missing(name, *args):
        if name.startswith("litert_torch"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(extras.importlib, "import_module", missing)
    code, _, err = cli("export", *MODEL_ARGS, "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert code == 2 and "pip install 'efficientdet[tflite]'" in err
    assert not (tmp_path / "m.tflite").exists()


def test_a_failed_conversion_leaves_no_file_and_says_why_in_one_line(tmp_path, monkeypatch):
    import litert_torch

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported op: aten::frobnicate\nlong trace...")

    monkeypatch.setattr(litert_torch, "convert", fail)
    out = tmp_path / "m.tflite"
    code, _, err = cli("export", *MODEL_ARGS, "--format", "tflite", "--out", out)
    assert code == 2 and "litert-torch could not convert efficientdet-lite0: unsupported op: aten::frobnicate" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists() and list(tmp_path.iterdir()) == []


def test_the_litert_backend_refuses_other_files_and_devices(exported, devices):
    with pytest.raises(ValueError, match="run this one with --backend onnxruntime"):
        Detector.from_litert(exported.files["onnx", "float32"])
    with pytest.raises(ValueError, match="run this one with --backend litert"):
        Detector.from_onnx(devices.files["tflite"])
    code, _, err = cli("eval", "--weights", devices.files["tflite"], "--data", exported.data, "--backend", "openvino")
    assert code == 2 and "run this one with --backend litert" in err


def test_calibration_for_tflite_reads_the_same_images(exported):
    model = trained(exported)
    calibration = load_calibration(exported.data, model.config, 8, "minmax")
    assert len(calibration.images) == 8 and calibration.images[0].shape == (3, *model.config.image_size)
