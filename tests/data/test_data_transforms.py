import numpy as np
import pytest
import torch
from data_builders import rectangle_image
from skimage import data

from efficientdet.config import VARIANTS, PreprocessConfig
from efficientdet.data import EvalTransform, TrainTransform
from efficientdet.data.transforms import mosaic
from efficientdet.preprocess import preprocess

ASTRONAUT = data.astronaut()
IDENTITY = PreprocessConfig((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # network values = pixel values: easy to read


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def test_eval_transform_is_the_detector_preprocessing():
    config = VARIANTS["efficientdet-d0"].preprocess
    image = chw(data.chelsea())  # 300x451
    boxes = torch.tensor([[10.0, 20.0, 451.0, 300.0]])
    out = EvalTransform((512, 512), config)(image, boxes, torch.tensor([3]))
    batch, scales = preprocess([image], (512, 512), config)
    assert torch.equal(out.image, batch[0]) and out.image_scale == float(scales[0])
    # official box mapping: through normalised coordinates to the scaled size 340x512, then the
    # official clip to size - 1 (x2 512 → 511)
    torch.testing.assert_close(out.boxes, torch.tensor([[10 * 512 / 451, 20 * 340 / 300, 511, 340]]))
    assert out.labels.tolist() == [3]
    empty = EvalTransform((512, 512), config)(image)
    assert empty.boxes.shape == (0, 4) and torch.equal(empty.image, batch[0])


def test_train_transform_at_scale_one_without_flip_equals_eval():
    image = chw(data.coffee())
    boxes, labels = torch.tensor([[50.0, 60.0, 300.0, 200.0]]), torch.tensor([1])
    train = TrainTransform((256, 320), IDENTITY, scale_range=(1.0, 1.0), hflip=0.0)(image, boxes, labels)
    evaluation = EvalTransform((256, 320), IDENTITY)(image, boxes, labels)
    assert torch.equal(train.image, evaluation.image) and torch.equal(train.boxes, evaluation.boxes)
    assert train.image_scale == evaluation.image_scale


def test_train_transform_flip_mirrors_image_and_boxes():
    image = chw(data.coffee())  # 400x600 → 256x384 inside 256x384: no padding
    boxes, labels = torch.tensor([[50.0, 60.0, 300.0, 200.0]]), torch.tensor([1])
    flipped = TrainTransform((256, 384), IDENTITY, scale_range=(1.0, 1.0), hflip=1.0)(image, boxes, labels)
    plain = EvalTransform((256, 384), IDENTITY)(image, boxes, labels)
    assert torch.equal(flipped.image, plain.image.flip(-1))
    torch.testing.assert_close(flipped.boxes, torch.tensor([[(600 - 300) * 0.64, 60 * 0.64, (600 - 50) * 0.64,
                                                             200 * 0.64]]))


@pytest.mark.parametrize("box, can_vanish", [((150, 70, 260, 190), False), ((10, 10, 40, 30), True),
                                             ((280, 200, 320, 240), True)])
def test_boxes_follow_the_image_under_flip_scale_and_crop(box, can_vanish):
    """A white rectangle's box must still frame the rectangle after every random draw, and a box
    whose rectangle the crop cut away must be gone."""
    image = chw(rectangle_image(240, 320, box))
    transform = TrainTransform((160, 192), IDENTITY)  # scales 0.1..2.0: shrink, enlarge and crop
    torch.manual_seed(0)
    dropped = 0
    for _ in range(40):
        out = transform(image, torch.tensor([box], dtype=torch.float32), torch.tensor([1]))
        assert out.image.shape == (3, 160, 192)
        white = out.image[0] > 200
        if len(out.boxes) == 0:
            dropped += 1
            assert white.sum() <= 192  # at most a blurred sliver of the rectangle remains
            continue
        x1, y1, x2, y2 = out.boxes[0].tolist()
        ys, xs = torch.nonzero(white, as_tuple=True)  # none where a tiny scale blurred the rectangle grey
        if len(xs):
            assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() <= y2 + 1
        if x2 - x1 > 4 and y2 - y1 > 4:  # the box holds the rectangle, not background
            assert out.image[0, int(y1) + 2:int(y2) - 1, int(x1) + 2:int(x2) - 1].min() > 100
    assert (5 <= dropped <= 30) if can_vanish else dropped == 0


def test_photometric_jitter_keeps_shape_and_boxes():
    image = chw(ASTRONAUT)
    boxes, labels = torch.tensor([[10.0, 20.0, 200.0, 300.0]]), torch.tensor([0])
    torch.manual_seed(1)
    out = TrainTransform((128, 128), IDENTITY, scale_range=(1.0, 1.0), hflip=0.0, photometric=True)(
        image, boxes, labels)
    plain = EvalTransform((128, 128), IDENTITY)(image, boxes, labels)
    assert out.image.shape == (3, 128, 128) and torch.equal(out.boxes, plain.boxes)
    assert not torch.equal(out.image, plain.image)


# ---------------------------------------------------------------- mosaic


def test_mosaic_boxes_frame_their_rectangles_wherever_the_centre_falls():
    """Four images of different shapes, each with one white rectangle: on the canvas every kept
    box holds white, no white lies outside the kept boxes, and a box is gone only when its
    rectangle fell off the canvas."""
    specs = [((120, 200), (20, 30, 90, 100)), ((200, 120), (60, 150, 110, 190)),
             ((100, 100), (0, 0, 40, 40)), ((90, 300), (250, 10, 300, 80))]
    images = [torch.from_numpy(rectangle_image(h, w, box)).permute(2, 0, 1) for (h, w), box in specs]
    boxes = [torch.tensor([box], dtype=torch.float32) for _, box in specs]
    labels = [torch.tensor([i]) for i in range(4)]
    cell = (64, 80)
    torch.manual_seed(0)
    kept = 0
    for _ in range(30):
        center = (int(64 * (0.5 + torch.rand(()).item())), int(80 * (0.5 + torch.rand(()).item())))
        canvas, out_boxes, out_labels = mosaic(images, boxes, labels, cell, center, fill=(7, 7, 7))
        assert canvas.shape == (3, 128, 160) and canvas.dtype == torch.uint8
        assert set(out_labels.tolist()) <= {0, 1, 2, 3} and len(out_boxes) == len(out_labels)
        white = canvas[0] > 200
        covered = torch.zeros_like(white)
        for x1, y1, x2, y2 in out_boxes.tolist():
            assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 128
            covered[max(0, int(y1) - 1):int(y2) + 2, max(0, int(x1) - 1):int(x2) + 2] = True
            if x2 - x1 > 3 and y2 - y1 > 3:
                assert canvas[0, int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1].min() > 200
        assert not (white & ~covered).any()
        top_left_tile_covers_corner = center[0] <= 48 and center[1] <= 80  # 120x200 → a 48x80 tile, ending there
        assert (canvas[:, 0, 0] == 7).all() != top_left_tile_covers_corner
        kept += len(out_boxes)
    assert 60 < kept < 120  # most rectangles stay on the canvas, some are cut away


def test_mosaic_tile_keeps_aspect_and_fills_the_rest():
    image = torch.full((3, 100, 200), 50, dtype=torch.uint8)  # 2:1 → 32x64 in a 64x64 cell
    canvas, boxes, labels = mosaic([image] * 4, [torch.tensor([[0.0, 0.0, 200.0, 100.0]])] * 4,
                                   [torch.tensor([1])] * 4, (64, 64), (40, 70), fill=(124.0, 116.0, 104.0))
    torch.testing.assert_close(boxes, torch.tensor([[6.0, 8.0, 70.0, 40.0], [70.0, 8.0, 128.0, 40.0],
                                                    [6.0, 40.0, 70.0, 72.0], [70.0, 40.0, 128.0, 72.0]]))
    assert labels.tolist() == [1, 1, 1, 1]
    assert (canvas[:, 8:72, 6:128] == 50).all()
    assert canvas[:, 0, 0].tolist() == [124, 116, 104] and canvas[:, 100, 100].tolist() == [124, 116, 104]
