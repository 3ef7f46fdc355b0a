import pytest
import torch

from efficientdet import create_model
from efficientdet.preprocess import preprocess, resize_scale, to_chw_tensor


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


def test_unsupported_image_types_are_refused():
    with pytest.raises(ValueError, match="unsupported image type"):
        to_chw_tensor("image.jpg")
