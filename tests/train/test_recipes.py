"""Recipes as data: the official one is the training of before, a named recipe fills the fields
left unset, ``auto`` follows its rule, and a value given wins over the recipe's."""

import dataclasses

import pytest
import torch
from torch import nn

from efficientdet.data import Batch
from efficientdet.train import TrainConfig, train_one_epoch
from efficientdet.train.optim import param_groups
from efficientdet.train.recipes import (OFFICIAL_MIN_EPOCHS, OFFICIAL_MIN_IMAGES, RECIPE_FIELDS, RECIPES, Recipe,
                                        auto_recipe, resolve_recipe)

# TrainConfig's defaults before recipes existed: the official recipe must keep every one.
BEFORE = dict(scale_range=(0.1, 2.0), hflip=0.5, mosaic=0.0, photometric=False, lr=0.08, warmup_init=0.008,
              warmup_epochs=1.0, ema_decay=0.9998, freeze_bn=False)


def test_official_recipe_is_training_as_it_was():
    """Its values are the old defaults; the two new settings are off (the model's own stochastic
    depth, no factor for new heads). train() from it is bit-for-bit the old training: the trainer
    tests, unchanged, run it."""
    official = RECIPES["official"]
    assert {k: getattr(official, k) for k in BEFORE} == BEFORE
    assert official.stochastic_depth is True and official.new_head_lr == 1.0
    cfg = TrainConfig()
    assert cfg.recipe == "official" and all(getattr(cfg, k) == getattr(official, k) for k in RECIPE_FIELDS)


def test_a_named_recipe_fills_only_the_fields_left_unset():
    cfg = TrainConfig(recipe="finetune", lr=0.02)
    finetune = RECIPES["finetune"]
    assert cfg.lr == 0.02 and cfg.scale_range == finetune.scale_range and cfg.stochastic_depth is False
    assert set(RECIPE_FIELDS) == {f.name for f in dataclasses.fields(Recipe)} <= {
        f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("images, epochs, name", [
    (240, 12, "finetune"), (OFFICIAL_MIN_IMAGES, OFFICIAL_MIN_EPOCHS, "official"), (118_287, 300, "official"),
    (118_287, 12, "finetune"), (500, 300, "finetune")])
def test_auto_takes_official_for_long_schedules_on_large_data(images, epochs, name):
    assert auto_recipe(images, epochs)[0] == name
    cfg = TrainConfig(recipe="auto", epochs=epochs, mosaic=0.25)
    assert cfg.lr is None and cfg.scale_range is None  # unset until the dataset is known
    resolved, line = resolve_recipe(cfg, images)
    assert resolved.recipe == name and resolved.mosaic == 0.25 and resolved.lr == RECIPES[name].lr
    assert line.startswith(f"recipe: {name} (auto: official for at least {OFFICIAL_MIN_IMAGES:,} train images and "
                           f"{OFFICIAL_MIN_EPOCHS} epochs, finetune otherwise; this run: images {images:,}, "
                           f"epochs {epochs}): scale_range ")
    assert "mosaic 0.25" in line


def test_a_named_recipe_resolves_to_itself():
    cfg = TrainConfig(recipe="finetune")
    resolved, line = resolve_recipe(cfg, 10**6)
    assert resolved == cfg and line.startswith("recipe: finetune (--recipe): ")


def test_an_unknown_recipe_names_the_recipes():
    with pytest.raises(ValueError, match=r"^TrainConfig.recipe: unknown recipe 'fast'; recipes: official, finetune, "
                                         r"auto$"):
        TrainConfig(recipe="fast")


def test_recipe_values_are_checked_once_filled():
    with pytest.raises(ValueError, match="TrainConfig.new_head_lr must be > 0"):
        TrainConfig(new_head_lr=0.0)
    resolved, _ = resolve_recipe(TrainConfig(recipe="auto", hflip=0.0), 10)
    assert resolved.hflip == 0.0
    with pytest.raises(ValueError, match="TrainConfig.hflip is a probability"):
        TrainConfig(recipe="auto", hflip=2.0)


def test_new_head_parameters_get_their_own_groups_at_a_factor_of_the_learning_rate():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    head = list(model[2].parameters())
    groups = param_groups(model, 4e-5, head, 10.0)
    assert [len(g["params"]) for g in groups] == [1, 3, 1, 1]  # conv kernels | biases, BN | the head's two
    assert [g.get("lr_scale") for g in groups] == [None, None, 10.0, 10.0]
    assert [g["weight_decay"] for g in groups] == [4e-5, 0.0, 4e-5, 0.0]
    assert [len(g["params"]) for g in param_groups(model, 4e-5, head, 1.0)] == [2, 4]  # the official two groups

    optimizer = torch.optim.SGD(groups, lr=1.0)
    batches = [Batch(torch.randn(2, 3, 4, 4), [], torch.zeros(2, 1, 4), torch.zeros(2, 1))]
    train_one_epoch(model, batches, optimizer, lambda step: 0.01, lambda m, b: {"loss": m(b.images).square().mean()},
                    step=0)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01, 0.1, 0.1]


def test_a_new_recipe_through_replace_replaces_the_old_ones_values_not_those_set():
    """``dataclasses.replace(cfg, recipe=...)`` (as ``--recipe`` after a config is made, or a test's
    helper) moves the fields that hold the old recipe's values; a value set stays."""
    from efficientdet.config import config_from_dict, config_to_dict

    finetune = TrainConfig(recipe="finetune")
    moved = dataclasses.replace(TrainConfig(), recipe="finetune")
    assert all(getattr(moved, k) == getattr(finetune, k) for k in RECIPE_FIELDS)
    kept = dataclasses.replace(dataclasses.replace(TrainConfig(), lr=0.02), recipe="finetune")
    assert kept.lr == 0.02 and kept.stochastic_depth is False
    assert dataclasses.replace(TrainConfig(), recipe="auto").scale_range is None
    stored = config_from_dict(config_to_dict(TrainConfig(hflip=0.0)), TrainConfig)
    again = dataclasses.replace(stored, recipe="finetune")
    assert again.hflip == 0.0 and again.scale_range == RECIPES["finetune"].scale_range
