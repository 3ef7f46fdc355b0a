"""The anchors a ``.safetensors`` file was trained with travel with it: its outputs are relative to them."""

import json
import re

import pytest

from efficientdet import create_model
from efficientdet.weights import WeightsError, read_anchors, read_metadata, save_safetensors

RATIOS = (1.0, 2.0, 0.5, 4.0, 0.25)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = create_model("efficientdet-lite0", num_classes=3, image_size=128, anchor_scale=2.5, aspect_ratios=RATIOS)
    return save_safetensors(model, tmp_path_factory.mktemp("w") / "anchors.safetensors")


def test_create_model_rebuilds_the_stored_anchors(weights):
    anchors = create_model("efficientdet-lite0", weights=weights).config.anchors
    assert (anchors.anchor_scale, anchors.aspect_ratios) == (2.5, RATIOS)  # 15 per position: the heads load


def test_anchors_given_to_create_model_win_over_the_stored_ones(weights):
    assert create_model("efficientdet-lite0", weights=weights, anchor_scale=4.0).config.anchors.anchor_scale == 4.0


def test_a_file_without_a_stored_config_gives_no_anchors(weights):
    meta = {k: v for k, v in read_metadata(weights).items() if k != "config"}
    assert read_anchors(weights, meta) == {}


def test_unreadable_stored_anchors_are_one_error_naming_the_file(tmp_path):
    bad = json.dumps({"anchors": {"anchor_scale": 2.5, "octaves": 3}})
    path = save_safetensors(create_model("efficientdet-lite0", num_classes=3, image_size=128),
                            tmp_path / "bad.safetensors", extra={"config": bad})
    with pytest.raises(WeightsError, match=f"^{re.escape(str(path))}: the stored config's anchors cannot be read "):
        create_model("efficientdet-lite0", weights=path)
