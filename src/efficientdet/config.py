"""The EfficientDet model family as one table of frozen dataclasses.

Every official variant of google/automl (``hparams_config.py``) is a row of :data:`VARIANTS`;
the sub-configs are split by concern so that the backbone, the BiFPN, the heads, the anchors,
pre- and postprocessing each receive only what they use. Change a field with :func:`override`
(``dataclasses.replace`` that also reaches into the sub-configs).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal

Activation = Literal["swish", "relu6", "relu"]
Fusion = Literal["fastattn", "attn", "sum"]
NmsMethod = Literal["gaussian", "hard"]


@dataclass(frozen=True)
class Stage:
    """One stage of EfficientNet-B0: ``repeats`` MBConv blocks (before depth scaling)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int
    se_ratio: float = 0.25


# EfficientNet-B0, the base of the backbone family (efficientnet_builder.py _DEFAULT_BLOCKS_ARGS).
EFFICIENTNET_B0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)

# (width, depth) coefficients of the official backbones (efficientnet_builder.py,
# efficientnet_lite_builder.py). Resolution and dropout only matter for classification.
BACKBONE_SCALES = {
    "efficientnet-b0": (1.0, 1.0),
    "efficientnet-b1": (1.0, 1.1),
    "efficientnet-b2": (1.1, 1.2),
    "efficientnet-b3": (1.2, 1.4),
    "efficientnet-b4": (1.4, 1.8),
    "efficientnet-b5": (1.6, 2.2),
    "efficientnet-b6": (1.8, 2.6),
    "efficientnet-b7": (2.0, 3.1),
    "efficientnet-lite0": (1.0, 1.0),
    "efficientnet-lite1": (1.0, 1.1),
    "efficientnet-lite2": (1.1, 1.2),
    "efficientnet-lite3": (1.2, 1.4),
    "efficientnet-lite4": (1.4, 1.8),
}


@dataclass(frozen=True)
class BackboneConfig:
    """EfficientNet / EfficientNet-Lite. ``lite`` means: no SE, stem and first/last stage unscaled."""

    name: str = "efficientnet-b0"
    width: float = 1.0
    depth: float = 1.0
    lite: bool = False
    stages: tuple[Stage, ...] = EFFICIENTNET_B0_STAGES
    # Official: 0.8, except that EfficientDet turns it off for B0 (efficientdet_keras.py).
    survival_prob: float | None = 0.8
    divisor: int = 8
    # A timm ``features_only`` model name instead of our own EfficientNet (optional dependency).
    timm_name: str | None = None


@dataclass(frozen=True)
class BiFPNConfig:
    channels: int = 64
    repeats: int = 3
    fusion: Fusion = "fastattn"
    separable: bool = True


@dataclass(frozen=True)
class HeadConfig:
    repeats: int = 3
    num_classes: int = 90
    separable: bool = True
    prior_prob: float = 0.01


@dataclass(frozen=True)
class AnchorConfig:
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    anchor_scale: float = 4.0

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(self.aspect_ratios)


@dataclass(frozen=True)
class PreprocessConfig:
    """Per-channel RGB mean/std on 0..255 pixels (ImageNet for D*, 127/128 for Lite)."""

    mean: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    std: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class PostprocessConfig:
    """Official default: one class-agnostic gaussian soft-NMS over every anchor's best class."""

    method: NmsMethod = "gaussian"
    iou_threshold: float = 0.5
    # Official: the config's 0 becomes 0.001 for soft-NMS and -inf for hard NMS.
    score_threshold: float = 0.001
    # The paper's sigma; TF's NonMaxSuppressionV5 takes half of it (exp(-iou^2 / (2 * 0.5 * sigma))).
    soft_nms_sigma: float = 0.5
    max_detections: int = 100
    pre_nms_top_k: int = 0  # 0 keeps every anchor, as the official default does
    class_agnostic: bool = True

    def __post_init__(self) -> None:
        """Refuse values that NMS would accept silently and turn into nonsense (NaN compares false)."""
        if self.method not in ("gaussian", "hard"):
            raise ValueError(f"method must be 'gaussian' or 'hard', got {self.method!r}")
        # -inf is the official hard-NMS "no threshold" (the config's 0); any other value is a probability.
        if not (isinstance(self.score_threshold, numbers.Real)
                and (0 <= self.score_threshold <= 1 or self.score_threshold == -math.inf)):
            raise ValueError(f"score_threshold must be a number in [0, 1] (or -inf: none), got {self.score_threshold}")
        if not (isinstance(self.iou_threshold, numbers.Real) and 0 <= self.iou_threshold <= 1):
            raise ValueError(f"iou_threshold must be a number in [0, 1], got {self.iou_threshold}")
        if not (isinstance(self.soft_nms_sigma, numbers.Real) and 0 < self.soft_nms_sigma < math.inf):
            raise ValueError(f"soft_nms_sigma must be a positive number, got {self.soft_nms_sigma}")
        if not isinstance(self.max_detections, numbers.Integral) or self.max_detections < 1:
            raise ValueError(f"max_detections must be an integer >= 1, got {self.max_detections}")
        if not isinstance(self.pre_nms_top_k, numbers.Integral) or self.pre_nms_top_k < 0:
            raise ValueError(f"pre_nms_top_k must be an integer >= 0 (0: every anchor), got {self.pre_nms_top_k}")


def evaluation_postprocess(post: PostprocessConfig) -> PostprocessConfig:
    """``post`` as the official COCO evaluation runs it (``postprocess.generate_detections``, the
    ``pyfunc`` path of ``det_model_fn``): the top 5000 (anchor, class) pairs, NMS within each class.

    Several classes per anchor and no single-class cut give a weak model far more recall than the
    inference default (one class per anchor); effdet evaluates this way too.
    """
    return dataclasses.replace(post, class_agnostic=False, pre_nms_top_k=5000)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    image_size: tuple[int, int]  # (height, width) of the network input
    min_level: int = 3
    max_level: int = 7
    act: Activation = "swish"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    bifpn: BiFPNConfig = field(default_factory=BiFPNConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def levels(self) -> range:
        return range(self.min_level, self.max_level + 1)


def _backbone(name: str) -> BackboneConfig:
    width, depth = BACKBONE_SCALES[name]
    return BackboneConfig(name=name, width=width, depth=depth, lite="lite" in name,
                          survival_prob=None if name == "efficientnet-b0" else 0.8)


def _variant(name, backbone, size, channels, cells, head, *, lite=False, **kw) -> ModelConfig:
    fusion = kw.pop("fusion", "sum" if lite else "fastattn")
    anchor_scale = kw.pop("anchor_scale", 4.0)
    extra = {}
    if lite:
        extra = dict(act="relu6", preprocess=PreprocessConfig((127.0,) * 3, (128.0,) * 3))
    return ModelConfig(name=name, image_size=(size, size), backbone=_backbone(backbone), head=HeadConfig(repeats=head),
                       bifpn=BiFPNConfig(channels=channels, repeats=cells, fusion=fusion),
                       anchors=AnchorConfig(anchor_scale=anchor_scale), **extra, **kw)


# Official hyper-parameters (hparams_config.py efficientdet_model_param_dict and
# efficientdet_lite_param_dict). Parameter counts at 90 classes are asserted in tests.
VARIANTS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        _variant("efficientdet-d0", "efficientnet-b0", 512, 64, 3, 3),  # 3,880,067 params
        _variant("efficientdet-d1", "efficientnet-b1", 640, 88, 4, 3),  # 6,625,898
        _variant("efficientdet-d2", "efficientnet-b2", 768, 112, 5, 3),  # 8,097,039
        _variant("efficientdet-d3", "efficientnet-b3", 896, 160, 6, 4),  # 12,032,296
        _variant("efficientdet-d4", "efficientnet-b4", 1024, 224, 7, 4),  # 20,723,675
        _variant("efficientdet-d5", "efficientnet-b5", 1280, 288, 7, 4),  # 33,653,315
        _variant("efficientdet-d6", "efficientnet-b6", 1280, 384, 8, 5, fusion="sum"),  # 51,871,782
        _variant("efficientdet-d7", "efficientnet-b6", 1536, 384, 8, 5, fusion="sum", anchor_scale=5.0),  # 51,871,782
        _variant("efficientdet-d7x", "efficientnet-b7", 1536, 384, 8, 5, fusion="sum", max_level=8),  # 77,147,166
        _variant("efficientdet-lite0", "efficientnet-lite0", 320, 64, 3, 3, lite=True, anchor_scale=3.0),
        _variant("efficientdet-lite1", "efficientnet-lite1", 384, 88, 4, 3, lite=True, anchor_scale=3.0),
        _variant("efficientdet-lite2", "efficientnet-lite2", 448, 112, 5, 3, lite=True, anchor_scale=3.0),
        _variant("efficientdet-lite3", "efficientnet-lite3", 512, 160, 6, 4, lite=True),
        _variant("efficientdet-lite3x", "efficientnet-lite3", 640, 200, 6, 4, lite=True, anchor_scale=3.0),
        _variant("efficientdet-lite4", "efficientnet-lite4", 640, 224, 7, 4, lite=True),
    )
}


def list_models() -> list[str]:
    return list(VARIANTS)


def get_config(name: str) -> ModelConfig:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(VARIANTS)}") from None


def compound_config(phi: int, *, backbone: str | None = None, name: str | None = None) -> ModelConfig:
    """A custom scale from the compound coefficient of the paper (Eq. 1-3).

    Resolution 512 + 128·φ, BiFPN width 64·1.35^φ rounded to a multiple of 8, depth 3 + φ,
    head depth 3 + ⌊φ/3⌋, backbone B_φ. The named variants keep the official table, which
    departs from these formulas in places (e.g. D2's BiFPN width is 112, the formula gives 120).
    """
    if phi < 0:
        raise ValueError(f"phi must be >= 0, got {phi}")
    backbone = backbone or f"efficientnet-b{min(phi, 7)}"
    if backbone not in BACKBONE_SCALES:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONE_SCALES)}")
    channels = int(round(64 * 1.35**phi / 8)) * 8
    size = 512 + 128 * phi
    return _variant(name or f"efficientdet-phi{phi}", backbone, size, channels, 3 + phi, 3 + phi // 3,
                    lite="lite" in backbone)


def override(config: ModelConfig, **changes: Any) -> ModelConfig:
    """``dataclasses.replace`` that also sets fields of the sub-configs by their name.

    ``override(cfg, num_classes=20, anchor_scale=3.0, image_size=640)`` changes
    ``head.num_classes``, ``anchors.anchor_scale`` and ``image_size`` (an int means square).
    A field name that is ambiguous or unknown is an error listing the valid names.
    """
    top = {f.name for f in dataclasses.fields(ModelConfig)}
    sections = {name: getattr(config, name) for name in top if dataclasses.is_dataclass(getattr(config, name))}
    top_changes: dict[str, Any] = {}
    section_changes: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if key in top:
            top_changes[key] = value
            continue
        owners = [s for s, sub in sections.items() if key in {f.name for f in dataclasses.fields(sub)}]
        if len(owners) != 1:
            valid = sorted(top | {f.name for sub in sections.values() for f in dataclasses.fields(sub)})
            what = "ambiguous" if owners else "unknown"
            raise ValueError(f"{what} config field {key!r}; valid fields: {', '.join(valid)}")
        section_changes.setdefault(owners[0], {})[key] = value
    for section, kw in section_changes.items():
        top_changes[section] = dataclasses.replace(sections[section], **kw)
    if isinstance(top_changes.get("image_size"), int):
        top_changes["image_size"] = (top_changes["image_size"],) * 2
    config = dataclasses.replace(config, **top_changes)
    validate(config)
    return config


def min_input_size(config: ModelConfig) -> int:
    """The smallest side, in pixels, that the network takes: below ``2^(max_level-1) + 1`` the two
    top levels are both 1×1, so the last BiFPN input would not be a down-sampling of the one below."""
    return 2 ** (config.max_level - 1) + 1


def validate(config: ModelConfig) -> None:
    """Reject values that would only fail later as an opaque shape error."""
    h, w = config.image_size
    min_size = min_input_size(config)
    if config.num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {config.num_classes}")
    if config.min_level != 3 or config.max_level < 5:
        raise ValueError("levels must be min_level=3 (the BiFPN starts at the stride-8 feature) and max_level >= 5, "
                         f"got min_level={config.min_level}, max_level={config.max_level}")
    if min(h, w) < min_size:
        raise ValueError(f"image_size {h}x{w} is too small for level P{config.max_level}: "
                         f"each side must be at least {min_size} pixels")
    if config.bifpn.fusion not in ("fastattn", "attn", "sum"):
        raise ValueError(f"bifpn.fusion must be 'fastattn', 'attn' or 'sum', got {config.bifpn.fusion!r}")
    if config.act not in ("swish", "relu6", "relu"):
        raise ValueError(f"act must be 'swish', 'relu6' or 'relu', got {config.act!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (``ModelConfig``, a sub-config, ``TrainConfig``) as JSON values: the one
    form that weights metadata, ONNX metadata and a run's ``config.json`` store."""
    return dataclasses.asdict(config)


def config_from_dict(values: dict[str, Any], cls: type = ModelConfig) -> Any:
    """Inverse of :func:`config_to_dict`: JSON lists back to tuples, nested dicts back to their
    sub-configs; a field missing from ``values`` keeps its default."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            value = config_from_dict(value, type(default))
        elif f.name == "stages":
            value = tuple(Stage(**s) for s in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def feature_sizes(image_size: tuple[int, int], max_level: int) -> list[tuple[int, int]]:
    """Feature map size per level 0..max_level: f_l = (f_{l-1} - 1) // 2 + 1 (TF SAME, stride 2)."""
    sizes = [tuple(image_size)]
    for _ in range(max_level):
        h, w = sizes[-1]
        sizes.append(((h - 1) // 2 + 1, (w - 1) // 2 + 1))
    return sizes


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Official EfficientNet width rounding: nearest multiple of ``divisor``, never 10% below."""
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))
