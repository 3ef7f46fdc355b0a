"""int8 post-training static quantisation, shared by the formats that hold it (ONNX, OpenVINO).

Calibration images go through the model's own preprocessing (:func:`load_calibration`); the
quantisers are ONNX Runtime's ``quantize_static`` (QDQ, per-channel int8 weights, uint8
activations) and NNCF's ``nncf.quantize`` (OpenVINO IR). The parts that lose most in int8 stay in
float by rule (:data:`FLOAT_RULES`), found in the exported graph by the module each ONNX node
came from (``torch.onnx`` records it in ``pkg.torch.onnx.name_scopes``), so that ORT's
``nodes_to_exclude`` and NNCF's ``ignored_scope`` name the same layers. The file's metadata
records the runtime, the calibration and the layers kept in float.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import logging
import random
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from ..extras import require

# How activation ranges are set from the calibration images: minmax (over all of them), entropy
# (ONNX Runtime: least KL divergence), percentile (clipping the outliers), mean-minmax (NNCF: each
# image's range, averaged). The first of each runtime's is its default: minmax for both, which kept
# the demo-trained Lite0's AP in int8 where NNCF's own default (mean-minmax) lost some (README).
METHODS = ("minmax", "entropy", "percentile", "mean-minmax")
RUNTIME_METHODS = {"onnx": ("minmax", "entropy", "percentile"), "openvino": ("minmax", "mean-minmax", "percentile"),
                   "tflite": ("minmax",), "tensorrt": ("minmax", "entropy", "percentile")}
DEFAULT_IMAGES = 100
CALIBRATION_SPLIT = "train"  # a dataset YAML calibrates on its training images, not on those it is scored on

# Parts of the network kept in float, each a test on (module path in the exported graph, the
# innermost module's class, ONNX op). The export wraps the model as ``model``.
FLOAT_RULES: dict[str, tuple[str, Callable[[str, str, str], bool]]] = {
    "stem": ("the first convolution: raw RGB in, 3 channels, so a coarse grid costs most and saves least",
             lambda module, cls, op: module == "model.backbone.stem_conv"),
    "predictors": ("the class / box predictors: their outputs are the logits and box codes themselves",
                   lambda module, cls, op: re.fullmatch(r"model\.(class|box)_net\.predict(\..*)?", module) is not None),
    "fusion": ("BiFPN fusion: inputs of different scales summed with learnt weights",
               lambda module, cls, op: re.fullmatch(r"model\.fpn\.cells\.\d+\.fnodes\.\d+", module) is not None),
    "swish": ("swish (x * sigmoid x): the graph's most frequent non-linearity",
              lambda module, cls, op: cls.endswith(".SiLU")),
}
DEFAULT_KEEP_FLOAT = ("stem", "predictors")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Preprocessed calibration images (``[3, H, W]`` float each) and where they came from."""

    images: list[torch.Tensor]
    source: str
    method: str | None = None  # one of METHODS; None: the quantiser's default (RUNTIME_METHODS)
    skipped: tuple[str, ...] = ()  # one message per unreadable file, naming it

    def batches(self, size: int = 1) -> list[Any]:
        """The images as float32 numpy batches ``[size, 3, H, W]`` (the last one smaller)."""
        return [torch.stack(self.images[i:i + size]).float().numpy() for i in range(0, len(self.images), size)]

    def record(self, method: str) -> dict[str, Any]:
        return {"source": self.source, "images": len(self.images), "method": method, "skipped": len(self.skipped)}


def calibration_method(fmt: str, method: str | None = None) -> str:
    """``method``, checked for ``fmt``'s quantiser, or that quantiser's default."""
    valid = RUNTIME_METHODS[fmt]
    if method is None:
        return valid[0]
    if method not in valid:
        raise ValueError(f"calibration method {method!r} is not one {fmt}'s quantiser has; valid: {', '.join(valid)}")
    return method


def check_keep_float(keep_float: Sequence[str]) -> tuple[str, ...]:
    unknown = [k for k in keep_float if k not in FLOAT_RULES]
    if unknown:
        raise ValueError(f"unknown float rule {', '.join(unknown)}; valid: {', '.join(FLOAT_RULES)}")
    return tuple(keep_float)


def calibration_files(source: str | Path) -> list[Path]:
    """The image files of a dataset YAML's training split, or of a folder and its subfolders (sorted)."""
    from ..data import load_dataset_yaml, load_split
    from ..data.formats import IMAGE_SUFFIXES

    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in (".yaml", ".yml"):
        return [s.image_path for s in load_split(load_dataset_yaml(path), CALIBRATION_SPLIT).samples]
    if not path.exists():
        raise ValueError(f"{path}: no such calibration dataset YAML or folder")
    raise ValueError(f"{path}: calibrate on a dataset YAML or a folder of images, not a file of another kind")


def load_calibration(source: str | Path, config: ModelConfig, count: int = DEFAULT_IMAGES,
                     method: str | None = None, max_pixels: int | None = None,
                     on_skip: Callable[[str], None] | None = None) -> Calibration:
    """``count`` images of ``source`` (:func:`calibration_files`), drawn at random (seed 0) so that
    they span the set rather than its first folder, read and preprocessed as the model's inputs.

    Unreadable files are skipped, each named in ``skipped`` and passed to ``on_skip`` as it is met;
    fewer than ``count`` readable images, or none at all, is an error.
    """
    from ..data import DEFAULT_MAX_PIXELS, read_image
    from ..preprocess import preprocess

    if count < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {count}")
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(METHODS)}")
    files = calibration_files(source)
    if not files:
        raise ValueError(f"{source}: no images to calibrate on")
    random.Random(0).shuffle(files)
    images, skipped = [], []
    for path in files:
        if len(images) == count:
            break
        try:
            image = read_image(path, max_pixels or DEFAULT_MAX_PIXELS)
        except (ValueError, OSError) as e:  # ImageError is a ValueError; a vanished file an OSError
            skipped.append(str(e) if str(path) in str(e) else f"{path}: {e}")
            if on_skip is not None:
                on_skip(skipped[-1])
            continue
        images.append(preprocess([image], config.image_size, config.preprocess)[0][0])
    unreadable = f" ({len(skipped)} unreadable)" if skipped else ""
    if not images:
        raise ValueError(f"{source}: no readable images to calibrate on{unreadable}")
    if len(images) < count:
        raise ValueError(f"{source}: {len(images)} readable images{unreadable}, fewer than the {count} asked "
                         f"for; give --calibration-images {len(images)} or more images")
    return Calibration(images, str(source), method, tuple(skipped))


def float_nodes(proto: Any, keep_float: Sequence[str]) -> dict[str, list[str]]:
    """The names of ``proto``'s nodes that each rule of ``keep_float`` keeps in float."""
    found: dict[str, list[str]] = {rule: [] for rule in keep_float}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
        module = scopes[-2] if len(scopes) >= 2 else ""  # the last scope is the node itself
        cls = classes[-2] if len(classes) >= 2 else ""
        for rule in keep_float:
            if FLOAT_RULES[rule][1](module, cls, node.op_type):
                found[rule].append(node.name)
    return found


def quantization_record(runtime: str, scheme: str, calibration: Calibration, method: str,
                        kept: dict[str, list[str]]) -> dict[str, Any]:
    """What the file's metadata says of its quantisation."""
    return {"precision": "int8", "runtime": runtime, "scheme": scheme, "calibration": calibration.record(method),
            "kept_float": {rule: len(names) for rule, names in kept.items()}}


def nonfinite_nodes(proto: Any) -> list[str]:
    """Nodes with a non-finite constant input, and the nodes that read their outputs: the
    max-pools' ``-inf`` padding (TF SAME, so that a padded cell never wins) and the pools. An
    infinite value has no int8 code, and ONNX Runtime would quantise the padded tensor with an
    infinite range (NaN zero points, garbage borders: outputs no longer track the input), so both
    stay in float; the pool's output, finite again, is quantised for what follows."""
    from onnx import numpy_helper

    nonfinite = set()
    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            nonfinite.add(tensor.name)
    padded = [node for node in proto.graph.node if nonfinite.intersection(node.input)]
    outputs = {name for node in padded for name in node.output}
    return [node.name for node in padded] + [node.name for node in proto.graph.node
                                             if outputs.intersection(node.input)]


@contextlib.contextmanager
def quiet_quantizers() -> Iterator[None]:
    """The quantisers print progress bars and advice (NNCF to stdout, ONNX Runtime through the root
    logger); our commands print their results on stdout (``benchmark --json -``). For the call,
    stdout goes to stderr and only errors are logged."""
    loggers = [logging.getLogger(), logging.getLogger("nncf")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def quantize_onnx(proto: Any, calibration: Calibration, keep_float: Sequence[str] | None = None,
                  for_tensorrt: bool = False) -> tuple[Any, dict[str, Any]]:
    """``proto`` (float32) → int8 QDQ through ONNX Runtime's ``quantize_static``, and its record.

    For ONNX Runtime on the CPU, weights are quantised on 7 bits (``reduce_range``): on AVX2 /
    AVX-512 without VNNI, its u8 × s8 kernels add pairs of products in 16 bits (``vpmaddubsw``),
    which saturate with full-range weights; measured on Lite0 that cost more than the lost bit
    does. ``for_tensorrt`` makes the form TensorRT's explicit quantisation reads instead: int8
    activations and weights, symmetric (zero point 0), weights on their full 8 bits, float biases.
    """
    onnx = require("onnx", "export")
    quantization = require("onnxruntime.quantization", "export")
    method = calibration_method("onnx", calibration.method)
    kept = float_nodes(proto, check_keep_float(DEFAULT_KEEP_FLOAT if keep_float is None else keep_float))
    methods = {"minmax": quantization.CalibrationMethod.MinMax, "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration.batches(8))

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else {proto.graph.input[0].name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(source))
        # ORT computes scales for every calibrated tensor, the padded ones too (NaN: numpy warns);
        # those stay in float (nonfinite_nodes) and the NaNs are never used.
        with quiet_quantizers(), np.errstate(invalid="ignore", divide="ignore"):
            quantization.quantize_static(
                str(source), str(target), Reader(), quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                activation_type=quantization.QuantType.QInt8 if for_tensorrt else quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8, reduce_range=not for_tensorrt,
                nodes_to_exclude=[n for names in kept.values() for n in names] + nonfinite_nodes(proto),
                calibrate_method=methods[method],
                # TensorRT dequantises int8 only: biases stay float (ORT would make them int32).
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
                if for_tensorrt else None)
        quantized = onnx.load(str(target))
    runtime, scheme = (("tensorrt", "QDQ, symmetric; int8 weights per channel, int8 activations per tensor")
                       if for_tensorrt else
                       ("onnxruntime", "QDQ; int8 weights per channel on 7 bits (reduce_range), uint8 activations "
                                       "per tensor"))
    return quantized, quantization_record(runtime, scheme, calibration, method, kept)


def quantize_openvino(model: Any, proto: Any, calibration: Calibration,
                      keep_float: Sequence[str] | None = None) -> tuple[Any, dict[str, Any]]:
    """An OpenVINO model converted from ``proto`` → int8 through ``nncf.quantize``, and its record.

    OpenVINO keeps the ONNX node names (a convolution ``n`` becomes ``n/WithoutBiases`` and its
    bias ``n``), except that an operation giving a model output is named after that output
    (``box_p3``), so the ignored scope is a pattern per kept node and per output it gives.

    Weights use 7 bits in every layer (NNCF's ``OverflowFix.ENABLE``; its default does the first
    layer only), for the reason :func:`quantize_onnx` gives: OpenVINO's CPU kernels without VNNI
    saturate the same way.
    """
    nncf = require("nncf", "openvino")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    method = calibration_method("openvino", calibration.method)
    kept = float_nodes(proto, check_keep_float(DEFAULT_KEEP_FLOAT if keep_float is None else keep_float))
    ranges = {"mean-minmax": RangeEstimatorParametersSet.MEAN_MINMAX, "minmax": RangeEstimatorParametersSet.MINMAX,
              "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE}
    outputs = {o.name for o in proto.graph.output}
    names = {name for names in kept.values() for name in names}
    names |= {o for node in proto.graph.node if node.name in names for o in node.output if o in outputs}
    patterns = [f"^{re.escape(name)}(/.*)?$" for name in sorted(names)]
    with quiet_quantizers():
        quantized = nncf.quantize(
            model, nncf.Dataset(calibration.batches(1)), subset_size=len(calibration.images),
            ignored_scope=nncf.IgnoredScope(patterns=patterns, validate=False),
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=ranges[method], overflow_fix=OverflowFix.ENABLE))
    scheme = "NNCF; int8 weights per channel on 7 bits (overflow fix), int8 / uint8 activations per tensor"
    return quantized, quantization_record("openvino", scheme, calibration, method, kept)
