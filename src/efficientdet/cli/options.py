"""The options several subcommands share, declared and read here once, so that every command
speaks one dialect: ``--device``, ``--half`` / ``--bf16``, ``--threads``, ``--image-size`` (``N``
or ``HxW`` everywhere) and the NMS options, whose ``--nms`` takes the config's own words
(:class:`~efficientdet.config.PostprocessConfig`: ``gaussian`` or ``hard``). ``predict`` and
``serve`` build their detector from these options the same way (:func:`build_detector`) and guard
memory with the same ``--max-megapixels``.

Values are checked when a command starts, before any file is read; an error names the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from ..config import PostprocessConfig, get_config, min_input_size

DEFAULT_MODEL = "efficientdet-d0"
NMS_METHODS = ("gaussian", "hard")
NMS_OPTIONS = ("score_threshold", "iou_threshold", "max_detections")
NMS_HELP = {
    "score_threshold": (float, "minimum score kept by NMS (default: the model's, 0.001)"),
    "iou_threshold": (float, "NMS IoU threshold (default: the model's, 0.5)"),
    "max_detections": (int, "detections per image (default: the model's, 100)"),
}


def subcommand(sub: argparse._SubParsersAction, name: str, summary: str, doc: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``doc`` (its module docstring) as written."""
    return sub.add_parser(name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model(parser: argparse.ArgumentParser, required: bool = False, default: str | None = None,
              note: str = "") -> None:
    """``--model``: a name of :func:`~efficientdet.list_models`; ``note`` ends its help line."""
    what = f" (default {default})" if default else note
    parser.add_argument("--model", required=required, default=default, help=f"variant, e.g. efficientdet-d0{what}")


WEIGHTS_HELP = ("official checkpoint dir, .safetensors, effdet .pth, or published weights by name: coco, "
                "coco:effdet, advprop, coco640 (fetched once into the cache; see `efficientdet weights list`)")


def add_weights(parser: argparse.ArgumentParser, required: bool = False, note: str = "",
                default: str | None = None) -> None:
    """``--weights``: any file or zoo name ``create_model`` reads; ``note`` ends its help line."""
    parser.add_argument("--weights", required=required, default=default, help=WEIGHTS_HELP + note)


def check_weights_name(weights: str, model: str) -> None:
    """A published-weights name given to ``--weights`` is checked before any work (a path is
    checked when it is read)."""
    from pathlib import Path

    from ..weights.zoo import find, is_weights_name

    if not Path(weights).exists() and is_weights_name(weights):
        find(weights, model)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda when available)")


def add_precision(parser: argparse.ArgumentParser, int8: bool = False) -> None:
    """``--half`` / ``--bf16``, and with ``int8`` ``--int8`` (the exported backends)."""
    dtype = parser.add_mutually_exclusive_group()
    dtype.add_argument("--half", action="store_true", help="float16 network (CUDA)")
    dtype.add_argument("--bf16", action="store_true", help="bfloat16 network (CPU with AVX-512 BF16 / AMX, CUDA)")
    if int8:
        dtype.add_argument("--int8", action="store_true", help="int8 network (--backend onnxruntime, openvino, litert or tensorrt)")


def precision(args: argparse.Namespace) -> str:
    if getattr(args, "int8", False):
        return "int8"
    return "float16" if args.half else "bfloat16" if args.bf16 else "float32"


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="torch / ONNX Runtime / OpenVINO inference threads "
                                                    "(default: torch's)")


def add_image_size(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    what = f"default {default}" if default else "default: the model's"
    parser.add_argument("--image-size", default=default, metavar="N|HxW",
                        help=f"network input: N (square) or height x width, e.g. 640x384 ({what})")


def parse_image_size(text: str) -> int | tuple[int, int]:
    """``512`` → 512 (square, as the configs read an int); ``640x384`` → (640, 384) as (height,
    width). Only the form is checked: how small a side may be is the model's to say."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--image-size must be N or HxW, got {text!r}") from None
    if len(size) not in (1, 2):
        raise ValueError(f"--image-size must be N or HxW, got {text!r}")
    return size[0] if len(size) == 1 else size  # type: ignore[return-value]


def resolve_image_size(args: argparse.Namespace, model: str | None = None) -> tuple[int, int] | None:
    """``--image-size`` as (height, width), None when not given; a side below ``model``'s
    :func:`~efficientdet.config.min_input_size` (1 without a model) is refused."""
    if args.image_size is None:
        return None
    size = parse_image_size(args.image_size)
    size = (size, size) if isinstance(size, int) else size
    low = min_input_size(get_config(model)) if model else 1
    if min(size) < low:
        sides = f"sides of at least {low} pixels for {model}" if model else "positive sides"
        raise ValueError(f"--image-size must be N or HxW with {sides}, got {args.image_size!r}")
    return size


def nms_method(text: str) -> str:
    """``--nms``: the config's words; ``soft``, the spelling predict and benchmark had, is gaussian."""
    return "gaussian" if text == "soft" else text


def add_nms(parser: argparse.ArgumentParser, method: bool = True, when: str = "") -> None:
    """``--nms`` (unless ``method`` is False) and the NMS thresholds; ``when`` starts each help line."""
    if method:
        parser.add_argument("--nms", type=nms_method, choices=NMS_METHODS,
                            help="gaussian (soft-NMS, the official default; 'soft' is read as it) or hard "
                                 "(default: the model's)")
    for field in NMS_OPTIONS:
        kind, text = NMS_HELP[field]
        parser.add_argument("--" + field.replace("_", "-"), type=kind, help=when + text)


def nms_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The NMS values the user gave (``PostprocessConfig`` field → value), checked here, before any
    work, by ``PostprocessConfig`` itself; the error names the option (``--score-threshold``)."""
    changes = {f: getattr(args, f) for f in NMS_OPTIONS if getattr(args, f, None) is not None}
    try:
        PostprocessConfig(**changes)
    except ValueError as e:
        field, _, rest = str(e).partition(" ")
        raise ValueError(f"--{field.replace('_', '-')} {rest}") from None
    return changes


def postprocess_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The NMS settings the user gave, ``--nms`` as ``method``; unset ones keep the model's."""
    changes = nms_overrides(args)
    if args.nms is not None:
        changes["method"] = args.nms
    return changes


def add_max_megapixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-megapixels", type=float, default=100.0, help="refuse larger images (memory guard)")


def pixel_budget(max_megapixels: float) -> int:
    """``--max-megapixels`` → a pixel count, refusing values that would disable the memory guard."""
    if not math.isfinite(max_megapixels) or max_megapixels <= 0:
        raise ValueError(f"max megapixels must be a positive number, got {max_megapixels}")
    return int(max_megapixels * 1e6)


def build_detector(args: argparse.Namespace, device, changes: dict[str, object],
                   image_size: tuple[int, int] | None):
    """A :class:`~efficientdet.inference.Detector` for ``--backend``, ``--model`` (default
    efficientdet-d0), ``--weights`` (default: coco; or an exported file, run by its runtime), the
    precision and NMS ``changes``."""
    from .. import create_model
    from ..inference import Detector
    from .exported import exported_detector, file_backend

    backend = file_backend(args)
    if backend is not None:
        def post(config, graph_nms):
            return dataclasses.replace(graph_nms or config.postprocess, **changes) if changes else None

        return exported_detector(args, backend, device, image_size, post)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    model = create_model(args.model or DEFAULT_MODEL, weights=args.weights or "coco",
                         **({"image_size": image_size} if image_size else {}))
    post = dataclasses.replace(model.config.postprocess, **changes)
    return Detector.from_model(model, args.backend or "eager", device, precision(args), post)
