"""Dynamic batching: requests wait in one bounded queue; each worker takes up to ``max_batch_size``
of them, waiting at most ``batch_timeout`` for more once the first is there, and runs the batch
on a thread of its own, so the event loop never waits on the model.

A request holds its queue slot from :meth:`Batcher.admit` (before it decodes its image) until a
worker takes it: the queue bounds both the waiting work and the decoded images held in memory,
and a full queue is refused at once (:class:`QueueFull`) rather than after a decode.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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


def check_settings(max_batch_size: int, batch_timeout: float, max_queue: int, workers: int) -> None:
    if max_batch_size < 1 or max_queue < 1 or workers < 1 or not 0 <= batch_timeout < float("inf"):
        raise ValueError(f"max batch size ({max_batch_size}), max queue ({max_queue}) and workers ({workers}) "
                         f"must be >= 1, the batch timeout ({batch_timeout} s) >= 0")


class Batcher(Generic[Item, Result]):
    """``run_batch(items) -> results`` (one per item, in order) applied to batches of submitted items.

    ``on_batch(size, seconds)`` is told of each batch run, for metrics. Use inside a running event
    loop: :meth:`start`, then :meth:`admit` + :meth:`submit` per request, :meth:`close` to drain.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], max_batch_size: int = 8,
                 batch_timeout: float = 0.01, max_queue: int = 64, workers: int = 1,
                 on_batch: Callable[[int, float], None] = lambda size, seconds: None):
        check_settings(max_batch_size, batch_timeout, max_queue, workers)
        self.run_batch, self.on_batch = run_batch, on_batch
        self.max_batch_size, self.batch_timeout, self.max_queue = max_batch_size, batch_timeout, max_queue
        self.workers = workers
        self._jobs: collections.deque[Job[Item]] = collections.deque()
        self._admitted = 0  # slots held: requests admitted and not yet taken by a worker
        self._running = 0  # batches on the threads now
        self._batch_seconds = 0.0  # recent time per batch, for Retry-After
        self._closing = False
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="efficientdet-batch")
        self._tasks: list[asyncio.Task] = []

    @property
    def depth(self) -> int:
        """Requests admitted and not yet in a running batch (decoding or queued)."""
        return self._admitted

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{i}")
                       for i in range(self.workers)]

    def admit(self) -> Slot:
        """A queue slot for one request, or :class:`QueueFull` / :class:`Closed` at once."""
        if self._closing:
            raise Closed("the server is shutting down")
        if self._admitted >= self.max_queue:
            raise QueueFull(self.retry_after())
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
        """Run ``items`` as one batch on a worker thread, outside the queue (warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run_batch, items)

    async def close(self) -> None:
        """Take no new requests, finish the admitted ones, then stop the workers."""
        self._closing = True
        await self._idle.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def _release(self, count: int) -> None:
        self._admitted -= count
        if self._admitted == 0 and self._running == 0:
            self._idle.set()

    async def _take(self) -> list[Job[Item]]:
        """The next batch: waits for a first job, then up to ``batch_timeout`` for more."""
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = time.perf_counter() + self.batch_timeout
        while len(self._jobs) < self.max_batch_size and (left := deadline - time.perf_counter()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except (TimeoutError, asyncio.TimeoutError):
                break
        return [self._jobs.popleft() for _ in range(min(self.max_batch_size, len(self._jobs)))]

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            taken = await self._take()
            jobs = [job for job in taken if not job.future.done()]  # timed out while queued: dropped
            self._running += 1
            self._release(len(taken))
            try:
                if jobs:
                    await self._run(loop, jobs)
            finally:
                self._running -= 1
                self._release(0)

    async def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[Job[Item]]) -> None:
        start = time.perf_counter()
        for job in jobs:
            job.started, job.batch_size = start, len(jobs)
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, [job.item for job in jobs])
        except Exception as e:  # the model failed: every request of the batch gets the error
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        seconds = time.perf_counter() - start
        self._batch_seconds = seconds if self._batch_seconds == 0 else 0.8 * self._batch_seconds + 0.2 * seconds
        self.on_batch(len(jobs), seconds)
        for job, result in zip(jobs, results, strict=True):
            job.finished = start + seconds
            if not job.future.done():
                job.future.set_result(result)


class Slot:
    """A request's place in the queue: given back when a worker takes its job, or on leaving the
    ``with`` block without having queued one (a bad image, a failed decode)."""

    def __init__(self, batcher: Batcher[Any, Any]):
        self._batcher, self._held = batcher, True

    def queue(self, job: Job) -> None:
        if not self._held:
            raise RuntimeError("a slot queues one job")
        self._held = False  # the worker that takes the job gives the slot back
        self._batcher._jobs.append(job)
        self._batcher._arrived.set()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self._held = False
            self._batcher._release(1)
