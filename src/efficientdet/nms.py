"""Greedy NMS — hard, or gaussian soft-NMS (Bodla et al.) — exact, batched, and bounded as TF's is.

Both kinds select boxes one at a time, each the best remaining by (current score, then lower
index), and a score only ever goes down. TF's ``NonMaxSuppressionV5`` stops after
``max_output_size`` selections, so its cost is bounded by max_detections × candidates whatever
the scores; so is this one's: each selection compares one box with the candidates in play.

Most of a detector's tens of thousands of boxes can never be selected, so the greedy runs on a
*window*: each image's best ``window`` boxes in that order. A selection is the one NMS over every
box would make as long as it beats the best box left out (whose current score is at most its
original one); selections are kept up to the first that does not, and an image is finished once
it has ``max_detections`` of them or nothing left out passes the score threshold. Otherwise the
window grows (``WINDOW_GROWTH``×), the state after the kept selections is rebuilt on it (a box's
score decayed by each kept selection in order: the same roundings as step by step), and the
greedy goes on. Ties in score break by the lower index everywhere, so tied scores (an untrained
model's) cost no more than spread ones.

Written with numpy on the host rather than torch: the greedy is ~``max_detections`` steps of a
dozen operations on small arrays, where a numpy call costs a few times less than a torch one;
inputs on a GPU come over once per call.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import PostprocessConfig

# Boxes per image in the first window; enough for every selection almost always.
FIRST_WINDOW = 512
WINDOW_GROWTH = 8


def box_planes(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """xyxy ``[..., 4]`` → contiguous ``(x1, y1, x2, y2, area)``, each ``[...]``."""
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[..., i]) for i in range(4))
    return x1, y1, x2, y2, np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)


def pairwise_iou(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """IoU of boxes given as :func:`box_planes` (broadcast against each other), 0 where the union
    is empty. Every IoU the greedy uses comes from here, with the same operations in the same order,
    so a pair's IoU rounds the same whether it is met in a step or in rebuilding a window."""
    ax1, ay1, ax2, ay2, a_area = a
    bx1, by1, bx2, by2, b_area = b
    inter = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0) * \
        np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0)
    union = a_area + b_area - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def order_keys(scores: np.ndarray, index: np.ndarray, total: int) -> np.ndarray:
    """int64 keys of one strict order: higher float32 score first, then lower index (< ``total``)."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32).astype(np.int64)
    bits = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: reverse their bit order
    return (bits << 32) | (total - 1 - index)


class _Problem:
    """One call's boxes (as :func:`box_planes`), scores and groups on the host, float32, ``[B, N]``."""

    def __init__(self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None,
                 config: PostprocessConfig):
        self.config = config
        boxes = boxes.detach().to("cpu", torch.float32).numpy()
        self.scores = scores.detach().to("cpu", torch.float32).numpy()
        self.groups = None if config.class_agnostic or classes is None else classes.detach().cpu().numpy()
        if config.method == "gaussian" and self.groups is not None:
            # Soft-NMS keeps classes apart by moving each to its own region, fixed here on every box
            # because the shift's size changes how the IoUs round.
            boxes = boxes + (self.groups * (np.abs(boxes).max(initial=0) * 2 + 1))[..., None]
            self.groups = None
        self.planes = box_planes(boxes)
        self.batch, self.total = self.scores.shape
        self.rows = np.arange(self.batch)
        self.keys = order_keys(self.scores, np.arange(self.total)[None], self.total)

    def gather(self, index: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray | None]:
        """Planes and groups of the boxes at ``index [B, K]``."""
        rows = self.rows[:, None]
        return (tuple(p[rows, index] for p in self.planes),
                None if self.groups is None else self.groups[rows, index])


class _Window:
    """Each image's best ``size`` boxes, in index order ``[B, K]``, and the best box left out."""

    def __init__(self, problem: _Problem, size: int):
        total, rows = problem.total, problem.rows
        if size >= total:
            self.index = np.broadcast_to(np.arange(total), problem.keys.shape)
            self.bound = np.full(problem.batch, np.iinfo(np.int64).min)  # nothing left out
            self.bound_score = np.full(problem.batch, -np.inf, np.float32)
        else:
            top = np.argpartition(problem.keys, total - size - 1, axis=1)[:, total - size - 1:]
            out = problem.keys[rows[:, None], top].argmin(1)  # the (size + 1)-th best, left out
            left_out = top[rows, out]
            self.bound, self.bound_score = problem.keys[rows, left_out], problem.scores[rows, left_out]
            keep = np.arange(size + 1)[None] != out[:, None]
            self.index = np.sort(top[keep].reshape(problem.batch, size), 1)
        self.planes, self.groups = problem.gather(self.index)


def _suppressed(config: PostprocessConfig, win: _Window, pick: np.ndarray, live: np.ndarray) -> np.ndarray:
    """``live [B, K]`` after selecting window position ``pick [B]``: decayed (soft) or suppressed
    (hard), with the selected box and all at or below the score threshold at -inf."""
    rows = np.arange(len(pick))
    iou = pairwise_iou(tuple(p[rows, pick][:, None] for p in win.planes), win.planes)
    if config.method == "gaussian":
        live = live * np.exp(-(iou * iou) / config.soft_nms_sigma)
    else:
        over = iou > config.iou_threshold
        if win.groups is not None:
            over &= win.groups == win.groups[rows, pick][:, None]
        live = np.where(over, -np.inf, live)
    live[rows, pick] = -np.inf
    return np.where(live > config.score_threshold, live, -np.inf)


def _rebuilt(problem: _Problem, win: _Window, picked: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Current scores ``[B, K]`` of the window's boxes after each image's first ``count`` selections
    ``picked [B, M]``, as the step-by-step greedy leaves them (-inf: selected, suppressed or at or
    below the threshold). A product of decays taken in order (``cumprod``) rounds as those steps do."""
    config, rows = problem.config, problem.rows[:, None]
    live = problem.scores[rows, win.index]
    live = np.where(live > config.score_threshold, live, -np.inf)
    m = int(count.max())
    if m == 0:
        return live
    selected = picked[:, :m]
    real = np.arange(m)[None] < count[:, None]  # [B, M]
    planes, groups = problem.gather(selected)
    iou = pairwise_iou(tuple(p[:, :, None] for p in planes), tuple(p[:, None] for p in win.planes))  # [B, M, K]
    if config.method == "gaussian":
        decay = np.where(real[..., None], np.exp(-(iou * iou) / config.soft_nms_sigma), np.float32(1))
        live = np.cumprod(np.concatenate([live[:, None], decay], 1), 1)[:, -1]
    else:
        over = real[..., None] & (iou > config.iou_threshold)
        if groups is not None:
            over &= groups[:, :, None] == win.groups[:, None]
        live = np.where(over.any(1), -np.inf, live)
    live = np.where(live > config.score_threshold, live, -np.inf)
    # The selected boxes themselves: in this window, since windows only grow.
    flat = (win.index + rows * problem.total).ravel()
    live.reshape(-1)[np.searchsorted(flat, (selected + rows * problem.total)[real])] = -np.inf
    return live


def nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None, config: PostprocessConfig,
        window: int = FIRST_WINDOW) -> tuple[torch.Tensor, torch.Tensor]:
    """``boxes [B, N, 4]`` xyxy, ``scores [B, N]``, ``classes [B, N]`` (used unless the config is
    class-agnostic) → selected indices and scores ``[B, ≤max_detections]``, best first, padded
    with index 0 and score 0. The configured NMS over every box, run on windows (module docstring)."""
    problem = _Problem(boxes, scores, classes, config)
    batch, max_out, threshold, rows = problem.batch, config.max_detections, config.score_threshold, problem.rows
    picked = np.zeros((batch, max_out), np.int64)
    picked_scores = np.zeros((batch, max_out), np.float32)
    count = np.zeros(batch, np.int64)
    finished = np.full(batch, problem.total == 0)
    size = min(window, problem.total)
    while not finished.all():
        win = _Window(problem, size)
        live = _rebuilt(problem, win, picked, count)
        active, taken = ~finished, np.zeros(batch, np.int64)
        for _ in range(max_out - int(count[active].min())):
            pick = live.argmax(1)
            score, index = live[rows, pick], win.index[rows, pick]
            # A selection stands while it beats the best box left out; the round ends for an image at
            # the first that does not (its window must grow) or when its window has nothing left.
            active &= (score > threshold) & (order_keys(score, index, problem.total) > win.bound)
            if not active.any():
                break
            at = (rows[active], (count + taken)[active])
            picked[at], picked_scores[at] = index[active], score[active]
            taken += active
            active &= count + taken < max_out
            live = _suppressed(config, win, pick, live)
        count += taken
        finished = (count == max_out) | (win.bound_score <= threshold)
        size = min(size * WINDOW_GROWTH, problem.total)
    width = int(count.max()) if batch else 0
    return (torch.from_numpy(picked[:, :width]).to(scores.device),
            torch.from_numpy(picked_scores[:, :width]).to(scores.device))
