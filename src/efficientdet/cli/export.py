"""``efficientdet export --model M --weights W --format onnx|openvino|torchscript|torch-export|tflite|coreml|tensorrt --out FILE``.

The file takes preprocessed pixels ``[B, 3, H, W]`` (any batch size) at the model's image size
and gives the raw per-level outputs; ``--nms`` (ONNX only) puts box decoding and hard NMS into
the graph so that it gives detections. ONNX has no soft-NMS operator, so the official soft-NMS
default cannot be exported; ``predict --nms hard`` gives the same detections as such a file.

``--int8`` (ONNX, OpenVINO) quantises after training: ``--calibration`` images (a dataset
YAML's training split, or a folder) go through the model's own preprocessing; ONNX Runtime's
``quantize_static`` (QDQ, per-channel weights) or NNCF measures their ranges. The layers named
by ``--keep-float`` stay in float. ONNX files and OpenVINO IRs carry the model's config, label
space and (int8) calibration in their metadata, so that ``predict`` and ``eval`` run them alone.

``--format tflite`` (LiteRT, batch 1; ``--fp16`` weights or ``--int8``) runs with ``--backend
litert``; ``--detection-signature`` makes it a file for the TFLite detection clients (MediaPipe
Tasks' ``ObjectDetector``): NHWC image in, decoding and hard NMS inside, boxes / classes / scores /
count out, the label map and normalisation in its TFLite metadata. ``--format coreml`` writes an
``.mlpackage`` (image input, raw outputs; ``--fp16``) that runs on macOS and iOS. ``--format
tensorrt`` builds a TensorRT engine on this machine's NVIDIA GPU (float32, ``--fp16`` or
``--int8``; batches up to ``--max-batch``); it runs with ``--backend tensorrt`` on GPUs of that
architecture, with that TensorRT version.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .options import add_image_size, add_model, add_nms, add_weights, nms_overrides, resolve_image_size, subcommand


def run(args: argparse.Namespace) -> int:
    from .. import create_model
    from ..export import (BATCH_ONE_FORMATS, KEEP_FLOAT_FORMATS, SUFFIXES, check_options, export_model,
                          load_calibration, require_runtimes)
    from ..export.quantize import DEFAULT_IMAGES, calibration_method, check_keep_float

    # Options first: a bad one fails before the model is built or an image read.
    check_options(args.format, args.nms, args.int8, args.fp16, args.detection_signature)
    if not args.out.endswith(SUFFIXES[args.format]):
        raise ValueError(f"--out for --format {args.format} must end in {SUFFIXES[args.format]}, got {args.out!r}")
    changes = nms_overrides(args)
    graph_nms = args.nms or args.detection_signature
    if changes and not graph_nms:
        raise ValueError(f"{', '.join('--' + name.replace('_', '-') for name in changes)} only apply with --nms "
                         f"or --detection-signature")
    int8_options = [f"--{o.replace('_', '-')}" for o in ("calibration", "calibration_images", "calibration_method",
                                                         "keep_float") if getattr(args, o) is not None]
    if int8_options and not args.int8:
        raise ValueError(f"{', '.join(int8_options)} only apply with --int8")
    if args.int8 and args.calibration is None:
        raise ValueError("--int8 needs --calibration DATA.yaml or FOLDER: images whose ranges set the int8 scales")
    keep_float = None if args.keep_float is None else check_keep_float(
        [] if args.keep_float == "none" else args.keep_float.split(","))
    method = calibration_method(args.format, args.calibration_method) if args.int8 else None
    if args.calibration_images is not None and args.calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {args.calibration_images}")
    image_size = resolve_image_size(args, args.model)
    if args.keep_float is not None and args.format not in KEEP_FLOAT_FORMATS:
        raise ValueError(f"--keep-float applies to {', '.join(KEEP_FLOAT_FORMATS)}; --format {args.format} "
                         f"quantises every layer it can")
    if args.max_batch is not None and args.format != "tensorrt":
        raise ValueError(f"--max-batch is for --format tensorrt, not {args.format}")
    if args.max_batch is not None and args.max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {args.max_batch}")
    require_runtimes(args.format, args.int8, args.detection_signature)
    model = create_model(args.model, weights=args.weights, **({"image_size": image_size} if image_size else {}))
    post = None
    if graph_nms:
        post = dataclasses.replace(model.config.postprocess, method="hard", **changes)
    calibration = None
    if args.int8:
        calibration = load_calibration(args.calibration, model.config, args.calibration_images or DEFAULT_IMAGES,
                                       method,
                                       on_skip=lambda why: print(f"efficientdet export: skipped {why}", file=sys.stderr))
    path = export_model(model, args.out, args.format, nms=args.nms, postprocess_config=post,
                        calibration=calibration, keep_float=keep_float, fp16=args.fp16,
                        detection_signature=args.detection_signature, max_batch=args.max_batch)
    h, w = model.config.image_size
    what = "raw per-level outputs"
    if args.nms:
        what = "detections (hard NMS inside)"
    if args.detection_signature:
        what = "the TFLite detection signature (boxes, classes, scores, count; hard NMS inside; MediaPipe metadata)"
    if args.fp16:
        what += ", computing in float16" if args.format == "tensorrt" else ", float16 weights"
    if calibration is not None:
        what += (f", int8 calibrated on {len(calibration.images)} images of {args.calibration} "
                 f"({method}; {len(calibration.skipped)} unreadable skipped)")
    batch = "batch 1" if args.format in BATCH_ONE_FORMATS else "dynamic batch"
    if args.format == "tensorrt":
        from ..export.tensorrt import DEFAULT_MAX_BATCH

        batch = f"batches 1 to {args.max_batch or DEFAULT_MAX_BATCH}, for this GPU and TensorRT version"
    print(f"wrote {path} ({args.format}, {model.config.name} at {h}x{w}, {batch}, {what})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..export.quantize import DEFAULT_IMAGES, DEFAULT_KEEP_FLOAT, FLOAT_RULES, METHODS
    from ..export.tensorrt import DEFAULT_MAX_BATCH

    p = subcommand(sub, "export", "export to ONNX / OpenVINO / TorchScript / torch.export / TFLite / Core ML / "
                   "TensorRT (BN folded)", __doc__)
    p.add_argument("--format", required=True,
                   help="onnx, openvino, torchscript, torch-export, tflite, coreml or tensorrt")
    p.add_argument("--out", required=True,
                   help="output file (.onnx, .xml with its .bin beside it, .pt, .pt2, .tflite, .mlpackage or .engine)")
    add_model(p, required=True)
    add_weights(p, note=" (default: random init)")
    add_image_size(p)
    p.add_argument("--nms", action="store_true", help="ONNX only: decoding + hard NMS inside the graph")
    add_nms(p, method=False, when="with --nms or --detection-signature: ")
    p.add_argument("--detection-signature", action="store_true",
                   help="TFLite only: NHWC image in; decoding + hard NMS inside; boxes, classes, scores, count out")
    p.add_argument("--int8", action="store_true",
                   help="ONNX / OpenVINO / TFLite / TensorRT: int8 post-training static quantisation")
    p.add_argument("--fp16", action="store_true",
                   help="TFLite / Core ML: float16 weights; TensorRT: the network computes in float16")
    p.add_argument("--max-batch", type=int, metavar="N",
                   help=f"TensorRT: the largest batch the engine takes, and the one it is tuned for "
                        f"(default {DEFAULT_MAX_BATCH})")
    p.add_argument("--calibration", metavar="DATA.yaml|FOLDER",
                   help="with --int8: a dataset YAML (its train split) or a folder of images")
    p.add_argument("--calibration-images", type=int, metavar="N",
                   help=f"with --int8: images drawn from the calibration set (default {DEFAULT_IMAGES})")
    p.add_argument("--calibration-method", choices=METHODS,
                   help="with --int8: how activation ranges are set (default minmax, TFLite's only; entropy: "
                        "ONNX and TensorRT only, mean-minmax: OpenVINO only)")
    p.add_argument("--keep-float", metavar="RULES",
                   help=f"with --int8: comma-separated parts kept in float, of {', '.join(FLOAT_RULES)}, or none "
                        f"(default {','.join(DEFAULT_KEEP_FLOAT)})")
    p.set_defaults(func=run)
