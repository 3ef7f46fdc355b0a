"""One small model exported four ways (ONNX / OpenVINO, float32 / int8) through the CLI, shared
by the export tests: Lite0 at 128 px with 4 classes, lively random weights (every layer shows in
the outputs) and the shapes dataset's label space stored with them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from efficientdet import create_model
from efficientdet.data import load_dataset_yaml, load_split
from efficientdet.shapes import make_shapes_dataset
from efficientdet.weights import save_safetensors
from export_builders import MODEL_ARGS, Exported, cli_processes
from model_builders import lively

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Exported:
    """ONNX int8 is calibrated on a folder (all 12 images, so the corrupt file is met too), OpenVINO
    int8 on the dataset YAML (8 training images)."""
    root = tmp_path_factory.mktemp("exported")
    data = make_shapes_dataset(root / "data", num_train=8, num_val=4, image_size=128, seed=2)
    split = load_split(load_dataset_yaml(data), "val")
    torch.manual_seed(0)
    model = lively(create_model("efficientdet-lite0", num_classes=split.num_classes, image_size=128))
    weights = save_safetensors(model, root / "lite0.safetensors",
                               extra={"label_ids": json.dumps(split.label_ids), "names": json.dumps(split.names)})
    calibration = root / "calibration"
    shutil.copytree(data.parent / "images", calibration)
    (calibration / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    runs, files = {}, {}  # slowest first: two processes at a time then finish together
    for fmt, suffix, int8 in (("onnx", ".onnx", ["--int8", "--calibration", calibration, "--calibration-images", 12]),
                              ("openvino", ".xml", ["--int8", "--calibration", data, "--calibration-images", 8]),
                              ("openvino", ".xml", []), ("onnx", ".onnx", [])):
        precision = "int8" if int8 else "float32"
        files[fmt, precision] = root / f"lite0-{precision}{suffix}"
        runs[fmt, precision] = ["export", *MODEL_ARGS, "--weights", weights, "--format", fmt,
                                "--out", files[fmt, precision], *int8]
    results = cli_processes(runs)
    for key, (code, _, err) in results.items():
        assert code == 0, (key, err)
    return Exported(data, weights, calibration, files, {key: err for key, (_, _, err) in results.items()})
