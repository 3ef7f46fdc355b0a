"""One CLI dialect: the shared options are parsed alike by every subcommand that takes them."""

import argparse

import pytest

from efficientdet.cli import build_parser
from efficientdet.cli.options import parse_image_size, postprocess_overrides, resolve_image_size

# A valid command line per subcommand, to which the option under test is appended.
COMMANDS = {
    "train": ["train", "--data", "d.yaml", "--out", "run"],
    "data check": ["data", "check", "d.yaml"],
    "eval": ["eval", "--data", "d.yaml", "--model", "efficientdet-lite0", "--weights", "w.safetensors"],
    "demo": ["demo"],
    "predict": ["predict", "a.jpg", "--model", "efficientdet-lite0", "--weights", "w.safetensors", "--out", "o"],
    "export": ["export", "--model", "efficientdet-lite0", "--format", "onnx", "--out", "m.onnx"],
    "benchmark": ["benchmark", "--model", "efficientdet-lite0"],
}


@pytest.mark.parametrize("text, size", [("512", 512), ("640x384", (640, 384)), ("640X384", (640, 384)),
                                        ("0", 0), ("-5", -5)])
def test_image_size_is_n_or_height_x_width(text, size):
    """Only the form: how small a side may be is the model's to say (``resolve_image_size``, TrainConfig)."""
    assert parse_image_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "640x", "1x2x3", "1.5"])
def test_image_size_of_another_form_is_refused(text):
    with pytest.raises(ValueError, match=f"--image-size must be N or HxW, got {text!r}"):
        parse_image_size(text)


def test_resolve_image_size_checks_the_model_minimum():
    def args(text):
        return argparse.Namespace(image_size=text)

    assert resolve_image_size(args(None), "efficientdet-lite0") is None
    assert resolve_image_size(args("128x192"), "efficientdet-lite0") == (128, 192)
    assert resolve_image_size(args("65"), "efficientdet-lite0") == (65, 65)
    with pytest.raises(ValueError, match="sides of at least 65 pixels for efficientdet-lite0, got '64x128'"):
        resolve_image_size(args("64x128"), "efficientdet-lite0")
    with pytest.raises(ValueError, match="sides of at least 129 pixels for efficientdet-d7x, got '128'"):
        resolve_image_size(args("128"), "efficientdet-d7x")
    assert resolve_image_size(args("1x2"), None) == (1, 2)  # no model (an ONNX file's own): positive sides
    with pytest.raises(ValueError, match="with positive sides, got '0x5'"):
        resolve_image_size(args("0x5"), None)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_image_size_as_n_or_hxw(command):
    parser = build_parser()
    for text in ("128", "128x192"):
        assert parser.parse_args([*COMMANDS[command], "--image-size", text]).image_size == text


@pytest.mark.parametrize("command", ["predict", "eval", "benchmark"])
def test_nms_speaks_the_config_words_in_every_command(command):
    parser = build_parser()
    for word, method in (("gaussian", "gaussian"), ("hard", "hard"), ("soft", "gaussian")):  # soft: the old word
        args = parser.parse_args([*COMMANDS[command], "--nms", word, "--score-threshold", "0.2",
                                  "--iou-threshold", "0.6", "--max-detections", "50"])
        assert postprocess_overrides(args) == {"method": method, "score_threshold": 0.2, "iou_threshold": 0.6,
                                               "max_detections": 50}
    with pytest.raises(SystemExit):
        parser.parse_args([*COMMANDS[command], "--nms", "linear"])


@pytest.mark.parametrize("command", ["predict", "benchmark"])
def test_precision_and_device_are_the_same_options(command):
    parser = build_parser()
    args = parser.parse_args([*COMMANDS[command], "--bf16", "--device", "cpu"])
    assert (args.half, args.bf16, args.device) == (False, True, "cpu")
    with pytest.raises(SystemExit):
        parser.parse_args([*COMMANDS[command], "--half", "--bf16"])
