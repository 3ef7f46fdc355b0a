"""Options with values out of range are refused in one line naming the option, before any work:
the weights and data files named here do not exist, so reaching them would be a different error."""

import pytest
import torch

from efficientdet.config import PostprocessConfig

from robust_builders import assert_user_error, run_cli

PREDICT = ["predict", "missing.jpg", "--model", "efficientdet-lite0", "--weights", "missing.safetensors",
           "--out", "out", "--quiet"]
EXPORT = ["export", "--model", "efficientdet-lite0", "--weights", "missing.safetensors", "--format", "onnx",
          "--out", "m.onnx", "--nms"]
EVAL = ["eval", "--data", "missing.yaml", "--model", "efficientdet-lite0", "--weights", "missing.safetensors"]
BENCHMARK = ["benchmark", "--model", "efficientdet-lite0", "--weights", "missing.safetensors"]

BAD_NMS_VALUES = [
    ("--score-threshold", "2", "[0, 1]"), ("--score-threshold", "nan", "[0, 1]"),
    ("--score-threshold", "-1", "[0, 1]"), ("--iou-threshold", "5", "[0, 1]"),
    ("--max-detections", "0", ">= 1"), ("--max-detections", "-1", ">= 1"),
]


@pytest.mark.parametrize("command", [PREDICT, EXPORT])
@pytest.mark.parametrize("option, value, valid", BAD_NMS_VALUES)
def test_nms_values_out_of_range_are_refused_naming_the_option(command, option, value, valid, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_user_error(run_cli(capsys, *command, option, value), command[0], option, valid)
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("value", ["2", "nan", "-1"])
def test_eval_score_threshold_out_of_range_is_refused(value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_user_error(run_cli(capsys, *EVAL, "--score-threshold", value), "eval", "--score-threshold", "[0, 1]")


@pytest.mark.parametrize("command", [PREDICT, EVAL, BENCHMARK, EXPORT])
@pytest.mark.parametrize("value", ["0", "-5", "0x320"])
def test_image_size_must_be_positive(command, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_user_error(run_cli(capsys, *command, "--image-size", value), command[0], "--image-size", value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
@pytest.mark.parametrize("command", [PREDICT, EVAL, BENCHMARK])
@pytest.mark.parametrize("device, message", [("cuda", "no CUDA GPU"), ("foo", "unknown device 'foo'")])
def test_unusable_device_is_refused_before_any_file_is_read(command, device, message, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.chdir(tmp_path)
    assert_user_error(run_cli(capsys, *command, "--device", device), command[0], message)


@pytest.mark.parametrize("field, value", [
    ("score_threshold", 1.5), ("score_threshold", float("nan")), ("iou_threshold", -0.1),
    ("max_detections", 0), ("soft_nms_sigma", 0.0), ("pre_nms_top_k", -1), ("method", "soft"),
])
def test_postprocess_config_refuses_values_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        PostprocessConfig(**{field: value})
