"""What an exported file carries round-trips; files without it, IRs without weights, missing
runtimes and failed writes are one-line errors that leave nothing behind."""

from __future__ import annotations

import shutil
import sys

import pytest

from efficientdet import create_model
from efficientdet.data import load_dataset_yaml, load_split
from efficientdet.export import read_metadata
from export_builders import MODEL_ARGS, cli


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_metadata_round_trips(exported, fmt, precision):
    info = read_metadata(exported.files[fmt, precision])
    split = load_split(load_dataset_yaml(exported.data), "val")
    assert info.config == create_model("efficientdet-lite0", num_classes=4, image_size=128).config
    assert list(info.labels.ids) == split.label_ids and list(info.labels.names) == split.names
    assert info.graph_nms is None and info.precision == precision
    if precision == "float32":
        assert info.quantization is None
        return
    calibration = info.quantization["calibration"]
    assert info.quantization["runtime"] == {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]
    assert info.quantization["kept_float"] == {"stem": 1, "predictors": 20}
    assert calibration["images"] == {"onnx": 12, "openvino": 8}[fmt]
    assert calibration["method"] == "minmax"
    source, skipped = (exported.calibration, 1) if fmt == "onnx" else (exported.data, 0)
    assert calibration["source"] == str(source) and calibration["skipped"] == skipped


def _stripped(exported, tmp_path, fmt):
    """The float32 file without our metadata, as another exporter would write it."""
    import onnx

    proto = onnx.load(str(exported.files["onnx", "float32"]))
    del proto.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    if fmt == "onnx":
        return path
    import openvino as ov

    ir = tmp_path / "foreign.xml"
    ov.save_model(ov.convert_model(str(path)), str(ir))
    return ir


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_eval_of_a_file_without_our_metadata_says_what_is_missing_and_how_to_re_export(exported, tmp_path, fmt):
    path = _stripped(exported, tmp_path, fmt)
    code, _, err = cli("eval", "--data", exported.data, "--weights", path, "--workers", "0")
    assert code == 2 and err.count("\n") == 1, err
    assert (f"{path}: no efficientdet.config metadata (model, image size, classes, normalisation)" in err
            and f"efficientdet export --model M --weights W --format {fmt} --out {path.name}" in err)


def test_an_ir_without_its_bin_is_named(exported, tmp_path):
    xml = tmp_path / "model.xml"
    shutil.copy(exported.files["openvino", "float32"], xml)
    for argv in (["eval", "--data", exported.data, "--weights", xml, "--workers", "0"],
                 ["predict", str(exported.calibration), "--weights", xml, "--out", tmp_path / "out"]):
        code, _, err = cli(*argv)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{xml}: its weights file model.bin is missing" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module, extra", [("openvino", "openvino"), ("nncf", "openvino"), ("onnxruntime", "export")])
def test_a_missing_runtime_is_one_line_naming_the_extra(exported, tmp_path, monkeypatch, module, extra):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")] or [module]:
        monkeypatch.setitem(sys.modules, name, None)  # import name → ImportError
    fmt, suffix = ("onnx", ".onnx") if module == "onnxruntime" else ("openvino", ".xml")
    out = tmp_path / f"m{suffix}"
    code, _, err = cli("export", *MODEL_ARGS, "--weights", exported.weights, "--format", fmt, "--out", out,
                       "--int8", "--calibration", exported.calibration, "--calibration-images", 2)
    assert code == 2 and err.splitlines()[-1] == (f"efficientdet export: error: {module} is not installed: "
                                                  f"pip install 'efficientdet[{extra}]'"), err
    assert not list(tmp_path.iterdir())
    if module != "nncf":
        code, _, err = cli("eval", "--data", exported.data, "--weights", exported.files[fmt, "float32"],
                           "--workers", "0")
        assert code == 2 and f"{module} is not installed: pip install 'efficientdet[{extra}]'" in err


def test_a_failed_openvino_write_leaves_neither_file(exported, tmp_path, monkeypatch):
    import errno
    import os

    import openvino as ov

    def full_disk(model, path, **kwargs):
        with open(path, "w") as f:
            f.write("<net")  # half an IR
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ov, "save_model", full_disk)
    out = tmp_path / "m.xml"
    code, _, err = cli("export", *MODEL_ARGS, "--weights", exported.weights, "--format", "openvino", "--out", out)
    assert code == 2 and f"cannot write {out} (No space left on device)" in err, err
    assert not list(tmp_path.iterdir())  # no .xml, no .bin, no temporary folder
