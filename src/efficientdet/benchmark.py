"""Inference timing: warm-up, then the median and p90 of many timed calls, and what they imply.

By default one call is network + box decoding + NMS on a preprocessed batch, the work a server
does per request once images are decoded; ``end_to_end`` adds reading and decoding a JPEG and
the official preprocessing per image. FLOPs are :func:`efficientdet.profile.count_flops`'s
multiply-adds (the paper's "FLOPs"); the achieved rate counts 2 floating-point operations per
multiply-add, as hardware peak figures do.

What NMS costs depends on the scores: a freshly initialised model scores every anchor at the
class prior, which is neither what a trained model gives nor what a server sees. Without trained
weights, time :func:`spread_random_weights`, random weights whose scores spread as a trained
model's do. Each call's network and postprocessing (decoding + NMS) are timed apart as well.

ONNX Runtime and OpenVINO run the model exported into a temporary folder, in float32 or int8
(quantised on calibration images; without any, on synthetic pictures).
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
from torch import nn

from .config import ModelConfig, PostprocessConfig
from .export.quantize import Calibration
from .inference import Detector
from .inference.backends import FILE_BACKENDS
from .model import EfficientDet
from .nms import compiled_greedy
from .preprocess import preprocess
from .profile import count_flops, count_parameters

# spread_random_weights: the spread of the class logits around the prior (confident pairs and many far
# below the prior, rather than all at it) and of the box codes (boxes near their anchors, of every size).
CLASS_LOGIT_STD = 1.5
BOX_CODE_STD = 0.3


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
    weights: str  # what was timed: a weights file, or random weights whose scores spread
    median_ms: float  # per call (one batch)
    network_ms: float  # median of the network's part of each call
    postprocess_ms: float  # median of the rest: decoding + NMS (and reading + preprocessing end to end)
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
            ("weights", self.weights),
            ("timed", f"{what}; {self.iterations} calls after {self.warmup} warm-up"),
            ("median", f"{self.median_ms:.2f} ms (network {self.network_ms:.2f} ms, the rest {self.postprocess_ms:.2f} ms)"),
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


class TimedNetwork:
    """A predictor's network, timed on each call: the rest of the call is decoding and NMS."""

    def __init__(self, network: Callable[[torch.Tensor], Any], sync: Callable[[], None]):
        self.network, self.sync = network, sync
        self.times: list[float] = []

    def __call__(self, batch: torch.Tensor) -> Any:
        start = time.perf_counter()
        out = self.network(batch)
        self.sync()
        self.times.append((time.perf_counter() - start) * 1e3)
        return out


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


@torch.no_grad()
def spread_random_weights(model: EfficientDet, images: int = 4, seed: int = 0,
                          batch: torch.Tensor | None = None) -> EfficientDet:
    """Give ``model`` random weights whose detection scores spread: its BN statistics measured on
    ``batch`` (preprocessed; default ``images`` :func:`synthetic_image` pictures), so that every
    layer passes a unit-scale signal on those inputs, which the fresh statistics (mean 0, variance
    1) do not; then the two predictors scaled so the class logits spread by ``CLASS_LOGIT_STD``
    around the class prior and the box codes by ``BOX_CODE_STD``. Inputs unlike ``batch`` may
    give much larger activations (D0's swish backbone on photos, with synthetic statistics): a
    numerical comparison should measure on the images it compares."""
    cfg = model.config
    if batch is None:
        pictures = [synthetic_image(seed=seed + i) for i in range(images)]
        batch, _ = preprocess(pictures, cfg.image_size, cfg.preprocess)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches seen
    model.train()
    model(batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    class_out, box_out = model(batch)
    for head, outputs, std in ((model.class_net, class_out, CLASS_LOGIT_STD), (model.box_net, box_out, BOX_CODE_STD)):
        last = head.predict.pointwise if hasattr(head.predict, "pointwise") else head.predict
        last.weight.mul_(std / float(torch.cat([o.flatten() for o in outputs]).std()))
    return model


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def make_step(predictor: Detector, batch_size: int, end_to_end: bool, workdir: Path) -> Callable[[], Any]:
    """The timed call: ``detect`` on a fixed preprocessed batch, or read + preprocess + detect."""
    from torchvision.io import encode_jpeg

    from .data.images import read_image

    image = synthetic_image()
    if end_to_end:
        path = workdir / "benchmark.jpg"
        path.write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
        return lambda: predictor.detect(*predictor.preprocess([read_image(path) for _ in range(batch_size)]))
    batch, scales = predictor.preprocess([image] * batch_size)
    return lambda: predictor.detect(batch, scales)


def synthetic_calibration(config: ModelConfig, images: int = 8) -> Calibration:
    """int8 calibration on :func:`synthetic_image` pictures, for timing without a dataset: the
    scales it sets change what the int8 model computes, not how long it takes."""
    pictures = [synthetic_image(seed=i) for i in range(images)]
    batch, _ = preprocess(pictures, config.image_size, config.preprocess)
    return Calibration(list(batch), "synthetic pictures (efficientdet.benchmark.synthetic_image)")


def build_predictor(model: EfficientDet, backend: str, device: torch.device, precision: str,
                    post: PostprocessConfig, threads: int, workdir: Path,
                    calibration: Calibration | None = None) -> Detector:
    """A predictor for ``backend``. ONNX Runtime, OpenVINO, LiteRT and TensorRT get the model
    exported (raw outputs) into ``workdir``, in float32 or int8 (calibrated on ``calibration``,
    default :func:`synthetic_calibration`), and TensorRT in float16 too."""
    if backend == "tensorrt" and device.type != "cuda":
        raise ValueError("the tensorrt backend runs on an NVIDIA GPU; give --device cuda")
    if backend not in FILE_BACKENDS.values():
        if precision == "int8":
            raise ValueError("int8 runs on the exported backends: --backend onnxruntime, openvino, litert or tensorrt")
        return Detector.from_model(model, backend, device, precision, post)
    from .export import SUFFIXES, export_model

    exported = ("float32", "float16", "int8") if backend == "tensorrt" else ("float32", "int8")
    if precision not in exported:
        raise ValueError(f"the {backend} backend runs the exported {' or '.join(exported)} model; "
                         f"{'drop --bf16' if backend == 'tensorrt' else 'drop --half / --bf16'}")
    fmt = next(f for f, b in FILE_BACKENDS.items() if b == backend)
    if precision == "int8":
        calibration = calibration or synthetic_calibration(model.config)
    path = export_model(model, workdir / f"model-{precision}{SUFFIXES[fmt]}", fmt,
                        calibration=calibration if precision == "int8" else None, fp16=precision == "float16")
    if backend == "openvino":
        return Detector.from_openvino(path, post, threads)
    if backend == "litert":
        return Detector.from_litert(path, post, threads)
    if backend == "tensorrt":
        return Detector.from_tensorrt(path, device, post)
    return Detector.from_onnx(path, device, post, threads=threads)


def run_benchmark(model: EfficientDet, backend: str = "eager", batch_size: int = 1, threads: int | None = None,
                  device: str | torch.device = "cpu", precision: str = "float32",
                  postprocess_config: PostprocessConfig | None = None, end_to_end: bool = False, warmup: int = 5,
                  iterations: int = 30, weights: str = "as given",
                  calibration: Calibration | None = None) -> BenchmarkResult:
    """Time ``model`` on ``backend`` (see the module docstring) with ``postprocess_config`` (default:
    the model's); ``weights`` says what the model holds, for the report. ``precision`` ``int8``
    (ONNX Runtime, OpenVINO) quantises the exported model on ``calibration``
    (:func:`build_predictor`)."""
    if batch_size < 1 or warmup < 0 or iterations < 1:
        raise ValueError("batch_size and iterations must be >= 1, warmup >= 0")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    device = torch.device(device)
    post = postprocess_config or model.config.postprocess
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    previous_threads = torch.get_num_threads()
    threads = threads or previous_threads
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            predictor = build_predictor(model, backend, device, precision, post, threads, Path(tmp), calibration)
            predictor.network = network = TimedNetwork(predictor.network, sync)
            times = time_calls(make_step(predictor, batch_size, end_to_end, Path(tmp)), warmup, iterations, sync)
    finally:  # the caller's thread count, as it was
        torch.set_num_threads(previous_threads)
    median = statistics.median(times)
    network_times = network.times[-iterations:]
    flops = count_flops(model.config)
    images_per_s = batch_size / median * 1e3
    return BenchmarkResult(
        model=model.config.name, backend=backend, device=str(device), precision=precision,
        nms=post.method, batch_size=batch_size,
        image_size=tuple(model.config.image_size), threads=threads, end_to_end=end_to_end, warmup=warmup,
        iterations=iterations, weights=weights, median_ms=median, network_ms=statistics.median(network_times),
        postprocess_ms=statistics.median(t - n for t, n in zip(times, network_times)), p90_ms=percentile(times, 90), mean_ms=statistics.fmean(times),
        min_ms=min(times), images_per_s=images_per_s, peak_memory_mb=peak_memory_mb(device),
        parameters=count_parameters(model), flops=flops, gflops_per_s=2 * flops * images_per_s / 1e9,
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isa() -> str:
    """The widest x86 vector extensions the CPU has, which decide how fast fp32 kernels can run."""
    flags = cpu_flags()
    names = [name for flag, name in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"),
                                     ("amx_tile", "AMX"), ("avx512_vnni", "AVX-512 VNNI")) if flag in flags]
    if not names:
        names = [name for flag, name in (("avx2", "AVX2"), ("fma", "FMA"), ("avx", "AVX")) if flag in flags][:2]
    return " + ".join(names) or os.uname().machine


def matmul_gflops(threads: int | None = None, size: int = 1024, repeats: int = 10) -> float:
    """fp32 GFLOP/s of a ``size``² matrix product on ``threads`` CPU threads: the machine's measured
    peak, beside which every timing here reads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        times = time_calls(lambda: a @ b, warmup=2, iterations=repeats)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / (min(times) / 1e3) / 1e9


def machine_line(threads: int | None = None, gflops: float | None = None) -> str:
    """One line naming the CPU, its vector extensions and its fp32 matmul rate (measured here unless given)."""
    threads = threads or torch.get_num_threads()
    gflops = matmul_gflops(threads) if gflops is None else gflops
    greedy = "numpy" if compiled_greedy() is None else "compiled (numba)"
    return (f"{cpu_name()} ({cpu_isa()}), {threads} threads: fp32 matmul {gflops:.0f} GFLOP/s "
            f"measured; torch {torch.__version__}; NMS greedy: {greedy}")


def cpu_name() -> str:
    """The CPU's model name (Linux), for reports that are only comparable on the same machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine
