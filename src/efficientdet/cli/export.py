"""``efficientdet export --model M --weights W --format onnx|torchscript|torch-export --out FILE``.

The file takes preprocessed pixels ``[B, 3, H, W]`` (any batch size) at the model's image size
and gives the raw per-level outputs; ``--nms`` (ONNX only) puts box decoding and hard NMS into
the graph so that it gives detections. ONNX has no soft-NMS operator, so the official soft-NMS
default cannot be exported; ``predict --nms hard`` gives the same detections as such a file.
"""

from __future__ import annotations

import argparse
import dataclasses

from .options import add_image_size, add_model, add_nms, add_weights, nms_overrides, resolve_image_size, subcommand


def run(args: argparse.Namespace) -> int:
    from .. import create_model
    from ..export import SUFFIXES, check_options, export_model

    check_options(args.format, args.nms)
    if not args.out.endswith(SUFFIXES[args.format]):
        raise ValueError(f"--out for --format {args.format} must end in {SUFFIXES[args.format]}, got {args.out!r}")
    changes = nms_overrides(args)
    if changes and not args.nms:
        raise ValueError(f"{', '.join('--' + name.replace('_', '-') for name in changes)} only apply with --nms")
    image_size = resolve_image_size(args, args.model)
    model = create_model(args.model, weights=args.weights, **({"image_size": image_size} if image_size else {}))
    post = None
    if args.nms:
        post = dataclasses.replace(model.config.postprocess, method="hard", **changes)
    path = export_model(model, args.out, args.format, nms=args.nms, postprocess_config=post)
    h, w = model.config.image_size
    what = "detections (hard NMS inside)" if args.nms else "raw per-level outputs"
    print(f"wrote {path} ({args.format}, {model.config.name} at {h}x{w}, dynamic batch, {what})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "export", "export to ONNX / TorchScript / torch.export (BN folded, dynamic batch)", __doc__)
    p.add_argument("--format", required=True, help="onnx, torchscript or torch-export")
    p.add_argument("--out", required=True, help="output file (.onnx, .pt or .pt2)")
    add_model(p, required=True)
    add_weights(p, note=" (default: random init)")
    add_image_size(p)
    p.add_argument("--nms", action="store_true", help="ONNX only: decoding + hard NMS inside the graph")
    add_nms(p, method=False, when="with --nms: ")
    p.set_defaults(func=run)
