"""``efficientdet benchmark --model M [--batch-size N] [--backend eager|compile|onnxruntime] [--threads T]``.

Times network + box decoding + NMS on a preprocessed batch (``--end-to-end`` adds JPEG decoding
and preprocessing): median and p90 latency, the network's part and the rest, throughput, peak
memory, parameters, FLOPs and the GFLOP/s reached, beside the CPU's vector extensions and its
measured matmul rate, as a table and optionally as JSON (``--json FILE``, ``-`` for stdout).
Without ``--weights`` the model gets random weights whose scores spread as a trained model's do
(a fresh model scores every anchor alike, which no real input gives).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..inference.backends import BACKENDS
from .predict import parse_image_size


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import create_model
    from ..benchmark import cpu_isa, cpu_name, machine_line, matmul_gflops, run_benchmark, spread_random_weights
    from ..devices import resolve_device

    device = resolve_device(args.device)  # before the model is built
    overrides = {"image_size": parse_image_size(args.image_size)} if args.image_size else {}
    model = create_model(args.model, weights=args.weights, **overrides).eval()
    weights = args.weights or "random, scores spread (efficientdet.benchmark.spread_random_weights)"
    if not args.weights:
        spread_random_weights(model)
    result = run_benchmark(model, args.backend, args.batch_size, args.threads, device,
                           "float16" if args.half else "bfloat16" if args.bf16 else "float32", args.nms,
                           args.end_to_end, args.warmup, args.iterations, weights)
    gflops = matmul_gflops(result.threads)
    report = {**dataclasses.asdict(result), "cpu": cpu_name(), "isa": cpu_isa(), "matmul_gflops": gflops,
              "torch": torch.__version__}
    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    print(machine_line(result.threads, gflops))
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="inference latency, throughput, memory and GFLOP/s of a model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="variant, e.g. efficientdet-d0")
    p.add_argument("--weights", help="weights to time with (default: random weights whose scores spread)")
    p.add_argument("--backend", choices=BACKENDS, default="eager")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch / ONNX Runtime intra-op threads (default: torch's)")
    p.add_argument("--device", help="cpu, cuda … (default: cuda when available)")
    dtype = p.add_mutually_exclusive_group()
    dtype.add_argument("--half", action="store_true", help="float16 network (CUDA)")
    dtype.add_argument("--bf16", action="store_true", help="bfloat16 network")
    p.add_argument("--image-size", help="network input N or HxW (default: the model's)")
    p.add_argument("--nms", choices=("soft", "hard"), help="default: the model's (soft)")
    p.add_argument("--end-to-end", action="store_true", help="include JPEG decoding and preprocessing")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--json", help="also write the result as JSON to this file ('-': JSON only, to stdout)")
    p.set_defaults(func=run)
