"""The greedy of :mod:`efficientdet.nms`, compiled with numba (the ``fast`` extra).

TF's lazy algorithm (``NonMaxSuppressionV5``) over every candidate of an image: a max-heap of
(score bound, lower index); the top box is brought up to date with the selections made since its
bound was computed (decays multiplied in selection order, as the step-by-step greedy multiplies
them), and is selected if it still beats the next bound, else pushed back. Selections, scores and
ties are those of :func:`efficientdet.nms.nms`'s numpy rounds, to the bit: the IoU is the same
float32 expression and the decay the same float64 ``exp`` rounded to float32 (:func:`nms.soft_decay`).

Why compiled: a greedy step is a dozen operations on a few hundred boxes; in numpy each operation
costs a call (microseconds), compiled it costs nanoseconds per box. Imported only when numba is
installed; without it ``nms`` runs its numpy rounds.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

TINY = np.float32(np.finfo(np.float32).smallest_subnormal)
ZERO = np.float32(0)


@njit(cache=True, nogil=True)
def _iou(p, image, a, b):
    """IoU of selected box ``a`` with box ``b`` of ``image`` in planes ``p [5, B, N]``: the float32
    operations of :func:`nms.pairwise_iou`, in its order."""
    w = min(p[2, image, a], p[2, image, b]) - max(p[0, image, a], p[0, image, b])
    h = min(p[3, image, a], p[3, image, b]) - max(p[1, image, a], p[1, image, b])
    inter = max(w, ZERO) * max(h, ZERO)
    return inter / max(p[4, image, a] + p[4, image, b] - inter, TINY)


@njit(cache=True, nogil=True)
def _before(score_a, index_a, score_b, index_b):
    """Whether a box comes before another in NMS order: higher score, then lower index."""
    return score_a > score_b or (score_a == score_b and index_a < index_b)


@njit(cache=True, nogil=True)
def _sift_down(scores, index, size, at):
    """Restore the heap below ``at`` (a binary max-heap in NMS order), moving a hole down."""
    score, box = scores[at], index[at]
    while True:
        child = 2 * at + 1
        if child >= size:
            break
        if child + 1 < size and _before(scores[child + 1], index[child + 1], scores[child], index[child]):
            child += 1
        if not _before(scores[child], index[child], score, box):
            break
        scores[at], index[at] = scores[child], index[child]
        at = child
    scores[at], index[at] = score, box


@njit(cache=True, nogil=True)
def _push(scores, index, size, score, box):
    """Add ``box`` at ``score`` to a heap of ``size`` entries; returns the new size."""
    at = size
    while at > 0:
        parent = (at - 1) // 2
        if not _before(score, box, scores[parent], index[parent]):
            break
        scores[at], index[at] = scores[parent], index[parent]
        at = parent
    scores[at], index[at] = score, box
    return size + 1


@njit(cache=True, nogil=True)
def _decayed(planes, groups, soft, iou_threshold, decay_scale, image, box, score, picked, begin, end,
             rival_score, rival_index):
    """``box``'s score after the selections ``picked[image, begin:end]``, from its score before them
    (-inf when hard NMS suppresses it), and how many selections it now counts. A soft decay stops
    early once the score falls behind the rival (the heap's top): it is still an upper bound, and
    the next update goes on from there, in selection order."""
    for j in range(begin, end):
        chosen = picked[image, j]
        if groups.shape[1] and groups[image, chosen] != groups[image, box]:
            continue
        if min(planes[2, image, chosen], planes[2, image, box]) <= max(planes[0, image, chosen], planes[0, image, box]):
            continue  # apart in x: IoU 0, the common case, found before the rest of the IoU
        iou = _iou(planes, image, chosen, box)
        if not soft:
            if iou > iou_threshold:
                return np.float32(-np.inf), end
        elif iou > 0:  # (a decay of IoU 0 is exp(-0) = 1 exactly: nothing to multiply)
            decay = np.float32(math.exp(np.float64(iou * iou * decay_scale)))
            score = score * max(decay, TINY)
            if _before(rival_score, rival_index, score, box):
                return score, j + 1
    return score, end


@njit(cache=True, nogil=True)
def greedy(planes, scores, groups, soft, iou_threshold, decay_scale, score_threshold, max_detections):
    """NMS of each image: ``planes [5, B, N]`` (:func:`nms.box_planes`), ``scores [B, N]`` float32,
    ``groups [B, N]`` (``[B, 0]``: one group) → selected indices ``[B, max_detections]``, their
    scores, and each image's count. ``decay_scale`` is -1/σ (float32); thresholds are float32."""
    batch, total = scores.shape
    picked = np.zeros((batch, max_detections), np.int64)
    picked_scores = np.zeros((batch, max_detections), np.float32)
    count = np.zeros(batch, np.int64)
    heap_scores = np.empty(total, np.float32)
    heap_index = np.empty(total, np.int64)
    seen = np.empty(total, np.int64)  # selections each heap entry's score has been decayed by
    for image in range(batch):
        size = 0
        for box in range(total):
            if scores[image, box] > score_threshold:  # NaN is not
                heap_scores[size], heap_index[size] = scores[image, box], box
                size += 1
        for at in range(size // 2 - 1, -1, -1):
            _sift_down(heap_scores, heap_index, size, at)
        seen[:] = 0
        n = 0
        while n < max_detections and size:
            score, box = heap_scores[0], heap_index[0]
            size -= 1
            heap_scores[0], heap_index[0] = heap_scores[size], heap_index[size]
            _sift_down(heap_scores, heap_index, size, 0)
            if seen[box] < n:
                rival_score = heap_scores[0] if size else np.float32(-np.inf)
                rival_index = heap_index[0] if size else total
                score, seen[box] = _decayed(planes, groups, soft, iou_threshold, decay_scale, image, box,
                                            score, picked, seen[box], n, rival_score, rival_index)
                if not score > score_threshold:
                    continue  # scores only go down: it can never be selected
                if seen[box] < n or _before(rival_score, rival_index, score, box):
                    size = _push(heap_scores, heap_index, size, score, box)
                    continue
            picked[image, n], picked_scores[image, n] = box, score
            n += 1
        count[image] = n
    return picked, picked_scores, count
