"""Dynamic batching: requests wait in one bounded queue; each worker thread takes up to
``max_batch_size`` of them, waiting at most ``batch_timeout`` for more once the first is there,
and runs the batch, so the event loop never waits on the model.

The workers take their batches themselves, from a queue guarded by a condition variable, and
hand results back with ``call_soon_threadsafe``: a worker goes from one batch to the next without
waiting for the event loop, which on a busy machine would idle the model between batches (with
batching off, between every two images).

A request holds its queue slot from :meth:`Batcher.admit` (before it decodes its image) until a
worker takes it: the queue bounds both the waiting work and the decoded images held in memory,
and a full queue is refused at once (:class:`QueueFull`) rather than after a decode.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests; ``retry_after`` (s) is the time to clear it, estimated."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class Closed(Exception):
    """The batcher is shutting down and takes no new requests."""


class Job(Generic[Item]):
    """One request's item and the future its result goes to; ``queued``: when it entered the queue."""

    def __init__(self, item: Item, future: asyncio.Future):
        self.item, self.future, self.queued = item, future, time.perf_counter()
        self.started = self.finished = 0.0
        self.batch_size = 0


def niced(niceness: int) -> Callable[[], None] | None:
    """A thread initializer that lowers the calling thread's CPU priority by ``niceness`` (Linux,
    where each thread has its own): a server's model and decoding threads then yield the CPU to its
    event loop, which answers refusals and probes promptly while they are busy."""
    if niceness == 0:
        return None
    if not sys.platform.startswith("linux") or not 0 < niceness < 20:
        raise ValueError(f"worker niceness must be 0, or 1..19 on Linux (per-thread priorities); got {niceness}")
    return lambda: os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def check_settings(max_batch_size: int, batch_timeout: float, max_queue: int, workers: int) -> None:
    if max_batch_size < 1 or max_queue < 1 or workers < 1 or not 0 <= batch_timeout < float("inf"):
        raise ValueError(f"max batch size ({max_batch_size}), max queue ({max_queue}) and workers ({workers}) "
                         f"must be >= 1, the batch timeout ({batch_timeout} s) >= 0")


class Batcher(Generic[Item, Result]):
    """``run_batch(items) -> results`` (one per item, in order) applied to batches of submitted items.

    ``on_batch(size, seconds)`` is told of each batch run, for metrics; ``thread_init`` runs first
    on each worker thread (:func:`niced`). Use inside a running event loop: :meth:`start`, then
    :meth:`admit` + :meth:`submit` per request, :meth:`close` to drain. The counts (``depth``,
    batches running) change on the event loop's thread only.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], max_batch_size: int = 8,
                 batch_timeout: float = 0.01, max_queue: int = 64, workers: int = 1,
                 on_batch: Callable[[int, float], None] = lambda size, seconds: None,
                 thread_init: Callable[[], None] | None = None):
        check_settings(max_batch_size, batch_timeout, max_queue, workers)
        self.run_batch, self.on_batch, self.thread_init = run_batch, on_batch, thread_init
        self.max_batch_size, self.batch_timeout, self.max_queue = max_batch_size, batch_timeout, max_queue
        self.workers = workers
        self._jobs: collections.deque[Job[Item]] = collections.deque()
        self._arrived = threading.Condition()  # guards _jobs and _stopping
        self._stopping = False
        self._admitted = 0  # slots held: requests admitted and not yet taken by a worker
        self._running = 0  # batches taken and not yet answered
        self._batch_seconds = 0.0  # recent time per batch, for Retry-After
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def depth(self) -> int:
        """Requests admitted and not yet in a running batch (decoding or queued)."""
        return self._admitted

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = [threading.Thread(target=self._work, name=f"efficientdet-batch-{i}", daemon=True)
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def check_room(self) -> None:
        """:class:`QueueFull` / :class:`Closed` now if :meth:`admit` would refuse: a server can then
        refuse before it reads a body it would not use."""
        if self._closing:
            raise Closed("the server is shutting down")
        if self._admitted >= self.max_queue:
            raise QueueFull(self.retry_after())

    def admit(self) -> Slot:
        """A queue slot for one request, or :class:`QueueFull` / :class:`Closed` at once."""
        self.check_room()
        self._admitted += 1
        self._idle.clear()
        return Slot(self)

    def retry_after(self) -> int:
        """Whole seconds for the workers to clear a full queue at the recent batch time (at least 1)."""
        batches = math.ceil(self._admitted / self.max_batch_size / self.workers)
        return max(1, math.ceil(batches * self._batch_seconds))

    async def submit(self, slot: Slot, item: Item, timeout: float | None = None) -> tuple[Result, Job[Item]]:
        """``item``'s result and its :class:`Job` (timings, batch size); ``TimeoutError`` after
        ``timeout`` seconds in the queue and the batch (a job still queued is then dropped)."""
        job = Job(item, asyncio.get_running_loop().create_future())
        slot.queue(job)
        try:
            result = await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except (TimeoutError, asyncio.TimeoutError, asyncio.CancelledError):
            job.future.cancel()  # a worker skips it; a running batch's result for it is dropped
            raise
        return result, job

    async def run_now(self, items: Sequence[Item]) -> Sequence[Result]:
        """Run ``items`` as one batch on a thread of its own, outside the queue (warm-up)."""
        def run() -> Sequence[Result]:
            if self.thread_init is not None:
                self.thread_init()
            return self.run_batch(items)

        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def close(self) -> None:
        """Take no new requests, finish the admitted ones, then stop the workers."""
        self._closing = True
        await self._idle.wait()
        with self._arrived:
            self._stopping = True
            self._arrived.notify_all()
        for thread in self._threads:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _queue(self, job: Job[Item]) -> None:
        with self._arrived:
            self._jobs.append(job)
            self._arrived.notify()

    def _release(self, slots: int, batches: int = 0) -> None:
        self._admitted -= slots
        self._running += batches
        if self._admitted == 0 and self._running == 0:
            self._idle.set()

    def _take(self) -> list[Job[Item]] | None:
        """On a worker thread: the next batch, waiting for a first job, then up to ``batch_timeout``
        for more; None when stopping."""
        with self._arrived:
            while not self._jobs:
                if self._stopping:
                    return None
                self._arrived.wait()
            deadline = time.perf_counter() + self.batch_timeout
            while len(self._jobs) < self.max_batch_size and (left := deadline - time.perf_counter()) > 0:
                self._arrived.wait(left)
            return [self._jobs.popleft() for _ in range(min(self.max_batch_size, len(self._jobs)))]

    def _work(self) -> None:
        if self.thread_init is not None:
            self.thread_init()
        while (taken := self._take()) is not None:
            jobs = [job for job in taken if not job.future.done()]  # timed out while queued: dropped
            self._loop.call_soon_threadsafe(self._release, len(taken), 1)
            start = time.perf_counter()
            try:
                outcome: Sequence[Result] | Exception = self.run_batch([job.item for job in jobs]) if jobs else []
                if len(outcome) != len(jobs):
                    raise RuntimeError(f"run_batch gave {len(outcome)} results for {len(jobs)} items")
            except Exception as e:  # the model failed: every request of the batch gets the error
                outcome = e
            self._loop.call_soon_threadsafe(self._answer, jobs, outcome, start, time.perf_counter())

    def _answer(self, jobs: list[Job[Item]], outcome: Sequence[Result] | Exception, start: float,
                end: float) -> None:
        """On the event loop: each job's result (or the batch's error), the metrics, the counts."""
        if jobs and not isinstance(outcome, Exception):
            seconds = end - start
            self._batch_seconds = seconds if self._batch_seconds == 0 else 0.8 * self._batch_seconds + 0.2 * seconds
            self.on_batch(len(jobs), seconds)
        for i, job in enumerate(jobs):
            job.started, job.finished, job.batch_size = start, end, len(jobs)
            if job.future.done():
                continue
            if isinstance(outcome, Exception):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome[i])
        self._release(0, -1)


class Slot:
    """A request's place in the queue: given back when a worker takes its job, or on leaving the
    ``with`` block without having queued one (a bad image, a failed decode)."""

    def __init__(self, batcher: Batcher[Any, Any]):
        self._batcher, self._held = batcher, True

    def queue(self, job: Job) -> None:
        if not self._held:
            raise RuntimeError("a slot queues one job")
        self._held = False  # the worker that takes the job gives the slot back
        self._batcher._queue(job)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self._held = False
            self._batcher._release(1)
