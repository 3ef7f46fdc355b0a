"""``efficientdet serve`` under load on this machine, beside the offline end-to-end timing.

Starts ``efficientdet serve`` (a subprocess on 127.0.0.1, a free port) with random weights whose
scores spread as a trained model's do (:func:`efficientdet.benchmark.spread_random_weights`),
sends the JPEG that ``efficientdet benchmark --end-to-end`` decodes (640×480, quality 90) from
1, 4, 16 and 64 concurrent clients, and prints per level: throughput, p50 / p90 / p99 latency, the
mean batch size the server formed (from its ``/metrics``) and the errors. Then, in the same run:

* at 16 clients, served throughput against the offline end-to-end throughput
  (:func:`efficientdet.benchmark.run_benchmark`, what ``efficientdet benchmark --end-to-end`` runs)
  on the same backend, threads and weights, at the batch size the server formed, alternating
  (``--rounds``); and the same with batching off (``--max-batch-size 1``) against offline batch 1;
* a soak at 16 clients (``--soak-seconds``): errors, and the server's resident memory after
  warm-up against the end;
* an overload: 64 clients (starting over the first second, each waiting what Retry-After says
  after a 503) against ``--max-queue 32``: how many get 503, with Retry-After, how fast (p50 /
  p99), whether the accepted ones complete and ``/readyz`` stays ready throughout; once more with
  ``--worker-nice`` (``--overload-nice``, 10).

Everything is bounded (requests per level, seconds per level) and stays on 127.0.0.1.

    python benchmarks/bench_serve.py [--model efficientdet-d0] [--backend eager|onnxruntime] [--threads 2]
        [--requests 48] [--rounds 3] [--soak-seconds 180] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families
from torchvision.io import encode_jpeg

from efficientdet import create_model
from efficientdet.benchmark import machine_line, run_benchmark, spread_random_weights, synthetic_image

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_metrics(url: str) -> dict[str, float]:
    """Unlabelled samples of ``/metrics`` by name (batch-size sum and count, queue depth)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextlib.contextmanager
def serving(weights: Path, args: argparse.Namespace, log: Path, *options: str) -> Iterator[tuple[str, int]]:
    """``efficientdet serve`` on a free port of 127.0.0.1 until ready; yields its URL and pid."""
    port = free_port()
    command = [sys.executable, "-m", "efficientdet.cli", "serve", "--model", args.model, "--weights", str(weights),
               "--backend", args.backend, "--threads", str(args.threads), "--host", HOST, "--port", str(port),
               "--worker-nice", str(args.worker_nice), "--log-level", "warning", *options]
    url = f"http://{HOST}:{port}"
    with open(log, "a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not get ready:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(120)


class Record:
    """Each answer's status, latency (s) and Retry-After header."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, float, str | None]] = []
        self.start = self.end = 0.0

    def latencies(self, status: int | None = 200) -> list[float]:
        return [t for s, t, _ in self.answers if status is None or s == status]


async def post(client: httpx.AsyncClient, url: str, image: bytes, record: Record) -> int:
    start = time.perf_counter()
    try:
        response = await client.post(url + "/v1/detect", content=image, headers={"Content-Type": "image/jpeg"})
        status, retry = response.status_code, response.headers.get("Retry-After")
    except httpx.HTTPError:
        status, retry = 0, None  # no answer at all
    record.answers.append((status, time.perf_counter() - start, retry))
    return status


@contextlib.asynccontextmanager
async def connected(url: str, clients: int):
    """``clients`` independent clients, one connection each, opened (``/healthz``) before any
    timing. One shared httpx pool would not do: it scans all its connections for every request,
    which at 64 connections costs the load generator more CPU than the requests do."""
    async with contextlib.AsyncExitStack() as stack:
        pool = [await stack.enter_async_context(httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=300))
                for _ in range(clients)]
        await asyncio.gather(*(client.get(url + "/healthz") for client in pool))
        yield pool


async def load(url: str, image: bytes, clients: int, requests: int, seconds: float) -> Record:
    """``clients`` clients, each sending its next request when its last is answered, until
    ``requests`` are sent or ``seconds`` have passed."""
    record, sent = Record(), 0
    deadline = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            sent += 1
            await post(client, url, image, record)

    async with connected(url, clients) as pool:
        record.start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for client in pool))
        record.end = time.perf_counter()
    return record


def level(url: str, image: bytes, clients: int, requests: int, seconds: float) -> dict[str, float]:
    """One load level's figures; the mean batch size from the server's own batch histogram."""
    before = server_metrics(url)
    record = asyncio.run(load(url, image, clients, requests, seconds))
    after = server_metrics(url)
    ok = record.latencies()
    batches = after["efficientdet_batch_size_count"] - before["efficientdet_batch_size_count"]
    images = after["efficientdet_batch_size_sum"] - before["efficientdet_batch_size_sum"]
    ms = [1e3 * t for t in ok] or [float("nan")]
    return {"clients": clients, "requests": len(record.answers), "completed": len(ok),
            "seconds": record.end - record.start, "throughput": len(ok) / (record.end - record.start),
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_batch": images / batches if batches else float("nan"),
            "errors": len(record.answers) - len(ok)}


def soak(url: str, pid: int, image: bytes, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` clients for ``seconds``, the server's resident memory sampled twice a second:
    its peak in the second fifth (after warm-up) against its peak in the last fifth."""
    async def run() -> tuple[Record, list[tuple[float, float]]]:
        samples = []
        task = asyncio.ensure_future(load(url, image, clients, 10**9, seconds))
        start = time.perf_counter()
        while not task.done():
            samples.append((time.perf_counter() - start, rss_mb(pid)))
            await asyncio.sleep(0.5)
        return await task, samples

    record, samples = asyncio.run(run())
    warm = max(m for t, m in samples if seconds / 5 <= t < 2 * seconds / 5)
    end = max(m for t, m in samples if t >= 4 * seconds / 5)
    return {"seconds": seconds, "requests": len(record.answers), "errors": len(record.answers) - len(record.latencies()),
            "rss_warm_mb": warm, "rss_end_mb": end, "rss_growth": end / warm - 1}


def overload(url: str, image: bytes, clients: int, requests: int, seconds: float) -> dict[str, float]:
    """``clients`` clients against a smaller queue, starting over the first second, each waiting
    what Retry-After says after a 503; ``/readyz`` polled throughout."""
    async def run() -> tuple[Record, list[tuple[int, float]]]:
        record, ready, sent = Record(), [], 0
        deadline = time.perf_counter() + seconds

        async def client_loop(i: int, client: httpx.AsyncClient) -> None:
            nonlocal sent
            await asyncio.sleep(i / clients)
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                if await post(client, url, image, record) == 503:
                    await asyncio.sleep(float(record.answers[-1][2] or 1))

        async def probe(client: httpx.AsyncClient) -> None:
            while sent < requests and time.perf_counter() < deadline:
                start = time.perf_counter()
                ready.append(((await client.get(url + "/readyz")).status_code, time.perf_counter() - start))
                await asyncio.sleep(0.25)

        async with connected(url, clients + 1) as pool:
            await asyncio.gather(probe(pool[-1]), *(client_loop(i, c) for i, c in enumerate(pool[:-1])))
        return record, ready

    record, ready = asyncio.run(run())
    refused = [(t, r) for s, t, r in record.answers if s == 503]
    accepted = record.latencies()
    ms = [1e3 * t for t, _ in refused] or [float("nan")]
    return {"clients": clients, "requests": len(record.answers), "accepted": len(accepted), "refused": len(refused),
            "refused_with_retry_after": sum(r is not None for _, r in refused),
            "refused_p50_ms": float(np.percentile(ms, 50)), "refused_p99_ms": float(np.percentile(ms, 99)),
            "other": len(record.answers) - len(accepted) - len(refused),
            "readyz_checks": len(ready), "readyz_not_ready": sum(s != 200 for s, _ in ready),
            "readyz_p50_ms": float(np.percentile([1e3 * t for _, t in ready], 50)),
            "readyz_p99_ms": float(np.percentile([1e3 * t for _, t in ready], 99))}


def compare(url: str, image: bytes, model, args: argparse.Namespace, clients: int, rounds: int,
            requests: int) -> dict[str, float]:
    """Served throughput at ``clients`` against offline end to end (:func:`run_benchmark`, what
    ``efficientdet benchmark --end-to-end`` runs: same backend, threads and weights) at the batch
    size the server formed in the first round, alternating ``rounds`` times, so that a neighbour's
    load falls on both alike. Throughput = images / seconds summed over the rounds."""
    served = [0.0, 0.0]
    offline = [0.0, 0.0]
    batch = None
    for _ in range(rounds):
        row = level(url, image, clients, requests, args.seconds)
        served[0] += row["completed"]
        served[1] += row["seconds"]
        batch = batch or max(1, round(row["mean_batch"]))
        calls = max(2, -(-requests // batch))
        result = run_benchmark(model, args.backend, batch, args.threads, "cpu", end_to_end=True, warmup=1,
                               iterations=calls, weights="random, scores spread")
        offline[0] += batch * calls
        offline[1] += result.mean_ms * calls / 1e3
    return {"clients": clients, "rounds": rounds, "batch": batch, "served": served[0] / served[1],
            "offline": offline[0] / offline[1], "ratio": (served[0] / served[1]) / (offline[0] / offline[1])}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    body = ["| " + " | ".join(format(row[key], fmt) for key, _, fmt in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


LEVEL_COLUMNS = [("clients", "clients", "d"), ("requests", "requests", "d"), ("throughput", "images/s", ".2f"),
                 ("p50_ms", "p50 ms", ".0f"), ("p90_ms", "p90 ms", ".0f"), ("p99_ms", "p99 ms", ".0f"),
                 ("mean_batch", "mean batch", ".2f"), ("errors", "errors", "d")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--backend", choices=("eager", "onnxruntime"), default="eager")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker-nice", type=int, default=0, help="efficientdet serve --worker-nice")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout-ms", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=48, help="per level (at least 2 per client)")
    parser.add_argument("--seconds", type=float, default=150.0, help="per level, at most")
    parser.add_argument("--rounds", type=int, default=3, help="served / offline alternations of the comparison "
                                                                "(0: no comparison)")
    parser.add_argument("--soak-seconds", type=float, default=180.0, help="0: no soak")
    parser.add_argument("--overload-queue", type=int, default=32)
    parser.add_argument("--overload-nice", type=int, default=10,
                        help="also run the overload with the model and decoding this much below the loop (0: not)")
    parser.add_argument("--json", help="also write every figure here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    report: dict = {"model": args.model, "backend": args.backend, "threads": args.threads,
                    "worker_nice": args.worker_nice, "load_before": os.getloadavg()}
    print(machine_line(args.threads))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in report['load_before'])} "
          f"(a shared machine: other jobs run beside this one)")
    torch.manual_seed(0)
    model = spread_random_weights(create_model(args.model).eval())
    image = encode_jpeg(synthetic_image(), quality=90).numpy().tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model"
        if args.backend == "onnxruntime":
            from efficientdet.export import export_model

            weights = export_model(model, weights.with_suffix(".onnx"), "onnx")
        else:
            from efficientdet.weights import save_safetensors

            weights = save_safetensors(model, weights.with_suffix(".safetensors"))
        log = Path(tmp) / "serve.log"
        batching = ["--max-batch-size", str(args.max_batch_size), "--batch-timeout-ms", str(args.batch_timeout_ms)]

        # 64 queued requests at D0's pace on a small CPU take longer than the default 30 s to answer:
        # the levels measure latency, not the request timeout.
        patient = ["--request-timeout", "600"]
        with serving(weights, args, log, *batching, "--max-queue", "64", *patient) as (url, pid):
            report["levels"] = [level(url, image, c, max(args.requests, 2 * c), args.seconds) for c in args.clients]
            if args.rounds:
                report["batched"] = compare(url, image, model, args, 16, args.rounds, 32)
            if args.soak_seconds:
                report["soak"] = soak(url, pid, image, 16, args.soak_seconds)
        if args.rounds:
            with serving(weights, args, log, "--max-batch-size", "1", "--max-queue", "64", *patient) as (url, _):
                report["unbatched"] = compare(url, image, model, args, 16, args.rounds, 32)
        overloaded = [*batching, "--max-queue", str(args.overload_queue), *patient]
        report["overload"] = []
        for nice in dict.fromkeys([args.worker_nice, args.overload_nice or args.worker_nice]):
            with serving(weights, argparse.Namespace(**{**vars(args), "worker_nice": nice}), log, *overloaded) as (url, _):
                report["overload"].append({"worker_nice": nice, **overload(url, image, 64, max(args.requests, 256),
                                                                           args.seconds)})
    report["load_after"] = os.getloadavg()

    print(f"\n{args.model}, {args.backend}, {args.threads} threads, worker nice {args.worker_nice}; batching: max "
          f"{args.max_batch_size}, {args.batch_timeout_ms:g} ms\n")
    print(table(report["levels"], LEVEL_COLUMNS))
    for name, what in (("batched", "batching on"), ("unbatched", "batching off (--max-batch-size 1)")):
        if name not in report:
            continue
        c = report[name]
        print(f"{what}, {c['clients']} clients: served {c['served']:.2f} images/s; offline end to end at batch "
              f"{c['batch']}: {c['offline']:.2f} images/s → {c['ratio']:.2f}× ({c['rounds']} alternations)")
    s = report.get("soak")
    print("soak: not run" if s is None else
          f"soak, 16 clients, {s['seconds']:.0f} s: {s['requests']} requests, {s['errors']} errors; resident "
          f"memory peak {s['rss_warm_mb']:.0f} MB after warm-up → {s['rss_end_mb']:.0f} MB at the end "
          f"({100 * s['rss_growth']:+.1f} %)")
    for o in report["overload"]:
        print(f"overload, 64 clients, queue {args.overload_queue}, worker nice {o['worker_nice']}: {o['requests']} "
              f"requests, {o['accepted']} answered, "
              f"{o['refused']} refused with 503 ({o['refused_with_retry_after']} with Retry-After; p50 "
              f"{o['refused_p50_ms']:.0f} ms, p99 {o['refused_p99_ms']:.0f} ms), {o['other']} other; /readyz not "
              f"ready {o['readyz_not_ready']} of {o['readyz_checks']} checks (answered in p50 "
              f"{o['readyz_p50_ms']:.0f} ms, p99 {o['readyz_p99_ms']:.0f} ms: the machine's floor under this load)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in report['load_after'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
