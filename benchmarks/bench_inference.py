"""Our inference against effdet's, measured in one run on one machine, interleaved.

For D0 and Lite0 at batch 1 and 8, with the same weights in both (random weights whose scores
spread as a trained model's do, :func:`efficientdet.benchmark.spread_random_weights`, copied into
effdet's model) and the same preprocessed input, this times one call of each contender in turn,
A, B, C, A, B, C, … (the order rotating every round), so that a noisy neighbour slows every
contender alike, and prints the medians as a markdown table with the ratios ours / effdet, our
postprocessing's share (decoding + NMS, timed apart from the network in each call), and the
machine: CPU, vector extensions and measured fp32 matmul GFLOP/s.

* effdet: ``DetBenchPredict(tf_efficientdet_*)`` — its network plus its postprocessing (top-5000
  candidates, hard batched NMS, 100 detections), in eager PyTorch.
* ours: network + decoding + NMS through :class:`efficientdet.inference.Detector`: ``eager``
  (BN folded, channels-last); ``onnxruntime`` and ``openvino``, each exported in float32 and in
  int8 (``onnxruntime-int8``, ``openvino-int8``: quantised as ``efficientdet export --int8`` does,
  calibrated on synthetic pictures, which set the scales but not the time); ``compile`` with
  ``--compile`` (slow to build). Hard NMS like effdet's unless ``--nms gaussian``, exactly as
  ``postprocess`` computes it (all anchors, no top-k cut).

The second table gives each int8 contender's time over its own runtime's float32 time.

    python benchmarks/bench_inference.py [--threads 2] [--rounds 30] [--compile] [--backends ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from efficientdet import create_model
from efficientdet.benchmark import TimedNetwork, build_predictor, machine_line, spread_random_weights, synthetic_image
from efficientdet.profile import count_flops

PAIRS = {"efficientdet-d0": "tf_efficientdet_d0", "efficientdet-lite0": "tf_efficientdet_lite0"}
BACKENDS = ["eager", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8"]


def effdet_bench(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """effdet's predict bench holding ``model``'s weights (BN statistics included).

    The same weights on both sides give the NMS the same work. They are ours rather than
    effdet's own random init, whose activations shrink to denormal floats deep in the network,
    which x86 computes many times slower: a timing of that artefact, not of either model.
    """
    import effdet

    from efficientdet.weights.effdet import effdet_names

    net = effdet.EfficientDet(effdet.get_efficientdet_config(name), pretrained_backbone=False).eval()
    wanted = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    ours = model.state_dict()
    for level_first in (False, True):  # effdet's head BN layout, whichever this version has
        names = effdet_names(model, level_first)
        if set(names.values()) == wanted:
            net.load_state_dict({theirs: ours[k] for k, theirs in names.items()}, strict=False)
            return effdet.DetBenchPredict(net).eval()
    raise RuntimeError(f"cannot map our {model.config.name} onto effdet's {name}")


def interleave(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each contender, one call of each per round, the order rotating."""
    names = list(contenders)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                contenders[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                contenders[name]()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def predictors_for(ours_name: str, backends: list[str], nms: str,
                   workdir: Path) -> tuple[torch.nn.Module, dict[str, TimedNetwork], dict[str, object]]:
    """effdet's bench and our predictors (``backend`` or ``backend-int8``), built once per model
    (exports and int8 calibration take minutes), with our networks timing themselves."""
    torch.manual_seed(0)
    model = spread_random_weights(create_model(ours_name).eval())
    bench = effdet_bench(model, PAIRS[ours_name])
    post = dataclasses.replace(model.config.postprocess, method=nms)
    threads = torch.get_num_threads()
    predictors, networks = {}, {}
    for name in backends:
        backend, _, int8 = name.partition("-")
        predictors[name] = build_predictor(model, backend, torch.device("cpu"), "int8" if int8 else "float32", post,
                                           threads, workdir)
        predictors[name].network = networks[name] = TimedNetwork(predictors[name].network, lambda: None)
    return bench, networks, predictors


def contenders_for(bench: torch.nn.Module, predictors: dict[str, object],
                   batch_size: int) -> dict[str, Callable[[], object]]:
    """The calls to time at ``batch_size``: effdet's and each predictor's, on the same preprocessed batch."""
    batch_images = [synthetic_image(480, 640, seed=i) for i in range(batch_size)]
    batch, scales = next(iter(predictors.values())).preprocess(batch_images)
    out: dict[str, Callable[[], object]] = {"effdet": lambda: bench(batch)}
    for backend, predictor in predictors.items():
        out[backend] = (lambda p: lambda: p.detect(batch, scales))(predictor)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per contender at batch 1 (a quarter at 8)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS + ["compile"],
                        help="ours to time beside effdet")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to build)")
    parser.add_argument("--nms", choices=("hard", "gaussian"), default="hard", help="our NMS (effdet's is hard)")
    parser.add_argument("--models", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--json", help="also write every timing to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backends = args.backends + (["compile"] if args.compile and "compile" not in args.backends else [])
    rows, int8_rows, report = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            (Path(tmp) / name).mkdir()
            bench, networks, predictors = predictors_for(name, backends, args.nms, Path(tmp) / name)
            for batch_size in args.batch_sizes:
                contenders = contenders_for(bench, predictors, batch_size)
                rounds = args.rounds if batch_size == 1 else max(5, args.rounds // 4)
                for network in networks.values():
                    network.times.clear()
                times = interleave(contenders, rounds, args.warmup)
                medians = {k: statistics.median(v) for k, v in times.items()}
                post = {k: statistics.median(t - n for t, n in zip(times[k], networks[k].times[-rounds:]))
                        for k in backends}
                flops = 2 * count_flops(create_model(name).config) * batch_size
                best = min((k for k in medians if k != "effdet"), key=medians.get)
                cells = [f"{medians[k]:.1f} ({medians[k] / medians['effdet']:.2f}×)" for k in backends]
                shares = [f"{post[k]:.1f} ({post[k] / (medians[k] - post[k]):.0%})" for k in backends]
                rows.append(f"| {name} | {batch_size} | {medians['effdet']:.1f} | " + " | ".join(cells + shares)
                            + f" | {flops / medians[best] / 1e6:.0f} ({best}) |")
                ratios = [f"{medians[k]:.1f} / {medians[k[:-5]]:.1f} = {medians[k] / medians[k[:-5]]:.2f}×"
                          for k in backends if k.endswith("-int8") and k[:-5] in medians]
                int8_rows.append(f"| {name} | {batch_size} | " + " | ".join(ratios) + " |")
                report.append({"model": name, "batch_size": batch_size, "times_ms": times, "median_ms": medians,
                               "postprocess_ms": post})
                print(f"measured {name} batch {batch_size}: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"\n{machine_line(args.threads)}\nmedian ms per batch of network + decoding + NMS ({args.nms} for "
          f"ours), ratio ours / effdet in brackets; ours' decoding + NMS alone, and as a share of its network\n")
    print("| model | batch | effdet predict | " + " | ".join(f"ours {b}" for b in backends) + " | "
          + " | ".join(f"{b} decode + NMS" for b in backends) + " | best GFLOP/s |")
    print("|---|---:|---:|" + "---:|" * (2 * len(backends)) + "---:|")
    print("\n".join(rows))
    int8 = [b for b in backends if b.endswith("-int8") and b[:-5] in backends]
    if int8:
        print("\nint8 / float32 of the same runtime, median ms, same run\n")
        print("| model | batch | " + " | ".join(f"{b[:-5]} int8 / float32" for b in int8) + " |")
        print("|---|---:|" + "---:|" * len(int8))
        print("\n".join(int8_rows))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
