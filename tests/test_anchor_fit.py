"""The anchor fit: the share of boxes whose best anchor reaches the matching IoU, against a brute
force over every anchor; the scale chosen from the grid."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from efficientdet.anchor_fit import (SCALE_GRID, alternatives, anchor_fit, best_scale, fit_share, network_boxes,
                                     sample_boxes, scale_shares)
from efficientdet.anchors import generate_anchors
from efficientdet.config import feature_sizes, get_config, override


def random_boxes(count: int, seed: int, image=(480, 640), sides=(2, 400)) -> tuple[np.ndarray, np.ndarray]:
    """``count`` boxes inside images of ``image`` (h, w), sides log-uniform in ``sides``, any aspect."""
    rng = np.random.default_rng(seed)
    h, w = image
    wh = np.exp(rng.uniform(*np.log(sides), (count, 2))).clip(1, [w, h])
    xy = rng.uniform(0, 1, (count, 2)) * ([w, h] - wh)
    return np.concatenate([xy, xy + wh], 1), np.tile([h, w], (count, 1))


def brute_force(boxes, sizes, config, threshold):
    """Every box against every anchor with torchvision's IoU: (matched count, level of each best anchor)."""
    anchors = generate_anchors(config)
    iou = box_iou(network_boxes(boxes, sizes, config.image_size).float(), anchors)
    best, index = iou.max(1)
    grid = feature_sizes(config.image_size, config.max_level)
    per_level = [grid[lv][0] * grid[lv][1] * config.anchors.num_anchors for lv in config.levels]
    levels = torch.repeat_interleave(torch.tensor(list(config.levels)), torch.tensor(per_level))
    return int((best >= threshold).sum()), levels[index]


@pytest.mark.parametrize("name, size, seed", [("efficientdet-lite0", (320, 320), 0), ("efficientdet-d0", (256, 384), 1),
                                              ("efficientdet-d0", (200, 130), 2)])
def test_share_and_levels_equal_a_brute_force_over_every_anchor(name, size, seed):
    config = override(get_config(name), image_size=size)
    boxes, sizes = random_boxes(3000, seed)
    fit = anchor_fit(boxes, sizes, config, 0.5)
    matched, levels = brute_force(boxes, sizes, config, 0.5)
    assert fit.boxes == 3000 and fit.matched == matched and 50 < matched < 2950  # neither trivial
    assert fit_share(boxes, sizes, config, 0.5) == fit.share
    counts = {lv: int((levels == lv).sum()) for lv in config.levels}
    assert {f.level: f.boxes for f in fit.levels} == counts
    assert sum(f.matched for f in fit.levels) == matched


def test_levels_report_their_anchor_sides_and_median_box():
    config = get_config("efficientdet-lite0")  # 320, anchor_scale 3: P3 anchors 24..38 px
    boxes = np.array([[10, 10, 38, 38], [100, 100, 400, 400]], np.float64)  # 14 px and 150 px at 320 of 640
    fit = anchor_fit(boxes, np.tile([640, 640], (2, 1)), config, 0.5)
    p3, p5, p7 = fit.levels[0], fit.levels[2], fit.levels[4]
    assert p3.anchor_sides == (24.0, 38.1) and p3.boxes == 1 and p3.median_side == 14.0
    assert p5.anchor_sides == (96.0, 152.4) and p5.boxes == 1 and p5.median_side == 150.0
    assert p7.anchor_sides == (320.0, 508.0) and p7.boxes == 0 and p7.median_side is None  # P7 is 3x3: float stride
    assert sum(f.boxes for f in fit.levels) == 2 and fit.to_dict()["share"] == fit.share


def test_network_boxes_follow_the_inference_resize():
    boxes = np.array([[0, 0, 64, 48], [10, 20, 30, 40]], np.float64)
    sizes = np.array([[480, 640], [100, 50]])  # (h, w): scaled by 0.5 and by 3.2 (height-bound) to fit 320x160
    out = network_boxes(boxes, sizes, (320, 160))
    torch.testing.assert_close(out, torch.tensor([[0, 0, 16, 12], [32, 64, 96, 128]], dtype=torch.float64))


def test_auto_scale_is_the_grid_point_of_the_highest_share():
    """Boxes of 8-14 px at 320: the smallest scales fit them, the model's own (3) hardly."""
    config = get_config("efficientdet-lite0")
    boxes, sizes = random_boxes(500, 3, image=(320, 320), sides=(8, 14))
    shares = scale_shares(boxes, sizes, config, 0.5)
    assert set(shares) == set(SCALE_GRID)
    chosen = best_scale(shares, config.anchors.anchor_scale)
    assert shares[chosen] == max(shares.values()) > shares[3.0] + 0.3
    assert chosen in (1.0, 1.5)
    assert best_scale({1.0: 0.5, 2.0: 0.9, 4.0: 0.9}, own=3.0) == 4.0  # a tie goes to the nearest to the own


def test_alternatives_name_the_options_and_the_share_each_gives():
    config = get_config("efficientdet-lite0")
    boxes, sizes = random_boxes(400, 4, image=(320, 320), sides=(8, 14))
    options = dict(alternatives(boxes, sizes, config, 0.5))
    assert list(options)[:2] == ["--image-size 480", "--image-size 640"]
    assert options["--image-size 640"] > options["--image-size 480"] > fit_share(boxes, sizes, config, 0.5)
    scale = next(k for k in options if k.startswith("--set anchors.anchor_scale="))
    assert options[scale] == max(v for s, v in scale_shares(boxes, sizes, config, 0.5).items() if s != 3.0)
    assert "--set anchors.aspect_ratios=1,2,0.5,4,0.25" in options


def test_no_boxes_fit_nothing():
    config = get_config("efficientdet-lite0")
    fit = anchor_fit(np.zeros((0, 4)), np.zeros((0, 2)), config, 0.5)
    assert (fit.boxes, fit.matched, fit.share) == (0, 0, 0.0)


def test_a_large_set_is_measured_on_the_same_seeded_sample_every_time():
    boxes, sizes = random_boxes(500, 5)
    first, first_sizes = sample_boxes(boxes, sizes, limit=100)
    again, _ = sample_boxes(boxes, sizes, limit=100)
    assert len(first) == len(first_sizes) == 100 and np.array_equal(first, again)
    rows = [int(np.flatnonzero((boxes == row).all(1))[0]) for row in first]
    assert rows == sorted(rows)  # a subset, in the original order
    assert sample_boxes(boxes, sizes, limit=500)[0] is boxes
