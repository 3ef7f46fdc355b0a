"""What each deployment format costs in accuracy and buys in time, on the same trained weights.

The model as PyTorch runs it (eager, BN folded), and exported: ONNX Runtime, OpenVINO and LiteRT
(TFLite, batch 1 files, so batch 8 is eight calls), each in float32 and in int8 (calibrated on ``--calibration-images`` of the dataset's training split, as
``efficientdet export --int8 --calibration DATA.yaml`` does). Each one is evaluated on the split
``--split`` through the same ``Detector`` front end and COCO metrics as ``efficientdet eval``,
and timed on that split's first preprocessed images at batch 1 and 8, the calls interleaved
(A, B, C, A, B, C …) so that a neighbour's load falls on all alike. A second table gives each
int8 file over its own runtime's float32 file. The machine line (CPU, vector extensions,
measured fp32 matmul GFLOP/s) is printed above the tables.

    python benchmarks/bench_formats.py --weights RUN/weights/best.safetensors --data RUN/data/data.yaml \\
        [--model efficientdet-lite0] [--calibration-images 100] [--keep-float stem,predictors none ...] \\
        [--runtimes onnxruntime openvino litert] [--threads 2] [--rounds 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from efficientdet import create_model
from efficientdet.benchmark import machine_line
from efficientdet.config import evaluation_postprocess
from efficientdet.data import load_dataset_yaml, load_split, read_image
from efficientdet.evaluate import eval_loader, evaluate
from efficientdet.export import SUFFIXES, export_model, load_calibration
from efficientdet.export.quantize import DEFAULT_KEEP_FLOAT
from efficientdet.inference import Detector
from efficientdet.inference.backends import FILE_BACKENDS

from bench_inference import interleave  # this folder's; the same rotation of calls for every table


def build_detectors(model, data: str, calibration_images: int, keep_float: list[str], threads: int,
                    folder: Path, label_ids: list[int], runtimes: list[str]) -> dict[str, Detector]:
    """``eager``, then per runtime its float32 file and an int8 file per ``keep_float`` rule set
    (LiteRT: one, whose quantiser keeps nothing in float)."""
    post = evaluation_postprocess(model.config.postprocess)
    detectors = {"eager": Detector.from_model(model, "eager", "cpu", "float32", post, label_ids=label_ids)}
    calibration = load_calibration(data, model.config, calibration_images)
    for fmt, runtime in FILE_BACKENDS.items():
        if runtime not in runtimes:
            continue
        rule_sets = [None] if runtime == "litert" else keep_float
        variants = [("float32", None, None)] + [(f"int8 [{rules or 'none'}]" if rules is not None else "int8",
                                                  calibration, rules) for rules in rule_sets]
        for precision, calib, rules in variants:
            path = folder / f"{runtime}-{len(detectors)}{SUFFIXES[fmt]}"
            kept = None if rules is None else [r for r in rules.split(",") if r and r != "none"]
            print(f"exporting {runtime} {precision} …", file=sys.stderr, flush=True)
            export_model(model, path, fmt, calibration=calib, keep_float=kept)
            if runtime == "openvino":
                detector = Detector.from_openvino(path, post, threads, label_ids=label_ids)
            elif runtime == "litert":
                detector = Detector.from_litert(path, post, threads, label_ids=label_ids)
            else:
                detector = Detector.from_onnx(path, "cpu", post, threads, label_ids=label_ids)
            detectors[f"{runtime} {precision}"] = detector
    return detectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="trained .safetensors (its labels stored)")
    parser.add_argument("--data", required=True, help="dataset YAML: calibration on train, metrics on --split")
    parser.add_argument("--model", default="efficientdet-lite0")
    parser.add_argument("--split", default="val")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--keep-float", nargs="+", default=[",".join(DEFAULT_KEEP_FLOAT)],
                        help="one int8 file per rule set (comma-separated rules of efficientdet.export.quantize."
                             "FLOAT_RULES, or none)")
    parser.add_argument("--runtimes", nargs="+", default=list(FILE_BACKENDS.values()),
                        choices=list(FILE_BACKENDS.values()))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20, help="timed calls per format at batch 1 (a quarter at 8)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model(args.model, weights=args.weights).eval()
    split = load_split(load_dataset_yaml(args.data), args.split)
    with tempfile.TemporaryDirectory() as tmp:
        detectors = build_detectors(model, args.data, args.calibration_images, args.keep_float, args.threads,
                                    Path(tmp), split.label_ids, args.runtimes)
        metrics = {}
        for name, detector in detectors.items():
            print(f"evaluating {name} …", file=sys.stderr, flush=True)
            metrics[name] = evaluate(detector, eval_loader(split, detector.config, 8), split)[0]
        pictures = [read_image(s.image_path) for s in split.samples[:8]]
        latency = {}
        for batch_size in (1, 8):
            batch, scales = detectors["eager"].preprocess(pictures[:batch_size])
            rounds = args.rounds if batch_size == 1 else max(5, args.rounds // 4)
            calls = {name: (lambda d: lambda: d.detect(batch, scales))(d) for name, d in detectors.items()}
            latency[batch_size] = {name: statistics.median(t) for name, t in interleave(calls, rounds, 1).items()}
    print(machine_line(args.threads))
    print(f"{args.model} from {args.weights}; {len(split.samples)} {args.split} images of {args.data}; int8 calibrated "
          f"on {args.calibration_images} train images; {args.threads} threads\n")
    print("| format | AP | AP50 | ms batch 1 | ms / image batch 8 |")
    print("|---|---:|---:|---:|---:|")
    for name in detectors:
        print(f"| {name} | {metrics[name]['AP']:.3f} | {metrics[name]['AP50']:.3f} | {latency[1][name]:.1f} | "
              f"{latency[8][name] / 8:.1f} |")
    print("\n| int8 file | AP − float32 AP | batch 1 int8 / float32 | batch 8 int8 / float32 |")
    print("|---|---:|---:|---:|")
    for name in detectors:
        if " int8" in name:
            ref = name.split(" ")[0] + " float32"
            print(f"| {name} | {metrics[name]['AP'] - metrics[ref]['AP']:+.3f} | "
                  f"{latency[1][name] / latency[1][ref]:.2f}× | {latency[8][name] / latency[8][ref]:.2f}× |")
    if args.json:
        Path(args.json).write_text(json.dumps({"metrics": metrics, "latency_ms": latency}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
