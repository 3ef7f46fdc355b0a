"""``efficientdet eval`` on exported files: the PyTorch model's metrics and detections, through
the same Detector front end, from the file alone."""

from __future__ import annotations

import pytest

from export_builders import assert_same_detections, cli, evaluate


def test_float32_files_give_the_pytorch_models_metrics_and_detections(exported, tmp_path):
    eager, eager_preds = evaluate(exported, tmp_path, "eager", "--model", "efficientdet-lite0", "--weights",
                                  exported.weights, "--image-size", "128")
    files = {"onnxruntime": ["--weights", exported.files["onnx", "float32"]],
             "openvino": ["--weights", exported.files["openvino", "float32"]],
             "openvino-on-onnx": ["--backend", "openvino", "--weights", exported.files["onnx", "float32"]]}
    assert len(eager_preds) > 100  # random weights: many low scores, every one compared
    for name, weights in files.items():
        metrics, preds = evaluate(exported, tmp_path, name, *weights)
        assert metrics.keys() == eager.keys()
        assert all(abs(metrics[k] - eager[k]) <= 1e-3 for k in eager), name
        assert_same_detections(preds, eager_preds)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_files_are_evaluated_with_the_datasets_label_ids(exported, tmp_path, fmt):
    metrics, preds = evaluate(exported, tmp_path, fmt, "--weights", exported.files[fmt, "int8"])
    assert {"AP", "AP50", "AR100"} <= set(metrics) and preds
    assert {r["category_id"] for r in preds} <= {1, 2, 3, 4}


@pytest.mark.parametrize("fmt, argv, message", [
    ("onnx", ["--model", "efficientdet-d0"], "holds efficientdet-lite0, not efficientdet-d0"),
    ("onnx", ["--image-size", "256"], "was exported at 128x128; re-export it for another --image-size"),
    ("openvino", ["--backend", "onnxruntime"], "ONNX Runtime runs .onnx files; run this one with --backend openvino"),
])
def test_options_a_file_fixes_are_refused(exported, fmt, argv, message):
    code, _, err = cli("eval", "--data", exported.data, "--weights", exported.files[fmt, "float32"], *argv,
                       "--workers", "0")
    assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_an_empty_batch_after_a_full_one_gives_no_detections(exported, fmt):
    """OpenVINO answers an empty batch with its previous call's outputs: no call is made for it."""
    from efficientdet import Detector
    from skimage import data

    path = exported.files[fmt, "float32"]
    detector = Detector.from_openvino(path) if fmt == "openvino" else Detector.from_onnx(path)
    batch, scales = detector.preprocess([data.chelsea(), data.astronaut()])
    assert all(len(r.scores) for r in detector.predict(batch, scales))
    assert detector.predict(batch[:0], scales[:0]) == []
    assert detector([]) == []
