import json
from model_builders import lively
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from efficientdet import create_model
from efficientdet.cli import main
from efficientdet.preprocess import preprocess
from efficientdet.weights import save_safetensors

pytest.importorskip("onnxruntime")
PHOTOS = ("astronaut", "chelsea", "coffee")


def photo_tensors() -> list[torch.Tensor]:
    return [torch.from_numpy(getattr(data, name)()).permute(2, 0, 1) for name in PHOTOS]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> tuple[Path, Path]:
    """Random Lite0 at 256 px as safetensors, and its raw-output ONNX export (made through the CLI)."""
    folder = tmp_path_factory.mktemp("lite0")
    torch.manual_seed(0)
    weights = save_safetensors(lively(create_model("efficientdet-lite0", image_size=256)),
                               folder / "lite0.safetensors")
    onnx_file = folder / "lite0.onnx"
    assert main(["export", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "256",
                 "--format", "onnx", "--out", str(onnx_file)]) == 0
    return weights, onnx_file


def ort_run(path: Path, batch: torch.Tensor) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch.numpy()})


def test_onnx_raw_outputs_within_1e4_on_photos_at_any_batch_size(lite0):
    weights, onnx_file = lite0
    model = create_model("efficientdet-lite0", weights=weights, image_size=256).eval()
    batch, _ = preprocess(photo_tensors(), (256, 256), model.config.preprocess)
    with torch.no_grad():
        cls_out, box_out = model(batch)
    for sl in (slice(0, 3), slice(1, 2)):  # batch 3, then batch 1: the batch axis is dynamic
        outputs = ort_run(onnx_file, batch[sl])
        assert len(outputs) == 10
        for got, ref in zip(outputs, cls_out + box_out):
            assert got.shape == ref[sl].shape
            assert np.abs(got - ref[sl].numpy()).max() <= 1e-4


def test_openvino_raw_outputs_within_1e4_on_photos_at_any_batch_size(lite0, tmp_path):
    """The IR keeps float32 weights (OpenVINO's save_model would halve them) and a dynamic batch;
    --threads reaches the compiled model; the backend gives the IR's outputs, channels-last."""
    pytest.importorskip("openvino")
    from efficientdet.export import raw_output_names
    from efficientdet.inference.backends import openvino_backend, openvino_model

    weights, _ = lite0
    ir = tmp_path / "lite0.xml"
    assert main(["export", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "256",
                 "--format", "openvino", "--out", str(ir)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lite0.bin", "lite0.xml"]
    model = create_model("efficientdet-lite0", weights=weights, image_size=256).eval()
    batch, _ = preprocess(photo_tensors(), (256, 256), model.config.preprocess)
    with torch.no_grad():
        cls_out, box_out = model(batch)
    compiled = openvino_model(ir, threads=1)
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    network = openvino_backend(ir, threads=1).network
    for sl in (slice(0, 3), slice(1, 2)):
        outputs = compiled(batch[sl].numpy())
        cls_got, box_got = network(batch[sl])
        for name, ref, run in zip(raw_output_names(model.config), cls_out + box_out, cls_got + box_got):
            got = outputs[compiled.output(name)]
            assert got.shape == ref[sl].shape
            assert np.abs(got - ref[sl].numpy()).max() <= 1e-4
            # The backend's head computed channels-last (no reorder): the IR's values, to the bit
            # where both have the dynamic batch (a batch of one runs a static copy: to rounding).
            assert run.is_contiguous(memory_format=torch.channels_last) and not run.is_contiguous()
            if sl.stop - sl.start > 1:
                assert np.array_equal(run.numpy(), got)
            else:
                assert np.abs(run.numpy() - got).max() <= 1e-5


def test_openvino_batch_of_one_runs_a_static_copy_and_others_the_dynamic_model(lite0, tmp_path, monkeypatch):
    """Compiled at load for batch 1 (the common call, where a dynamic shape costs most); the dynamic
    model is compiled once, when a larger batch first comes."""
    pytest.importorskip("openvino")
    from efficientdet.inference import backends

    weights, _ = lite0
    ir = tmp_path / "lite0.xml"
    assert main(["export", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "128",
                 "--format", "openvino", "--out", str(ir)]) == 0
    compiled_shapes = []
    compile_openvino = backends.compile_openvino

    def recording(model, threads=None, **properties):
        compiled_shapes.append(str(model.inputs[0].get_partial_shape()))
        return compile_openvino(model, threads, **properties)

    monkeypatch.setattr(backends, "compile_openvino", recording)
    network = backends.openvino_backend(ir, threads=1).network
    assert compiled_shapes == ["[1,3,128,128]"]
    batch, _ = preprocess(photo_tensors(), (128, 128), create_model("efficientdet-lite0").config.preprocess)
    one, three = network(batch[:1]), network(batch)
    assert compiled_shapes == ["[1,3,128,128]", "[?,3,128,128]"]
    network(batch[1:2])
    network(batch[:2])
    assert len(compiled_shapes) == 2
    for got, ref in zip(one[0] + one[1], three[0] + three[1]):
        assert got.shape[0] == 1 and np.abs(got.numpy() - ref[:1].numpy()).max() <= 1e-5


def _results(folder: Path) -> list[dict]:
    return json.loads((folder / "detections.json").read_text())


def assert_same_results(a: list[dict], b: list[dict], score_tol: float = 1e-4, box_tol: float = 0.05,
                        max_unmatched: int = 0) -> None:
    """Same detections per image as sets (equal scores may come in either order), but for at most
    ``max_unmatched`` on each side."""
    assert len(a) == len(b)
    pool, unmatched = list(b), []
    for r in a:
        match = [p for p in pool if p["image_id"] == r["image_id"] and p["category_id"] == r["category_id"]
                 and abs(p["score"] - r["score"]) <= score_tol and np.allclose(p["bbox"], r["bbox"], atol=box_tol)]
        if match:
            pool.remove(match[0])
        else:
            unmatched.append(r)
    assert len(unmatched) <= max_unmatched, (unmatched, pool)


def test_predict_with_onnxruntime_equals_eager(lite0, photos, tmp_path):
    weights, onnx_file = lite0
    common = [str(photos), "--workers", "0", "--quiet", "--no-draw", "--nms", "hard"]
    assert main(["predict", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "256",
                 "--out", str(tmp_path / "eager"), *common]) == 0
    assert main(["predict", "--backend", "onnxruntime", "--weights", str(onnx_file), "--out", str(tmp_path / "ort"),
                 *common]) == 0
    # A random network's hundreds of overlapping boxes put some pairs within float noise of the
    # IoU 0.5 threshold, where hard NMS may decide either way (raw outputs: see the test above).
    assert_same_results(_results(tmp_path / "eager"), _results(tmp_path / "ort"), max_unmatched=3)


def test_onnx_with_nms_gives_the_detections_of_predict_hard(official_d0, photos, tmp_path, capsys):
    onnx_file = tmp_path / "d0-nms.onnx"
    assert main(["export", "--model", "efficientdet-d0", "--weights", str(official_d0), "--format", "onnx",
                 "--nms", "--out", str(onnx_file)]) == 0
    assert "hard NMS inside" in capsys.readouterr().out
    d0_preprocess = create_model("efficientdet-d0").config.preprocess
    outputs = ort_run(onnx_file, preprocess(photo_tensors(), (512, 512), d0_preprocess)[0])
    assert [o.shape for o in outputs] == [(3, 100, 4), (3, 100), (3, 100), (3,)]
    common = [str(photos), "--workers", "0", "--quiet", "--no-draw", "--batch-size", "2"]
    assert main(["predict", "--model", "efficientdet-d0", "--weights", str(official_d0), "--nms", "hard",
                 "--out", str(tmp_path / "eager"), *common]) == 0
    assert main(["predict", "--backend", "onnxruntime", "--weights", str(onnx_file), "--out", str(tmp_path / "ort"),
                 *common]) == 0
    assert_same_results(_results(tmp_path / "eager"), _results(tmp_path / "ort"))
    capsys.readouterr()
    assert main(["predict", "--backend", "onnxruntime", "--weights", str(onnx_file), "--nms", "soft",
                 "--out", str(tmp_path / "x"), *common]) == 2
    assert "has hard NMS inside" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, suffix", [("torchscript", ".pt"), ("torch-export", ".pt2")])
def test_torch_formats_match_with_a_dynamic_batch(lite0, tmp_path, fmt, suffix):
    weights, _ = lite0
    out = tmp_path / f"model{suffix}"
    assert main(["export", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "128",
                 "--format", fmt, "--out", str(out)]) == 0
    model = create_model("efficientdet-lite0", weights=weights, image_size=128).eval()
    loaded = torch.jit.load(str(out)) if fmt == "torchscript" else torch.export.load(str(out)).module()
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        cls_out, box_out = model(x)
        got = loaded(x)
    assert len(got) == 10
    assert max((g - r).abs().max().item() for g, r in zip(got, cls_out + box_out)) <= 1e-4


@pytest.mark.parametrize("args, message", [
    (["--format", "edgetpu", "--out", "m.tflite"],
     "unknown export format 'edgetpu'; valid: onnx, openvino, torchscript, torch-export, tflite, coreml"),
    (["--format", "torchscript", "--nms", "--out", "m.pt"], "only supported for --format onnx"),
    (["--format", "onnx", "--out", "m.pt"], "must end in .onnx"),
    (["--format", "onnx", "--score-threshold", "0.3", "--out", "m.onnx"], "--score-threshold only apply with --nms"),
])
def test_unsupported_exports_are_one_line_errors(tmp_path, capsys, args, message):
    args = [a if not a.startswith("m.") else str(tmp_path / a) for a in args]
    assert main(["export", "--model", "efficientdet-lite0", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not list(tmp_path.iterdir())
