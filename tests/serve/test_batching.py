"""The dynamic batcher (efficientdet.serve.batching) with a stand-in model: batch forming, the
queue bound, timeouts, failures and the draining close."""

import asyncio
import os
import sys
import threading
import time

import pytest

from efficientdet.serve.batching import Batcher, Closed, QueueFull, niced


class Model:
    """Doubles its inputs; records each batch and the thread it ran on; waits on ``gate`` if set."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False):
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.gate, self.fail = gate, fail

    def __call__(self, items):
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("broken")
        return [2 * i for i in items]


async def detect(batcher: Batcher, item, timeout: float | None = 10.0):
    with batcher.admit() as slot:
        result, _job = await batcher.submit(slot, item, timeout)
    return result


def test_requests_arriving_together_share_a_batch_and_get_their_own_results():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch_size=4, batch_timeout=0.5)
        batcher.start()
        results = await asyncio.gather(*(detect(batcher, i) for i in range(6)))
        await batcher.close()
        return results

    assert asyncio.run(main()) == [0, 2, 4, 6, 8, 10]
    assert model.batches == [[0, 1, 2, 3], [4, 5]]  # full batches go at once; the rest after the timeout
    assert model.threads and threading.main_thread().name not in model.threads  # never on the event loop


def test_without_a_timeout_a_batch_takes_what_is_queued():
    gate = threading.Event()
    model = Model(gate)

    async def main():
        batcher = Batcher(model, max_batch_size=8, batch_timeout=0)
        batcher.start()
        first = asyncio.ensure_future(detect(batcher, 0))
        await asyncio.sleep(0.05)  # the first runs alone; the next three queue behind it
        rest = [asyncio.ensure_future(detect(batcher, i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *rest)
        await batcher.close()

    asyncio.run(main())
    assert model.batches == [[0], [1, 2, 3]]


def test_a_full_queue_refuses_at_once_with_a_retry_estimate():
    gate = threading.Event()
    model = Model(gate)

    async def main():
        batcher = Batcher(model, max_batch_size=1, batch_timeout=0, max_queue=2)
        batcher.start()
        running = asyncio.ensure_future(detect(batcher, 0))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(detect(batcher, i)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        assert batcher.depth == 2
        start = time.perf_counter()
        with pytest.raises(QueueFull) as refused:
            batcher.admit()
        assert time.perf_counter() - start < 0.01 and refused.value.retry_after >= 1
        gate.set()
        assert await asyncio.gather(running, *queued) == [0, 2, 4]
        assert batcher.depth == 0
        batcher.admit().__exit__(None, None, None)  # room again; a slot given back unused
        assert batcher.depth == 0
        await batcher.close()

    asyncio.run(main())


def test_a_request_that_times_out_in_the_queue_is_dropped_from_its_batch():
    gate = threading.Event()
    model = Model(gate)

    async def main():
        batcher = Batcher(model, max_batch_size=2, batch_timeout=0)
        batcher.start()
        running = asyncio.ensure_future(detect(batcher, 0))
        await asyncio.sleep(0.05)
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await detect(batcher, 1, timeout=0.05)
        waiting = asyncio.ensure_future(detect(batcher, 2))
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(running, waiting) == [0, 4]
        await batcher.close()

    asyncio.run(main())
    assert model.batches == [[0], [2]]


def test_a_failing_batch_fails_its_requests_only():
    model = Model(fail=True)

    async def main():
        batcher = Batcher(model, max_batch_size=2, batch_timeout=0.2)
        batcher.start()
        outcomes = await asyncio.gather(detect(batcher, 1), detect(batcher, 2), return_exceptions=True)
        model.fail = False
        assert await detect(batcher, 3) == 6
        await batcher.close()
        return outcomes

    assert [str(o) for o in asyncio.run(main())] == ["broken", "broken"]


def test_close_drains_admitted_requests_then_refuses_new_ones():
    gate = threading.Event()
    model = Model(gate)

    async def main():
        batcher = Batcher(model, max_batch_size=2, batch_timeout=0, workers=2)
        batcher.start()
        pending = [asyncio.ensure_future(detect(batcher, i)) for i in range(5)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.05)
        with pytest.raises(Closed):
            batcher.admit()
        assert not closing.done()
        gate.set()
        await closing
        return await asyncio.gather(*pending)

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert len(model.threads) == 2  # two workers: two batches at once


@pytest.mark.parametrize("settings", [dict(max_batch_size=0), dict(max_queue=0), dict(workers=0),
                                      dict(batch_timeout=-1), dict(batch_timeout=float("nan"))])
def test_settings_are_checked(settings):
    with pytest.raises(ValueError):
        Batcher(Model(), **settings)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_niced_workers_run_below_the_event_loop():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen = []

    def model(items):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return items

    async def main():
        batcher = Batcher(model, thread_init=niced(5))
        batcher.start()
        await detect(batcher, 1)
        await batcher.close()

    asyncio.run(main())
    assert seen == [min(19, base + 5)] and os.getpriority(os.PRIO_PROCESS, 0) == base  # the loop's own is kept
    assert niced(0) is None
    with pytest.raises(ValueError, match="worker niceness"):
        niced(20)
