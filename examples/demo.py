"""Run a detector on a real photo and draw its boxes.

With ``--weights`` (an official checkpoint directory, our .safetensors or an effdet .pth) the
boxes are the checkpoint's; without, the network has random weights and only shows that the
pipeline runs end to end. The photo is scikit-image's ``astronaut`` (public domain).
"""

import argparse
import time

import numpy as np
import torch
from PIL import Image
from skimage import data
from torchvision.utils import draw_bounding_boxes

from efficientdet import Detector, create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--weights")
    parser.add_argument("--score-threshold", type=float, default=0.4)
    parser.add_argument("--out", default="demo.png")
    args = parser.parse_args()

    model = create_model(args.model, weights=args.weights)
    detector = Detector(model)
    image = data.astronaut()
    start = time.perf_counter()
    result = detector(image)
    ms = (time.perf_counter() - start) * 1e3
    keep = result["scores"] >= args.score_threshold
    print(f"{args.model} ({'weights: ' + args.weights if args.weights else 'random weights'}): "
          f"{int(keep.sum())} detections >= {args.score_threshold} of {len(keep)} in {ms:.0f} ms")
    for box, score, name in zip(result["boxes"][keep], result["scores"][keep],
                                [n for n, k in zip(result["names"], keep) if k]):
        print(f"  {name:>14s} {score:.3f} [{', '.join(f'{v:.1f}' for v in box.tolist())}]")
    labels = [f"{n} {s:.2f}" for n, s, k in zip(result["names"], result["scores"].tolist(), keep) if k]
    drawn = draw_bounding_boxes(torch.from_numpy(image).permute(2, 0, 1), result["boxes"][keep], labels,
                                colors="red", width=2)
    Image.fromarray(np.ascontiguousarray(drawn.permute(1, 2, 0).numpy())).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
