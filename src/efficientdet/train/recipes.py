"""Training recipes as data: the settings a recipe decides, the table of recipes, and the rule that
``--recipe auto`` follows.

Each field of :class:`Recipe` is a :class:`~.config.TrainConfig` field of the same name, left unset
(None) there until the recipe is known: a value given in the config (``--set lr=0.04``) wins over
the recipe's. A run's ``config.json`` holds the resolved values and which recipe gave them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    scale_range: tuple[float, float]  # random scale of the training crop (official train_scale_min / max)
    hflip: float  # probability of a horizontal flip
    mosaic: float  # share of training images that are a 4-image mosaic
    photometric: bool  # colour jitter before normalising
    stochastic_depth: bool  # the backbone's drop path at the model's survival_prob; False: none
    lr: float  # per 64 images, scaled linearly with the global batch
    warmup_init: float  # the learning rate the linear warm-up starts from
    warmup_epochs: float
    new_head_lr: float  # learning-rate factor of the prediction layers initialised afresh over --weights
    ema_decay: float  # the EMA's decay once warmed up: (1 + n) / (10 + n) after n steps until then
    freeze_bn: bool  # BN layers whose statistics were loaded keep them (train.build.frozen_batch_norms)


RECIPES = {
    # google/automl hparams_config.py and train_lib.py: training as it was before recipes, bit for bit.
    "official": Recipe(scale_range=(0.1, 2.0), hflip=0.5, mosaic=0.0, photometric=False, stochastic_depth=True,
                       lr=0.08, warmup_init=0.008, warmup_epochs=1.0, new_head_lr=1.0, ema_decay=0.9998,
                       freeze_bn=False),
    # Short fine-tuning: lr chosen by benchmarks/sweep_recipes.py (its figures, and what is not
    # measured yet, are in the README under "Recipes"); the rest follows earlier short runs.
    # Re-initialised predictors train at this lr, as every new layer does from ImageNet.
    "finetune": Recipe(scale_range=(0.8, 1.2), hflip=0.5, mosaic=0.0, photometric=False, stochastic_depth=False,
                       lr=0.64, warmup_init=0.008, warmup_epochs=1.0, new_head_lr=1.0, ema_decay=0.999,
                       freeze_bn=False),
}
AUTO = "auto"
RECIPE_NAMES = (*RECIPES, AUTO)
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))

# `auto` takes `official` for a long schedule on large data (the recipe was made for COCO: 118k
# images, 300 epochs) and `finetune` otherwise.
OFFICIAL_MIN_IMAGES = 10_000
OFFICIAL_MIN_EPOCHS = 50


def auto_recipe(train_images: int, epochs: int) -> tuple[str, str]:
    """The recipe ``auto`` picks for a run, and the rule with the run's numbers."""
    long = train_images >= OFFICIAL_MIN_IMAGES and epochs >= OFFICIAL_MIN_EPOCHS
    rule = (f"official for at least {OFFICIAL_MIN_IMAGES:,} train images and {OFFICIAL_MIN_EPOCHS} epochs, "
            f"finetune otherwise; this run: images {train_images:,}, epochs {epochs}")
    return ("official" if long else "finetune"), rule


def resolve_recipe(cfg: Any, train_images: int) -> tuple[Any, str]:
    """``cfg`` (a :class:`~.config.TrainConfig`) with ``auto`` replaced by the recipe its rule picks
    (the fields left unset take that recipe's values), and a line saying which recipe, why, and the
    values the run trains with."""
    why = "--recipe"
    if cfg.recipe == AUTO:
        name, rule = auto_recipe(train_images, cfg.epochs)
        cfg, why = dataclasses.replace(cfg, recipe=name), f"auto: {rule}"
    values = ", ".join(f"{name} {getattr(cfg, name)}" for name in RECIPE_FIELDS)
    return cfg, f"recipe: {cfg.recipe} ({why}): {values}"
