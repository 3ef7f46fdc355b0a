import numpy as np
import pytest
import torch
from model_builders import lively
from PIL import Image
from skimage import data

from efficientdet import Detector, create_model
from efficientdet.config import PostprocessConfig
from efficientdet.detector import preprocess, resize_scale, to_chw_tensor


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = lively(create_model("efficientdet-lite0", num_classes=3))
    return Detector(model, PostprocessConfig(method="hard", score_threshold=0.0, max_detections=20),
                    class_names=["a", "b", "c"], label_ids=[10, 20, 30])


def test_resize_scale_is_official_float32():
    assert resize_scale(480, 640, (512, 512)) == (pytest.approx(0.8), 384, 512)
    scale, h, w = resize_scale(300, 500, (320, 320))
    assert (h, w) == (192, 320)


def test_preprocess_pads_bottom_right_with_zeros():
    img = torch.full((3, 100, 200), 127, dtype=torch.uint8)
    x, scales = preprocess([img], (320, 320), create_model("efficientdet-lite0").config.preprocess)
    assert x.shape == (1, 3, 320, 320) and scales.tolist() == [pytest.approx(200 / 320)]
    assert torch.all(x[:, :, :160] == 0.0)  # (127 - 127) / 128 inside the image...
    assert torch.all(x[:, :, 160:] == 0.0)  # ...and zeros in the padding


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
    with pytest.raises(ValueError, match="unsupported image type"):
        to_chw_tensor("image.jpg")
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        Detector(model)(torch.zeros(4, 50, 50, dtype=torch.uint8))


def test_coco_label_space_by_default():
    det = Detector(create_model("efficientdet-lite0"))
    assert det.label_ids[0] == 1 and det.class_names[0] == "person" and det.class_names[11] == "unused-12"


def test_boxes_lie_within_the_original_image_while_postprocess_keeps_the_official_numbers():
    """At 128² a 160×90 image is padded at the bottom: postprocess clips to the padded input and
    scales back (the official numbers, kept), which overruns the image; what users get does not."""
    from efficientdet.inference import Predictor

    model = lively(create_model("efficientdet-lite0", num_classes=3, image_size=128))
    image = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    detector = Detector(model)
    raw = detector.detect_batch([image])
    assert raw.boxes[0, : int(raw.num_valid[0]), 3].max() > 90
    for run in (detector, Predictor.from_model(model, device="cpu")):
        boxes = run(image)["boxes"]
        assert len(boxes) > 0 and boxes.min() >= 0
        assert boxes[:, [0, 2]].max() <= 160 and boxes[:, [1, 3]].max() <= 90
