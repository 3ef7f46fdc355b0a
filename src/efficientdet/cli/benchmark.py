"""``efficientdet benchmark --model M [--batch-size N] [--backend eager|compile|onnxruntime|openvino|litert|tensorrt]
[--int8] [--threads T]``.

Times network + box decoding + NMS on a preprocessed batch (``--end-to-end`` adds JPEG decoding
and preprocessing): median and p90 latency, the network's part and the rest, throughput, peak
memory, parameters, FLOPs and the GFLOP/s reached, beside the CPU's vector extensions and its
measured matmul rate, as a table and optionally as JSON (``--json FILE``, ``-`` for stdout).
Without ``--weights`` the model gets random weights whose scores spread as a trained model's do
(a fresh model scores every anchor alike, which no real input gives). ``--int8`` (onnxruntime,
openvino, litert, tensorrt) times the int8 export, calibrated on ``--calibration`` images or synthetic
pictures; ``--backend tensorrt`` builds the engine on the GPU first (``--half``: a float16 engine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..inference.backends import BACKENDS
from .options import (add_device, add_image_size, add_model, add_nms, add_precision, add_threads,
                      add_weights, postprocess_overrides, precision, resolve_image_size, subcommand)


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import create_model
    from ..benchmark import cpu_isa, cpu_name, machine_line, matmul_gflops, run_benchmark, spread_random_weights
    from ..devices import resolve_device

    changes = postprocess_overrides(args)  # options first: before the model is built
    if (args.calibration or args.calibration_images) and not args.int8:
        raise ValueError("--calibration / --calibration-images only apply with --int8")
    image_size = resolve_image_size(args, args.model)
    device = resolve_device(args.device)
    model = create_model(args.model, weights=args.weights, **({"image_size": image_size} if image_size else {})).eval()
    weights = args.weights or "random, scores spread (efficientdet.benchmark.spread_random_weights)"
    if not args.weights:
        spread_random_weights(model)
    post = dataclasses.replace(model.config.postprocess, **changes)
    calibration = None
    if args.calibration:
        from ..export import load_calibration

        calibration = load_calibration(args.calibration, model.config, args.calibration_images or 8,
                                       on_skip=lambda why: print(f"efficientdet benchmark: skipped {why}", file=sys.stderr))
    if args.int8:
        weights += f"; int8 calibrated on {calibration.source if calibration else 'synthetic pictures'}"
    result = run_benchmark(model, args.backend, args.batch_size, args.threads, device, precision(args), post,
                           args.end_to_end, args.warmup, args.iterations, weights, calibration)
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
    p = subcommand(sub, "benchmark", "inference latency, throughput, memory and GFLOP/s of a model", __doc__)
    add_model(p, required=True)
    add_weights(p, note=" to time with (default: random weights whose scores spread)")
    p.add_argument("--backend", choices=BACKENDS, default="eager")
    p.add_argument("--batch-size", type=int, default=1)
    add_threads(p)
    add_device(p)
    add_precision(p, int8=True)
    p.add_argument("--calibration", metavar="DATA.yaml|FOLDER",
                   help="with --int8: calibration images (default: synthetic pictures)")
    p.add_argument("--calibration-images", type=int, metavar="N", help="with --int8 --calibration (default 8)")
    add_image_size(p)
    add_nms(p)
    p.add_argument("--end-to-end", action="store_true", help="include JPEG decoding and preprocessing")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--json", help="also write the result as JSON to this file ('-': JSON only, to stdout)")
    p.set_defaults(func=run)
