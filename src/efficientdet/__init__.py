"""EfficientDet (Tan, Pang, Le, CVPR 2020) in PyTorch, exact to the official google/automl models."""

from __future__ import annotations

import os

from .config import ModelConfig, get_config, list_models, override
from .inference import Detector
from .model import EfficientDet

__all__ = ["EfficientDet", "Detector", "ModelConfig", "create_model", "list_models", "get_config"]
__version__ = "0.1.0"


def create_model(name: str, num_classes: int | None = None, weights: str | os.PathLike | None = None,
                 **overrides) -> EfficientDet:
    """Build a variant by name (``list_models()``), optionally changing config fields and loading weights.

    ``create_model("efficientdet-d0", num_classes=20, image_size=640)``;
    ``create_model("efficientdet-d0", weights="efficientdet-d0/")`` (official checkpoint directory),
    ``weights="d0.safetensors"`` (ours: ``num_classes`` defaults to the file's) or an effdet ``.pth``;
    or a name of the weights zoo (``efficientdet.weights.zoo``): ``weights="coco"`` (the official
    COCO checkpoint, fetched once into the cache), ``"coco:effdet"``, ``"advprop"``, ``"coco640"``,
    with the config fields those weights were trained with (``image_size``, ``preprocess``) unless
    given here.
    A ``.safetensors`` file gives the model its stored anchor settings (a run may train with its own,
    ``anchors.anchor_scale``), unless given here.
    A trained ``.safetensors`` also holds its dataset's category ids and names: they are kept as
    ``model.labels`` (a :class:`~efficientdet.coco.LabelSpace`), which ``Detector``, ``predict``,
    ``eval`` and ``export`` use.
    """
    config = get_config(name)
    meta = None
    if weights is not None:
        from .weights.hub import resolve

        weights, trained_with = resolve(weights, name)
        overrides = {**trained_with, **overrides}
    if weights is not None and str(weights).endswith(".safetensors"):
        from .weights import read_anchors, read_own_metadata

        meta = read_own_metadata(weights)
        if num_classes is None:
            num_classes = int(meta["num_classes"])
        overrides = {**read_anchors(weights, meta), **overrides}  # the anchors its outputs are relative to
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if overrides:
        config = override(config, **overrides)
    model = EfficientDet(config)
    if weights is not None:
        from .weights import load_weights, read_label_space

        load_weights(model, weights)
        if meta is not None:
            model.labels = read_label_space(weights, meta, config.num_classes)
    return model
