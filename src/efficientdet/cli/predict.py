"""``efficientdet predict INPUTS... [--model M] [--weights W] [--out DIR]``: detect on images, folders, globs, videos.

Without ``--weights`` the official COCO weights of ``--model`` (default efficientdet-d0) are used,
fetched once into the cache (``efficientdet weights``).

Writes annotated images / videos, ``detections.json`` (COCO results) and ``images.json`` to
``--out``; unreadable files are named on stderr and skipped (exit 1 only with ``--strict``).
Folders are searched with all their subfolders for image and video files; outputs keep each
file's path below the folder, and the other files found are counted as not read. ``--out`` may
not be, or lie above, a folder holding an input: nothing is ever written over an input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import get_config
from ..inference.backends import BACKENDS
from ..inference.video import DEFAULT_MAX_VIDEO_FRAMES
from .options import (DEFAULT_MODEL, add_device, add_image_size, add_max_megapixels, add_model, add_nms,
                      add_precision, add_threads, add_weights, build_detector, check_weights_name, pixel_budget,
                      postprocess_overrides, resolve_image_size, subcommand)


DEFAULT_OUT = Path("runs/predict")


def fresh_folder(base: Path) -> Path:
    """``base`` when it does not exist, else the first free ``base2``, ``base3``, ...: a default
    output folder never mixes two runs' files."""
    if not base.exists():
        return base
    taken = {p.name for p in base.parent.iterdir()}
    return next(base.with_name(f"{base.name}{i}") for i in range(2, len(taken) + 3) if f"{base.name}{i}" not in taken)


def frame_budget(max_video_frames: int) -> int:
    """``--max-video-frames``, refusing values that would disable the memory guard."""
    if max_video_frames < 1:
        raise ValueError(f"max video frames must be a positive number, got {max_video_frames}")
    return max_video_frames


def run(args: argparse.Namespace) -> int:
    """Under ``torchrun`` each rank predicts its shard of the inputs and writes their annotated
    copies; rank 0 alone prints, and writes the JSON summaries of all ranks, as one process would."""
    from ..distributed import broadcast_from_main, init_distributed, shard
    from ..inference.sources import scan_inputs
    from ..inference.writer import OutputWriter, check_out_dir, numeric_names, write_summaries
    from .exported import file_backend

    # Options first: a bad one fails before any file is read or written.
    if args.model is not None:
        get_config(args.model)
    if args.weights is not None and file_backend(args) is None:
        check_weights_name(args.weights, args.model or DEFAULT_MODEL)
    changes = postprocess_overrides(args)
    image_size = resolve_image_size(args, args.model)
    if args.batch_size < 1 or args.workers < 0 or (args.threads is not None and args.threads < 1):
        raise ValueError("--batch-size must be >= 1, --threads >= 1 and --workers >= 0")
    max_pixels = pixel_budget(args.max_megapixels)
    max_frames = frame_budget(args.max_video_frames)
    rank, world, device = init_distributed(args.device)
    sources, left_out = scan_inputs(args.inputs)
    if args.out is None:  # every rank writes into the folder rank 0 picked
        args.out = broadcast_from_main(str(fresh_folder(DEFAULT_OUT)) if rank == 0 else None)
    check_out_dir(args.out, sources)
    detector = build_detector(args, device, changes, image_size)
    with OutputWriter(args.out, draw=not args.no_draw, draw_threshold=args.draw_threshold,
                      save_json=args.save_json, save_txt=args.save_txt) as writer:
        failures = _predict(args, detector, shard(sources, rank, world), writer, max_pixels, max_frames,
                            main=rank == 0, report=world == 1)
    records, failures = _gather(writer.records, failures, sources)
    if rank != 0:
        return 1 if failures and args.strict else 0
    if world > 1:
        for failure in failures:
            _report(failure)
    detections = write_summaries(args.out, records, numeric_names(sources))
    frames = sum(r.frame is not None for r in records)
    print(f"{len(records) - frames} images and {frames} video frames → {args.out} "
          f"({detections} detections in detections.json); {len(failures)} files skipped, "
          f"{len(left_out)} other files in the folders not read (not image or video suffixes)")
    return 1 if failures and args.strict else 0


def _predict(args: argparse.Namespace, detector, sources: list, writer, max_pixels: int, max_frames: int,
             main: bool, report: bool) -> list:
    """Predictions of ``sources`` through ``writer``; returns the failures, each reported at once
    when ``report`` (one process; under ``torchrun`` rank 0 reports them all at the end)."""
    from ..inference.sources import Failure
    from ..inference.stream import predict_sources

    failures = []
    for item in predict_sources(detector, sources, args.batch_size, args.workers, keep_images=not args.no_draw,
                                max_pixels=max_pixels, progress=main and not args.quiet, max_video_frames=max_frames):
        if isinstance(item, Failure):
            failures.append(item)
            if report:
                _report(item)
        else:
            writer.write(item)
    return failures


def _gather(records: list, failures: list, sources: list) -> tuple[list | None, list]:
    """Every rank's records (on rank 0) and failures (on all ranks, for the exit status) in the
    order one process meets them: the images, then each video's frames, in the order of ``sources``."""
    from ..distributed import all_gather_sorted, gather_sorted

    position = {source.name: i for i, source in enumerate(sources)}
    records = gather_sorted(records, key=lambda r: (r.frame is not None, position[r.name], r.frame or 0))
    failures = all_gather_sorted(failures, key=lambda f: (f.source.is_video, position[f.source.name]))
    return records, failures


def _report(failure) -> None:
    from tqdm import tqdm

    tqdm.write(f"efficientdet predict: skipped {failure.error}", file=sys.stderr)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "predict", "detect objects in images, folders, globs and videos", __doc__)
    p.add_argument("inputs", nargs="+", help="image or video files, folders (searched with their subfolders; "
                   "outputs keep the path below the folder), or glob patterns (quoted)")
    add_model(p, note=f" (default {DEFAULT_MODEL}; an exported file names its own)")
    add_weights(p, note="; or an exported .onnx / OpenVINO .xml / .tflite, float32 or int8 (default: coco)")
    p.add_argument("--out", help="output folder; may not hold any input (default: runs/predict, or "
                                 "runs/predict2, 3, ... when that exists)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="default: eager, or for an exported --weights file the runtime of its kind")
    add_threads(p)
    add_device(p)
    add_precision(p)
    add_image_size(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=1, help="DataLoader processes decoding images (0: in-process)")
    add_nms(p)
    p.add_argument("--draw-threshold", type=float, default=0.4, help="minimum score drawn on the images")
    p.add_argument("--no-draw", action="store_true", help="write no annotated images or videos")
    p.add_argument("--save-json", action="store_true", help="also one JSON file per image / video in OUT/labels")
    p.add_argument("--save-txt", action="store_true", help="also one text file per image / video in OUT/labels")
    add_max_megapixels(p)
    p.add_argument("--max-video-frames", type=int, default=DEFAULT_MAX_VIDEO_FRAMES,
                   help="refuse longer videos (memory guard: detections are kept for detections.json)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any input could not be read")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
