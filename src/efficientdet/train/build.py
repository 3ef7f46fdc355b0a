"""The pieces a run is built from, one function each: the dataset's splits (checked), the model's
config and the dataset's fit to it, loaders, and the optimisation state a step needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..anchor_fit import best_scale, sample_boxes, scale_shares
from ..config import ModelConfig, feature_sizes, get_config, override
from ..data import (DatasetSpec, DatasetSplit, DetectionDataset, Problems, TrainTransform, build_loader,
                    load_dataset_yaml)
from ..data.check import DatasetCheck, fit_lines, read_splits, summarise, training_boxes, training_problem
from ..data.sample import WARNING
from ..evaluate import eval_loader
from ..model import EfficientDet
from .config import TrainConfig
from .ema import ModelEMA
from .optim import build_optimizer, cosine_lr, scaled_lr
from .recipes import AUTO
from .sampling import EpochSampler, SeededDataset


class Splits(NamedTuple):
    train: DatasetSplit
    val: DatasetSplit | None  # None when the dataset YAML has no val split
    spec: DatasetSpec
    problems: Problems  # the warnings found reading them (any error refuses the dataset)


def load_splits(cfg: TrainConfig, log: Callable[[str], None]) -> Splits:
    """The dataset's train and val splits, each summarised in one line. Every problem of both is
    found in one pass: any error refuses the dataset with all of them listed (one alone as its own
    line); so does a train split without a box to learn from."""
    spec = load_dataset_yaml(cfg.data)
    problems = Problems()
    splits = read_splits(spec, ["train"], cfg.max_boxes, problems)
    if "train" not in splits:  # unreadable, or without images: no use reading further
        problems.raise_errors(spec.source)
    splits |= read_splits(spec, ["val"] if "val" in spec.splits else [], cfg.max_boxes, problems)
    problems.raise_errors(spec.source)
    empty = training_problem(splits["train"], spec)
    if empty is not None:
        raise empty
    for name, split in splits.items():
        log(f"{name}: {split.report.summary()}")
    return Splits(splits["train"], splits.get("val"), spec, problems)


def model_config(cfg: TrainConfig, split: DatasetSplit,
                 log: Callable[[str], None]) -> tuple[TrainConfig, ModelConfig]:
    """The model the run trains: the variant with the dataset's classes and the run's image size,
    stochastic depth and anchors; ``anchors.anchor_scale="auto"`` becomes the scale of the grid that
    matches the most training boxes (in the config returned too, so that config.json holds it)."""
    overrides: dict[str, Any] = {"num_classes": split.num_classes}
    if cfg.image_size:
        overrides["image_size"] = cfg.image_size
    if not cfg.stochastic_depth:
        overrides["survival_prob"] = None
    if cfg.anchors.aspect_ratios is not None:
        overrides["aspect_ratios"] = cfg.anchors.aspect_ratios
    if cfg.anchors.anchor_scale not in (None, AUTO):
        overrides["anchor_scale"] = float(cfg.anchors.anchor_scale)
    mcfg = override(get_config(cfg.model), **overrides)
    if cfg.anchors.anchor_scale == AUTO:
        boxes, sizes = sample_boxes(*training_boxes(split)[:2])
        shares = scale_shares(boxes, sizes, mcfg, cfg.loss.match_threshold)
        scale = best_scale(shares, mcfg.anchors.anchor_scale)
        log(f"anchors.anchor_scale=auto: {scale:g} (train boxes with an anchor of IoU >= "
            f"{cfg.loss.match_threshold:g} by scale: {', '.join(f'{s:g} {v:.1%}' for s, v in shares.items())})")
        mcfg = override(mcfg, anchor_scale=scale)
        cfg = dataclasses.replace(cfg, anchors=dataclasses.replace(cfg.anchors, anchor_scale=scale))
    return cfg, mcfg


def check_dataset_fit(splits: Splits, mcfg: ModelConfig, threshold: float,
                      log: Callable[[str], None]) -> DatasetCheck:
    """The dataset check's statistics and anchor fit for the model the run trains, the fit and each
    kind of warning logged; a dataset whose training boxes no anchor can match is refused."""
    found = summarise(splits.spec, {"train": splits.train, **({"val": splits.val} if splits.val else {})},
                      splits.problems, mcfg, threshold)
    found.problems.raise_errors(splits.spec.source)
    if found.fit is not None:
        for line in fit_lines(found.fit, mcfg.name, found.suggestions, found.stats["train"]["boxes"]):
            log(line)
    for kind, count in found.problems.kinds(WARNING).items():
        log(f"warning: {kind}: {count}, e.g. {found.problems.first[WARNING, kind][0]}")
    return found


def frozen_batch_norms(model: EfficientDet, cfg: TrainConfig) -> list[nn.Module]:
    """The BN layers ``freeze_bn`` keeps in inference mode: those whose statistics were loaded,
    i.e. all of them from ``weights``, the backbone's from backbone weights, none from scratch.

    A new BiFPN or head frozen at its initial statistics (mean 0, var 1) would see its signal
    fade layer by layer under the official initialisers, and learn next to nothing.
    """
    if not (cfg.weights or cfg.backbone_weights):
        return []
    loaded = model if cfg.weights else model.backbone
    return [m for m in loaded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_batch_norm_batch(model: EfficientDet, frozen_bn: list[nn.Module], cfg: TrainConfig, world: int) -> None:
    """BatchNorm in training needs more than one value per channel; the smallest level (P7 is 1x1
    at 128 pixels) with one image gives it one. Refused here rather than in the first step."""
    h, w = feature_sizes(model.config.image_size, model.config.max_level)[-1]
    frozen = {id(m) for m in frozen_bn}
    trained = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in frozen for m in model.modules())
    if not trained or cfg.batch_size * (world if cfg.sync_bn else 1) * h * w > 1:
        return
    raise ValueError(f"batch size {cfg.batch_size}: BatchNorm cannot train on the {h}x{w} P{model.config.max_level} "
                     f"level of one {model.config.image_size[0]}x{model.config.image_size[1]} image; use a batch "
                     "of 2 or more, a larger image size, or --weights with --set freeze_bn=true (BN keeps its "
                     "loaded statistics)")


def train_loader(cfg: TrainConfig, split: DatasetSplit, mcfg: ModelConfig, rank: int = 0, world: int = 1, *,
                 validate: bool = True, pin_memory: bool = False) -> DataLoader:
    """This rank's training batches, a function of (seed, epoch, image) only: reproducible, and
    resumable mid-epoch through ``loader.sampler.set_epoch(epoch, start_batch)``."""
    transform = TrainTransform(mcfg.image_size, mcfg.preprocess, cfg.scale_range, cfg.hflip, cfg.photometric)
    dataset = SeededDataset(DetectionDataset(split.samples, transform, validate=validate, mosaic=cfg.mosaic),
                            seed=cfg.seed)
    sampler = EpochSampler(len(dataset), cfg.batch_size, cfg.seed, rank, world)
    return build_loader(dataset, cfg.batch_size, workers=cfg.workers, sampler=sampler, seed=cfg.seed,
                        pin_memory=pin_memory)


@dataclass
class Loaders:
    train: DataLoader  # its sampler is an EpochSampler
    val: DataLoader | None  # this rank's shard of the val split: every rank evaluates

    @property
    def sampler(self) -> EpochSampler:
        return self.train.sampler

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch


def build_loaders(cfg: TrainConfig, mcfg: ModelConfig, splits: Splits, rank: int, world: int,
                  device: torch.device) -> Loaders:
    """This rank's training loader and its shard of the validation split."""
    train = train_loader(cfg, splits.train, mcfg, rank, world, validate=rank == 0, pin_memory=device.type == "cuda")
    val = None
    if splits.val is not None:
        val = eval_loader(splits.val, mcfg, cfg.eval_batch_size, min(cfg.workers, 2), rank, world)
    return Loaders(train, val)


@dataclass
class Optimisation:
    """What a step needs beside the batch and the loss: the module to step (the model, in DDP with
    several processes), the optimiser and its schedule, AMP, the EMA of the weights."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None  # float16 only: bfloat16 needs no loss scaling
    ema: ModelEMA


def build_optimisation(cfg: TrainConfig, model: nn.Module, world: int, device: torch.device,
                       steps_per_epoch: int, new_head: Collection[nn.Parameter] = ()) -> Optimisation:
    """The learning rate scaled to the global batch (``new_head_lr`` times it for ``new_head``, the
    prediction layers initialised afresh over loaded weights), warm-up then cosine per step."""
    optimizer = build_optimizer(model, cfg.optimizer, scaled_lr(cfg.lr, cfg.batch_size * world), cfg.weight_decay,
                                cfg.momentum, new_head, cfg.new_head_lr)
    lr_at = lr_schedule(cfg, world, steps_per_epoch)
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    ema = ModelEMA(model, cfg.ema_decay)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    return Optimisation(net, optimizer, lr_at, amp_dtype, scaler, ema)


def lr_schedule(cfg: TrainConfig, world: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate per step: warm-up, then a cosine down to 0 at the last step of ``cfg.epochs``."""
    return partial(cosine_lr, lr=scaled_lr(cfg.lr, cfg.batch_size * world), warmup_init=cfg.warmup_init,
                   warmup_steps=int(cfg.warmup_epochs * steps_per_epoch), total_steps=cfg.epochs * steps_per_epoch)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bfloat16 where the device has it (no loss scaling), else float16; None without AMP."""
    use = cfg.amp if cfg.amp is not None else device.type == "cuda"
    if not use:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16
