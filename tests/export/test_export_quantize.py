"""int8 export: close to float32, the float rules applied, calibration sets checked in one line."""

from __future__ import annotations

import pytest
import torch

from efficientdet import Detector, create_model
from efficientdet.export.quantize import float_nodes

from export_builders import MODEL_ARGS, cli, val_batch


def run(path, batch):
    detector = Detector.from_onnx(path) if path.suffix == ".onnx" else Detector.from_openvino(path)
    cls_out, box_out = detector.network(batch)
    return torch.cat([t.flatten() for t in cls_out]), torch.cat([t.flatten() for t in box_out])


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_outputs_stay_close_to_float32(exported, fmt):
    """On images it was not calibrated on, the int8 network's class logits and box codes differ
    from the float32 network's by a fraction of their spread (RMS error / standard deviation):
    measured 0.11 / 0.12 (ONNX Runtime) and 0.21 / 0.29 (OpenVINO) for this random model, which,
    untrained, has nothing to damp the rounding of some 60 layers. A broken quantisation is near 1:
    outputs that no longer track the input (with the max-pools' -inf padding quantised, ONNX
    Runtime's correlated 0.53 with float32's, an error of 0.97). 0.5 tells the two apart."""
    batch = val_batch(exported)
    for ref, got in zip(run(exported.files[fmt, "float32"], batch), run(exported.files[fmt, "int8"], batch)):
        assert float((got - ref).pow(2).mean().sqrt() / ref.std()) < 0.5


def _onnx_float_convs(path) -> set[str]:
    """Weight names of the convolutions whose weights are float (not dequantised int8)."""
    import onnx

    proto = onnx.load(str(path))
    initializers = {i.name for i in proto.graph.initializer}
    return {n.input[1] for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in initializers}


def _openvino_convs(path) -> list[tuple[str, bool, bool]]:
    """Each convolution of an IR in order: its name, whether its weights come straight from a
    float constant (not int8 dequantised), and whether a model output is its bias add or itself."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    convs = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            source = op.input_value(1).get_node()
            while source.get_type_name() == "Reshape":  # group convolutions reshape their weights
                source = source.input_value(0).get_node()
            is_float = source.get_type_name() == "Constant" and source.get_element_type().is_real()
            after = [t.get_node() for t in op.output(0).get_target_inputs()]
            after += [t.get_node() for n in after if n.get_type_name() == "Add" for t in n.output(0).get_target_inputs()]
            convs.append((op.get_friendly_name(), is_float, any(n.get_type_name() == "Result" for n in after)))
    return convs


def _openvino_float_convs(path) -> set[str]:
    return {name for name, is_float, _ in _openvino_convs(path) if is_float}


def test_the_stem_and_predictors_stay_in_float_and_the_rest_is_int8(exported):
    import onnx

    onnx_float = _onnx_float_convs(exported.files["onnx", "int8"])
    assert onnx_float == {"model.backbone.stem_conv.weight", "model.class_net.predict.depthwise.weight",
                          "model.class_net.predict.pointwise.weight", "model.box_net.predict.depthwise.weight",
                          "model.box_net.predict.pointwise.weight"}
    assert len(_onnx_float_convs(exported.files["onnx", "float32"])) > 50  # all of them
    kept = float_nodes(onnx.load(str(exported.files["onnx", "float32"])), ("stem", "predictors"))
    assert len(kept["stem"]) == 1 and len(kept["predictors"]) == 20  # 2 convs x 5 levels x 2 heads
    # OpenVINO: the same layers. Its names cannot be matched with the ONNX file's: each trace of the
    # model numbers some nodes afresh (the IR comes from a later one). So, by structure: the stem is
    # the first convolution, each predictor pointwise gives an output, and their count is the rule's.
    convs = _openvino_convs(exported.files["openvino", "int8"])
    float_convs = [c for c in convs if c[1]]
    assert convs[0][1] and len(float_convs) == len(kept["stem"]) + len(kept["predictors"])
    assert sum(gives_output for _, _, gives_output in float_convs) == 10  # 5 levels x 2 heads
    assert all(is_float for _, is_float, gives_output in convs if gives_output)
    assert len(_openvino_float_convs(exported.files["openvino", "float32"])) > 50


def test_corrupt_calibration_files_are_named_and_skipped(exported):
    err = exported.stderr["onnx", "int8"]
    assert f"efficientdet export: skipped {exported.calibration / 'broken.jpg'}: " in err
    assert err.count("skipped") == 1


def _calibration_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"{i}.png").write_bytes(b"\x89PNG broken")
    yaml = tmp_path / "data.yaml"
    yaml.write_text("format: [coco")
    return [
        ([empty], f"{empty}: no images to calibrate on"),
        ([tmp_path / "missing"], f"{tmp_path / 'missing'}: no such calibration dataset YAML or folder"),
        ([yaml], f"{yaml}: not valid YAML"),
        ([bad], f"{bad}: no readable images to calibrate on (2 unreadable)"),
    ]


def test_bad_calibration_sets_are_one_line_errors_and_write_nothing(exported, tmp_path):
    for args, message in _calibration_errors(tmp_path) + [
        ([exported.calibration, "--calibration-images", 50],
         f"{exported.calibration}: 12 readable images (1 unreadable), fewer than the 50 asked for"),
    ]:
        out = tmp_path / "m.onnx"
        code, _, err = cli("export", *MODEL_ARGS, "--weights", exported.weights, "--format", "onnx",
                           "--out", out, "--int8", "--calibration", *args)
        lines = [line for line in err.splitlines() if not line.startswith("efficientdet export: skipped")]
        assert code == 2 and len(lines) == 1 and message in lines[0], err
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("args, message", [
    (["--format", "torchscript", "--out", "m.pt", "--int8"], "--format torchscript cannot hold an int8 model"),
    (["--format", "torch-export", "--out", "m.pt2", "--int8"], "--format torch-export cannot hold an int8 model"),
    (["--format", "onnx", "--out", "m.onnx", "--int8", "--nms"], "export it without --nms"),
    (["--format", "onnx", "--out", "m.onnx", "--int8"], "--int8 needs --calibration"),
    (["--format", "onnx", "--out", "m.onnx", "--calibration", "x"], "--calibration only apply with --int8"),
    (["--format", "openvino", "--out", "m.xml", "--int8", "--calibration", "x", "--calibration-method", "entropy"],
     "'entropy' is not one openvino's quantiser has"),
    (["--format", "onnx", "--out", "m.onnx", "--int8", "--calibration", "x", "--keep-float", "stem,bn"],
     "unknown float rule bn"),
    (["--format", "onnx", "--out", "m.onnx", "--int8", "--calibration", "x", "--calibration-images", "0"],
     "--calibration-images must be >= 1"),
])
def test_int8_options_that_cannot_apply_are_one_line_errors(tmp_path, args, message):
    args = [str(tmp_path / a) if a.startswith("m.") else a for a in args]
    code, _, err = cli("export", "--model", "efficientdet-lite0", *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir())


def test_float_rules_find_fusion_and_swish_in_d0():
    """The rules D0 has that Lite0 lacks (fast-attention fusion, swish) find their nodes too."""
    from efficientdet.export.onnx import onnx_graph
    from efficientdet.fuse import fuse_model

    proto = onnx_graph(fuse_model(create_model("efficientdet-d0", image_size=128).eval()))
    kept = float_nodes(proto, ("fusion", "swish"))
    ops = {n.name: n.op_type for n in proto.graph.node}
    # x_i * w_i / (sum w + eps), summed; w starts at 1, which the exporter folds: no Mul yet.
    assert {ops[n] for n in kept["fusion"]} == {"Div", "Add"}
    assert {ops[n] for n in kept["swish"]} == {"Sigmoid", "Mul"}
    assert not set(kept["fusion"]) & set(kept["swish"])
    assert len(kept["swish"]) % 2 == 0  # a Sigmoid and a Mul each
