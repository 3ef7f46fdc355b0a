"""Greedy NMS (efficientdet.nms): windows give NMS over every box, the TF algorithm's selections,
and a cost bounded by max_detections × boxes whatever the scores."""

import heapq

import numpy as np
import pytest
import torch

from efficientdet import nms as nms_module
from efficientdet.anchors import generate_anchors
from efficientdet.config import ModelConfig, PostprocessConfig
from efficientdet.nms import compiled_greedy, nms

# Every exactness test runs both greedies: the numpy rounds and the compiled kernel (numba).
KERNELS = [False, pytest.param(True, marks=pytest.mark.skipif(compiled_greedy() is None, reason="numba not installed"))]


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


def _candidates(batch: int, n: int, kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, n, 2, generator=g) * 400
    boxes = torch.cat([xy, xy + torch.rand(batch, n, 2, generator=g) * 80 + 4], -1)
    rank = torch.stack([torch.randperm(n, generator=g) for _ in range(batch)]) + 1.0
    scores = {
        "peaked": (rank / n) ** 12,  # a trained detector: a few confident boxes, a long tail of tiny scores
        "flat": 0.01 + rank * 1e-7,  # random weights: every score almost the same
        "tied": torch.full((batch, n), 0.01),  # the class prior everywhere, to the last bit
    }[kind]
    return boxes, scores, torch.randint(0, 5, (batch, n), generator=g)


@pytest.mark.parametrize("kind", ["peaked", "flat", "tied"])
@pytest.mark.parametrize("method, agnostic", [("gaussian", True), ("gaussian", False), ("hard", True),
                                              ("hard", False)])
def test_a_small_first_window_gives_nms_over_every_box(kind, method, agnostic):
    boxes, scores, classes = _candidates(3, 6000, kind, seed=1)
    config = PostprocessConfig(method=method, class_agnostic=agnostic)
    idx, out = nms(boxes, scores, classes, config, window=256, compiled=False)
    ref_idx, ref_out = nms(boxes, scores, classes, config, window=6000, compiled=False)
    assert torch.equal(out, ref_out) and torch.equal(idx, ref_idx)
    if compiled_greedy() is not None:  # the compiled lazy greedy: the same selections, to the bit
        kernel_idx, kernel_out = nms(boxes, scores, classes, config, compiled=True)
        assert torch.equal(kernel_out, ref_out) and torch.equal(kernel_idx, ref_idx)
    assert out.shape == (3, 100) and (out > 0).all()


def test_a_too_small_first_window_is_detected_and_grown(monkeypatch):
    boxes, scores, _ = _candidates(2, 6000, "flat", seed=2)
    sizes = []
    real = nms_module._Window
    monkeypatch.setattr(nms_module, "_Window", lambda state, size: (sizes.append(size), real(state, size))[1])
    nms(boxes, scores, None, PostprocessConfig(), window=256, compiled=False)
    assert sizes[0] == 256 and len(sizes) >= 2  # flat scores: 256 boxes cannot be enough


@pytest.mark.parametrize("compiled", KERNELS)
def test_tied_scores_select_in_index_order(compiled):
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10], [40, 0, 50, 10]]])
    for method in ("hard", "gaussian"):
        idx, _ = nms(boxes, torch.full((1, 4), 0.5), None, PostprocessConfig(method=method), window=1,
                     compiled=compiled)
        assert idx[0].tolist()[:3] == [0, 1, 3]


def _count_ious(monkeypatch) -> list[int]:
    counted = [0]
    real = nms_module.pairwise_iou

    def counting(a, b):
        iou = real(a, b)
        counted[0] += iou.size
        return iou

    monkeypatch.setattr(nms_module, "pairwise_iou", counting)
    return counted


@pytest.mark.parametrize("method", ["hard", "gaussian"])
@pytest.mark.parametrize("kind", ["tied", "flat", "peaked"])
def test_iou_evaluations_are_bounded_by_max_detections_times_boxes(monkeypatch, method, kind):
    """D0's 49,104 anchors as boxes. Tied scores used to make hard NMS compare every pair (torchvision's
    NMS visits each box left unsuppressed) and soft-NMS decay every box at every selection."""
    anchors = generate_anchors(ModelConfig("anchors", (512, 512)))
    n = anchors.shape[0]
    _, scores, _ = _candidates(1, n, kind, seed=3)
    config = PostprocessConfig(method=method)
    counted = _count_ious(monkeypatch)
    idx, out = nms(anchors[None], scores, None, config, compiled=False)
    assert out.shape[1] == config.max_detections
    assert 0 < counted[0] <= config.max_detections * n


@pytest.mark.parametrize("compiled", KERNELS)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["gaussian", "hard"])
def test_nms_matches_the_tf_algorithm(seed, method, compiled):
    boxes, scores = random_boxes(400, seed)
    if method == "gaussian":  # TF's sigma is half the paper's
        ref_idx, ref_scores = tf_nms_reference(boxes.tolist(), scores.tolist(), 0.5, 0.001, 0.25, 100)
        config = PostprocessConfig(method="gaussian", soft_nms_sigma=0.5, score_threshold=0.001)
    else:
        ref_idx, ref_scores = tf_nms_reference(boxes.tolist(), scores.tolist(), 0.5, 0.4, 0.0, 100)
        config = PostprocessConfig(method="hard", iou_threshold=0.5, score_threshold=0.4)
    idx, out = nms(torch.from_numpy(boxes)[None], torch.from_numpy(scores)[None], None, config, window=64, compiled=compiled)
    assert idx[0].tolist() == ref_idx
    assert torch.allclose(out[0], torch.tensor(ref_scores, dtype=torch.float32), atol=1e-6)


@pytest.mark.parametrize("compiled", KERNELS)
@pytest.mark.parametrize("method", ["gaussian", "hard"])
def test_batched_nms_equals_one_image_at_a_time(method, compiled):
    data = [random_boxes(300, s) for s in range(3)]
    boxes = torch.stack([torch.from_numpy(b) for b, _ in data])
    scores = torch.stack([torch.from_numpy(s) for _, s in data])
    config = PostprocessConfig(method=method, score_threshold=0.0 if method == "hard" else 0.001, max_detections=50)
    idx, out = nms(boxes, scores, None, config, window=32, compiled=compiled)
    for i in range(3):
        one_idx, one_out = nms(boxes[i:i + 1], scores[i:i + 1], None, config, window=32, compiled=compiled)
        n = one_idx.shape[1]
        assert torch.equal(idx[i, :n], one_idx[0]) and torch.equal(out[i, :n], one_out[0])


@pytest.mark.parametrize("compiled", KERNELS)
def test_no_boxes_and_nothing_above_the_threshold(compiled):
    config = PostprocessConfig()
    idx, out = nms(torch.zeros(2, 0, 4), torch.zeros(2, 0), None, config, compiled=compiled)
    assert idx.shape == out.shape == (2, 0)
    idx, out = nms(torch.rand(2, 5, 4), torch.full((2, 5), 1e-4), None, config, compiled=compiled)
    assert out.shape == (2, 0)


@pytest.mark.parametrize("compiled", KERNELS)
@pytest.mark.parametrize("method", ["gaussian", "hard"])
def test_no_threshold_selects_every_box_once(method, compiled):
    """The official hard NMS runs with score threshold -inf: fewer boxes than max_detections are
    each selected once, however they overlap, and none twice."""
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]]])
    scores = torch.tensor([[0.5, 0.0, 0.25]])
    config = PostprocessConfig(method=method, score_threshold=float("-inf"), soft_nms_sigma=0.005)
    idx, out = nms(boxes, scores, None, config, window=1, compiled=compiled)
    if method == "hard":  # the two others overlap the first beyond 0.5
        assert idx[0].tolist() == [0]
    else:
        assert sorted(idx[0].tolist()) == [0, 1, 2] and out[0, 0] == 0.5
