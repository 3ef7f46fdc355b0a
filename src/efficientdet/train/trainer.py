"""``train(TrainConfig)``: data (checked) → recipe → model → checkpoints and metrics in a run folder.

The dataset is checked first (:mod:`efficientdet.data.check`): every problem of its train and val
splits found in one pass, any error refusing it with all of them listed; then the statistics and
the anchor fit of the model the run trains, a fit of zero refusing it.

Run folder::

    RUN/config.json              the resolved TrainConfig (recipe included) and model config
    RUN/data_check.json          the dataset's warnings, statistics per split and class, anchor fit
    RUN/metrics.jsonl            one JSON line per epoch (losses, lr, images/s, seconds, COCO metrics)
    RUN/weights/last.safetensors EMA weights after the last epoch (create_model(weights=…) loads it)
    RUN/weights/best.safetensors EMA weights of the best validation AP
    RUN/train_state.pt           everything --resume needs (length, optimiser, EMA, scaler, RNG, position)
    RUN/curves.png               loss and AP curves; RUN/val_images/: predictions (red) vs truth (green)
    RUN/tensorboard/             scalars, when the tensorboard package is installed

A RUN that is not empty is refused, unless ``resume`` continues its run or ``exist_ok`` replaces
it (the previous run's files above are removed first): two runs never mix in one folder.

Distributed: launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set), one process per device, DDP
with per-rank shards; every rank validates its shard of the val split with rank 0's EMA weights,
rank 0 alone scores, logs and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from .. import create_model
from ..anchors import generate_anchors
from ..coco import COCO_NUM_CLASSES
from ..config import ModelConfig, config_to_dict, evaluation_postprocess
from ..distributed import broadcast_state, init_distributed
from ..evaluate import evaluate
from ..inference import Detector
from ..inference.backends import model_backend
from ..model import EfficientDet
from ..weights import read_anchors, read_metadata, read_weights
from ..weights.hub import resolve
from ..weights.pretrained import load_pretrained_backbone
from ..weights.remap import remap_state
from .build import (Loaders, Optimisation, Splits, build_loaders, build_optimisation, check_batch_norm_batch,
                    check_dataset_fit, frozen_batch_norms, load_splits, lr_schedule, model_config)
from .config import TrainConfig, validates
from .engine import LossFn, NonFiniteLoss, efficientdet_loss, train_one_epoch
from .recipes import resolve_recipe
from .run_folder import RunFolder
from .signals import Interrupted, StopSignals
from .state import TrainState

# plan(cfg, record) -> the config of the rest of the run (see train).
Plan = Callable[[TrainConfig, dict], TrainConfig]


def train(cfg: TrainConfig, log: Callable[[str], None] = print,
          on_epoch: Callable[[dict], None] | None = None, plan: Plan | None = None) -> dict[str, Any]:
    """Run training; returns a summary (out, epochs, step, best_AP, history). See the module docstring.

    ``on_epoch(record)`` receives each finished epoch's record (a line of metrics.jsonl) on rank 0,
    between the timed steps of two epochs.

    ``plan(cfg, record)``, when given, is called once, on rank 0, after the first epoch (its record
    has ``train_s``, and ``eval_s`` when it validated), and returns the config of the rest of the
    run, in which ``epochs`` and ``eval_every`` may differ: a run can time its first epoch and then
    fix its own length. The first epoch must be warm-up, whose learning rates do not depend on the
    length, so the run is the one it would have been with that length from the start; the length
    is saved with the state and config.json, and ``resume`` continues it.
    """
    rank, world, device = init_distributed(cfg.device)
    folder = RunFolder(Path(cfg.out), main=rank == 0, log=log)
    folder.prepare(cfg)  # before the dataset is read: a refusal comes at once
    splits = load_splits(cfg, folder.log)  # every problem of the dataset, or a refusal listing them
    cfg, recipe = resolve_recipe(cfg, len(splits.train.samples))
    if plan is not None and cfg.warmup_epochs < 1:  # known once the recipe is (auto: from the dataset)
        raise ValueError("a plan fixes the run's length after the first epoch, whose learning rates must not depend "
                         f"on it: TrainConfig.warmup_epochs must be >= 1 (all warm-up), got {cfg.warmup_epochs}")
    folder.log(recipe)
    cfg, mcfg = model_config(cfg, splits.train, folder.log)
    check = check_dataset_fit(splits, mcfg, cfg.loss.match_threshold, folder.log)
    model, frozen_bn, new_head = build_model(cfg, mcfg, world, device, folder.log)
    loaders = build_loaders(cfg, mcfg, splits, rank, world, device)
    opt = build_optimisation(cfg, model, world, device, loaders.steps_per_epoch, new_head)
    anchors = generate_anchors(mcfg).to(device)
    loss_fn = efficientdet_loss(anchors, cfg.loss, opt.amp_dtype)
    state = TrainState(model, opt.ema, opt.optimizer, opt.scaler, epochs=cfg.epochs)
    run = _Run(cfg, world, folder, splits, loaders, opt, anchors, loss_fn, frozen_bn, state)
    if cfg.resume:
        _resume(run)
    folder.start(run.cfg, mcfg, splits.train, world, recipe, check)
    results = _run_epochs(run, on_epoch, plan)
    folder.finish(state.history, splits.val, results)
    return {"out": str(folder.out), "epochs": state.epoch, "step": state.step, "best_AP": state.best_ap,
            "history": state.history}


def build_model(cfg: TrainConfig, mcfg: ModelConfig, world: int, device: torch.device,
                log: Callable[[str], None]) -> tuple[EfficientDet, list[nn.Module], list[nn.Parameter]]:
    """The model of ``mcfg`` with its start weights and frozen parts, on ``device``; its frozen BN
    layers; and the parameters of the prediction layers initialised afresh over loaded weights."""
    torch.manual_seed(cfg.seed)
    model = EfficientDet(mcfg)
    how, new_head = _init_weights(model, cfg)
    log(f"{mcfg.name}, {mcfg.num_classes} classes, {mcfg.image_size}: {how}")
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
    if cfg.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    frozen_bn = frozen_batch_norms(model, cfg) if cfg.freeze_bn else []
    for m in frozen_bn:
        m.requires_grad_(False)
    check_batch_norm_batch(model, frozen_bn, cfg, world)
    if cfg.freeze_bn:
        scope = "all" if cfg.weights else "backbone only: the BiFPN and heads are new" if frozen_bn else "none loaded"
        log(f"freeze_bn: {len(frozen_bn)} BN layers keep their loaded statistics ({scope})")
    # Weights in channels_last make every conv run NHWC, whatever the layout of the input batch.
    model.to(device=device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    return model, frozen_bn, [p for name, p in model.named_parameters() if new_head and name.startswith(new_head)]


def _init_weights(model: EfficientDet, cfg: TrainConfig) -> tuple[str, tuple[str, ...]]:
    """Start weights: a full checkpoint (class head re-initialised when the class count differs),
    else ImageNet backbone weights, else the fresh initialisation. Returns what was done, and the
    name prefixes of the layers initialised afresh over loaded weights."""
    if cfg.weights:
        mcfg = model.config
        path, _ = resolve(cfg.weights, mcfg.name)  # a zoo name (coco) → its cached file
        src_classes, src_anchors = COCO_NUM_CLASSES, {}  # official checkpoints and effdet's COCO models
        if str(path).endswith(".safetensors"):
            meta = read_metadata(path)
            src_classes, src_anchors = int(meta.get("num_classes", mcfg.num_classes)), read_anchors(path, meta)
        source = create_model(mcfg.name, num_classes=src_classes, image_size=mcfg.image_size, **src_anchors)
        new_head, notes = (), []  # the predictors whose output count differs from the file's start afresh
        if src_classes != mcfg.num_classes:
            new_head = ("class_net.predict.",)
            notes.append(f"class head re-initialised: {src_classes} → {mcfg.num_classes} classes")
        src_per_position, per_position = source.config.anchors.num_anchors, mcfg.anchors.num_anchors
        if src_per_position != per_position:
            new_head = ("class_net.predict.", "box_net.predict.")
            notes.append(f"box and class predictors re-initialised: {src_per_position} → {per_position} anchors "
                         "per position")
        state = remap_state(read_weights(source, path), model.state_dict(), str(cfg.weights), ignore=new_head)
        model.load_state_dict(state, strict=not new_head)
        return f"weights from {cfg.weights}" + (f" ({'; '.join(notes)})" if notes else ""), new_head
    if cfg.backbone_weights:
        return load_pretrained_backbone(model, None if cfg.backbone_weights == "imagenet" else cfg.backbone_weights), ()
    return "trained from scratch (random initialisation)", ()


@dataclass
class _Run:
    """What the epoch loop works with, as the build steps made it."""

    cfg: TrainConfig
    world: int
    folder: RunFolder
    splits: Splits
    loaders: Loaders
    opt: Optimisation
    anchors: torch.Tensor
    loss_fn: LossFn
    frozen_bn: list[nn.Module]
    state: TrainState


def _set_length(run: _Run, cfg: TrainConfig) -> None:
    """``cfg`` from here on: the loop, the learning-rate schedule and the state (which saves it)
    follow its ``epochs``."""
    run.cfg = cfg
    run.state.epochs = cfg.epochs
    run.opt.lr_at = lr_schedule(cfg, run.world, run.loaders.steps_per_epoch)


def _resume(run: _Run) -> None:
    """The state in the run folder, and the run's own length: a resumed run follows the schedule
    it started with (or fixed after its first epoch), whatever ``epochs`` says now."""
    state, folder = run.state, run.folder
    state.load(folder.state_path)
    _check_same_anchors(folder, run.state.model.config)
    folder.log(f"resumed from {folder.state_path}: epoch {state.epoch}, batch {state.batch_in_epoch}, "
               f"step {state.step}")
    if state.epochs != run.cfg.epochs:
        folder.log(f"the run's length is its own: {state.epochs} epochs (epochs={run.cfg.epochs} is not used)")
        _set_length(run, dataclasses.replace(run.cfg, epochs=state.epochs))


def _check_same_anchors(folder: RunFolder, mcfg: ModelConfig) -> None:
    """The saved weights' outputs are offsets from the run's anchors: continuing them under other
    anchors (``anchors.anchor_scale=auto`` left out of the resuming command, say) would train on
    silently, from a model that no longer means what it learnt."""
    saved = (folder.saved_config() or {}).get("model", {}).get("anchors")
    now = json.loads(json.dumps(config_to_dict(mcfg)["anchors"]))  # as config.json holds it: lists, not tuples
    if saved is None or saved == now:
        return
    changed = ", ".join(f"{k} {saved.get(k)} → {now.get(k)}" for k in sorted(saved.keys() | now.keys())
                        if saved.get(k) != now.get(k))
    raise ValueError(f"{folder.out / 'config.json'}: the run trained with other anchors than this command gives "
                     f"({changed}); resume with the --set anchors.* it started with, or train into a new --out")

def _apply_plan(run: _Run, plan: Plan, record: dict) -> None:
    """Rank 0's plan, on every rank, for the rest of the run; config.json says what it chose."""
    cfg = plan(run.cfg, record) if run.folder.main else None
    if run.world > 1:
        chosen = [cfg]
        dist.broadcast_object_list(chosen, src=0)
        cfg = chosen[0]
    if dataclasses.replace(cfg, epochs=run.cfg.epochs, eval_every=run.cfg.eval_every) != run.cfg:
        raise ValueError("a plan may change TrainConfig.epochs and eval_every only")
    _set_length(run, cfg)
    run.folder.write_config(cfg, run.state.model.config, run.splits.train, run.world)


def _run_epochs(run: _Run, on_epoch: Callable[[dict], None] | None, plan: Plan | None) -> list[dict] | None:
    """Epochs from the state's position to the last, or to a stop (a signal, ``max_steps``), each
    ending in a checkpoint; returns the COCO results of the last validation."""
    state, results = run.state, None
    with StopSignals() as signals:
        while state.epoch < run.cfg.epochs:
            meter = _train_epoch(run, signals)
            if state.batch_in_epoch + meter.steps < run.loaders.steps_per_epoch:  # stopped mid-epoch
                state.batch_in_epoch += meter.steps
                run.folder.checkpoint(state)
                if signals.received is not None:
                    raise Interrupted(f"stopped by signal {signals.received} at step {state.step}; "
                                      f"resume with --resume (state: {run.folder.state_path})")
                break
            evaluated = _end_epoch(run, meter, on_epoch, plan)
            results = evaluated if evaluated is not None else results
            if signals.received is not None:
                raise Interrupted(f"stopped by signal {signals.received} after epoch {state.epoch}; "
                                  "resume with --resume")
            if run.world > 1:
                dist.barrier()
    return results


class _Meter:
    """One epoch's steps, images (all ranks) and mean loss, for its record and the progress bar."""

    def __init__(self, world: int):
        self.world, self.start = world, time.perf_counter()
        self.steps, self.images, self.loss_sum = 0, 0, 0.0

    def add(self, stats: dict) -> None:
        self.steps += 1
        self.images += stats["images"] * self.world
        self.loss_sum += stats["loss"]

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)


def _train_epoch(run: _Run, signals: StopSignals) -> _Meter:
    """The epoch's steps from the state's position; a signal or ``max_steps`` stops them at a step boundary."""
    cfg, state, opt = run.cfg, run.state, run.opt
    run.loaders.sampler.set_epoch(state.epoch, state.batch_in_epoch)
    meter = _Meter(run.world)
    progress = _progress(run.folder.main, run.loaders.steps_per_epoch - state.batch_in_epoch,
                         f"epoch {state.epoch + 1}/{cfg.epochs}")

    def on_step(step: int, stats: dict) -> bool:
        state.step = step
        meter.add(stats)
        if progress is not None:
            progress.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.4f}",
                                 img_s=f"{meter.images_per_s:.1f}")
            progress.update(1)
        return signals.received is not None or (cfg.max_steps is not None and step >= cfg.max_steps)

    try:
        state.step = train_one_epoch(opt.net, run.loaders.train, opt.optimizer, opt.lr_at, run.loss_fn,
                                     step=state.step, ema=opt.ema, scaler=opt.scaler,
                                     clip_grad_norm=cfg.clip_grad_norm, world=run.world, frozen_bn=run.frozen_bn,
                                     on_step=on_step)
    except NonFiniteLoss as e:
        raise NonFiniteLoss(f"{e}; stopped, the last good checkpoint is {run.folder.state_path}") from None
    except (RuntimeError, ConnectionError, EOFError) as e:
        # A worker the stop signal killed (see StopSignals), found when the next batch was
        # fetched: the state is that of the last whole step, checkpointed by the caller.
        lost_worker = not isinstance(e, RuntimeError) or "DataLoader worker" in str(e)
        if signals.received is None or not lost_worker:
            raise
    finally:
        if progress is not None:
            progress.close()
    return meter


def _end_epoch(run: _Run, meter: _Meter, on_epoch: Callable[[dict], None] | None,
               plan: Plan | None) -> list[dict] | None:
    """The epoch's record (validated when due, best weights kept), logged, the plan after the first
    epoch, then a checkpoint; returns the validation's COCO results, None when it did not validate
    (and on ranks other than 0)."""
    state, opt, mcfg = run.state, run.opt, run.state.model.config
    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    record = {"epoch": state.epoch, "step": state.step, "loss": meter.loss, "lr": opt.lr_at(state.step),
              "images_per_s": meter.images_per_s, "train_s": meter.seconds}
    results = None
    if run.loaders.val is not None and validates(state.epoch, run.cfg.epochs, run.cfg.eval_every):
        start = time.perf_counter()
        # Each rank's EMA has averaged its own BN statistics; rank 0's are those saved and scored.
        broadcast_state(state.ema.module)
        detector = Detector(model_backend(state.ema.module, amp_dtype=opt.amp_dtype),
                            evaluation_postprocess(mcfg.postprocess), label_ids=run.splits.val.label_ids)
        metrics, results = evaluate(detector, run.loaders.val, run.splits.val)
        record.update(metrics, eval_s=time.perf_counter() - start)
        if metrics["AP"] > state.best_ap:
            state.best_ap = metrics["AP"]
            run.folder.save_best(state)
    state.history.append(record)
    run.folder.record(record)
    if on_epoch is not None and run.folder.main:
        on_epoch(record)
    if plan is not None and state.epoch == 1:
        _apply_plan(run, plan, record)
    run.folder.checkpoint(state)
    return results


def _progress(main: bool, total: int, desc: str):
    if not main:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
