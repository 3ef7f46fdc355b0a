import heapq

import numpy as np
import pytest
import torch

from efficientdet.config import PostprocessConfig
from efficientdet.postprocess import flatten_outputs, hard_nms, postprocess, soft_nms


def tf_nms_reference(boxes, scores, iou_threshold, score_threshold, soft_sigma, max_out):
    """TF NonMaxSuppressionV5's lazy priority-queue algorithm, re-written in plain Python.

    Candidates are re-scored only against boxes selected since their last check; a candidate
    whose score did not change is selected. ``soft_sigma`` is TF's (half the paper's).
    """
    def iou(i, j):
        a, b = boxes[i], boxes[j]
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    soft = soft_sigma > 0
    queue = [(-s, i, 0) for i, s in enumerate(scores) if s > score_threshold]
    heapq.heapify(queue)
    selected, out_scores = [], []
    while len(selected) < max_out and queue:
        neg, i, begin = heapq.heappop(queue)
        score = original = -neg
        hard = False
        for j in range(len(selected) - 1, begin - 1, -1):
            sim = iou(i, selected[j])
            if not soft and sim > iou_threshold:
                hard = True
                break
            if soft:
                score *= np.exp(-0.5 / soft_sigma * sim * sim)
            if score <= score_threshold:
                break
        if hard:
            continue
        if score == original:
            selected.append(i)
            out_scores.append(score)
        elif score > score_threshold:
            heapq.heappush(queue, (-score, i, len(selected)))
    return selected, out_scores


def random_boxes(n, seed):
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 200, (n, 2))
    wh = g.uniform(5, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), g.uniform(0, 1, n).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_soft_nms_matches_tf_algorithm(seed):
    boxes, scores = random_boxes(400, seed)
    ref_idx, ref_scores = tf_nms_reference(boxes.tolist(), scores.tolist(), 0.5, 0.001, 0.25, 100)
    idx, out = soft_nms(torch.from_numpy(boxes)[None], torch.from_numpy(scores)[None], 0.5, 0.001, 100)
    assert idx[0].tolist() == ref_idx
    assert np.allclose(out[0].numpy(), ref_scores, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_hard_nms_matches_tf_algorithm(seed):
    boxes, scores = random_boxes(400, seed)
    ref_idx, ref_scores = tf_nms_reference(boxes.tolist(), scores.tolist(), 0.5, 0.4, 0.0, 100)
    idx, out = hard_nms(torch.from_numpy(boxes)[None], torch.from_numpy(scores)[None],
                        torch.zeros(1, 400, dtype=torch.long), 0.5, 0.4, 100)
    assert idx[0].tolist() == ref_idx
    assert np.allclose(out[0].numpy(), ref_scores)


def test_batched_nms_equals_one_image_at_a_time():
    data = [random_boxes(300, s) for s in range(3)]
    boxes = torch.stack([torch.from_numpy(b) for b, _ in data])
    scores = torch.stack([torch.from_numpy(s) for _, s in data])
    groups = torch.zeros(3, 300, dtype=torch.long)
    for fn in (lambda b, s, g: soft_nms(b, s, 0.5, 0.001, 50), lambda b, s, g: hard_nms(b, s, g, 0.5, 0.0, 50)):
        idx, out = fn(boxes, scores, groups)
        for i in range(3):
            one_idx, one_out = fn(boxes[i:i + 1], scores[i:i + 1], groups[i:i + 1])
            n = one_idx.shape[1]
            assert torch.equal(idx[i, :n], one_idx[0]) and torch.allclose(out[i, :n], one_out[0])


def _outputs(num_classes=3, size=(128, 128), seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(size[0] // 2**lvl, size[1] // 2**lvl) for lvl in range(3, 8)]
    cls = [torch.randn(2, 9 * num_classes, h, w, generator=g) * 2 - 3 for h, w in sizes]
    box = [torch.randn(2, 36, h, w, generator=g) * 0.2 for h, w in sizes]
    return cls, box


def test_flatten_outputs_follow_anchor_order():
    cls, box = _outputs()
    logits, codes = flatten_outputs(cls, box, 3)
    assert logits.shape == (2, sum(9 * c.shape[2] * c.shape[3] for c in cls), 3)
    # location (y=1, x=2) of P3 (16x16), anchor 4, class 2 → channel 4*3+2
    assert logits[1, (1 * 16 + 2) * 9 + 4, 2] == cls[0][1, 14, 1, 2]
    assert codes[0, (3 * 16 + 0) * 9 + 8, 1] == box[0][0, 8 * 4 + 1, 3, 0]


@pytest.mark.parametrize("method", ["gaussian", "hard"])
@pytest.mark.parametrize("agnostic", [True, False])
def test_postprocess_shapes_padding_and_clipping(method, agnostic):
    from efficientdet.anchors import generate_anchors
    from efficientdet.config import AnchorConfig

    cls, box = _outputs()
    anchors = generate_anchors((128, 128), 3, 7, AnchorConfig())
    cfg = PostprocessConfig(method=method, class_agnostic=agnostic, max_detections=30, score_threshold=0.05)
    scales = torch.tensor([1.0, 2.5])
    det = postprocess(cls, box, anchors, cfg, (128, 128), scales)
    assert det.boxes.shape == (2, 30, 4) and det.scores.shape == (2, 30) and det.classes.shape == (2, 30)
    for b in range(2):
        n = int(det.num_valid[b])
        assert 0 < n <= 30
        assert (det.scores[b, :n] > 0.05).all() and (det.scores[b, n:] == 0).all()
        assert (det.classes[b, :n] >= 0).all() and (det.classes[b, :n] < 3).all() and (det.classes[b, n:] == -1).all()
        assert (det.scores[b, :n].diff() <= 0).all()  # descending
        assert det.boxes[b, :n].min() >= 0 and det.boxes[b, :n].max() <= 128 * scales[b] + 1e-4


def test_pre_nms_top_k_limits_candidates():
    from efficientdet.anchors import generate_anchors
    from efficientdet.config import AnchorConfig

    cls, box = _outputs()
    anchors = generate_anchors((128, 128), 3, 7, AnchorConfig())
    full = postprocess(cls, box, anchors, PostprocessConfig(method="hard", score_threshold=0.0), (128, 128))
    top = postprocess(cls, box, anchors, PostprocessConfig(method="hard", pre_nms_top_k=5, score_threshold=0.0),
                      (128, 128))
    assert top.num_valid.max() <= 5
    assert torch.allclose(top.scores[:, 0], full.scores[:, 0])  # the best box survives


def test_anchor_count_mismatch_is_an_error():
    cls, box = _outputs()
    with pytest.raises(ValueError, match="anchors"):
        postprocess(cls, box, torch.zeros(10, 4), PostprocessConfig(), (128, 128))
