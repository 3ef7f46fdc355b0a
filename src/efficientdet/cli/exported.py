"""Exported files (ONNX, OpenVINO IR, TFLite, TensorRT engines; float32 or int8) as ``predict`` and ``eval`` run them:
the backend that reads each, and the options that cannot apply to one (another model, another
image size, ``--half``), refused before any image is read."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..config import ModelConfig, PostprocessConfig


def file_backend(args: argparse.Namespace) -> str | None:
    """The backend that runs ``--weights``: ``--backend`` when it names one that reads files, else
    the one for the file's suffix (``.onnx``: onnxruntime, ``.xml``: openvino, ``.tflite``: litert, ``.engine``:
    tensorrt); None for weights
    that build a PyTorch model."""
    from ..export.metadata import ARTIFACT_SUFFIXES
    from ..inference.backends import FILE_BACKENDS

    if args.backend in FILE_BACKENDS.values():
        if args.weights is None:
            raise ValueError(f"--backend {args.backend} needs --weights FILE (.onnx, OpenVINO .xml, .tflite or "
                             f".engine; efficientdet export makes one)")
        return args.backend
    fmt = ARTIFACT_SUFFIXES.get(_suffix(args.weights))
    if fmt is None:
        return None
    if args.backend not in (None, FILE_BACKENDS[fmt]):
        raise ValueError(f"{args.weights} is an exported file: run it with --backend {FILE_BACKENDS[fmt]}, "
                         f"not {args.backend}")
    return FILE_BACKENDS[fmt]


def exported_detector(args: argparse.Namespace, backend: str, device: Any, image_size: tuple[int, int] | None,
                      postprocess: Callable[[ModelConfig, PostprocessConfig | None], PostprocessConfig | None],
                      **labels: Any):
    """A :class:`~efficientdet.inference.Detector` for ``--weights FILE`` on ``backend``;
    ``postprocess(config, graph NMS)`` gives the NMS settings (None: the file's own)."""
    from ..export import read_metadata
    from ..inference import Detector

    if getattr(args, "half", False) or getattr(args, "bf16", False):
        raise ValueError("--half / --bf16 apply to the torch backends; an exported file fixes its own precision")
    info = read_metadata(args.weights)
    config = info.config
    if args.model is not None and args.model != config.name:
        raise ValueError(f"{args.weights} holds {config.name}, not {args.model}")
    if image_size and image_size != tuple(config.image_size):
        raise ValueError(f"{args.weights} was exported at {config.image_size[0]}x{config.image_size[1]}; "
                         f"re-export it for another --image-size")
    post = postprocess(config, info.graph_nms)
    threads = getattr(args, "threads", None)
    if backend == "openvino":
        return Detector.from_openvino(args.weights, post, threads, **labels)
    if backend == "litert":
        return Detector.from_litert(args.weights, post, threads, **labels)
    if backend == "tensorrt":
        return Detector.from_tensorrt(args.weights, device, post, **labels)
    return Detector.from_onnx(args.weights, device, post, threads, **labels)  # refuses other NMS than the file's


def _suffix(weights: str | None) -> str:
    from pathlib import Path

    return Path(weights).suffix.lower() if weights else ""
