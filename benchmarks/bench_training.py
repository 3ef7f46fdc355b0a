"""Our training against effdet's, in one run on one machine: images/s and the COCO AP reached.

Both train Lite0 on the same small dataset (coloured shapes on real photos,
``efficientdet.shapes``), at the same image size, batch and number of steps, from the same
ImageNet Lite0 backbone, with the same recipe (``--recipe``, by default the official one: SGD
momentum 0.9, lr 0.08 per 64 images scaled to the batch, 1 epoch of linear warm-up from 0.008
then cosine, weight decay 4e-5 on conv kernels, gradient clipping at 10, EMA 0.9998 with
warm-up, stochastic depth to survival 0.8; ``auto`` is the one ``efficientdet train`` would
pick for these images and epochs), and both are scored by the same COCO evaluation of their
final EMA weights on the validation split.

* ours: ``efficientdet.train.train(TrainConfig(...))``, exactly what ``efficientdet train`` runs.
* effdet: ``DetBenchTrain(tf_efficientdet_lite0)`` (its anchor labeler and loss) as the loss
  of our training loop (``train_one_epoch``: schedule, clipping, EMA), fed the *same batches*
  (the trainer's own loader: our dataset, augmentation and seeded sampler), stepped by the
  optimiser and schedule the trainer builds; evaluated with ``DetBenchPredict`` (its decoding
  and NMS: with ``--effdet-nms soft``, gaussian soft-NMS per class over its top 5000
  anchor-class pairs, as ours evaluates, following the official COCO evaluation) on our
  ``EvalTransform`` batches, and, to tell training from post-processing, also converted to our
  model and scored with our post-processing.
  So the two differ only in model code, initialisation of the BiFPN and heads, target
  assignment, loss and post-processing.

Timing: images/s of the training steps only (from the first batch fetch of an epoch to the end
of its last step; evaluation and checkpoints excluded), per epoch, by ``time.perf_counter`` for
both. The epochs are interleaved, ours 1, effdet 1, ours 2, ... (effdet's epoch runs in the
per-epoch callback of ``train()``), so that a noisy neighbour slows both alike. The first epoch
(worker start-up, first-call allocations) is left out when there are more. Printed: the overall
rate of the measured epochs, the fastest epoch of each (the least disturbed on a shared
machine), the per-epoch rates and ratios, the load average before and after, and the share of
effdet's step time spent in its anchor labelling (in the main process here, as
``DetBenchTrain(create_labeler=True)`` does it; effdet's ``train.py`` labels in the loader
workers by default).

    python benchmarks/bench_training.py [--epochs 12] [--train-images 240] [--val-images 60]
        [--image-size 256] [--batch-size 8] [--threads 2] [--workers 2] [--only ours|effdet]
        [--effdet-nms soft|hard] [--seeds 0,1,2,3] [--recipe official|finetune|auto] [--json FILE]

With several seeds, each is a complete run as above (its own generated dataset, initialisation
and draws), and a last table lists them side by side with their mean.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

from efficientdet import Detector, create_model
from efficientdet.config import PostprocessConfig, evaluation_postprocess
from efficientdet.data import Batch, load_dataset_yaml, load_split
from efficientdet.evaluate import coco_ground_truth, coco_metrics, eval_loader, evaluate, results_from_detections
from efficientdet.model import EfficientDet
from efficientdet.shapes import make_shapes_dataset
from efficientdet.train import TrainConfig, train, train_one_epoch
from efficientdet.train.build import build_optimisation, train_loader
from efficientdet.train.recipes import AUTO, RECIPE_NAMES, auto_recipe
from efficientdet.weights.effdet import convert_effdet, effdet_names
from efficientdet.weights.pretrained import load_pretrained_backbone

OURS, EFFDET = "efficientdet-lite0", "tf_efficientdet_lite0"
GOAL_SPEEDUP = 1.5
BACKBONE_TOLERANCE = 1e-5


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The size of each training run: shared with sweep_recipes.py."""
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train-images", type=int, default=240)
    p.add_argument("--val-images", type=int, default=60)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_options(p)
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0],
                   help="comma-separated; each seed makes its own dataset and training draws, and runs both")
    p.add_argument("--only", choices=("ours", "effdet"), help="train one of the two")
    p.add_argument("--recipe", choices=RECIPE_NAMES, default="official",
                   help="both trainings' recipe (auto: the one efficientdet train picks for these images and epochs)")
    p.add_argument("--effdet-nms", choices=("soft", "hard"), default="soft",
                   help="effdet's NMS at evaluation: soft = its gaussian soft-NMS (closest to the official default)")
    p.add_argument("--effdet-channels-last", action="store_true",
                   help="effdet's model in channels_last, as its train.py --channels-last (off by default there)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def recipe_name(args: argparse.Namespace) -> str:
    """``--recipe``, with ``auto`` resolved as ``train`` resolves it (from the train images and epochs)."""
    return auto_recipe(args.train_images, args.epochs)[0] if args.recipe == AUTO else args.recipe


def recipe(args: argparse.Namespace, seed: int, data: Path, out: Path) -> TrainConfig:
    """The one TrainConfig both trainings read their hyper-parameters from (``--recipe``).

    Evaluated once, after the last epoch: only the final EMA weights are compared.
    """
    return TrainConfig(model=OURS, recipe=recipe_name(args), data=str(data), out=str(out), epochs=args.epochs,
                       batch_size=args.batch_size, image_size=args.image_size, workers=args.workers, seed=seed,
                       eval_every=args.epochs, device="cpu")


def our_model(cfg: TrainConfig, num_classes: int) -> EfficientDet:
    """Our Lite0 with the packaged ImageNet backbone, as ``train()`` loads it (same file), with the
    recipe's stochastic depth (effdet's is set from it)."""
    off = {} if cfg.stochastic_depth else {"survival_prob": None}
    model = create_model(OURS, num_classes=num_classes, image_size=cfg.image_size, **off)
    load_pretrained_backbone(model)
    return model.eval()


def effdet_model(ours: EfficientDet, nms: str) -> torch.nn.Module:
    """effdet's Lite0 for the same classes and size, its backbone copied from ``ours``.

    Its stochastic depth is set to ours (the official recipe's 0.8 survival at the last block,
    linear in the block index; none in finetune; effdet's Lite config turns it off). The BiFPN
    and heads keep effdet's own initialisation. The copy is checked on backbone features of a random input.
    """
    import effdet

    config = effdet.get_efficientdet_config(EFFDET)
    config.num_classes = ours.config.num_classes
    config.image_size = tuple(ours.config.image_size)
    config.soft_nms = nms == "soft"
    survival = ours.config.backbone.survival_prob
    config.backbone_args = dict(drop_path_rate=0.0 if survival is None else 1.0 - survival)
    net = effdet.EfficientDet(config, pretrained_backbone=False)
    copy_backbone(ours, net)
    check_backbone(ours, net)
    return net


def copy_backbone(ours: EfficientDet, net: torch.nn.Module) -> None:
    """Every backbone tensor of ``ours`` into ``net`` through the effdet name map, none left out."""
    names = {k: v for k, v in effdet_names(ours).items() if k.startswith("backbone.")}
    state = {names[k]: v for k, v in ours.state_dict().items() if k in names}
    missing, unexpected = net.load_state_dict(state, strict=False)
    left = [k for k in missing if k.startswith("backbone.") and not k.endswith("num_batches_tracked")]
    if left or unexpected:
        raise RuntimeError(f"backbone copy: effdet tensors not set {left[:3]}, unknown names {unexpected[:3]}")


@torch.no_grad()
def check_backbone(ours: EfficientDet, net: torch.nn.Module) -> None:
    x = torch.randn(2, 3, *ours.config.image_size, generator=torch.Generator().manual_seed(0))
    ours.eval()
    net.eval()
    diff = max((a - b).abs().max().item() for a, b in zip(ours.backbone(x), net.backbone(x), strict=True))
    if diff > BACKBONE_TOLERANCE:
        raise RuntimeError(f"backbone copy: features differ by {diff:.3g} (> {BACKBONE_TOLERANCE})")
    print(f"backbone copy checked: max |ours - effdet| over C3-C5 features = {diff:.2g}")


def effdet_target(batch: Batch) -> dict[str, torch.Tensor]:
    """Our padded xyxy boxes / 0-based labels (-1 = padding) → effdet's ``bbox`` (yxyx) and
    ``cls`` (1-based, -1 = padding; float32 as effdet's own collate makes them)."""
    cls = torch.where(batch.labels >= 0, batch.labels + 1, -1).float()
    return {"bbox": batch.boxes[..., [1, 0, 3, 2]], "cls": cls}


def log_line(prefix: str, record: dict) -> str:
    """One epoch's record, in ``train()``'s log format."""
    return prefix + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                             if k in ("epoch", "loss", "images_per_s", "labelling_share", "AP", "AP50",
                                      "AP_our_post", "AP50_our_post"))


class EffdetTraining:
    """effdet trained by the official recipe on our batches, one epoch per :meth:`epoch` call,
    with per-epoch records like ``train()``'s history (COCO metrics after the last epoch).

    Its global RNG state (drop-path draws) is kept apart from ours, so interleaving the two
    changes neither's random stream.
    """

    def __init__(self, cfg: TrainConfig, ours: EfficientDet, nms: str, channels_last: bool = False):
        import effdet

        spec = load_dataset_yaml(cfg.data)
        self.train_split, self.val_split = load_split(spec, "train"), load_split(spec, "val")
        self.cfg, self.mcfg = cfg, ours.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net = effdet_model(ours, nms)
            if channels_last:
                self.net.to(memory_format=torch.channels_last)
            self.rng = torch.get_rng_state()
        self.bench = effdet.DetBenchTrain(self.net, create_labeler=True)
        self.label_seconds = 0.0
        self._time_labeler()
        self.loader = train_loader(cfg, self.train_split, self.mcfg)
        self.opt = build_optimisation(cfg, self.net, 1, torch.device("cpu"), self.loader.sampler.batches_per_epoch)
        self.history: list[dict] = []
        self.step = 0

    def _time_labeler(self) -> None:
        """Count the seconds of the bench's anchor labelling: effdet's own ``train.py`` does it in
        the loader workers by default (``bench_labeler=False``), here it is on the timed path."""
        labeler = self.bench.anchor_labeler
        label = labeler.batch_label_anchors

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = label(*args, **kwargs)
            self.label_seconds += time.perf_counter() - start
            return out

        labeler.batch_label_anchors = timed

    def epoch(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng)
            record = self._train_epoch(len(self.history))
            self.rng = torch.get_rng_state()
        if len(self.history) + 1 == self.cfg.epochs:
            record.update(self.final_metrics())
        self.history.append(record)
        print(log_line("[effdet] ", record), flush=True)

    def finish(self) -> dict:
        """The epochs not run yet; then the result, as :func:`run_ours` gives it."""
        while len(self.history) < self.cfg.epochs:
            self.epoch()
        return {"history": self.history}

    def _train_epoch(self, epoch: int) -> dict:
        """One epoch through our loop, effdet's bench (forward, labelling, loss) as its loss."""
        self.loader.sampler.set_epoch(epoch)
        self.bench.train()
        steps: list[dict] = []

        def keep(step: int, stats: dict) -> bool:
            steps.append(stats)
            return False  # never stop early

        start, self.label_seconds = time.perf_counter(), 0.0
        self.step = train_one_epoch(self.net, self.loader, self.opt.optimizer, self.opt.lr_at,
                                    lambda net, batch: self.bench(batch.images, effdet_target(batch)),
                                    step=self.step, ema=self.opt.ema, clip_grad_norm=self.cfg.clip_grad_norm,
                                    on_step=keep)
        seconds = time.perf_counter() - start
        return {"epoch": epoch + 1, "step": self.step, "loss": sum(r["loss"] for r in steps) / len(steps),
                "images_per_s": sum(r["images"] for r in steps) / seconds,
                "labelling_share": self.label_seconds / seconds}

    def final_metrics(self) -> dict[str, float]:
        """COCO metrics of the EMA weights: with effdet's post-processing (its result), and with
        ours (the same weights converted to our model), which tells training from post-processing."""
        mcfg, split = self.mcfg, self.val_split
        loader = eval_loader(split, mcfg, self.cfg.eval_batch_size, min(self.cfg.workers, 2))
        metrics = self._evaluate_effdet(loader)
        converted = EfficientDet(mcfg)
        converted.load_state_dict(convert_effdet(converted, self.opt.ema.module.state_dict()))
        detector = Detector(converted, evaluation_postprocess(PostprocessConfig()), label_ids=split.label_ids)
        ours_post, _ = evaluate(detector, loader, split)
        return metrics | {"AP_our_post": ours_post["AP"], "AP50_our_post": ours_post["AP50"]}

    @torch.inference_mode()
    def _evaluate_effdet(self, loader) -> dict[str, float]:
        """COCO metrics of effdet's own predictions (``DetBenchPredict`` of the EMA weights).

        effdet returns ``[B, 100, 6]`` rows x1, y1, x2, y2, score, class (1-based; 0 on padding
        rows) in original pixels when given ``img_scale`` (network → original) and ``img_size`` (w, h).
        """
        import effdet

        predictor = effdet.DetBenchPredict(self.opt.ema.module).eval()
        split = self.val_split
        ids = torch.tensor(split.label_ids)
        results = []
        for batch in loader:
            info = {"img_scale": torch.tensor([t["image_scale"] for t in batch.targets], dtype=torch.float32),
                    "img_size": torch.tensor([t["orig_size"][::-1] for t in batch.targets], dtype=torch.float32)}
            for target, dets in zip(batch.targets, predictor(batch.images, info)):
                dets = dets[dets[:, 5] > 0]
                results += results_from_detections(target["image_id"], dets[:, :4].numpy(), dets[:, 4].numpy(),
                                                   ids[dets[:, 5].long() - 1].numpy())
        return coco_metrics(coco_ground_truth(split), results)


def run_ours(cfg: TrainConfig, after_epoch=None) -> dict:
    """``train(cfg)``; its history holds images/s per epoch and the final COCO metrics.

    ``after_epoch()`` runs after each of its epochs, in ``train()``'s per-epoch callback (outside
    its timed steps).
    """
    history: list[dict] = []

    def on_epoch(record: dict) -> None:
        history.append(record)
        if after_epoch is not None:
            after_epoch()

    train(cfg, log=lambda line: print(f"[ours] {line}", flush=True), on_epoch=on_epoch)
    return {"history": history}


def measured(history: list[dict]) -> list[dict]:
    """The epochs whose speed counts: all but the first (start-up), or the only one."""
    return history[1:] if len(history) > 1 else history


def throughput(history: list[dict]) -> dict[str, float]:
    """Images/s of the measured epochs: overall (their images over their step time; every epoch
    has as many images) and of the fastest one, the least disturbed by other jobs on the machine."""
    rates = [r["images_per_s"] for r in measured(history)]
    return {"images_per_s": len(rates) / sum(1 / r for r in rates), "best_images_per_s": max(rates)}


def effdet_notes(history: list[dict]) -> str:
    """effdet's AP with our post-processing, and the share of its step time spent labelling anchors."""
    share = statistics.mean(r["labelling_share"] for r in measured(history))
    last = history[-1]
    return (f"effdet's EMA weights with our post-processing (official COCO evaluation: soft-NMS per class over "
            f"the top 5000 anchor-class pairs): AP {last['AP_our_post']:.3f}, AP50 {last['AP50_our_post']:.3f}. "
            f"Its anchor labelling (DetBenchTrain's, in the main process; effdet's train.py runs it in the "
            f"loader workers by default) took {share:.0%} of its measured step time.\n\n")


def versions() -> str:
    return (f"torch {torch.__version__}, effdet {metadata.version('effdet')}, timm {metadata.version('timm')}, "
            f"Python {platform.python_version()}, {platform.machine()} × {os.cpu_count()} CPUs, "
            f"{torch.get_num_threads()} torch threads")


def summary_table(runs: dict[str, dict], epochs: int) -> str:
    epochs_measured = f"epochs 2–{epochs}" if epochs > 1 else "epoch 1, start-up included"
    lines = [f"| model | train images/s ({epochs_measured}) | fastest epoch, images/s | AP | AP50 |",
             "|---|---:|---:|---:|---:|"]
    for name, r in runs.items():
        last = r["history"][-1]
        lines.append(f"| {name} | {r['images_per_s']:.2f} | {r['best_images_per_s']:.2f} | {last['AP']:.3f} | "
                     f"{last['AP50']:.3f} |")
    if len(runs) == 2:
        ours, theirs = runs["ours"], runs["effdet"]
        lines.append(f"| ours / effdet (goal ≥ {GOAL_SPEEDUP}×, ≥ 0) | "
                     f"**{ours['images_per_s'] / theirs['images_per_s']:.2f}×** | "
                     f"**{ours['best_images_per_s'] / theirs['best_images_per_s']:.2f}×** | "
                     f"{ours['history'][-1]['AP'] - theirs['history'][-1]['AP']:+.3f} | "
                     f"{ours['history'][-1]['AP50'] - theirs['history'][-1]['AP50']:+.3f} |")
    return "\n".join(lines)


def epoch_table(runs: dict[str, dict]) -> str:
    """Images/s per epoch side by side: how steady the machine was."""
    names = list(runs)
    lines = ["| epoch | " + " | ".join(f"{n} images/s" for n in names) + (" | ratio |" if len(names) == 2 else " |"),
             "|---:|" + "---:|" * (len(names) + (len(names) == 2))]
    for rows in zip(*(r["history"] for r in runs.values())):
        cells = [f"{row['images_per_s']:.2f}" for row in rows]
        if len(rows) == 2:
            cells.append(f"{rows[0]['images_per_s'] / rows[1]['images_per_s']:.2f}×")
        lines.append(f"| {rows[0]['epoch']} | " + " | ".join(cells) + " |")
    if len(names) == 2 and len(runs["ours"]["history"]) > 1:
        ratios = [a["images_per_s"] / b["images_per_s"] for a, b in zip(measured(runs["ours"]["history"]),
                                                                         measured(runs["effdet"]["history"]))]
        lines.append(f"\nmedian per-epoch ratio (epochs 2–): {statistics.median(ratios):.2f}×")
    return "\n".join(lines)


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, dict]:
    """Both trainings (or ``--only`` one) on the dataset generated from ``seed``."""
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        tmp = Path(tmp)
        data = make_shapes_dataset(tmp / "data", num_train=args.train_images, num_val=args.val_images,
                                   image_size=args.image_size, seed=seed)
        cfg = recipe(args, seed, data, tmp / "ours")
        theirs = None
        if args.only in (None, "effdet"):
            num_classes = load_split(load_dataset_yaml(data), "train").num_classes
            theirs = EffdetTraining(cfg, our_model(cfg, num_classes), args.effdet_nms,
                                    args.effdet_channels_last)
        if args.only in (None, "ours"):
            runs["ours"] = run_ours(cfg, theirs.epoch if theirs is not None else None)
        if theirs is not None:
            runs["effdet"] = theirs.finish()
    for r in runs.values():
        r.update(throughput(r["history"]))
    return runs


def seeds_table(results: dict[int, dict[str, dict]]) -> str:
    """One row per seed and their mean: images/s, the speed ratio, AP / AP50 of each."""
    names = list(next(iter(results.values())))
    both = len(names) == 2
    head = "| seed | " + " | ".join(f"{n} images/s" for n in names) + (" | ratio (per-epoch median)" if both else "")
    head += " | " + " | ".join(f"{n} AP / AP50" for n in names) + " |"
    lines = [head, "|---:|" + "---:|" * (2 * len(names) + both)]
    rows = []
    for seed, runs in results.items():
        row = {f"{n}_ips": runs[n]["images_per_s"] for n in names}
        row |= {f"{n}_{k}": runs[n]["history"][-1][k] for n in names for k in ("AP", "AP50")}
        if both:
            row["ratio"] = runs["ours"]["images_per_s"] / runs["effdet"]["images_per_s"]
            row["median"] = statistics.median(a["images_per_s"] / b["images_per_s"] for a, b in
                                              zip(measured(runs["ours"]["history"]), measured(runs["effdet"]["history"])))
        rows.append((str(seed), row))
    rows.append(("mean", {k: statistics.mean(r[k] for _, r in rows) for k in rows[0][1]}))
    for label, row in rows:
        cells = [f"{row[f'{n}_ips']:.2f}" for n in names]
        if both:
            cells.append(f"**{row['ratio']:.2f}×** ({row['median']:.2f}×)")
        cells += [f"{row[f'{n}_AP']:.3f} / {row[f'{n}_AP50']:.3f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if both:
        wins = sum(r["ours_AP"] >= r["effdet_AP"] for _, r in rows[:-1])
        lines.append(f"\nours' AP ≥ effdet's in {wins} of {len(rows) - 1} seeds; "
                     f"mean AP difference {rows[-1][1]['ours_AP'] - rows[-1][1]['effdet_AP']:+.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    command = "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv])
    batches = args.train_images // args.batch_size
    results: dict[int, dict[str, dict]] = {}
    for seed in args.seeds:
        runs = results[seed] = run_seed(args, seed)
        layout = "channels_last" if args.effdet_channels_last else "NCHW"
        print(f"\nseed {seed}: Lite0 @ {args.image_size}, recipe {recipe_name(args)}, batch {args.batch_size}, "
              f"{args.epochs} epochs × {batches} steps, {args.train_images} train / {args.val_images} val images, "
              f"{args.workers} workers each; "
              f"effdet NMS: {args.effdet_nms}, layout: {layout} (ours: channels_last); COCO metrics of the final "
              f"EMA weights\n\n{summary_table(runs, args.epochs)}\n\n"
              f"{effdet_notes(runs['effdet']['history']) if 'effdet' in runs else ''}{epoch_table(runs)}", flush=True)
    load_after = os.getloadavg()
    load = f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in load_before)} before, " \
           f"{' '.join(f'{v:.2f}' for v in load_after)} after"
    print(f"\n`{command}`\n\n{versions()}; {load}\n\n{seeds_table(results)}")
    if args.json:
        args.json.write_text(json.dumps({"command": command, "versions": versions(), "load_before": load_before,
                                         "load_after": load_after, "args": vars(args),
                                         "runs": {str(k): v for k, v in results.items()}}, indent=2, default=str))


if __name__ == "__main__":
    main()
