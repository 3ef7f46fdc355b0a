"""TensorRT engines against CUDA eager (ours and effdet's) on one NVIDIA GPU: parity and latency.

For each ``--models`` variant, random weights whose scores spread as a trained model's do, their
BN statistics measured on the scikit-image photos parity is checked on
(:func:`efficientdet.benchmark.spread_random_weights`; or ``--weights``), the same in effdet's
model. Contenders, each timed as network + decoding + NMS on a preprocessed batch (hard NMS, all
anchors; effdet: ``DetBenchPredict``, its top-5000 and batched NMS), calls interleaved A, B, C, …
with a CUDA synchronise after each:

* ``effdet``: effdet's model in eager float32;
* ``eager`` / ``eager-fp16``: ours, BN folded, channels-last, float32 / float16;
* ``tensorrt`` / ``tensorrt-fp16`` / ``tensorrt-int8``: engines built by ``efficientdet export
  --format tensorrt`` for each batch size (``--max-batch``: tuned for it); int8 calibrated on the
  photos.

Parity is each contender's raw outputs on the photos against ours in eager float32 (TF32 off, as
in the float32 engine): the largest absolute difference and the RMS error over the outputs'
spread. The paper's V100 latency for D0 (:data:`PAPER_V100_MS`) is printed beside for reference.

    python benchmarks/bench_tensorrt.py [--models efficientdet-d0] [--batch-sizes 1 8] [--rounds 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from skimage import data as photos

from efficientdet import Detector, create_model
from efficientdet.benchmark import spread_random_weights, synthetic_image
from efficientdet.export import Calibration, export_model
from efficientdet.fuse import fuse_model
from efficientdet.preprocess import preprocess

from bench_inference import PAIRS, effdet_bench, interleave

PAPER_V100_MS = {"efficientdet-d0": 10.2}  # Tan et al. 2020, Table 2: batch 1, end to end
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
ENGINES = {"tensorrt": "float32", "tensorrt-fp16": "float16", "tensorrt-int8": "int8"}


def parity(got: tuple, want: tuple) -> tuple[float, float]:
    """(max |got - want|, RMS error / spread) over all raw outputs."""
    got = torch.cat([t.float().flatten() for t in [*got[0], *got[1]]])
    want = torch.cat([t.float().flatten() for t in [*want[0], *want[1]]])
    return float((got - want).abs().max()), float((got - want).pow(2).mean().sqrt() / want.std())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientdet-d0"], choices=sorted(PAIRS))
    parser.add_argument("--weights", nargs="+", help="one per model (default: spread random weights)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", help="also write every row to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_tensorrt: needs an NVIDIA GPU; torch sees none", file=sys.stderr)
        return 2
    if args.weights and len(args.weights) != len(args.models):
        parser.error(f"--weights names {len(args.weights)} files for {len(args.models)} models")
    device = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    import tensorrt

    rows = []
    images = [torch.from_numpy(getattr(photos, name)()).permute(2, 0, 1) for name in PHOTOS]
    for i, name in enumerate(args.models):
        model = create_model(name, weights=args.weights[i] if args.weights else None).eval()
        photo_batch, _ = preprocess(images, model.config.image_size, model.config.preprocess)
        if not args.weights:
            spread_random_weights(model, batch=photo_batch)
        calibration = Calibration(list(photo_batch), f"the photos ({', '.join(PHOTOS)})")
        post = dataclasses.replace(model.config.postprocess, method="hard")
        bench = effdet_bench(model, PAIRS[name]).to(device)
        eager = {"eager": Detector.from_model(model, "eager", device, "float32", post),
                 "eager-fp16": Detector.from_model(model, "eager", device, "float16", post)}
        photo_batch = photo_batch.to(device)
        with torch.no_grad():
            want = fuse_model(model).to(device).eval()(photo_batch)
        with tempfile.TemporaryDirectory() as tmp:
            for batch_size in args.batch_sizes:
                detectors = dict(eager)
                for label, precision in ENGINES.items():
                    path = export_model(model, Path(tmp) / f"{label}-{batch_size}.engine", "tensorrt",
                                        fp16=precision == "float16", max_batch=batch_size,
                                        calibration=calibration if precision == "int8" else None)
                    detectors[label] = Detector.from_tensorrt(path, device, post)
                errors = {label: parity(d.network(photo_batch), want) for label, d in detectors.items()}
                batch, scales = detectors["eager"].preprocess([synthetic_image(480, 640, seed=s)
                                                               for s in range(batch_size)])
                calls = {"effdet": lambda: bench(batch)}
                calls.update({label: (lambda d: lambda: d.detect(batch, scales))(d) for label, d in detectors.items()})
                timed = interleave({k: (lambda f: lambda: (f(), torch.cuda.synchronize(device)))(f)
                                    for k, f in calls.items()}, args.rounds, args.warmup)
                medians = {k: statistics.median(v) for k, v in timed.items()}
                for label, ms in medians.items():
                    rows.append({"model": name, "batch": batch_size, "contender": label, "median_ms": ms,
                                 "vs_effdet": ms / medians["effdet"],
                                 "max_abs_diff": errors[label][0] if label in errors else None,
                                 "rms_over_spread": errors[label][1] if label in errors else None})
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"TensorRT {tensorrt.__version__}; median ms per batch of network + decoding + NMS over {args.rounds} "
          f"interleaved rounds; parity on {', '.join(PHOTOS)} against ours in eager float32")
    print("\n| model | batch | contender | median ms | vs effdet | max abs diff | RMS / spread |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        diff = "— | —" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e} | {r['rms_over_spread']:.1e}"
        print(f"| {r['model']} | {r['batch']} | {r['contender']} | {r['median_ms']:.2f} | {r['vs_effdet']:.2f}× "
              f"| {diff} |")
    for name, ms in PAPER_V100_MS.items():
        if name in args.models:
            print(f"\nthe paper's V100 figure (batch 1, end to end), for reference: {name} {ms} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
