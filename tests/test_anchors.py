import itertools
import math

import numpy as np
import torch

from efficientdet.anchors import generate_anchors
from efficientdet.config import AnchorConfig, ModelConfig, feature_sizes


def official_formula(image_size, min_level, max_level, num_scales, aspects, anchor_scale):
    """The official tf2/anchors.py recipe, re-derived with numpy (yxyx), for comparison."""
    sizes = feature_sizes(image_size, max_level)
    out = []
    for level in range(min_level, max_level + 1):
        sy, sx = image_size[0] / sizes[level][0], image_size[1] / sizes[level][1]
        per = []
        for octave, aspect in itertools.product(range(num_scales), aspects):
            bx = anchor_scale * sx * 2 ** (octave / num_scales) * math.sqrt(aspect) / 2
            by = anchor_scale * sy * 2 ** (octave / num_scales) / math.sqrt(aspect) / 2
            xv, yv = np.meshgrid(np.arange(sx / 2, image_size[1], sx), np.arange(sy / 2, image_size[0], sy))
            xv, yv = xv.reshape(-1), yv.reshape(-1)
            per.append(np.stack([yv - by, xv - bx, yv + by, xv + bx], 1)[:, None])
        out.append(np.concatenate(per, 1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def test_layout_matches_official_formula_non_square():
    for size, scale in [((512, 512), 4.0), ((320, 320), 3.0), ((500, 300), 4.0), ((384, 640), 5.0)]:
        ours = generate_anchors(ModelConfig("anchors", size, anchors=AnchorConfig(anchor_scale=scale)))
        ref = official_formula(size, 3, 7, 3, (1.0, 2.0, 0.5), scale)[:, [1, 0, 3, 2]]
        assert torch.equal(ours, torch.from_numpy(ref))


def test_order_position_major_then_scale_then_aspect():
    a = generate_anchors(ModelConfig("anchors", (512, 512)))
    assert a.shape == (49104, 4)
    first = a[:9]
    centers = (first[:, :2] + first[:, 2:]) / 2
    assert torch.allclose(centers, torch.tensor([4.0, 4.0]).expand(9, 2))  # one location
    w, h = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    assert torch.allclose(w[:3] / h[:3], torch.tensor([1.0, 2.0, 0.5]))  # aspects vary fastest
    assert torch.allclose(w[[0, 3, 6]], 32 * 2 ** (torch.arange(3) / 3))  # then octave scales
    assert torch.allclose((a[9, 0] + a[9, 2]) / 2, torch.tensor(12.0))  # next column


def test_non_integer_stride_matches_lite0_p7():
    a = generate_anchors(ModelConfig("anchors", (320, 320), anchors=AnchorConfig(anchor_scale=3.0)))
    p7 = a[-9 * 9:]  # 3x3 grid at P7
    centers = ((p7[::9, 0] + p7[::9, 2]) / 2)[:3]
    assert torch.allclose(centers, torch.tensor([320 / 6, 320 / 2, 320 * 5 / 6]))
