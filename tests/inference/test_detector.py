import numpy as np
import pytest
import torch
from model_builders import lively
from PIL import Image
from skimage import data

from efficientdet import Detector, create_model
from efficientdet.config import PostprocessConfig
from efficientdet.inference.backends import model_backend


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = lively(create_model("efficientdet-lite0", num_classes=3))
    return Detector(model, PostprocessConfig(method="hard", score_threshold=0.0, max_detections=20),
                    class_names=["a", "b", "c"], label_ids=[10, 20, 30])


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coffee"])
def test_real_photos_give_boxes_in_original_pixels(detector, photo):
    image = getattr(data, photo)()
    result = detector(image)
    h, w = image.shape[:2]
    scale = max(h, w) / 320
    assert 0 < len(result["scores"]) <= 20
    assert result["boxes"].shape == (len(result["scores"]), 4)
    assert result["boxes"].min() >= 0 and result["boxes"].max() <= 320 * scale + 1e-3
    assert set(result["labels"].tolist()) <= {10, 20, 30}
    assert [{10: "a", 20: "b", 30: "c"}[i] for i in result["labels"].tolist()] == result["names"]


def test_batch_equals_single_images(detector):
    images = [data.astronaut(), data.chelsea()]
    batch = detector(images)
    for image, res in zip(images, batch):
        one = detector(image)
        assert torch.allclose(one["boxes"], res["boxes"], atol=1e-3)
        assert torch.allclose(one["scores"], res["scores"], atol=1e-5)


def test_input_types_agree(detector):
    image = data.chelsea()
    as_numpy = detector(image)
    as_pil = detector(Image.fromarray(image))
    as_tensor = detector(torch.from_numpy(image).permute(2, 0, 1))
    assert torch.equal(as_numpy["boxes"], as_pil["boxes"]) and torch.equal(as_numpy["boxes"], as_tensor["boxes"])
    grey = detector(np.asarray(Image.fromarray(image).convert("L")))
    assert len(grey["scores"]) > 0


def test_bad_label_space_and_images():
    model = create_model("efficientdet-lite0", num_classes=3)
    with pytest.raises(ValueError, match="num_classes=3"):
        Detector(model, class_names=["only-one"])
    with pytest.raises(ValueError, match="its own device"):
        Detector(model_backend(model), device="cpu")
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        Detector(model)(torch.zeros(4, 50, 50, dtype=torch.uint8))


def test_coco_label_space_by_default():
    det = Detector(create_model("efficientdet-lite0"))
    assert det.label_ids[0] == 1 and det.class_names[0] == "person" and det.class_names[11] == "unused-12"


def test_boxes_lie_within_the_original_image_while_postprocess_keeps_the_official_numbers():
    """At 128² a 160×90 image is padded at the bottom: postprocess clips to the padded input and
    scales back (the official numbers, kept), which overruns the image; what users get does not."""
    model = lively(create_model("efficientdet-lite0", num_classes=3, image_size=128))
    image = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    detector = Detector(model)
    raw = detector.detect(*detector.preprocess([image]))
    assert raw.boxes[0, : int(raw.num_valid[0]), 3].max() > 90
    for run in (detector, Detector.from_model(model, device="cpu")):
        boxes = run(image)["boxes"]
        assert len(boxes) > 0 and boxes.min() >= 0
        assert boxes[:, [0, 2]].max() <= 160 and boxes[:, [1, 3]].max() <= 90


def test_predict_on_preprocessed_batches_is_what_the_images_give(detector):
    """Evaluation's entry point: its own preprocessed batches, their scales and sizes → the same
    detections as ``detector(images)``; without sizes, the official (unclipped) boxes."""
    images = [data.astronaut(), data.chelsea()]
    batch, scales = detector.preprocess(images)
    sizes = [image.shape[:2] for image in images]
    clipped = detector.predict(batch, scales, sizes)
    raw = detector.detect(batch, scales)
    for b, (got, ref) in enumerate(zip(clipped, detector(images))):
        assert all(torch.equal(getattr(got, k), ref[k]) for k in ("boxes", "scores", "labels"))
        assert got.names == ref["names"]
        unclipped = detector.predict(batch, scales)[b]
        assert torch.equal(unclipped.boxes, raw.boxes[b, : int(raw.num_valid[b])])
        assert torch.equal(unclipped.labels, got.labels)


def test_model_backend_runs_the_live_model_under_autocast():
    """Validation during training: the model itself (later weight updates seen), in bfloat16."""
    torch.manual_seed(0)
    model = lively(create_model("efficientdet-lite0", num_classes=3, image_size=128))
    image = data.chelsea()
    detector = Detector(model_backend(model, amp_dtype=torch.bfloat16), label_ids=[10, 20, 30])
    before = detector(image)
    assert before["scores"].dtype == torch.float32 and set(before["labels"].tolist()) <= {10, 20, 30}
    last = model.class_net.predict
    with torch.no_grad():
        getattr(last, "pointwise", last).bias.sub_(30)  # every score below the 0.001 threshold
    assert len(detector(image)["scores"]) == 0 < len(before["scores"])


def test_no_images_give_no_detections_without_running_the_network(detector, monkeypatch):
    batch, scales = detector.preprocess([data.chelsea()])

    def no_call(batch):
        raise AssertionError("the network ran on an empty batch")

    monkeypatch.setattr(detector, "network", no_call)
    assert detector([]) == []
    dets = detector.detect(batch[:0], scales[:0])
    assert dets.boxes.shape == (0, 0, 4) and dets.num_valid.shape == (0,)
    assert detector.predict(batch[:0], scales[:0], []) == []
