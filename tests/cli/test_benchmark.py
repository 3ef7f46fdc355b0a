import json

import pytest

from efficientdet.cli import main

FIELDS = {
    "model": str, "backend": str, "device": str, "precision": str, "nms": str, "batch_size": int, "image_size": list,
    "threads": int, "end_to_end": bool, "warmup": int, "iterations": int, "weights": str, "median_ms": float,
    "network_ms": float, "postprocess_ms": float, "p90_ms": float, "mean_ms": float, "min_ms": float,
    "images_per_s": float, "peak_memory_mb": float, "parameters": int, "flops": int, "gflops_per_s": float,
    "cpu": str, "isa": str, "matmul_gflops": float, "torch": str,
}
FAST = ["--model", "efficientdet-lite0", "--image-size", "128", "--warmup", "1", "--iterations", "2",
        "--device", "cpu", "--nms", "hard"]


def test_json_schema_and_consistency(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", *FAST, "--batch-size", "2", "--threads", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for label in ("median", "network", "p90", "throughput", "peak memory", "parameters", "FLOPs", "achieved",
                  "GFLOP/s measured", "scores spread"):
        assert label in table
    report = json.loads(out.read_text())
    assert set(report) == set(FIELDS)
    for key, kind in FIELDS.items():
        assert isinstance(report[key], kind), key
    assert report["parameters"] == 3_243_470 and report["image_size"] == [128, 128] and report["threads"] == 1
    assert report["min_ms"] <= report["median_ms"] <= report["p90_ms"]
    assert 0 < report["network_ms"] < report["median_ms"] and report["postprocess_ms"] > 0
    assert report["matmul_gflops"] > 0 and report["isa"]
    assert report["images_per_s"] == pytest.approx(2 / report["median_ms"] * 1e3)
    assert report["gflops_per_s"] == pytest.approx(2 * report["flops"] * report["images_per_s"] / 1e9)
    assert report["flops"] < 0.97e9  # Lite0's 0.97B multiply-adds are at 320 px; this is 128 px


@pytest.mark.parametrize("backend, int8", [("openvino", False), ("openvino", True), ("onnxruntime", True)])
def test_exported_backends_in_float32_and_int8_give_the_same_json(capsys, backend, int8):
    """The quantisers' progress goes to stderr: stdout holds the JSON alone."""
    pytest.importorskip({"openvino": "nncf", "onnxruntime": "onnxruntime"}[backend])
    assert main(["benchmark", *FAST, "--backend", backend, *(["--int8"] if int8 else []), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == set(FIELDS)
    assert report["backend"] == backend and report["precision"] == ("int8" if int8 else "float32")
    assert report["network_ms"] > 0 and report["parameters"] == 3_243_470


def test_end_to_end_json_to_stdout(capsys):
    assert main(["benchmark", *FAST, "--end-to-end", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["end_to_end"] is True and report["nms"] == "hard" and report["backend"] == "eager"


def test_bad_options_are_one_line_errors(capsys):
    assert main(["benchmark", *FAST, "--batch-size", "0"]) == 2
    assert main(["benchmark", *FAST, "--backend", "onnxruntime", "--bf16"]) == 2
    assert main(["benchmark", *FAST, "--int8"]) == 2
    assert main(["benchmark", *FAST, "--calibration", "photos/"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and "batch_size" in err[0] and "float32" in err[1]
    assert "int8 runs on the exported backends" in err[2] and "only apply with --int8" in err[3]


def test_spread_random_weights_spread_the_scores():
    """A fresh model scores every (anchor, class) pair at the class prior; timing NMS on that times a
    case no input gives. The benchmark's default weights spread them."""
    import torch

    from efficientdet import create_model
    from efficientdet.benchmark import CLASS_LOGIT_STD, spread_random_weights, synthetic_image
    from efficientdet.preprocess import preprocess

    model = create_model("efficientdet-lite0", image_size=(128, 128)).eval()
    batch, _ = preprocess([synthetic_image()], model.config.image_size, model.config.preprocess)
    with torch.no_grad():
        fresh = torch.cat([c.flatten() for c in model(batch)[0]])
        spread = torch.cat([c.flatten() for c in spread_random_weights(model)(batch)[0]])
    assert fresh.std() < 0.01
    assert 0.5 * CLASS_LOGIT_STD < spread.std() < 2 * CLASS_LOGIT_STD
    assert abs(float(spread.mean()) - float(fresh.mean())) < 0.5  # still centred on the prior


def test_spread_random_weights_measured_on_given_images_keep_d0_small_there():
    """With synthetic statistics D0's swish backbone blows up on photos; statistics measured on the
    photos themselves keep every layer at unit scale there, which numerical comparisons of
    exported files need."""
    import torch
    from skimage import data as photos

    from efficientdet import create_model
    from efficientdet.benchmark import BOX_CODE_STD, CLASS_LOGIT_STD, spread_random_weights
    from efficientdet.preprocess import preprocess

    images = [torch.from_numpy(getattr(photos, n)()).permute(2, 0, 1) for n in ("astronaut", "coffee")]
    torch.manual_seed(0)
    synthetic = spread_random_weights(create_model("efficientdet-d0", image_size=(128, 128)).eval())
    torch.manual_seed(0)
    model = create_model("efficientdet-d0", image_size=(128, 128)).eval()
    batch, _ = preprocess(images, model.config.image_size, model.config.preprocess)
    spread_random_weights(model, batch=batch)
    with torch.no_grad():
        assert max(float(f.abs().max()) for f in synthetic.backbone(batch)) > 100
    with torch.no_grad():
        features = model.backbone(batch)
        cls_out, box_out = model(batch)
    assert max(float(f.abs().max()) for f in features) < 100
    assert abs(float(torch.cat([c.flatten() for c in cls_out]).std()) - CLASS_LOGIT_STD) < 0.01
    assert abs(float(torch.cat([b.flatten() for b in box_out]).std()) - BOX_CODE_STD) < 0.01
