"""Inference timing: warm-up, then the median and p90 of many timed calls, and what they imply.

By default one call is network + box decoding + NMS on a preprocessed batch, the work a server
does per request once images are decoded; ``end_to_end`` adds reading and decoding a JPEG and
the official preprocessing per image. FLOPs are :func:`efficientdet.profile.count_flops`'s
multiply-adds (the paper's "FLOPs"); the achieved rate counts 2 floating-point operations per
multiply-add, as hardware peak figures do.

NMS time depends on the scores: randomly initialised weights give almost equal scores
everywhere, the worst case for soft-NMS (every anchor is a candidate until the end), so time
NMS with trained weights (``weights=``) or hard NMS when the figure matters.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import PostprocessConfig
from .inference import Predictor
from .model import EfficientDet
from .profile import count_flops, count_parameters


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    model: str
    backend: str
    device: str
    precision: str
    nms: str
    batch_size: int
    image_size: tuple[int, int]
    threads: int
    end_to_end: bool
    warmup: int
    iterations: int
    median_ms: float  # per call (one batch)
    p90_ms: float
    mean_ms: float
    min_ms: float
    images_per_s: float  # batch_size / median
    peak_memory_mb: float  # CUDA: peak allocated; CPU: peak resident size of the whole process
    parameters: int
    flops: int  # multiply-adds per image, as `efficientdet info` and the paper count them
    gflops_per_s: float  # 2 · flops · images_per_s / 1e9

    def table(self) -> str:
        """A small human-readable table, one quantity per line."""
        h, w = self.image_size
        what = "end to end (decode + preprocess + network + NMS)" if self.end_to_end else "network + decode + NMS"
        rows = [
            ("model", f"{self.model} at {h}x{w}, batch {self.batch_size}"),
            ("backend", f"{self.backend} on {self.device} ({self.precision}, {self.threads} threads), {self.nms} NMS"),
            ("timed", f"{what}; {self.iterations} calls after {self.warmup} warm-up"),
            ("median", f"{self.median_ms:.2f} ms"),
            ("p90", f"{self.p90_ms:.2f} ms"),
            ("throughput", f"{self.images_per_s:.1f} images/s"),
            ("peak memory", f"{self.peak_memory_mb:.0f} MB"),
            ("parameters", f"{self.parameters:,}"),
            ("FLOPs", f"{self.flops / 1e9:.2f}B multiply-adds per image"),
            ("achieved", f"{self.gflops_per_s:.1f} GFLOP/s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def time_calls(step: Callable[[], Any], warmup: int, iterations: int, sync: Callable[[], None] = lambda: None,
               ) -> list[float]:
    """Milliseconds of each of ``iterations`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def synthetic_image(height: int = 480, width: int = 640, seed: int = 0) -> torch.Tensor:
    """A ``[3, H, W]`` uint8 test picture: smooth shapes plus noise, so JPEG coding costs what a photo's does."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    base = torch.stack([torch.sin(6 * x + 3 * y), torch.cos(5 * y - 2 * x), torch.sin(9 * x * y)])
    noise = torch.rand(3, height, width, generator=g) * 0.3
    return ((base * 0.35 + 0.5 + noise - 0.15).clamp(0, 1) * 255).to(torch.uint8)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def make_step(predictor: Predictor, batch_size: int, end_to_end: bool, workdir: Path) -> Callable[[], Any]:
    """The timed call: ``detect`` on a fixed preprocessed batch, or read + preprocess + detect."""
    from torchvision.io import encode_jpeg

    from .data.transforms import read_image

    image = synthetic_image()
    if end_to_end:
        path = workdir / "benchmark.jpg"
        path.write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
        return lambda: predictor.detect(*predictor.preprocess([read_image(path) for _ in range(batch_size)]))
    batch, scales = predictor.preprocess([image] * batch_size)
    return lambda: predictor.detect(batch, scales)


def build_predictor(model: EfficientDet, backend: str, device: torch.device, precision: str,
                    post: PostprocessConfig, threads: int, workdir: Path) -> Predictor:
    """A predictor for ``backend``; ONNX Runtime gets the model exported (raw outputs) into ``workdir``."""
    if backend != "onnxruntime":
        return Predictor.from_model(model, backend, device, precision, post)
    from .export import export_model

    if precision != "float32":
        raise ValueError("the onnxruntime backend runs the exported float32 model; drop --half / --bf16")
    path = export_model(model, workdir / "model.onnx", "onnx")
    return Predictor.from_onnx(path, device, post, threads=threads)


def run_benchmark(model: EfficientDet, backend: str = "eager", batch_size: int = 1, threads: int | None = None,
                  device: str | torch.device = "cpu", precision: str = "float32", nms: str | None = None,
                  end_to_end: bool = False, warmup: int = 5, iterations: int = 30) -> BenchmarkResult:
    """Time ``model`` on ``backend`` (see the module docstring); ``nms`` "soft" / "hard" overrides the config's."""
    if batch_size < 1 or warmup < 0 or iterations < 1:
        raise ValueError("batch_size and iterations must be >= 1, warmup >= 0")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    device = torch.device(device)
    post = model.config.postprocess
    if nms is not None:
        post = dataclasses.replace(post, method={"soft": "gaussian", "hard": "hard"}[nms])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    previous_threads = torch.get_num_threads()
    threads = threads or previous_threads
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            predictor = build_predictor(model, backend, device, precision, post, threads, Path(tmp))
            times = time_calls(make_step(predictor, batch_size, end_to_end, Path(tmp)), warmup, iterations, sync)
    finally:  # the caller's thread count, as it was
        torch.set_num_threads(previous_threads)
    median = statistics.median(times)
    flops = count_flops(model.config)
    images_per_s = batch_size / median * 1e3
    return BenchmarkResult(
        model=model.config.name, backend=backend, device=str(device), precision=precision,
        nms="soft" if post.method == "gaussian" else "hard", batch_size=batch_size,
        image_size=tuple(model.config.image_size), threads=threads, end_to_end=end_to_end, warmup=warmup,
        iterations=iterations, median_ms=median, p90_ms=percentile(times, 90), mean_ms=statistics.fmean(times),
        min_ms=min(times), images_per_s=images_per_s, peak_memory_mb=peak_memory_mb(device),
        parameters=count_parameters(model), flops=flops, gflops_per_s=2 * flops * images_per_s / 1e9,
    )


def cpu_name() -> str:
    """The CPU's model name (Linux), for reports that are only comparable on the same machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine
