"""Parity with the official TensorFlow model on the D0 fixture (official format, random weights)."""

import dataclasses

import numpy as np
import pytest
import torch
from mirror import official_tensors

from efficientdet import Detector, create_model, get_config, list_models
from efficientdet.anchors import generate_anchors
from efficientdet.coco import COCO_CATEGORIES
from efficientdet.inference.detector import clip_boxes
from efficientdet.preprocess import preprocess
from efficientdet.weights import WeightsError, load_weights, read_official
from efficientdet.weights.official import official_names
from efficientdet.weights.tf_checkpoint.writer import write_tf_checkpoint


@pytest.fixture(scope="module")
def ref(official_d0):
    return dict(np.load(official_d0 / "reference.npz"))


@pytest.fixture(scope="module")
def d0(official_d0):
    return create_model("efficientdet-d0", weights=official_d0).eval()


def test_name_map_is_exactly_the_checkpoint(official_d0):
    from efficientdet.weights.tf_checkpoint import TFCheckpoint

    keys = set(TFCheckpoint(official_d0).keys())
    model_vars = {k for k in keys if not k.endswith("/ExponentialMovingAverage") and k != "global_step"}
    names = set()
    for tf_name, layout in official_names(create_model("efficientdet-d0")).values():
        if layout == "stack":  # fusion weights WSM, WSM_1, (WSM_2)
            names.update(n for n in model_vars if n.rsplit("/", 1)[0] == tf_name.rsplit("/", 1)[0]
                         and n.rsplit("/", 1)[1].startswith("WSM"))
        else:
            names.add(tf_name)
    assert len(model_vars) == 709 and names == model_vars


def test_preprocessing_reproduces_official_input(ref):
    cfg = get_config("efficientdet-d0")
    x, scales = preprocess([torch.from_numpy(ref["image"]).permute(2, 0, 1)], cfg.image_size, cfg.preprocess)
    assert (x.permute(0, 2, 3, 1) - torch.from_numpy(ref["input_image"])).abs().max() <= 1e-4
    assert scales.tolist() == pytest.approx(ref["image_scale"].tolist())


def test_anchors_identical(ref):
    cfg = get_config("efficientdet-d0")
    ours = generate_anchors(cfg)
    assert torch.equal(ours[:, [1, 0, 3, 2]], torch.from_numpy(ref["anchors"]))


def test_every_level_within_1e4_of_official(d0, ref):
    x = torch.from_numpy(ref["input_image"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        cls_out, box_out = d0(x)
    for i, level in enumerate(range(3, 8)):
        for ours, key in ((cls_out[i], f"class_logits_p{level}"), (box_out[i], f"box_regression_p{level}")):
            diff = (ours.permute(0, 2, 3, 1) - torch.from_numpy(ref[key])).abs().max()
            assert diff <= 1e-4, (key, float(diff))


def test_ema_values_are_used_not_the_decoy(official_d0, ref):
    model = create_model("efficientdet-d0").eval()
    model.load_state_dict(read_official(model, official_d0, use_ema=False), strict=False)
    x = torch.from_numpy(ref["input_image"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        cls_out, _ = model(x)
    assert (cls_out[0].permute(0, 2, 3, 1) - torch.from_numpy(ref["class_logits_p3"])).abs().max() > 0.1


def assert_same_detection_sets(result, ref, key, clip_to=None):
    """``clip_to``: (height, width) of the image, to which the Detector clips the official boxes."""
    n = int(ref[f"det_{key}_valid"][0])
    ref_boxes = torch.from_numpy(ref[f"det_{key}_boxes"][0, :n])[:, [1, 0, 3, 2]]  # yxyx → xyxy
    if clip_to is not None:
        ref_boxes = clip_boxes(ref_boxes, *clip_to)
    ref_scores = torch.from_numpy(ref[f"det_{key}_scores"][0, :n])
    ref_labels = torch.from_numpy(ref[f"det_{key}_classes"][0, :n]).long()
    assert len(result["scores"]) == n
    unmatched = list(range(n))
    for box, score, label in zip(result["boxes"], result["scores"], result["labels"]):
        match = [j for j in unmatched if ref_labels[j] == label and abs(ref_scores[j] - score) <= 1e-4
                 and (ref_boxes[j] - box).abs().max() <= 1e-2]
        assert match, (box, score, label)
        unmatched.remove(match[0])


@pytest.mark.parametrize("key, nms", [
    ("inspect", dict(method="hard", score_threshold=0.4)),  # model_inspect.py defaults
    ("default", dict()),  # hparams default: gaussian soft-NMS, sigma 0.5
    ("hard0", dict(method="hard", score_threshold=float("-inf"))),
])
def test_detections_match_official_as_sets(d0, ref, key, nms):
    post = dataclasses.replace(d0.config.postprocess, **nms)
    detector = Detector(d0, post)
    # The padded detections keep the official numbers (not clipped to the image).
    raw = detector.detect(*detector.preprocess([ref["image"]]))
    n = int(raw.num_valid[0])
    assert_same_detection_sets({"boxes": raw.boxes[0, :n], "scores": raw.scores[0, :n],
                                "labels": raw.classes[0, :n] + 1}, ref, key)
    result = detector(ref["image"])
    assert_same_detection_sets(result, ref, key, clip_to=ref["image"].shape[:2])
    for label, name in zip(result["labels"].tolist(), result["names"]):  # official COCO ids and names
        assert name == COCO_CATEGORIES.get(label, f"unused-{label}") and 1 <= label <= 90


@pytest.mark.parametrize("name", list_models())
def test_every_variant_round_trips_through_the_official_format(tmp_path, name):
    """Our map for each variant writes an official-layout checkpoint that loads back exactly."""
    cfg = get_config(name)
    size = 2 ** (cfg.max_level + 1)
    torch.manual_seed(0)
    src = create_model(name, num_classes=4, image_size=size).eval()
    state = src.state_dict()
    tensors = {name: value + np.float32(0.01) for name, value in official_tensors(src).items()}  # not the init
    tensors["global_step"] = np.int64(7)
    write_tf_checkpoint(tmp_path / "model", tensors)
    dst = create_model(name, num_classes=4, image_size=size, weights=tmp_path).eval()
    for key, value in dst.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key] + 0.01), key


FNODE = "fpn_cells/cell_0/fnode0"


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop(f"{FNODE}/WSM_1"),
     rf"{FNODE}/WSM' has shape \[1\], the model's fpn\.cells\.0\.fnodes\.0\.weights needs \[2\]"),
    (lambda t: t.update({f"{FNODE}/WSM_2": np.float32(1)}), r"WSM' has shape \[3\], .* needs \[2\]"),
    (lambda t: t.update({"box_net/box-9/bias": np.zeros(4, np.float32)}),
     r"1 tensor\(s\) the model has no place for, e.g. \['box_net/box-9/bias'\]"),
    (lambda t: t.update({"efficientnet-b0/stem/conv2d/kernel": np.zeros((3, 3, 3, 8), np.float32)}),
     (r"'efficientnet-b0/stem/conv2d/kernel' has shape \[8, 3, 3, 3\], "
      r".* backbone\.stem_conv\.weight needs \[32, 3, 3, 3\]")),
])
def test_fusion_weights_and_extra_tensors_are_checked(tmp_path, change, message):
    """A node's scalars WSM, WSM_1, ... load as one vector: one too few or too many is a shape error
    naming the file; optimizer slots are not model tensors, an unknown variable is refused."""
    model = create_model("efficientdet-d0", num_classes=4, image_size=128)
    tensors = official_tensors(model)
    tensors["efficientnet-b0/stem/conv2d/kernel/Momentum"] = np.zeros(1, np.float32)
    load_weights(model, write_tf_checkpoint(tmp_path / "model", tensors))  # the slot is passed over
    change(tensors)
    write_tf_checkpoint(tmp_path / "model", tensors)
    with pytest.raises(WeightsError, match=rf"{tmp_path}/model: .*{message}"):
        load_weights(model, tmp_path)


def test_wrong_variant_is_named(official_d0):
    with pytest.raises(WeightsError, match="efficientdet-d0/model: missing tensor 'efficientnet-b1/"):
        create_model("efficientdet-d1", weights=official_d0)
    with pytest.raises(WeightsError, match="class-predict"):
        create_model("efficientdet-d0", num_classes=20, weights=official_d0)


def test_missing_and_unknown_paths(tmp_path):
    model = create_model("efficientdet-lite0")
    with pytest.raises(WeightsError, match="no such file"):
        load_weights(model, tmp_path / "nope")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format"):
        load_weights(model, tmp_path / "w.onnx")
