"""The pieces a run is built from, one function each: dataset splits, loaders, and the
optimisation state a step needs."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import ModelConfig, feature_sizes
from ..data.check import training_problem
from ..data import (DatasetSpec, DatasetSplit, DetectionDataset, TrainTransform, build_loader,
                    load_dataset_yaml, load_split)
from ..evaluate import eval_loader
from ..model import EfficientDet
from .config import TrainConfig
from .ema import ModelEMA
from .optim import build_optimizer, cosine_lr, scaled_lr
from .sampling import EpochSampler, SeededDataset


class Splits(NamedTuple):
    train: DatasetSplit
    val: DatasetSplit | None  # None when the dataset YAML has no val split


def load_splits(cfg: TrainConfig, log: Callable[[str], None]) -> Splits:
    """The dataset's train and val splits, each checked and summarised in one line."""
    spec = load_dataset_yaml(cfg.data)
    train = load_split(spec, "train", cfg.max_boxes)
    _require_training_boxes(train, spec)
    val = load_split(spec, "val", cfg.max_boxes) if "val" in spec.splits else None
    log(f"train: {train.report.summary()}")
    if val is not None:
        log(f"val: {val.report.summary()}")
    return Splits(train, val)


def _require_training_boxes(split: DatasetSplit, spec: DatasetSpec) -> None:
    """The data check's refusal of a split without one box to learn from, raised here."""
    problem = training_problem(split, spec)
    if problem is not None:
        raise problem


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
