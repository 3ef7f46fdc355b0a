"""ONNX export through ``torch.onnx`` (dynamo), BatchNorm folded, with a dynamic batch size.

The graph carries the raw per-level outputs (``cls_p3 … cls_p7``, ``box_p3 … box_p7``, as
:meth:`EfficientDet.forward` returns them) for preprocessed pixels at a fixed image size.

It can instead carry the whole detector after preprocessing (``nms=True``): box decoding,
the per-anchor best class, ONNX ``NonMaxSuppression`` and clipping are in the graph, whose
outputs are :class:`~efficientdet.postprocess.Detections` in network-input pixels (``boxes
[B, K, 4]`` xyxy, ``scores [B, K]``, ``classes [B, K]``, -1 on padding rows, ``num_valid [B]``).
That NMS is *hard* NMS: ONNX has no soft-NMS operator, so a file with NMS inside reproduces
``postprocess`` with ``method="hard"`` (class-agnostic, as the official model), not the
official soft-NMS default. ``NonMaxSuppression`` is appended to the exported network with
``onnx.helper``, since ``torch.onnx`` has no ONNX NMS to trace into.

The model's config and label space travel in the file's metadata (:mod:`.metadata`); an int8
file (:mod:`.quantize`) also says how it was calibrated.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import box_coder
from ..anchors import generate_anchors
from ..atomic import atomic_write
from ..config import ModelConfig, PostprocessConfig
from ..model import EfficientDet
from ..postprocess import best_class_per_anchor, flatten_levels
from ..weights import stored_labels
from .metadata import ArtifactInfo, artifact_metadata
from ..extras import require

INPUT_NAME = "images"
DETECTION_OUTPUTS = ("boxes", "scores", "classes", "num_valid")


def raw_output_names(config: ModelConfig) -> list[str]:
    return [f"{kind}_p{level}" for kind in ("cls", "box") for level in config.levels]


class RawOutputs(nn.Module):
    """The network with its outputs as one flat tuple (class levels, then box levels): export
    formats name outputs one tensor at a time."""

    def __init__(self, model: EfficientDet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls_out, box_out = self.model(images)
        return (*cls_out, *box_out)


class DecodedOutputs(nn.Module):
    """Network → every anchor's decoded box (xyxy, network pixels, unclipped as NMS wants it),
    best-class score and class: the part of ``postprocess`` before NMS, vectorised for export."""

    def __init__(self, model: EfficientDet):
        super().__init__()
        self.model = model
        self.register_buffer("anchors", generate_anchors(model.config))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cls_out, box_out = self.model(images)
        best, classes = best_class_per_anchor(cls_out, self.model.config.num_classes)
        return box_coder.decode(flatten_levels(box_out, 4), self.anchors), torch.sigmoid(best), classes


class HalfInside(nn.Module):
    """``module`` computing in float16 between float32 input and outputs: a graph whose every
    layer is typed float16, for runtimes that take precision from the graph (TensorRT's strongly
    typed networks)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(module).half()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(x.float() if x.is_floating_point() else x for x in self.module(images.half()))


def example_input(model: EfficientDet, batch_size: int) -> torch.Tensor:
    param = next(model.parameters())
    return torch.zeros(batch_size, 3, *model.config.image_size, dtype=param.dtype, device=param.device)


def onnx_graph(model: EfficientDet, nms: bool = False, postprocess_config: PostprocessConfig | None = None,
               float16: bool = False) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (BN folded by the caller), optionally with the NMS tail
    (module docstring) or computing in float16 (:class:`HalfInside`); no metadata yet."""
    post = postprocess_config or model.config.postprocess
    if nms and post.method != "hard":
        raise ValueError("ONNX has no soft-NMS operator: NMS inside the graph must be hard NMS (method='hard')")
    if nms and not post.class_agnostic:
        raise ValueError("NMS in the ONNX graph is class-agnostic, as the official model's")
    wrapper = DecodedOutputs(model) if nms else RawOutputs(model)
    names = ["nms_boxes", "nms_scores", "nms_classes"] if nms else raw_output_names(model.config)
    if float16:
        wrapper = HalfInside(wrapper)
    program = torch.onnx.export(
        wrapper.eval(), (example_input(model, 2).float(),), input_names=[INPUT_NAME], output_names=names,
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1024)}}, dynamo=True,
        verbose=False, optimize=True,
    )
    proto = program.model_proto
    if nms:
        _append_nms(proto, post, model.config.image_size)
    return proto


def export_onnx(model: EfficientDet, path: str | os.PathLike, *, nms: bool = False,
                postprocess_config: PostprocessConfig | None = None, calibration: Any = None,
                keep_float: tuple[str, ...] | None = None) -> Path:
    """Write ``model`` (BN folded) to ``path``, atomically; with a
    :class:`~.quantize.Calibration`, int8 through ONNX Runtime (:func:`.quantize.quantize_onnx`)."""
    onnx = require("onnx", "export")

    proto = onnx_graph(model, nms, postprocess_config)
    quantization = None
    if calibration is not None:
        from .quantize import quantize_onnx

        proto, quantization = quantize_onnx(proto, calibration, keep_float)
    info = ArtifactInfo(model.config, (postprocess_config or model.config.postprocess) if nms else None,
                        stored_labels(model), quantization)
    onnx.helper.set_model_props(proto, artifact_metadata(info))
    onnx.checker.check_model(proto)
    return atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


def _append_nms(proto: Any, post: PostprocessConfig, image_size: tuple[int, int]) -> None:
    """Append ONNX ``NonMaxSuppression`` and the padding to ``[B, K]`` rows to a decoded-outputs graph.

    NMS returns ``(image, class, box)`` triples ``[M, 3]``, per image in descending score; a
    one-hot cumulative sum over images gives each triple its row within its image, and
    ``ScatterND`` writes the rows into zero-filled ``[B, K, …]`` outputs.
    """
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    k = post.max_detections
    h, w = image_size
    score_threshold = max(post.score_threshold, float(np.finfo(np.float32).min))
    consts = {
        "nms_max": np.array([k], np.int64), "nms_iou": np.array([post.iou_threshold], np.float32),
        "nms_thr": np.array([score_threshold], np.float32), "c0": np.array([0], np.int64),
        "c1": np.array([1], np.int64), "c2": np.array([2], np.int64), "c1s": np.array(1, np.int64),
        "c0s": np.array(0, np.int64), "k_shape": np.array([k], np.int64), "four": np.array([4], np.int64),
        "zero_f": np.array([0.0], np.float32), "limit": np.array([w, h, w, h], np.float32),
    }
    graph = proto.graph
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in consts.items())
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["nms_scores", "c1"], ["scores_b1n"]),
        n("NonMaxSuppression", ["nms_boxes", "scores_b1n", "nms_max", "nms_iou", "nms_thr"], ["selected"],
          center_point_box=0),
        n("Gather", ["selected", "c0s"], ["sel_image"], axis=1),  # [M]
        n("Gather", ["selected", "c2"], ["sel_box"], axis=1),  # [M, 1]
        n("Unsqueeze", ["sel_image", "c1"], ["sel_image_col"]),  # [M, 1]
        n("Concat", ["sel_image_col", "sel_box"], ["sel_at"], axis=1),  # [M, 2]
        n("GatherND", ["nms_boxes", "sel_at"], ["sel_boxes_raw"]),
        n("Max", ["sel_boxes_raw", "zero_f"], ["sel_boxes_pos"]),
        n("Min", ["sel_boxes_pos", "limit"], ["sel_boxes"]),  # clip after NMS, as postprocess does
        n("GatherND", ["nms_scores", "sel_at"], ["sel_scores"]),
        n("GatherND", ["nms_classes", "sel_at"], ["sel_classes"]),
        # Row of each selection within its image: cumulative count of that image's selections.
        n("Shape", ["nms_scores"], ["scores_shape"]),
        n("Gather", ["scores_shape", "c0"], ["batch"]),  # [1]
        n("Squeeze", ["batch", "c0"], ["batch_s"]),
        n("Range", ["c0s", "batch_s", "c1s"], ["image_ids"]),  # [B]
        n("Equal", ["sel_image_col", "image_ids"], ["onehot_b"]),  # [M, B]
        n("Cast", ["onehot_b"], ["onehot"], to=TensorProto.INT64),
        n("CumSum", ["onehot", "c0s"], ["running"]),
        n("GatherElements", ["running", "sel_image_col"], ["count"], axis=1),  # [M, 1]
        n("Sub", ["count", "c1"], ["row"]),
        n("Concat", ["sel_image_col", "row"], ["out_at"], axis=1),  # [M, 2]
        n("ReduceSum", ["onehot", "c0"], ["num_valid"], keepdims=0),
        n("Concat", ["batch", "k_shape"], ["bk"], axis=0),
        n("Concat", ["batch", "k_shape", "four"], ["bk4"], axis=0),
        n("ConstantOfShape", ["bk4"], ["zeros_bk4"], value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0])),
        n("ConstantOfShape", ["bk"], ["zeros_bk"], value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0])),
        n("ConstantOfShape", ["bk"], ["minus_bk"], value=helper.make_tensor("", TensorProto.INT64, [1], [-1])),
        n("ScatterND", ["zeros_bk4", "out_at", "sel_boxes"], ["boxes"]),
        n("ScatterND", ["zeros_bk", "out_at", "sel_scores"], ["scores"]),
        n("ScatterND", ["minus_bk", "out_at", "sel_classes"], ["classes"]),
    ]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", k, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", k]),
        helper.make_tensor_value_info("classes", TensorProto.INT64, ["batch", k]),
        helper.make_tensor_value_info("num_valid", TensorProto.INT64, ["batch"]),
    ])
    _ensure_opset(proto, 13)


def _ensure_opset(proto: Any, minimum: int) -> None:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < minimum:
            raise ValueError(f"the exported graph has opset {opset.version}; NMS needs at least {minimum}")


def read_onnx_properties(path: str | os.PathLike) -> dict[str, str]:
    """The metadata map of an ONNX file (its ``metadata_props``)."""
    onnx = require("onnx", "export")

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError, ... for what is not an ONNX file
        raise ValueError(f"{path}: not a readable ONNX file ({e})") from None
    return {p.key: p.value for p in proto.metadata_props}
