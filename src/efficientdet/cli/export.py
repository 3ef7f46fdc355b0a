"""``efficientdet export --model M --weights W --format onnx|torchscript|torch-export --out FILE``.

The file takes preprocessed pixels ``[B, 3, H, W]`` (any batch size) at the model's image size
and gives the raw per-level outputs; ``--nms`` (ONNX only) puts box decoding and hard NMS into
the graph so that it gives detections. ONNX has no soft-NMS operator, so the official soft-NMS
default cannot be exported; ``predict --nms hard`` gives the same detections as such a file.
"""

from __future__ import annotations

import argparse
import dataclasses

from .predict import nms_overrides, parse_image_size


def run(args: argparse.Namespace) -> int:
    from .. import create_model
    from ..export import SUFFIXES, check_options, export_model

    check_options(args.format, args.nms)
    if not args.out.endswith(SUFFIXES[args.format]):
        raise ValueError(f"--out for --format {args.format} must end in {SUFFIXES[args.format]}, got {args.out!r}")
    changes = nms_overrides(args)
    if changes and not args.nms:
        raise ValueError(f"{', '.join('--' + name.replace('_', '-') for name in changes)} only apply with --nms")
    overrides = {"image_size": parse_image_size(args.image_size)} if args.image_size else {}
    model = create_model(args.model, weights=args.weights, **overrides)
    post = None
    if args.nms:
        post = dataclasses.replace(model.config.postprocess, method="hard", **changes)
    path = export_model(model, args.out, args.format, nms=args.nms, postprocess_config=post)
    h, w = model.config.image_size
    what = "detections (hard NMS inside)" if args.nms else "raw per-level outputs"
    print(f"wrote {path} ({args.format}, {model.config.name} at {h}x{w}, dynamic batch, {what})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX / TorchScript / torch.export (BN folded, dynamic batch)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="variant, e.g. efficientdet-d0")
    p.add_argument("--weights", help="official checkpoint dir, .safetensors or effdet .pth (default: random init)")
    p.add_argument("--format", required=True, help="onnx, torchscript or torch-export")
    p.add_argument("--out", required=True, help="output file (.onnx, .pt or .pt2)")
    p.add_argument("--image-size", help="network input N or HxW (default: the model's)")
    p.add_argument("--nms", action="store_true", help="ONNX only: decoding + hard NMS inside the graph")
    p.add_argument("--score-threshold", type=float, help="with --nms: minimum score (default 0.001)")
    p.add_argument("--iou-threshold", type=float, help="with --nms: IoU threshold (default 0.5)")
    p.add_argument("--max-detections", type=int, help="with --nms: detections per image (default 100)")
    p.set_defaults(func=run)
