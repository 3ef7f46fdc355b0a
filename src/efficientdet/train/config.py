"""``TrainConfig``: every setting of a training run, checked when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import get_config, list_models, min_input_size
from ..data.formats import DEFAULT_MAX_BOXES
from ..loss import LossConfig
from .recipes import AUTO, RECIPE_FIELDS, RECIPE_NAMES, RECIPES


@dataclass(frozen=True)
class AnchorChoice:
    """The run's anchors, where they are not the model's (None keeps the model's); the weights
    carry them (``create_model`` reads them back). ``anchor_scale="auto"``: the scale of
    :data:`~efficientdet.anchor_fit.SCALE_GRID` that matches the most training boxes."""

    anchor_scale: float | str | None = None
    aspect_ratios: tuple[float, ...] | None = None  # another count changes the heads: their predictors start afresh

    def __post_init__(self) -> None:
        scale = self.anchor_scale
        if scale is not None and scale != AUTO and not (isinstance(scale, (int, float)) and 0 < scale < math.inf):
            raise ValueError(f"TrainConfig.anchors.anchor_scale must be a positive number or 'auto', got {scale!r}")
        ratios = self.aspect_ratios
        if ratios is not None and not (ratios and all(isinstance(r, (int, float)) and 0 < r < math.inf
                                                      for r in ratios)):
            raise ValueError(f"TrainConfig.anchors.aspect_ratios must be positive numbers, got {ratios!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Every field settable by ``--set``. The fields marked *recipe* are None until the recipe is
    known: a named recipe fills those left unset when the config is made, ``auto`` when ``train``
    knows the dataset (:func:`~.recipes.resolve_recipe`). The Python default is the official
    recipe (hparams_config.py); the command line's is ``auto``.
    """

    model: str = "efficientdet-lite0"
    recipe: str = "official"  # a name of recipes.RECIPES, or "auto" (official on long schedules and large data)
    data: str = ""  # dataset YAML
    out: str = "runs/train"
    epochs: int = 12
    batch_size: int = 8  # per process
    image_size: tuple[int, int] | None = None  # (height, width), an int meaning square; default: the model's
    weights: str | None = None  # start from these (any create_model format); class head re-initialised if needed
    backbone_weights: str | None = "imagenet"  # "imagenet" (packaged Lite0-2), a file, or None (scratch)
    freeze_backbone: bool = False
    freeze_bn: bool | None = None  # recipe: loaded BN layers in inference mode (fixed statistics, no updates)
    stochastic_depth: bool | None = None  # recipe: the backbone's drop path; False turns it off
    optimizer: str = "sgd"
    lr: float | None = None  # recipe: per 64 images, scaled linearly (AdamW: 0.008 is the official equivalent)
    warmup_init: float | None = None  # recipe
    warmup_epochs: float | None = None  # recipe
    new_head_lr: float | None = None  # recipe: lr factor of the prediction layers re-initialised over --weights
    momentum: float = 0.9
    weight_decay: float = 4e-5
    clip_grad_norm: float = 10.0
    ema_decay: float | None = None  # recipe
    scale_range: tuple[float, float] | None = None  # recipe
    hflip: float | None = None  # recipe
    photometric: bool | None = None  # recipe
    mosaic: float | None = None  # recipe: probability of a 4-image mosaic per training image
    max_boxes: int = DEFAULT_MAX_BOXES  # objects per image; a dataset image with more is an error naming it
    amp: bool | None = None  # default: on for CUDA
    channels_last: bool = True  # NHWC activations: oneDNN's fast layout on CPU
    sync_bn: bool = False
    workers: int = 2
    seed: int = 0
    eval_every: int = 1
    eval_batch_size: int = 8
    device: str | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    anchors: AnchorChoice = field(default_factory=AnchorChoice)
    resume: bool = False
    exist_ok: bool = False  # train into a non-empty --out: the previous run's files are removed first
    max_steps: int | None = None  # stop after this many steps (tests, smoke runs)
    # Not settings: the recipe whose values fill the recipe fields, and the fields it filled. They
    # go through dataclasses.replace(), so that a new ``recipe`` replaces the old one's values.
    _filled_by: str | None = field(default=None, repr=False, compare=False)
    _filled: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        """Fill the recipe fields left unset; refuse values that would only fail (or silently do
        nothing) hours into a run. A recipe field still unset (``auto``) is checked once filled."""
        if self.recipe not in RECIPE_NAMES:
            raise ValueError(f"TrainConfig.recipe: unknown recipe {self.recipe!r}; recipes: {', '.join(RECIPE_NAMES)}")
        self._fill_recipe()
        at_least = dict(epochs=1, batch_size=1, eval_batch_size=1, eval_every=1, workers=0, max_boxes=1,
                        warmup_epochs=0, warmup_init=0, weight_decay=0, lr=0)
        for name, low in at_least.items():
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise ValueError(f"TrainConfig.{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("hflip", "mosaic"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("momentum", "ema_decay"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.clip_grad_norm > 0:  # inf turns clipping off
            raise ValueError(f"TrainConfig.clip_grad_norm must be > 0, got {self.clip_grad_norm}")
        if self.new_head_lr is not None and not self.new_head_lr > 0:
            raise ValueError(f"TrainConfig.new_head_lr must be > 0, got {self.new_head_lr}")
        if self.scale_range is not None and (len(self.scale_range) != 2
                                             or not 0 < self.scale_range[0] <= self.scale_range[1]):
            raise ValueError(f"TrainConfig.scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be >= 1 or None, got {self.max_steps}")
        if self.image_size is not None:
            self._resolve_image_size()
        if self.resume and self.exist_ok:
            raise ValueError("TrainConfig.resume continues the run in out, exist_ok replaces it: give one of them")

    def _fill_recipe(self) -> None:
        """The recipe's values into the recipe fields left unset. After a change of ``recipe``, the
        fields that still hold the previous recipe's values take the new one's; those set since keep
        their values."""
        filled = self._filled
        if self._filled_by not in (None, self.recipe):
            previous = RECIPES[self._filled_by]
            for name in filled:
                if getattr(self, name) == getattr(previous, name):
                    object.__setattr__(self, name, None)  # frozen: set here, when the config is made
            filled = ()
        new = () if self.recipe == AUTO else tuple(name for name in RECIPE_FIELDS if getattr(self, name) is None)
        for name in new:
            object.__setattr__(self, name, getattr(RECIPES[self.recipe], name))
        object.__setattr__(self, "_filled_by", None if self.recipe == AUTO else self.recipe)
        object.__setattr__(self, "_filled", () if self.recipe == AUTO else filled + new)

    def _resolve_image_size(self) -> None:
        """``image_size`` as (height, width), each side at least the model's minimum; an error
        repeats the value as given."""
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(side, int) for side in size)):
            raise ValueError(f"TrainConfig.image_size must be an int or (height, width), got {self.image_size}")
        if self.model in list_models():
            low = min_input_size(get_config(self.model))
            if min(size) < low:
                raise ValueError(f"TrainConfig.image_size must be >= {low} for {self.model} (or None: the "
                                 f"model's own), got {self.image_size}")
        object.__setattr__(self, "image_size", tuple(size))  # frozen: set once, here


def validates(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether a run of ``epochs`` validates after ``epoch``: every ``eval_every``-th, and the last,
    so that the final weights are always scored."""
    return epoch % eval_every == 0 or epoch == epochs
