"""Greedy NMS — hard, or gaussian soft-NMS (Bodla et al.) — exact, batched, and bounded as TF's is.

Both kinds select boxes one at a time, each the best remaining by (current score, then lower
index), and a score only ever goes down. TF's ``NonMaxSuppressionV5`` stops after
``max_output_size`` selections and re-scores a candidate only when it reaches the top (lazily),
so its cost is bounded by max_detections × candidates whatever the scores. This one works the
same way, a window of candidates at a time:

* Every box has an *upper bound* of its current score: its score as last computed (at first, its
  original score). A round takes each image's ``window`` boxes with the highest bounds, brings
  their scores up to date with the selections made since (each decay applied in order, so the
  roundings are those of step-by-step NMS), and runs the greedy on them.
* A selection stands while it beats the best bound left out of the window: NMS over every box
  would make it too. The round ends at the first that does not; the window's scores become
  their boxes' bounds, and the next round takes the boxes with the highest bounds then.
* An image is finished with ``max_detections`` selections, or when nothing left out of the window
  passes the score threshold. A round that selects little grows the window (``WINDOW_GROWTH``×),
  so that the number of rounds stays small whatever the scores.

Ties in score break by the lower index, everywhere the same, so the result equals the greedy over
every box to the bit, and tied scores (an untrained model's) no longer make it compare every pair.

Written with numpy on the host rather than torch: the greedy is ~``max_detections`` steps of a
dozen operations on small arrays, where a numpy call costs several times less than a torch one;
inputs on a GPU come over once per call. Where numba is installed (the ``fast`` extra), the lazy
greedy of :mod:`efficientdet.nms_kernel` runs instead: the same selections and scores, to the bit,
without a call's overhead per operation.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import numpy as np
import torch

from .config import PostprocessConfig

# Boxes per image in a window: enough for most selections of a trained model in one round.
WINDOW = 512
WINDOW_GROWTH = 8
# A round that adds fewer selections than this to an unfinished image grows the window.
MIN_ROUND_SELECTIONS = 8
# The score of a selected or hard-suppressed box: below every score and every threshold (the
# official "no threshold" is -inf). Decays are never 0 (see soft_decay), so it stays -inf.
DEAD = -np.inf


def box_planes(boxes: np.ndarray) -> np.ndarray:
    """xyxy ``[..., 4]`` → ``[5, ...]``: planes x1, y1, x2, y2 and the area, each contiguous (the
    element-wise operations of an IoU then run on contiguous memory)."""
    x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
    return np.ascontiguousarray(np.stack([x1, y1, x2, y2, np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)]))


TINY = np.finfo(np.float32).smallest_subnormal


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes given as :func:`box_planes` ``[5, ...]`` (broadcast against each other), 0 where
    the union is empty. Every IoU the greedy uses comes from here, with the same operations in the
    same order, so a pair's IoU rounds the same in a step and in bringing a window up to date."""
    w = np.minimum(a[2], b[2]) - np.maximum(a[0], b[0])
    h = np.minimum(a[3], b[3]) - np.maximum(a[1], b[1])
    inter = np.maximum(w, 0, out=w) * np.maximum(h, 0, out=h)
    # The union is >= 0; where it is 0 so is the intersection, and 0 / the smallest float is 0.
    return inter / np.maximum(a[4] + b[4] - inter, TINY)


def soft_decay(iou: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-IoU² / σ), the one expression both a step and bringing a window up to date use; floored
    at the smallest float (only a σ below 0.01 reaches it) so that -inf × decay is never NaN.
    The exp is float64's, rounded to float32: numpy's float32 exp and libm's (the compiled
    kernel's) often differ in the last bit; float64's, rounded, agree between them."""
    decay = np.exp((iou * iou * np.float32(-1 / sigma)).astype(np.float64)).astype(np.float32)
    return np.maximum(decay, TINY, out=decay)


def order_keys(scores: np.ndarray, index: np.ndarray, total: int) -> np.ndarray:
    """int64 keys of one strict order: higher float32 score first, then lower index (< ``total``)."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32).astype(np.int64)
    bits = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: reverse their bit order
    return (bits << 32) | (total - 1 - index)


BoxSource = torch.Tensor | Callable[[torch.Tensor | None], torch.Tensor]


class _State:
    """One call's boxes, groups, and each box's score bound, on the host, ``[B, N, ...]``."""

    def __init__(self, boxes: BoxSource, scores: torch.Tensor, classes: torch.Tensor | None,
                 config: PostprocessConfig):
        self.config = config
        self.bound = scores.detach().to("cpu", torch.float32).numpy().copy()  # [B, N]
        self.batch, self.total = self.bound.shape
        self.rows = np.arange(self.batch)[:, None]
        self.boxes_at = boxes if callable(boxes) else lambda index: boxes if index is None else boxes.gather(
            1, index.to(boxes.device)[..., None].expand(-1, -1, 4))
        self.groups = None if config.class_agnostic or classes is None else classes.detach().cpu().numpy()
        self.planes = None  # [5, B, N] when every box is needed up front, else made per window
        if config.method == "gaussian" and self.groups is not None:
            # Soft-NMS keeps classes apart by moving each to its own region, fixed here on every box
            # because the shift's size changes how the IoUs round.
            every = self._boxes(np.broadcast_to(np.arange(self.total), self.bound.shape))
            shift = self.groups.astype(np.float32) * (np.abs(every).max(initial=0) * 2 + 1)
            self.planes = box_planes(every + shift[..., None])  # float32, as every other box's
            self.groups = None
        self.seen = np.zeros(self.bound.shape, np.int64)  # selections each bound has been decayed by
        self.picked = np.zeros((self.batch, config.max_detections), np.int64)
        self.picked_scores = np.zeros((self.batch, config.max_detections), np.float32)
        self.count = np.zeros(self.batch, np.int64)

    @functools.cached_property
    def keys(self) -> np.ndarray:
        """Each box's bound as an :func:`order_keys` key ``[B, N]``: made when the windows first need
        them (the compiled kernel keeps its own order and never does), then kept up to date."""
        return order_keys(self.bound, np.arange(self.total)[None], self.total)

    def update(self, index: np.ndarray, scores: np.ndarray, keys: np.ndarray | None = None) -> None:
        """The boxes at ``index [B, K]`` have these current scores (as ``keys``) after ``count`` selections."""
        self.bound[self.rows, index] = scores
        self.keys[self.rows, index] = order_keys(scores, index, self.total) if keys is None else keys
        self.seen[self.rows, index] = self.count[:, None]

    def _boxes(self, index: np.ndarray) -> np.ndarray:
        boxes = self.boxes_at(torch.from_numpy(np.require(index, requirements=["C", "W"])))
        return boxes.detach().to("cpu", torch.float32).numpy()

    def every_plane(self) -> np.ndarray:
        """:func:`box_planes` ``[5, B, N]`` of every box, float32 (what the compiled kernel reads)."""
        if self.planes is None:
            boxes = self.boxes_at(None).detach().to("cpu", torch.float32).numpy()
            return box_planes(boxes.reshape(self.batch, self.total, 4))
        return np.ascontiguousarray(self.planes, np.float32)

    def planes_at(self, index: np.ndarray) -> np.ndarray:
        """:func:`box_planes` ``[5, B, K]`` of the boxes at ``index [B, K]``."""
        return box_planes(self._boxes(index)) if self.planes is None else self.planes[:, self.rows, index]


class _Window:
    """Each image's ``size`` boxes of highest bound, in index order ``[B, K]``, and the best bound
    (as a key, and as a score) of the boxes left out."""

    def __init__(self, state: _State, size: int):
        total, rows = state.total, state.rows
        self.rows = rows[:, 0]
        self.batch_rows = rows
        if size >= total:
            self.index = np.broadcast_to(np.arange(total), state.keys.shape)
            self.bound = np.full(state.batch, np.iinfo(np.int64).min)  # nothing left out
            self.bound_score, self.bound_index = np.full(state.batch, -np.inf, np.float32), np.zeros(state.batch, int)
        else:
            top = np.argpartition(state.keys, total - size - 1, axis=1)[:, total - size - 1:]
            out = state.keys[rows, top].argmin(1)[:, None]  # the (size + 1)-th: left out
            left_out = top[state.rows[:, 0], out[:, 0]]
            self.bound, self.bound_score = state.keys[rows[:, 0], left_out], state.bound[rows[:, 0], left_out]
            self.bound_index = left_out
            self.index = np.sort(top[np.arange(size + 1)[None] != out].reshape(state.batch, size), 1)
        self.planes = state.planes_at(self.index)  # [5, B, K]
        self.groups = None if state.groups is None else state.groups[rows, self.index]

    def narrowed(self, positions: np.ndarray) -> "_Window":
        """The same window's boxes at ``positions [B, K']`` only, with the same bound."""
        sub = copy.copy(self)
        sub.index = self.index[self.batch_rows, positions]
        sub.planes = self.planes[:, self.batch_rows, positions]
        sub.groups = None if self.groups is None else self.groups[self.batch_rows, positions]
        return sub


def _current(state: _State, win: _Window) -> np.ndarray:
    """The window's current scores ``[B, K]``: each bound decayed (soft) or suppressed (hard) by the
    selections made since it was computed. The decays are multiplied in the order of the
    selections (1 for one already counted), so the products round as the steps' do."""
    config, rows = state.config, state.rows
    live = state.bound[rows, win.index]
    m = int(state.count.max())
    seen = state.seen[rows, win.index]
    if m == 0 or (seen[:, None] >= state.count[:, None, None]).all():
        return live
    selected = state.picked[:, :m]
    iou = pairwise_iou(state.planes_at(selected)[..., None], win.planes[:, :, None])  # [B, M, K]
    j = np.arange(m)[None, :, None]
    pending = (j >= seen[:, None]) & (j < state.count[:, None, None])
    if config.method == "gaussian":
        decay = np.where(pending, soft_decay(iou, config.soft_nms_sigma), np.float32(1))
        live = live.copy()
        for j in range(m):  # in order, as the steps multiplied
            live *= decay[:, j]
        return live
    over = pending & (iou > config.iou_threshold)
    if state.groups is not None:
        over &= state.groups[rows, selected][:, :, None] == win.groups[:, None]
    return np.where(over.any(1), np.float32(DEAD), live)


def _step(config: PostprocessConfig, win: _Window, pick: np.ndarray, live: np.ndarray) -> None:
    """Select window position ``pick [B]`` in ``live [B, K]``, in place: decay (soft) or suppress
    (hard) the others by their IoU with it."""
    rows = win.rows
    chosen = win.planes[:, rows, pick][..., None]  # [5, B, 1]
    iou = pairwise_iou(chosen, win.planes)
    if config.method == "gaussian":
        np.multiply(live, soft_decay(iou, config.soft_nms_sigma), out=live)
    else:
        over = iou > config.iou_threshold
        if win.groups is not None:
            over &= win.groups == win.groups[rows, pick][:, None]
        live[over] = DEAD
    live[rows, pick] = DEAD


def _contenders(state: _State, win: _Window) -> tuple[_Window, np.ndarray]:
    """Bring the window's scores up to date, record them as its boxes' bounds, and narrow it to the
    boxes that beat the bound left out: only those can be selected before the round ends, since
    scores only go down. Contenders keep index order, first in each row (any padding after them)."""
    live = _current(state, win)
    keys = order_keys(live, win.index, state.total)
    state.update(win.index, live, keys)
    contender = keys > win.bound[:, None]
    width = max(int(contender.sum(1).max()), 1)
    positions = np.argsort(~contender, axis=1, kind="stable")[:, :width]
    return win.narrowed(positions), live[win.batch_rows, positions]


def _round(state: _State, window: _Window, finished: np.ndarray) -> np.ndarray:
    """Run the greedy on the window until every image's next selection fails to beat its bound;
    record the selections that stand, and the scores they leave as the boxes' bounds. Returns how
    many selections each image gained."""
    config, threshold = state.config, state.config.score_threshold
    win, live = _contenders(state, window)
    rows = win.rows
    snapshot = live.copy()
    room = np.where(finished, 0, config.max_detections - state.count)
    active, taken = room > 0, np.zeros(state.batch, np.int64)
    picks, scores = [], []
    first_full = int(room[active].min()) if active.any() else 0
    # A selection stands above the threshold and, for soft-NMS, beats the bound left out: its
    # (score, lower index) above the bound's, the order of order_keys (scores are never -0.0). Hard
    # NMS never lowers a score, so every box of its window beats the bound.
    soft = config.method == "gaussian"
    limit = np.maximum(win.bound_score, threshold) if soft else np.full(state.batch, threshold, np.float32)
    for step in range(int(room.max())):
        pick = live.argmax(1)
        score = live[rows, pick]
        stands = active & (score > limit)
        stopped = active & ~stands
        if stopped.any():
            if soft:  # a tie with the bound's score stands when its index is lower
                stands |= stopped & (score == win.bound_score) & (score > threshold) & (
                    win.index[rows, pick] < win.bound_index)
                stopped &= ~stands
            snapshot[stopped] = live[stopped]
            active = stands
            if not active.any():
                break
        picks.append(pick)
        scores.append(score)
        taken += active
        _step(config, win, pick, live)
        if step + 1 >= first_full:
            full = active & (taken == room)
            snapshot[full] = live[full]
            active &= ~full
            if not active.any():
                break
    snapshot[active] = live[active]
    if picks:  # each image's standing selections are its first ``taken`` steps
        steps, images = np.nonzero(np.arange(len(picks))[:, None] < taken)
        at = (images, state.count[images] + steps)
        state.picked[at] = win.index[images, np.stack(picks)[steps, images]]
        state.picked_scores[at] = np.stack(scores)[steps, images]
    state.count += taken
    state.update(win.index, snapshot)
    return taken


def compiled_greedy() -> Callable | None:
    """:func:`efficientdet.nms_kernel.greedy` when numba is installed (the ``fast`` extra), else None."""
    try:
        from .nms_kernel import greedy
    except ImportError:
        return None
    return greedy


def nms(boxes: BoxSource, scores: torch.Tensor, classes: torch.Tensor | None, config: PostprocessConfig,
        window: int = WINDOW, compiled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``boxes [B, N, 4]`` xyxy, ``scores [B, N]``, ``classes [B, N]`` (used unless the config is
    class-agnostic) → selected indices and scores ``[B, ≤max_detections]``, best first, padded
    with index 0 and score 0. The configured NMS over every box, run on windows (module docstring),
    or by the compiled kernel (``compiled``: None uses it when numba is installed) — the same
    selections either way.

    ``boxes`` may instead be a function ``index [B, K] → boxes [B, K, 4]`` (``None`` → every box
    ``[B, N, 4]``): only the boxes the windows reach are then made (decoded), often a few hundred
    of a detector's tens of thousands (the compiled kernel takes every box: decoding them all costs
    less than one round of numpy).
    """
    state = _State(boxes, scores, classes, config)
    greedy = compiled_greedy() if compiled in (None, True) else None
    if compiled and greedy is None:
        raise ImportError("compiled NMS needs numba: pip install 'efficientdet[fast]'")
    if greedy is not None:
        return _compiled(state, greedy, scores.device)
    finished = np.full(state.batch, state.total == 0)
    size = min(window, state.total)
    while not finished.all():
        win = _Window(state, size)
        taken = _round(state, win, finished)
        finished = (state.count == config.max_detections) | (win.bound_score <= config.score_threshold)
        if (taken[~finished] < MIN_ROUND_SELECTIONS).any():
            size = min(size * WINDOW_GROWTH, state.total)
    return _selected(state.picked, state.picked_scores, state.count, scores.device)


def _selected(picked: np.ndarray, picked_scores: np.ndarray, count: np.ndarray,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's selections ``[B, max_detections]`` → tensors as wide as the most selections."""
    width = int(count.max()) if len(count) else 0
    return torch.from_numpy(picked[:, :width]).to(device), torch.from_numpy(picked_scores[:, :width]).to(device)


def _compiled(state: _State, greedy: Callable, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every box's planes made once, then the compiled lazy greedy over them."""
    config = state.config
    planes = state.every_plane() if state.total else np.zeros((5, state.batch, 0), np.float32)
    groups = np.zeros((state.batch, 0), np.int64) if state.groups is None else state.groups.astype(np.int64)
    picked, picked_scores, count = greedy(
        planes, state.bound, groups, config.method == "gaussian",
        np.float32(config.iou_threshold), np.float32(-1 / config.soft_nms_sigma),
        np.float32(config.score_threshold), config.max_detections)
    return _selected(picked, picked_scores, count, device)
