import dataclasses
import json
import math

import pytest

from efficientdet import config as C
from efficientdet import list_models


def test_every_official_variant_is_listed():
    assert list_models() == [
        *(f"efficientdet-d{i}" for i in range(8)), "efficientdet-d7x",
        *(f"efficientdet-lite{i}" for i in range(4)), "efficientdet-lite3x", "efficientdet-lite4",
    ]


@pytest.mark.parametrize(
    "name, size, channels, cells, head, backbone, anchor_scale, fusion, act, max_level",
    [
        ("efficientdet-d0", 512, 64, 3, 3, "efficientnet-b0", 4.0, "fastattn", "swish", 7),
        ("efficientdet-d5", 1280, 288, 7, 4, "efficientnet-b5", 4.0, "fastattn", "swish", 7),
        ("efficientdet-d6", 1280, 384, 8, 5, "efficientnet-b6", 4.0, "sum", "swish", 7),
        ("efficientdet-d7", 1536, 384, 8, 5, "efficientnet-b6", 5.0, "sum", "swish", 7),
        ("efficientdet-d7x", 1536, 384, 8, 5, "efficientnet-b7", 4.0, "sum", "swish", 8),
        ("efficientdet-lite0", 320, 64, 3, 3, "efficientnet-lite0", 3.0, "sum", "relu6", 7),
        ("efficientdet-lite3", 512, 160, 6, 4, "efficientnet-lite3", 4.0, "sum", "relu6", 7),
        ("efficientdet-lite3x", 640, 200, 6, 4, "efficientnet-lite3", 3.0, "sum", "relu6", 7),
        ("efficientdet-lite4", 640, 224, 7, 4, "efficientnet-lite4", 4.0, "sum", "relu6", 7),
    ],
)
def test_official_hyper_parameters(name, size, channels, cells, head, backbone, anchor_scale, fusion, act, max_level):
    cfg = C.get_config(name)
    assert cfg.image_size == (size, size)
    assert (cfg.bifpn.channels, cfg.bifpn.repeats, cfg.head.repeats) == (channels, cells, head)
    assert cfg.backbone.name == backbone and cfg.backbone.lite == ("lite" in name)
    assert cfg.anchors.anchor_scale == anchor_scale
    assert (cfg.bifpn.fusion, cfg.act, cfg.max_level) == (fusion, act, max_level)
    assert cfg.preprocess.mean == ((127.0,) * 3 if "lite" in name else (123.675, 116.28, 103.53))


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.get_config("efficientdet-d0").image_size = (1, 1)


def test_override_reaches_sub_configs():
    cfg = C.override(C.get_config("efficientdet-d0"), num_classes=20, anchor_scale=3.0, image_size=640)
    assert cfg.num_classes == 20 and cfg.anchors.anchor_scale == 3.0 and cfg.image_size == (640, 640)
    assert C.get_config("efficientdet-d0").num_classes == 90  # the table is untouched


def test_override_rejects_unknown_field():
    with pytest.raises(ValueError, match="unknown config field 'num_clases'.*num_classes"):
        C.override(C.get_config("efficientdet-d0"), num_clases=3)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'efficientdet-d9'.*efficientdet-d0.*efficientdet-lite4"):
        C.get_config("efficientdet-d9")


@pytest.mark.parametrize("kw, match", [
    (dict(num_classes=0), "num_classes must be >= 1, got 0"),
    (dict(image_size=64), "too small for level P7: each side must be at least 65"),
    (dict(image_size=(512, 40)), "too small"),
    (dict(fusion="mean"), "bifpn.fusion"),
    (dict(act="gelu"), "act must be"),
    (dict(min_level=2), "min_level=3"),
])
def test_bad_values_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        C.override(C.get_config("efficientdet-d0"), **kw)


def test_compound_coefficient_formulas():
    cfg = C.compound_config(3)
    assert cfg.image_size == (896, 896) and cfg.bifpn.repeats == 6 and cfg.head.repeats == 4
    assert cfg.bifpn.channels == 160 and cfg.backbone.name == "efficientnet-b3"
    assert C.compound_config(0).bifpn.channels == 64
    with pytest.raises(ValueError, match="phi must be >= 0"):
        C.compound_config(-1)


def test_round_filters_matches_official_examples():
    assert C.round_filters(32, 1.0) == 32
    assert C.round_filters(32, 1.1) == 32  # 35.2 rounds down, within 10%
    assert C.round_filters(320, 1.8) == 576
    assert C.round_filters(40, 2.0) == 80
    assert C.round_repeats(3, 1.1) == 4 and C.round_repeats(1, 3.1) == 4


def test_feature_sizes_follow_tf_same_rule():
    assert C.feature_sizes((500, 300), 7)[3:] == [(63, 38), (32, 19), (16, 10), (8, 5), (4, 3)]


def test_evaluation_postprocess_is_the_official_coco_evaluation():
    """Per-class NMS over the top 5000 (anchor, class) pairs; the NMS kind and thresholds are kept."""
    from efficientdet.config import PostprocessConfig, evaluation_postprocess

    post = evaluation_postprocess(PostprocessConfig(method="hard", iou_threshold=0.6))
    assert (post.class_agnostic, post.pre_nms_top_k) == (False, 5000)
    assert (post.method, post.iou_threshold, post.max_detections) == ("hard", 0.6, 100)


@pytest.mark.parametrize("name", list_models())
def test_config_json_round_trip(name):
    """What weights metadata, ONNX metadata and a run's config.json store reads back equal, tuples and
    sub-configs included."""
    cfg = C.override(C.get_config(name), image_size=(384, 640), num_classes=7)
    assert C.config_from_dict(json.loads(json.dumps(C.config_to_dict(cfg)))) == cfg
    post = C.PostprocessConfig(method="hard", score_threshold=-math.inf)
    assert C.config_from_dict(json.loads(json.dumps(C.config_to_dict(post))), C.PostprocessConfig) == post


def test_train_config_json_round_trip():
    from efficientdet.train import TrainConfig

    cfg = TrainConfig(image_size=(128, 192), scale_range=(0.5, 1.5))
    assert C.config_from_dict(json.loads(json.dumps(C.config_to_dict(cfg))), TrainConfig) == cfg


def test_min_input_size_is_the_one_rule():
    """P_max and P_(max-1) must not both be 1x1: 65 pixels for levels up to P7, 129 for D7x's P8."""
    assert C.min_input_size(C.get_config("efficientdet-d0")) == 65
    assert C.min_input_size(C.get_config("efficientdet-d7x")) == 129
    assert C.feature_sizes((65, 65), 7)[-2:] == [(2, 2), (1, 1)]
    assert C.feature_sizes((64, 64), 7)[-2:] == [(1, 1), (1, 1)]
