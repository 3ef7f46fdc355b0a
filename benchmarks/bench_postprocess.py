"""What decoding + NMS cost beside the network, per NMS kind and score distribution.

D0 (or ``--model``) at batch 1 through ONNX Runtime, each call's network and postprocessing timed
apart (:class:`efficientdet.benchmark.TimedNetwork`), for hard and soft NMS, with

* tied scores: the fresh initialisation, every (anchor, class) pair at the class prior, as an
  untrained model (or an early validation pass) gives them;
* spread scores: :func:`efficientdet.benchmark.spread_random_weights`;

and for both greedies: the compiled kernel (numba, the ``fast`` extra) and the numpy rounds
(what runs without numba).

    python benchmarks/bench_postprocess.py [--model efficientdet-d0] [--threads 2] [--calls 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

from efficientdet import create_model
from efficientdet import nms as nms_module
from efficientdet.benchmark import (
    TimedNetwork,
    build_predictor,
    machine_line,
    spread_random_weights,
    synthetic_image,
    time_calls,
)


def measure(model, nms: str, threads: int, calls: int, workdir: Path) -> tuple[float, float]:
    """Median network and postprocessing milliseconds over ``calls`` calls after three warm-up ones."""
    post = dataclasses.replace(model.config.postprocess, method=nms)
    predictor = build_predictor(model, "onnxruntime", torch.device("cpu"), "float32", post, threads, workdir)
    predictor.network = network = TimedNetwork(predictor.network, lambda: None)
    batch, scales = predictor.preprocess([synthetic_image()])
    totals = time_calls(lambda: predictor.detect(batch, scales), warmup=3, iterations=calls)
    nets = network.times[-calls:]
    return statistics.median(nets), statistics.median(t - n for t, n in zip(totals, nets))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kernels = ["numpy"] if nms_module.compiled_greedy() is None else ["compiled", "numpy"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scores in ("tied", "spread"):
            torch.manual_seed(0)
            model = create_model(args.model).eval()
            if scores == "spread":
                spread_random_weights(model)
            for nms in ("hard", "gaussian"):
                for kernel in kernels:
                    workdir = Path(tmp) / f"{scores}-{nms}-{kernel}"
                    workdir.mkdir()
                    # The numpy rows: NMS as it runs where numba is not installed.
                    with mock.patch.object(nms_module, "compiled_greedy",
                                           (lambda: None) if kernel == "numpy" else nms_module.compiled_greedy):
                        network, post = measure(model, nms, args.threads, args.calls, workdir)
                    rows.append(f"| {scores} | {nms} | {kernel} | {network:.1f} | {post:.1f} | {post / network:.0%} |")
                    print(f"measured {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\n{machine_line(args.threads)}\n{args.model}, batch 1, ONNX Runtime; median ms per call\n")
    print("| scores | NMS | greedy | network | decoding + NMS | share of the network |")
    print("|---|---|---|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
