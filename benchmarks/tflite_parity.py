"""TFLite files against PyTorch on real photos, at each model's own size: raw outputs and detections.

For each ``--models`` variant: random weights whose scores spread as a trained model's do
(:func:`efficientdet.benchmark.spread_random_weights`, BN statistics measured on the photos
compared, so that every layer's signal is of unit scale there), or the ``--weights`` given (one file per
model, any format ``predict`` reads, e.g. an official checkpoint directory), BN folded, converted to a float32 TFLite
file with raw outputs and to one with the detection signature (hard NMS inside, ``--max-detections``
rounds); then, on the scikit-image photos (astronaut, chelsea, coffee, rocket), preprocessed as
``predict`` does: the largest absolute difference of the raw outputs from PyTorch's, and the
signature file's detections against ``Detector`` with hard NMS — detections compared, classes
that differ, largest box difference as a share of the input side, largest score difference.
Prints a markdown table and the machine line.

    python benchmarks/tflite_parity.py [--models efficientdet-lite0 efficientdet-d0] [--weights W ...]
        [--max-detections 100]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from skimage import data as photos

from efficientdet import Detector, create_model
from efficientdet.benchmark import machine_line, spread_random_weights
from efficientdet.config import PostprocessConfig
from efficientdet.export.tflite import convert_tflite
from efficientdet.fuse import fuse_model
from efficientdet.preprocess import preprocess

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def runner(data: bytes):
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_content=data).get_signature_runner()
    (name,) = signature.get_input_details()
    count = len(signature.get_output_details())
    return lambda x: [signature(**{name: x.numpy()})[f"output_{i}"] for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["efficientdet-lite0", "efficientdet-d0"])
    parser.add_argument("--weights", nargs="+", help="one per model, in the order of --models")
    parser.add_argument("--max-detections", type=int, default=100)
    args = parser.parse_args()
    if args.weights and len(args.weights) != len(args.models):
        parser.error(f"--weights names {len(args.weights)} files for {len(args.models)} models")
    images = [torch.from_numpy(getattr(photos, name)()).permute(2, 0, 1) for name in PHOTOS]
    print("| model | size | raw outputs: max abs diff | detections | differing (count, class) | max box diff / side "
          "| max score diff | conversion s (raw, signature) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for i, name in enumerate(args.models):
        model = create_model(name, weights=args.weights[i] if args.weights else None).eval()
        if not args.weights:
            spread_random_weights(model, batch=preprocess(images, model.config.image_size, model.config.preprocess)[0])
        fused = fuse_model(model).eval()
        post = PostprocessConfig(method="hard", max_detections=args.max_detections)
        start = time.perf_counter()
        raw = runner(convert_tflite(fused))
        raw_s = time.perf_counter() - start
        start = time.perf_counter()
        sig = runner(convert_tflite(fused, post))
        sig_s = time.perf_counter() - start
        detector = Detector.from_model(model, postprocess_config=post)
        batch, _ = detector.preprocess(images)
        h, w = model.config.image_size
        raw_diff = box_diff = score_diff = 0.0
        compared = wrong = 0
        with torch.no_grad():
            cls_out, box_out = fused(batch)
            want = detector.detect(batch)
        for b in range(len(images)):
            for got, ref in zip(raw(batch[b:b + 1]), [*cls_out, *box_out]):
                raw_diff = max(raw_diff, float(np.abs(got[0] - ref[b].numpy()).max()))
            yxyx, classes, scores, count = sig(batch[b:b + 1].permute(0, 2, 3, 1))
            n = int(want.num_valid[b])
            compared += n
            wrong += int(count[0]) != n
            boxes = torch.from_numpy(yxyx[0, :n][:, [1, 0, 3, 2]]) * torch.tensor([w, h, w, h])
            wrong += int((torch.from_numpy(classes[0, :n]).long() != want.classes[b, :n]).sum())
            box_diff = max(box_diff, float((boxes - want.boxes[b, :n]).abs().max()) / max(h, w))
            score_diff = max(score_diff, float(np.abs(scores[0, :n] - want.scores[b, :n].numpy()).max()))
        weights = args.weights[i] if args.weights else "spread random"
        print(f"| {name} ({weights}) | {h}×{w} | {raw_diff:.1e} | {compared} | {wrong} | {box_diff:.1e} | {score_diff:.1e} "
              f"| {raw_s:.0f}, {sig_s:.0f} |", flush=True)
    print(f"\n{machine_line()}; photos: {', '.join(PHOTOS)}; hard NMS, {args.max_detections} detections per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
