"""``train(TrainConfig)``: data → model → the official recipe → checkpoints and metrics in a run folder.

Run folder::

    RUN/config.json              the resolved TrainConfig and model config
    RUN/metrics.jsonl            one JSON line per epoch (losses, lr, images/s, COCO metrics)
    RUN/weights/last.safetensors EMA weights after the last epoch (create_model(weights=…) loads it)
    RUN/weights/best.safetensors EMA weights of the best validation AP
    RUN/train_state.pt           everything --resume needs (optimiser, EMA, scaler, RNG, position)
    RUN/curves.png               loss and AP curves; RUN/val_images/: predictions (red) vs truth (green)
    RUN/tensorboard/             scalars, when the tensorboard package is installed

A RUN that is not empty is refused, unless ``resume`` continues its run or ``exist_ok`` replaces
it (the previous run's files above are removed first): two runs never mix in one folder.

Distributed: launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set), one process per device, DDP
with per-rank shards; rank 0 alone logs, evaluates and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .. import create_model
from ..anchors import generate_anchors
from ..config import evaluation_postprocess, feature_sizes, get_config, list_models
from ..data import (DatasetError, DatasetSpec, DatasetSplit, DetectionDataset, EvalTransform, TrainTransform,
                    build_loader, load_dataset_yaml, load_split)
from ..data.formats import DEFAULT_MAX_BOXES
from ..data.loader import collate, ignore_interrupts
from ..devices import resolve_device
from ..loss import LossConfig
from ..model import EfficientDet
from ..weights import read_metadata, read_weights, save_safetensors
from ..weights.pretrained import load_pretrained_backbone
from ..weights.remap import remap_state
from .checkpoint import atomic_torch_save, load_training_state, rng_state, set_rng_state
from .ema import ModelEMA
from .engine import NonFiniteLoss, evaluate, train_one_epoch
from .optim import build_optimizer, cosine_lr, scaled_lr
from .report import draw_predictions, plot_curves
from .sampling import EpochSampler, SeededDataset


@dataclass(frozen=True)
class TrainConfig:
    """The official recipe by default (hparams_config.py); every field settable by ``--set``."""

    model: str = "efficientdet-lite0"
    data: str = ""  # dataset YAML
    out: str = "runs/train"
    epochs: int = 12
    batch_size: int = 8  # per process
    image_size: int | None = None  # default: the model's
    weights: str | None = None  # start from these (any create_model format); class head re-initialised if needed
    backbone_weights: str | None = "imagenet"  # "imagenet" (packaged Lite0-2), a file, or None (scratch)
    freeze_backbone: bool = False
    freeze_bn: bool = False  # loaded BN layers in inference mode: fixed statistics, no BN parameter updates
    optimizer: str = "sgd"
    lr: float = 0.08  # per 64 images, scaled linearly (AdamW: 0.008 is the official equivalent)
    warmup_init: float = 0.008
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 4e-5
    clip_grad_norm: float = 10.0
    ema_decay: float = 0.9998
    scale_range: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5
    photometric: bool = False
    mosaic: float = 0.0  # probability of a 4-image mosaic per training image (not in the official recipe)
    max_boxes: int = DEFAULT_MAX_BOXES  # objects per image; a dataset image with more is an error naming it
    amp: bool | None = None  # default: on for CUDA
    channels_last: bool = True  # NHWC activations: oneDNN's fast layout on CPU (2.2x the steps/s for Lite0 here)
    sync_bn: bool = False
    workers: int = 2
    seed: int = 0
    eval_every: int = 1
    eval_batch_size: int = 8
    device: str | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    resume: bool = False
    exist_ok: bool = False  # train into a non-empty --out: the previous run's files are removed first
    max_steps: int | None = None  # stop after this many steps (tests, smoke runs)

    def __post_init__(self) -> None:
        """Refuse values that would only fail (or silently do nothing) hours into a run."""
        at_least = dict(epochs=1, batch_size=1, eval_batch_size=1, eval_every=1, workers=0, max_boxes=1,
                        warmup_epochs=0, warmup_init=0, weight_decay=0, lr=0)
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"TrainConfig.{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("hflip", "mosaic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("momentum", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.clip_grad_norm > 0:  # inf turns clipping off
            raise ValueError(f"TrainConfig.clip_grad_norm must be > 0, got {self.clip_grad_norm}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"TrainConfig.scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be >= 1 or None, got {self.max_steps}")
        if self.image_size is not None and self.model in list_models():
            low = 2 ** (get_config(self.model).max_level - 1) + 1  # config.validate's rule
            if self.image_size < low:
                raise ValueError(f"TrainConfig.image_size must be >= {low} for {self.model} (or None: the "
                                 f"model's own), got {self.image_size}")
        if self.resume and self.exist_ok:
            raise ValueError("TrainConfig.resume continues the run in out, exist_ok replaces it: give one of them")


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written at the current step."""


def _setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    if "RANK" not in os.environ:
        return 0, 1, resolve_device(cfg.device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    return dist.get_rank(), dist.get_world_size(), device


# What a run writes into its folder (module docstring): --exist-ok removes these of the previous run.
RUN_FILES = ("config.json", "metrics.jsonl", "train_state.pt", "weights", "curves.png", "val_images", "tensorboard")


def _prepare_run_folder(out: Path, cfg: TrainConfig, log) -> None:
    """Keep two runs from mixing in one folder (one's weights, the other's metrics): a non-empty
    ``out`` is refused unless ``resume`` continues its run or ``exist_ok`` replaces it."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: the run folder is a file; name a folder with --out")
    if cfg.resume or not out.is_dir() or not any(out.iterdir()):
        return
    if not cfg.exist_ok:
        raise FileExistsError(f"{out}: the run folder is not empty; continue its run with --resume, "
                              "or replace it with --exist-ok")
    old = [out / name for name in RUN_FILES if (out / name).exists() or (out / name).is_symlink()]
    for path in old:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if old:
        log(f"--exist-ok: removed the previous run's {', '.join(p.name for p in old)} from {out}")


def _require_training_boxes(split: DatasetSplit, spec: DatasetSpec) -> None:
    """A split without one box to learn from would train the background only, and end as if it had worked."""
    report = split.report
    if report.boxes > report.crowd:
        return
    if report.crowd:
        why = f"all its {report.crowd} boxes are crowd / difficult, which training ignores"
    elif report.missing_labels == report.images:
        why = f"none of its {report.images} images has a label file in {spec.splits['train'].get('labels')}"
    else:
        why = f"none of its {report.images} images has a box"
    raise DatasetError(f"{spec.source}: the train split has nothing to train on: {why}")


def _load_run_model(model: EfficientDet, saved: dict, path: Path) -> None:
    """The resumed run's weights; a dataset with another class count is named, not a shape traceback."""
    key = "class_net.predict.pointwise.bias"  # [anchors * classes]
    if key in saved and saved[key].shape != model.state_dict()[key].shape:
        per_class = model.state_dict()[key].shape[0] // model.config.num_classes
        raise ValueError(f"{path}: the run has {saved[key].shape[0] // per_class} classes, the dataset "
                         f"{model.config.num_classes}; --resume needs the run's dataset (or train into a new --out)")
    try:
        model.load_state_dict(saved)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a training state of {model.config.name} "
                         f"({str(e).splitlines()[0]})") from None


def _check_batch_norm_batch(model: EfficientDet, frozen_bn: list[nn.Module], cfg: TrainConfig, world: int) -> None:
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


def _init_weights(model: EfficientDet, cfg: TrainConfig) -> str:
    """Start weights: a full checkpoint (class head re-initialised when the class count differs),
    else ImageNet backbone weights, else the fresh initialisation."""
    if cfg.weights:
        src_classes = model.config.num_classes
        if str(cfg.weights).endswith(".safetensors"):
            src_classes = int(read_metadata(cfg.weights).get("num_classes", src_classes))
        elif src_classes != 90:
            src_classes = 90  # official checkpoints and effdet's COCO models have 90 outputs
        source = create_model(model.config.name, num_classes=src_classes, image_size=model.config.image_size)
        new_head = ("class_net.predict.",) if src_classes != model.config.num_classes else ()
        state = remap_state(read_weights(source, cfg.weights), model.state_dict(), str(cfg.weights), ignore=new_head)
        model.load_state_dict(state, strict=not new_head)
        head = "" if src_classes == model.config.num_classes else f" (class head re-initialised: {src_classes} → {model.config.num_classes} classes)"
        return f"weights from {cfg.weights}{head}"
    if cfg.backbone_weights:
        return load_pretrained_backbone(model, None if cfg.backbone_weights == "imagenet" else cfg.backbone_weights)
    return "trained from scratch (random initialisation)"


def _frozen_batch_norms(model: nn.Module, cfg: TrainConfig) -> list[nn.Module]:
    """The BN layers ``freeze_bn`` keeps in inference mode: those whose statistics were loaded,
    i.e. all of them from ``weights``, the backbone's from backbone weights, none from scratch.

    A new BiFPN or head frozen at its initial statistics (mean 0, var 1) would see its signal
    fade layer by layer under the official initialisers, and learn next to nothing.
    """
    if not (cfg.weights or cfg.backbone_weights):
        return []
    return [m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and (cfg.weights or name.startswith("backbone."))]


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    use = cfg.amp if cfg.amp is not None else device.type == "cuda"
    if not use:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


class _Signals:
    """Turn SIGINT/SIGTERM into a flag that the step loop checks, so a step is never cut in half."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        # A SIGTERM sent to the process group kills the DataLoader workers too (they ignore only
        # SIGINT: see data.loader.ignore_interrupts); torch's SIGCHLD handler would raise that in
        # the middle of whatever runs (a step, a checkpoint write). Without it the loss shows
        # where the next batch is fetched, between two steps.
        # Not restored: the run is ending, and the dead worker must not be reported later.
        if hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run training; returns a summary (best AP, epochs, paths). See the module docstring."""
    rank, world, device = _setup_distributed(cfg)
    main = rank == 0
    out = Path(cfg.out)
    if main:
        _prepare_run_folder(out, cfg, log)
    spec = load_dataset_yaml(cfg.data)
    train_split = load_split(spec, "train", cfg.max_boxes)
    _require_training_boxes(train_split, spec)
    val_split = load_split(spec, "val", cfg.max_boxes) if "val" in spec.splits else None
    if main:
        log(f"train: {train_split.report.summary()}")
        if val_split is not None:
            log(f"val: {val_split.report.summary()}")
    overrides = {"num_classes": train_split.num_classes}
    if cfg.image_size:
        overrides["image_size"] = cfg.image_size
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **overrides)
    how = _init_weights(model, cfg)
    if main:
        log(f"{model.config.name}, {train_split.num_classes} classes, {model.config.image_size}: {how}")
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
    if cfg.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    frozen_bn = _frozen_batch_norms(model, cfg) if cfg.freeze_bn else []
    for m in frozen_bn:
        m.requires_grad_(False)
    _check_batch_norm_batch(model, frozen_bn, cfg, world)
    if cfg.freeze_bn and main:
        scope = "all" if cfg.weights else "backbone only: the BiFPN and heads are new" if frozen_bn else "none loaded"
        log(f"freeze_bn: {len(frozen_bn)} BN layers keep their loaded statistics ({scope})")
    # Weights in channels_last make every conv run NHWC, whatever the layout of the input batch.
    model.to(device=device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    mcfg = model.config
    anchors = generate_anchors(mcfg.image_size, mcfg.min_level, mcfg.max_level, mcfg.anchors).to(device)

    train_set = SeededDataset(DetectionDataset(
        train_split.samples,
        TrainTransform(mcfg.image_size, mcfg.preprocess.mean, mcfg.preprocess.std, cfg.scale_range, cfg.hflip,
                       cfg.photometric),
        validate=main, mosaic=cfg.mosaic), seed=cfg.seed)
    sampler = EpochSampler(len(train_set), cfg.batch_size, cfg.seed, rank, world)
    train_loader = torch.utils.data.DataLoader(
        train_set, cfg.batch_size, sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0, drop_last=True,
        worker_init_fn=ignore_interrupts,
        generator=torch.Generator().manual_seed(cfg.seed))  # its own: the global RNG is the model's
    val_loader = None
    if val_split is not None and main:
        val_set = DetectionDataset(val_split.samples, EvalTransform(mcfg.image_size, mcfg.preprocess.mean,
                                                                    mcfg.preprocess.std), validate=True)
        val_loader = build_loader(val_set, cfg.eval_batch_size, train=False, workers=min(cfg.workers, 2))

    global_batch = cfg.batch_size * world
    lr = scaled_lr(cfg.lr, global_batch)
    optimizer = build_optimizer(model, cfg.optimizer, lr, cfg.weight_decay, cfg.momentum)
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    lr_at = lambda step: cosine_lr(step, lr, cfg.warmup_init, warmup_steps, total_steps)  # noqa: E731
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    ema = ModelEMA(model, cfg.ema_decay)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model

    state_path = out / "train_state.pt"
    epoch, start_batch, step, best_ap, history = 0, 0, 0, -1.0, []
    if cfg.resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: no training state at {state_path}")
        state = load_training_state(state_path)
        _load_run_model(model, state["model"], state_path)
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, start_batch, step = state["epoch"], state["batch_in_epoch"], state["step"]
        best_ap, history = state["best_ap"], state["history"]
        set_rng_state(state["rng"])
        if main:
            log(f"resumed from {state_path}: epoch {epoch}, batch {start_batch}, step {step}")
    if main:
        (out / "weights").mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(
            {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(mcfg), "names": train_split.names,
             "label_ids": train_split.label_ids, "world_size": world}, indent=2, default=str))
    label_meta = {"names": json.dumps(train_split.names), "label_ids": json.dumps(train_split.label_ids)}

    def checkpoint(epoch_: int, batch_: int) -> None:
        if not main:
            return
        atomic_torch_save({
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch_,
            "batch_in_epoch": batch_, "step": step, "best_ap": best_ap, "history": history,
            "rng": rng_state(),
        }, state_path)
        save_safetensors(ema.module, out / "weights" / "last.safetensors", source=f"training step {step}",
                         extra=label_meta)

    post = evaluation_postprocess(mcfg.postprocess)
    board = _tensorboard(out) if main else None
    last_results = None
    with _Signals() as signals:
        while epoch < cfg.epochs:
            sampler.set_epoch(epoch, start_batch)
            epoch_start, seen, loss_sum, n = time.perf_counter(), 0, 0.0, 0
            progress = _progress(main, steps_per_epoch - start_batch, f"epoch {epoch + 1}/{cfg.epochs}")

            def on_step(s: int, stats: dict) -> bool:
                nonlocal seen, loss_sum, n, step
                step = s
                seen += stats["images"] * world
                loss_sum += stats["loss"]
                n += 1
                if progress is not None:
                    progress.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.4f}",
                                         img_s=f"{seen / (time.perf_counter() - epoch_start):.1f}")
                    progress.update(1)
                stop = signals.received is not None or (cfg.max_steps is not None and s >= cfg.max_steps)
                return stop

            try:
                step = train_one_epoch(ddp, train_loader, optimizer, lr_at, anchors, cfg.loss, step=step, ema=ema,
                                       scaler=scaler, amp_dtype=amp_dtype, clip_grad_norm=cfg.clip_grad_norm,
                                       world=world, frozen_bn=frozen_bn, on_step=on_step)
            except NonFiniteLoss as e:
                raise NonFiniteLoss(f"{e}; stopped, the last good checkpoint is {state_path}") from None
            except (RuntimeError, ConnectionError, EOFError) as e:
                # A worker the stop signal killed (see _Signals), found when the next batch was
                # fetched: the state is that of the last whole step, checkpointed below.
                lost_worker = not isinstance(e, RuntimeError) or "DataLoader worker" in str(e)
                if signals.received is None or not lost_worker:
                    raise
            finally:
                if progress is not None:
                    progress.close()
            done_in_epoch = start_batch + n
            start_batch = 0
            if done_in_epoch < steps_per_epoch:  # stopped by a signal or max_steps mid-epoch
                checkpoint(epoch, done_in_epoch)
                if signals.received is not None:
                    raise Interrupted(f"stopped by signal {signals.received} at step {step}; "
                                      f"resume with --resume (state: {state_path})")
                break
            epoch += 1
            record = {"epoch": epoch, "step": step, "loss": loss_sum / max(n, 1), "lr": lr_at(step),
                      "images_per_s": seen / (time.perf_counter() - epoch_start)}
            if val_loader is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                metrics, last_results = evaluate(ema.module, val_loader, val_split, anchors, post, mcfg.image_size,
                                                 amp_dtype)
                record.update(metrics)
                if metrics["AP"] > best_ap:
                    best_ap = metrics["AP"]
                    if main:
                        save_safetensors(ema.module, out / "weights" / "best.safetensors",
                                         source=f"epoch {epoch}, AP {best_ap:.4f}", extra=label_meta)
            history.append(record)
            if main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if board is not None:
                    for key, value in record.items():
                        if key not in ("epoch", "step"):
                            board.add_scalar(key, value, epoch)
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                             if k in ("epoch", "loss", "images_per_s", "AP", "AP50")))
            checkpoint(epoch, 0)
            if signals.received is not None:
                raise Interrupted(f"stopped by signal {signals.received} after epoch {epoch}; resume with --resume")
            if world > 1:
                dist.barrier()
    if main and history:
        plot_curves(history, out / "curves.png")
        if last_results is not None:
            draw_predictions(val_split, last_results, out / "val_images")
    if board is not None:
        board.close()
    return {"out": str(out), "epochs": epoch, "step": step, "best_AP": best_ap, "history": history}


def _tensorboard(out: Path):
    """TensorBoard scalars when the ``tensorboard`` package is installed, else nothing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _progress(main: bool, total: int, desc: str):
    if not main:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
