"""OpenVINO IR (``model.xml`` + ``model.bin``): our ONNX export converted by ``openvino.convert_model``.

Going through the ONNX file keeps one traced graph for both runtimes (checked to 1e-4 against
PyTorch) and the ONNX node names that :mod:`.quantize`'s float rules select. Weights stay float32:
``openvino.save_model`` would halve them to float16 by default. The metadata (:mod:`.metadata`)
is in the IR's ``rt_info`` under ``efficientdet``; the two files appear together, and only once
both are written.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_files
from ..extras import require
from ..model import EfficientDet
from ..weights import stored_labels
from .metadata import PREFIX, ArtifactInfo, artifact_metadata
from .onnx import onnx_graph

RT_SECTION = "efficientdet"


@functools.cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, its CPU plugin loaded, kept to the end.

    Why one: each Core's CPU plugin installs a signal stack for the thread that loads it, and when
    the plugin goes, munmaps it after putting back the stack it found. Two plugins that go in the
    order they came leave that thread's signal stack pointing at unmapped memory, and the next
    signal Python handles there (a child's SIGCHLD, a Ctrl-C) kills the process with SIGSEGV. Loaded
    first and kept, this plugin outlives every other (NNCF's own Cores included), so each later one
    goes before it and puts back a live stack.
    """
    ov = require("openvino", "openvino")
    core = ov.Core()
    core.get_property("CPU", "FULL_DEVICE_NAME")  # loads the plugin now, before any other Core's
    return core


def export_openvino(model: EfficientDet, path: str | os.PathLike, calibration: Any = None,
                    keep_float: Sequence[str] | None = None) -> Path:
    """Write ``model`` (BN folded) as an IR at ``path`` (``.xml``; the ``.bin`` beside it), with a
    dynamic batch size; with a :class:`~.quantize.Calibration`, int8 through NNCF."""
    ov = require("openvino", "openvino")
    onnx = require("onnx", "openvino")
    path = Path(path)
    proto = onnx_graph(model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(proto, str(Path(tmp) / "model.onnx"))
        converted = ov.convert_model(str(Path(tmp) / "model.onnx"))
    quantization = None
    if calibration is not None:
        from .quantize import quantize_openvino

        openvino_core()  # loaded before NNCF makes its own Cores: see openvino_core
        converted, quantization = quantize_openvino(converted, proto, calibration, keep_float)
    for key, value in artifact_metadata(ArtifactInfo(model.config, None, stored_labels(model), quantization)).items():
        converted.set_rt_info(value, [RT_SECTION, key.removeprefix(PREFIX)])
    weights = path.with_suffix(".bin")
    atomic_write_files([weights, path], lambda folder: ov.save_model(converted, str(folder / path.name),
                                                                     compress_to_fp16=False))
    return path


def read_openvino_properties(path: str | os.PathLike) -> dict[str, str]:
    """The metadata map of an IR (as :func:`.metadata.parse_metadata` reads it); its ``.bin`` must be there."""
    model = read_openvino_model(path)
    if not model.has_rt_info([RT_SECTION]):
        return {}
    return {PREFIX + key: value.astype(str) for key, value in model.get_rt_info([RT_SECTION]).astype(dict).items()}


def read_openvino_model(path: str | os.PathLike) -> Any:
    """``openvino.Model`` of an IR or ONNX file, refusing an IR whose weights file is missing by name."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    weights = path.with_suffix(".bin")
    if path.suffix.lower() == ".xml" and not weights.is_file():
        raise ValueError(f"{path}: its weights file {weights.name} is missing (an OpenVINO IR is the .xml and "
                         f"the .bin beside it); copy both, or re-export")
    try:
        return openvino_core().read_model(str(path))
    except RuntimeError as e:
        raise ValueError(f"{path}: OpenVINO cannot read it ({str(e).strip().splitlines()[-1]})") from None
