import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from efficientdet.anchors import generate_anchors
from efficientdet.assign import BACKGROUND, IGNORE, assign_targets, batched_iou
from efficientdet.config import ModelConfig

ANCHORS = generate_anchors(ModelConfig("anchors", (128, 128)))  # 3069 anchors


def _iou_np(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[K, 4] x [N, 4] → [K, N] float32, same operations as the official IoU."""
    b, a = boxes[:, None, :], anchors[None]
    w = np.clip(np.minimum(b[..., 2], a[..., 2]) - np.maximum(b[..., 0], a[..., 0]), 0, None)
    h = np.clip(np.minimum(b[..., 3], a[..., 3]) - np.maximum(b[..., 1], a[..., 1]), 0, None)
    inter = w * h
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    union = area_b[:, None] + area_a[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter == 0, np.float32(0), inter / union).astype(np.float32)


def _encode_np(box, anchor):
    x1, y1, x2, y2 = (float(v) for v in box)
    ax1, ay1, ax2, ay2 = (float(v) for v in anchor)
    ha, wa, h, w = (max(1e-8, v) for v in (ay2 - ay1, ax2 - ax1, y2 - y1, x2 - x1))  # official EPSILON
    return [((y1 + y2) - (ay1 + ay2)) / 2 / ha, ((x1 + x2) - (ax1 + ax2)) / 2 / wa, np.log(h / ha), np.log(w / wa)]


def reference_assign(anchors, boxes, labels, match_threshold=0.5, unmatched_threshold=0.5):
    """The official ArgMaxMatcher + TargetAssigner for one image, one anchor at a time.

    Padding is dropped first, as the official input pipeline labels the unpadded boxes.
    """
    keep = [m for m in range(len(labels)) if labels[m] >= 0]
    boxes, labels = boxes[keep], [int(labels[m]) for m in keep]
    n_anchors = len(anchors)
    cls = [BACKGROUND] * n_anchors
    match = [None] * n_anchors
    if keep:
        iou = _iou_np(boxes, anchors)
        for n in range(n_anchors):
            best = 0
            for k in range(1, len(keep)):  # tf.argmax: first maximum
                if iou[k, n] > iou[best, n]:
                    best = k
            if iou[best, n] >= match_threshold:
                cls[n], match[n] = labels[best], best
            elif iou[best, n] >= unmatched_threshold:
                cls[n] = IGNORE
        claimed = {}
        for k in range(len(keep)):
            best = 0
            for n in range(1, n_anchors):
                if iou[k, n] > iou[k, best]:
                    best = n
            claimed.setdefault(best, k)  # the first box to claim an anchor keeps it
        for n, k in claimed.items():
            cls[n], match[n] = labels[k], k
    codes = np.zeros((n_anchors, 4))
    for n in range(n_anchors):
        if match[n] is not None:
            codes[n] = _encode_np(boxes[match[n]], anchors[n])
    return np.array(cls), codes


def random_gt(rng: np.random.Generator, batch: int, num_boxes: int, num_classes: int = 5):
    """Boxes of all sizes, some tiny (only their forced match), duplicates, interleaved padding."""
    boxes = np.zeros((batch, num_boxes, 4), np.float32)
    labels = rng.integers(0, num_classes, (batch, num_boxes))
    for b in range(batch):
        for m in range(num_boxes):
            kind = rng.random()
            if kind < 0.2 and m > 0:  # duplicate of an earlier box, maybe another class
                boxes[b, m] = boxes[b, rng.integers(0, m)]
                continue
            size = rng.uniform(1, 4, 2) if kind < 0.4 else rng.uniform(8, 110, 2)
            centre = rng.uniform(0, 128, 2)
            boxes[b, m] = np.concatenate([centre - size / 2, centre + size / 2]).clip(0, 128)
        pad = rng.random(num_boxes) < 0.25
        labels[b, pad] = -1
        boxes[b, pad] = rng.choice([-1.0, 0.0])
    return boxes, labels


def check_against_reference(boxes, labels, match_threshold=0.5, unmatched_threshold=0.5):
    targets = assign_targets(ANCHORS, torch.from_numpy(boxes), torch.from_numpy(labels),
                             match_threshold, unmatched_threshold)
    assert targets.cls.dtype == torch.int64 and targets.cls.shape == (len(boxes), len(ANCHORS))
    for b in range(len(boxes)):
        cls, codes = reference_assign(ANCHORS.numpy(), boxes[b], labels[b], match_threshold, unmatched_threshold)
        np.testing.assert_array_equal(targets.cls[b].numpy(), cls)
        np.testing.assert_allclose(targets.box[b].numpy(), codes, rtol=1e-4, atol=1e-5)
        assert targets.num_positives[b].item() == (cls >= 0).sum()
    return targets


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_boxes", [0, 1, 6, 12])
def test_matches_reference_random(seed, num_boxes):
    boxes, labels = random_gt(np.random.default_rng(seed), 3, num_boxes)
    check_against_reference(boxes, labels)


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_reference_ignore_band_and_integer_ties(seed):
    rng = np.random.default_rng(seed)
    boxes, labels = random_gt(rng, 3, 10)
    boxes = np.round(boxes / 4) * 4  # integer grid: exact IoU ties between anchors and boxes
    targets = check_against_reference(boxes, labels, match_threshold=0.5, unmatched_threshold=0.4)
    assert (targets.cls == IGNORE).any()


def test_batched_iou_equals_torchvision():
    boxes, _ = random_gt(np.random.default_rng(5), 2, 7)
    boxes = torch.from_numpy(boxes) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # no empty boxes
    ours = batched_iou(boxes, ANCHORS)
    for b in range(2):
        torch.testing.assert_close(ours[b], box_iou(boxes[b], ANCHORS))


# Two far-apart anchors make the forced-match rules easy to see.
TOY_ANCHORS = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])


def test_forced_match_goes_to_first_box_and_overrides_a_better_match():
    tiny, exact = [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 10.0, 10.0]
    # Both boxes claim anchor 0; the first claimant wins even though the second has IoU 1.
    t = assign_targets(TOY_ANCHORS, torch.tensor([[tiny, exact]]), torch.tensor([[3, 4]]))
    assert t.cls.tolist() == [[3, BACKGROUND]]
    t = assign_targets(TOY_ANCHORS, torch.tensor([[exact, tiny]]), torch.tensor([[4, 3]]))
    assert t.cls.tolist() == [[4, BACKGROUND]]
    assert t.num_positives.tolist() == [1.0]


def test_forced_match_below_thresholds_is_positive_with_its_code():
    box = torch.tensor([[[100.0, 100.0, 102.0, 102.0]]])  # IoU 0.04 with anchor 1
    t = assign_targets(TOY_ANCHORS, box, torch.tensor([[2]]))
    assert t.cls.tolist() == [[BACKGROUND, 2]]
    torch.testing.assert_close(t.box[0, 1], torch.tensor([-0.4, -0.4, np.log(0.2), np.log(0.2)], dtype=torch.float32))
    assert (t.box[0, 0] == 0).all()


def test_thresholds_inclusive_and_ignore_band():
    # Anchor 3 duplicates anchor 1, so box 1 is forced onto anchor 1 and anchor 3 shows the thresholds.
    anchors = torch.cat([TOY_ANCHORS[:1], torch.tensor([[20.0, 0.0, 30.0, 10.0]]), TOY_ANCHORS[1:],
                         torch.tensor([[20.0, 0.0, 30.0, 10.0]])])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 5.0]],  # IoU 0.5 with anchors 1, 3
                          [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 4.5]]])  # IoU 0.45
    labels = torch.tensor([[0, 1], [0, 1]])
    t = assign_targets(anchors, boxes, labels, match_threshold=0.5, unmatched_threshold=0.4)
    assert t.cls.tolist() == [[0, 1, BACKGROUND, 1], [0, 1, BACKGROUND, IGNORE]]
    assert t.num_positives.tolist() == [3.0, 2.0]
    t = assign_targets(anchors, boxes, labels)
    assert t.cls.tolist() == [[0, 1, BACKGROUND, 1], [0, 1, BACKGROUND, BACKGROUND]]


def test_padding_never_matches_and_empty_images_are_background():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]], [[-1.0, -1.0, -1.0, -1.0]]])
    t = assign_targets(TOY_ANCHORS, boxes, torch.tensor([[-1], [-1]]))
    assert (t.cls == BACKGROUND).all() and (t.box == 0).all() and t.num_positives.tolist() == [0.0, 0.0]
    assert torch.isfinite(t.box).all()
    t = assign_targets(TOY_ANCHORS, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.int64))
    assert (t.cls == BACKGROUND).all() and t.box.shape == (2, 2, 4) and t.num_positives.tolist() == [0.0, 0.0]


def test_rejects_inverted_thresholds():
    with pytest.raises(ValueError, match="unmatched_threshold"):
        assign_targets(TOY_ANCHORS, torch.zeros(1, 1, 4), torch.zeros(1, 1, dtype=torch.int64), 0.4, 0.5)
