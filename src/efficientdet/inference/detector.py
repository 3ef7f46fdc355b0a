"""The one inference front end: :class:`Detector` owns the label space, the preprocessing, a
backend and the un-padding, so that ``predict``, ``eval``, validation during training and the
Python API all give the same thing: each image's detections in its own pixels, with the label
ids of the weights.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import torch

from ..anchors import generate_anchors
from ..coco import label_space
from ..config import PostprocessConfig
from ..model import EfficientDet
from ..postprocess import Detections, postprocess
from ..preprocess import preprocess, to_chw_tensor
from .backends import (Backend, litert_backend, model_backend, onnx_backend, openvino_backend, tensorrt_backend,
                       torch_backend)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[K, 4]`` xyxy clipped to a ``height`` × ``width`` image. ``postprocess`` clips to the padded
    network input, as the official code does; scaled back, that overruns the image on its padded side."""
    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), limit)


class ImageDetections(NamedTuple):
    """One image's detections, on the CPU, best first."""

    boxes: torch.Tensor  # [K, 4] xyxy in original pixels
    scores: torch.Tensor  # [K]
    labels: torch.Tensor  # [K] int64 label ids (COCO category ids for an official model)
    names: list[str]  # K class names


class Detector:
    """Preprocess → network (any :class:`~.backends.Backend`) → decode + NMS → detections per image.

    ``Detector(model)`` runs ``model`` as it is; :meth:`from_model` runs a BN-folded copy (``eager``
    / ``compile``, any precision), :meth:`from_onnx` / :meth:`from_openvino` an exported file,
    float32 or int8, :meth:`from_litert` a TFLite file, :meth:`from_tensorrt` a TensorRT engine.
    ``detector(images)`` gives
    dicts; :meth:`predict` takes batches already preprocessed (evaluation, ``predict_sources``).

    ``label_ids`` / ``class_names`` name the outputs; by default those stored with the weights
    (``create_model(weights=…)`` keeps them, an ONNX file carries them), else COCO's for a 90-class
    model, else ids ``0..C-1`` named by their index (:func:`label_space`). ``device`` moves
    ``model``; a backend brings its own. NMS inside the network (ONNX ``--nms``) is the one used.
    """

    def __init__(self, model: EfficientDet | Backend, postprocess_config: PostprocessConfig | None = None,
                 device: str | torch.device | None = None, label_ids: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None):
        if isinstance(model, Backend) and device is not None:
            raise ValueError("a Backend runs on its own device; pass device to the function that builds it")
        backend = model if isinstance(model, Backend) else model_backend(model, device)
        self.config = backend.config
        self.network = backend.network
        self.device = backend.device
        self.graph_nms = backend.graph_nms is not None
        self.postprocess_config = backend.graph_nms or postprocess_config or self.config.postprocess
        cfg = self.config
        self.anchors = generate_anchors(cfg).to(self.device)
        self.label_ids, self.class_names = label_space(cfg.num_classes, backend.labels, label_ids, class_names)
        self._ids = torch.tensor(self.label_ids, dtype=torch.int64)

    @classmethod
    def from_model(cls, model: EfficientDet, backend: str = "eager", device: str | torch.device | None = None,
                   precision: str = "float32", postprocess_config: PostprocessConfig | None = None,
                   channels_last: bool = True, **labels: Any) -> "Detector":
        """A BN-folded copy of ``model`` (:func:`~.backends.torch_backend`); ``labels``: ``label_ids``,
        ``class_names``."""
        return cls(torch_backend(model, backend, device, precision, channels_last), postprocess_config, **labels)

    @classmethod
    def from_pretrained(cls, name: str = "efficientdet-d0", weights: str = "coco", backend: str = "eager",
                        device: str | torch.device | None = None, **options: Any) -> "Detector":
        """A detector with published weights, fetched once into the cache
        (:mod:`efficientdet.weights.hub`): ``Detector.from_pretrained("efficientdet-d0")`` is the
        official COCO D0; ``weights`` is any name ``create_model`` takes (``"coco:effdet"``, a path).
        ``options``: those of :meth:`from_model`."""
        from .. import create_model  # the package root builds models; imported here, as it imports this

        return cls.from_model(create_model(name, weights=weights).eval(), backend, device, **options)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                  postprocess_config: PostprocessConfig | None = None, threads: int | None = None,
                  **labels: Any) -> "Detector":
        """An ONNX file from :func:`efficientdet.export.export_model` through ONNX Runtime; its
        config comes from its metadata.

        With NMS in the graph, that NMS (hard, fixed at export) is used and ``postprocess_config``
        may not ask for another.
        """
        return cls._from_file(path, onnx_backend(path, device, threads), postprocess_config, labels)

    @classmethod
    def from_openvino(cls, path: str | os.PathLike, postprocess_config: PostprocessConfig | None = None,
                      threads: int | None = None, **labels: Any) -> "Detector":
        """An OpenVINO IR (``.xml``) or ONNX file from :func:`efficientdet.export.export_model`
        through OpenVINO on the CPU; otherwise as :meth:`from_onnx`."""
        return cls._from_file(path, openvino_backend(path, threads=threads), postprocess_config, labels)

    @classmethod
    def from_litert(cls, path: str | os.PathLike, postprocess_config: PostprocessConfig | None = None,
                    threads: int | None = None, **labels: Any) -> "Detector":
        """A ``.tflite`` file from :func:`efficientdet.export.export_model` through the LiteRT
        interpreter on the CPU; otherwise as :meth:`from_onnx`."""
        return cls._from_file(path, litert_backend(path, threads=threads), postprocess_config, labels)

    @classmethod
    def from_tensorrt(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                      postprocess_config: PostprocessConfig | None = None, **labels: Any) -> "Detector":
        """A TensorRT engine from :func:`efficientdet.export.export_model` on ``device`` (default: the
        current CUDA device), which must be of the GPU architecture it was built for; outputs are
        postprocessed there. Otherwise as :meth:`from_onnx`."""
        return cls._from_file(path, tensorrt_backend(path, device), postprocess_config, labels)

    @classmethod
    def _from_file(cls, path: str | os.PathLike, backend: Backend, postprocess_config: PostprocessConfig | None,
                   labels: dict[str, Any]) -> "Detector":
        nms = backend.graph_nms
        if nms is not None and postprocess_config not in (None, nms):
            raise ValueError(f"{path} has hard NMS inside (IoU {nms.iou_threshold}, score threshold "
                             f"{nms.score_threshold}, max {nms.max_detections}); for other NMS settings "
                             f"export it without --nms")
        return cls(backend, postprocess_config, **labels)

    def preprocess(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (any that :func:`~efficientdet.preprocess.to_chw_tensor` takes) → ``[B, 3, H, W]``
        and ``image_scales [B]``, made on the detector's device."""
        tensors = [to_chw_tensor(i).to(self.device) for i in images]
        return preprocess(tensors, self.config.image_size, self.config.preprocess)

    @torch.inference_mode()
    def detect(self, batch: torch.Tensor, image_scales: torch.Tensor | None = None) -> Detections:
        """Preprocessed ``[B, 3, H, W]`` → padded :class:`Detections` of class indices, in network
        pixels or, given ``image_scales``, original ones: the official numbers, not clipped to the image."""
        if len(batch) == 0:  # no call: runtimes fail on an empty batch or (OpenVINO) repeat their last outputs
            return Detections(batch.new_zeros(0, 0, 4), batch.new_zeros(0, 0),
                              torch.zeros(0, 0, dtype=torch.long, device=batch.device),
                              torch.zeros(0, dtype=torch.long, device=batch.device))
        if self.graph_nms:
            dets = self.network(batch)
            if image_scales is not None:
                dets = dets._replace(boxes=dets.boxes * image_scales.to(dets.boxes.dtype)[:, None, None])
            return dets
        cls_out, box_out = self.network(batch)
        cls_out = [c.to(self.device) for c in cls_out]
        box_out = [b.to(self.device) for b in box_out]
        scales = image_scales.to(self.device) if image_scales is not None else None
        return postprocess(cls_out, box_out, self.anchors, self.postprocess_config, self.config.image_size, scales)

    def predict(self, batch: torch.Tensor, image_scales: torch.Tensor,
                sizes: Sequence[tuple[int, int]] | None = None) -> list[ImageDetections]:
        """A preprocessed batch and its ``image_scales [B]`` → each image's detections in original
        pixels, with label ids. Boxes are clipped to each image's ``(height, width)`` in ``sizes``;
        without ``sizes`` they stay as the official postprocessing gives them."""
        dets = self.detect(batch, image_scales)
        return [self._unpad(dets, b, sizes[b] if sizes is not None else None) for b in range(len(dets.num_valid))]

    def _unpad(self, dets: Detections, b: int, size: tuple[int, int] | None) -> ImageDetections:
        """Image ``b``'s valid rows, its classes as label ids and names, its boxes within ``size``."""
        n = int(dets.num_valid[b])
        classes = dets.classes[b, :n].cpu()
        boxes = dets.boxes[b, :n].cpu()
        if size is not None:
            boxes = clip_boxes(boxes, *size)
        return ImageDetections(boxes, dets.scores[b, :n].cpu(), self._ids[classes],
                               [self.class_names[c] for c in classes.tolist()])

    def __call__(self, images: Any) -> Any:
        """One image → a dict, a list → a list of dicts: ``boxes [K, 4]`` xyxy in original pixels,
        ``scores [K]``, ``labels [K]`` (label ids), ``names`` (K strings); boxes lie within the image."""
        single = not isinstance(images, (list, tuple))
        tensors = [to_chw_tensor(i) for i in ([images] if single else images)]
        if not tensors:
            return []
        results = self.predict(*self.preprocess(tensors), [tuple(t.shape[1:]) for t in tensors])
        dicts = [r._asdict() for r in results]
        return dicts[0] if single else dicts
