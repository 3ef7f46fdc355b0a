"""What the OpenVINO backend's two rewrites of an IR buy, and where the network's time goes.

For ``--model`` (default D0) with random weights whose scores spread
(:func:`efficientdet.benchmark.spread_random_weights`), the IR is exported in float32 and in int8
once per ``--keep-float`` rule set (calibrated on synthetic pictures: they set the scales, not the
time). Each IR is compiled three ways, and the calls interleaved (``bench_inference``'s rotation)
on the same preprocessed synthetic pictures, network only (no decoding):

* as exported: dynamic batch, the head's outputs NCHW;
* channels-last head (:func:`~efficientdet.inference.backends.channels_last_outputs`), dynamic batch:
  what the backend runs at batch sizes above 1;
* channels-last head, batch fixed to the size timed
  (:func:`~efficientdet.inference.backends.fixed_batch`): what it runs at batch 1.

``--profile`` compiles the last form with OpenVINO's per-layer counters (``PERF_COUNT``) and prints,
per IR, the real time summed by layer type and kernel, per call, at the first batch size.

    python benchmarks/bench_openvino.py [--model efficientdet-d0] [--batch-sizes 1 8]
        [--keep-float stem,predictors stem none] [--rounds 60] [--profile] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from efficientdet import create_model
from efficientdet.benchmark import machine_line, spread_random_weights, synthetic_calibration, synthetic_image
from efficientdet.export import export_model
from efficientdet.export.openvino import read_openvino_model
from efficientdet.export.quantize import DEFAULT_KEEP_FLOAT
from efficientdet.inference.backends import channels_last_outputs, compile_openvino, fixed_batch
from efficientdet.preprocess import preprocess

from bench_inference import interleave  # this folder's; the same rotation of calls for every table

FORMS = ("as exported", "channels-last head", "channels-last head, fixed batch")


def ir_forms(path: Path, batch_size: int) -> dict[str, object]:
    """Each of ``FORMS``, read from the IR at ``path`` (not compiled)."""
    exported = read_openvino_model(path)
    rewritten = read_openvino_model(path)
    channels_last_outputs(rewritten)
    return dict(zip(FORMS, (exported, rewritten, fixed_batch(rewritten, batch_size))))


def layer_times(path: Path, batch: object, threads: int, calls: int) -> collections.Counter:
    """ms per call by (layer type, kernel), from OpenVINO's counters, for the backend's batch-1 form."""
    model = ir_forms(path, len(batch))[FORMS[2]]
    request = compile_openvino(model, threads, PERF_COUNT=True).create_infer_request()
    for _ in range(3):
        request.infer({0: batch})
    totals: collections.Counter = collections.Counter()
    for _ in range(calls):
        request.infer({0: batch})
        for layer in request.profiling_info:
            totals[layer.node_type, layer.exec_type] += layer.real_time.total_seconds() * 1e3 / calls
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=60, help="timed calls per form at batch 1 (a quarter above)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--keep-float", nargs="+", default=[",".join(DEFAULT_KEEP_FLOAT)],
                        help="one int8 IR per rule set (comma-separated rules, or none)")
    parser.add_argument("--profile", action="store_true", help="per-layer counters of each IR's batch-1 form")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = spread_random_weights(create_model(args.model).eval())
    calibration = synthetic_calibration(model.config)
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        irs = {"float32": export_model(model, Path(tmp) / "float32.xml", "openvino")}
        for rules in args.keep_float:
            kept = [r for r in rules.split(",") if r and r != "none"]
            irs[f"int8 [{rules}]"] = export_model(model, Path(tmp) / f"int8-{len(irs)}.xml", "openvino",
                                                  calibration=calibration, keep_float=kept)
        for batch_size in args.batch_sizes:
            pictures = [synthetic_image(seed=i) for i in range(batch_size)]
            batch = preprocess(pictures, model.config.image_size, model.config.preprocess)[0].float().numpy()
            rounds = args.rounds if batch_size == 1 else max(5, args.rounds // 4)
            for name, path in irs.items():
                forms = {form: compile_openvino(ir, args.threads) for form, ir in ir_forms(path, batch_size).items()}
                times = interleave({form: (lambda c: lambda: c(batch))(c) for form, c in forms.items()}, rounds, 3)
                ms = [statistics.median(times[form]) for form in FORMS]
                rows.append(f"| {name} | {batch_size} | " + " | ".join(f"{t:.1f}" for t in ms)
                            + f" | {ms[2] / ms[0]:.2f}× |")
                print(f"measured {rows[-1]}", file=sys.stderr, flush=True)
                if args.profile and batch_size == args.batch_sizes[0]:
                    profiles[name] = layer_times(path, batch, args.threads, rounds)
    print(f"\n{machine_line(args.threads)}\n{args.model}, OpenVINO; median ms per call of the network alone\n")
    print("| IR | batch | " + " | ".join(FORMS) + " | last / first |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    for name, totals in profiles.items():
        print(f"\n{name}, batch {args.batch_sizes[0]}, {FORMS[2]}: per-layer counters, ms per call "
              f"(sum {sum(totals.values()):.1f})\n")
        print("| layer type | kernel | ms |")
        print("|---|---|---:|")
        for (kind, kernel), ms in totals.most_common(10):
            print(f"| {kind} | {kernel} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
