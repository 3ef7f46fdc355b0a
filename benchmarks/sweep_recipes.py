"""Training recipes compared by the AP they reach: arms × generated scenes × seeds, one table.

Each *arm* is a recipe with some of its fields changed, written ``RECIPE[:field=value]...``
(``finetune:lr=0.32:scale_range=0.5,1.5``: the ``--set`` syntax of ``efficientdet train``), or
``effdet``: effdet's ``tf_efficientdet_lite0`` trained by ``bench_training``'s loop (same
batches, optimiser, schedule and EMA as ours, its own model, anchor labelling and loss) with
effdet's short fine-tuning defaults as this project's issue 14 states them: SGD at 0.01 for batch
8 (0.08 per 64 images), cosine, flip-only augmentation (no scale jitter), no stochastic depth;
scored with its own post-processing (``DetBenchPredict``, soft-NMS as ours evaluates).

Each scene is a kind of generated dataset (:data:`efficientdet.shapes.SCENES`: ``large``,
``small``, ``crowded``, ``thin``), made afresh for each seed (same seed: same images for every
arm). Every run trains Lite0 from the packaged ImageNet backbone and scores its final EMA
weights on the validation split with the official COCO evaluation. Tune on some scenes, then
report on others (``--scenes``): the table gives, per arm and scene, AP50 and AP as mean ± sample
standard deviation over the seeds, and each arm's mean AP50 over that of ``--baselines``.

Runs are appended to ``--json`` as they finish; a rerun with the same file skips those done, so
a sweep stopped half-way goes on where it was.

    python benchmarks/sweep_recipes.py --arms finetune official effdet --scenes thin --seeds 0,1,2
        [--epochs 12] [--train-images 240] [--val-images 60] [--image-size 256] [--batch-size 8]
        [--threads 2] [--workers 2] [--baselines official,effdet] [--json FILE]
        [--model efficientdet-d0 --scratch] [--device cuda]

``--model`` trains another variant for the recipe arms (the ``effdet`` arm is Lite0 only); Lite0–2
start from their packaged ImageNet backbones, any other from scratch (``--scratch``: no other
ImageNet backbone ships offline). ``--device cuda`` trains there, with AMP (``TrainConfig.amp``'s
CUDA default), so its AP is not that of a CPU run of the same seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import OURS, EffdetTraining, add_run_options, our_model, run_ours  # noqa: E402

from efficientdet.benchmark import machine_line  # noqa: E402
from efficientdet.cli.train import apply_sets  # noqa: E402
from efficientdet.data import load_dataset_yaml, load_split  # noqa: E402
from efficientdet.shapes import SCENES, make_shapes_dataset  # noqa: E402
from efficientdet.train import TrainConfig  # noqa: E402
from efficientdet.train.recipes import RECIPES  # noqa: E402

EFFDET = "effdet"
# effdet's defaults for short fine-tuning, as issue 14 measured them (its train.py, flip-only).
EFFDET_SETS = ["lr=0.08", "scale_range=1,1", "hflip=0.5", "stochastic_depth=false", "mosaic=0", "photometric=false"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", required=True, help="RECIPE[:field=value]... or effdet")
    p.add_argument("--scenes", type=lambda v: v.split(","), default=["large"])
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0])
    add_run_options(p)
    p.add_argument("--baselines", type=lambda v: v.split(","), default=[],
                   help="arms whose mean AP50 the others are divided by")
    p.add_argument("--json", type=Path, help="runs are appended here; those already there are skipped")
    p.add_argument("--model", default=OURS, help="the variant the recipe arms train")
    p.add_argument("--scratch", action="store_true", help="no ImageNet backbone: needed for variants other than Lite0-2")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (AMP there)")
    args = p.parse_args(argv)
    if EFFDET in [a.split(":")[0] for a in args.arms] and (args.model != OURS or args.device != "cpu"):
        p.error(f"--arms {EFFDET}: trains {OURS} on the cpu only (--model {args.model}, --device {args.device})")
    for scene in args.scenes:
        if scene not in SCENES:
            p.error(f"--scenes: unknown scene {scene!r}; scenes: {', '.join(SCENES)}")
    for arm in args.arms:
        try:
            arm_config(arm, TrainConfig())
        except ValueError as e:
            p.error(f"--arms {arm}: {e}")
    for base in args.baselines:
        if base not in args.arms:
            p.error(f"--baselines: {base!r} is not one of --arms")
    return args


def arm_config(arm: str, base: TrainConfig) -> TrainConfig:
    """``base`` with the recipe and field changes that ``arm`` names."""
    name, *sets = arm.split(":")
    if name == EFFDET:
        name, sets = "finetune", EFFDET_SETS + sets
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)} (or {EFFDET})")
    fields = {f: None for f in RECIPES[name].__dataclass_fields__}
    return apply_sets(dataclasses.replace(base, recipe=name, **fields), sets)


def run_arm(arm: str, scene: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one arm on the scene's dataset of ``seed``; its final AP, AP50 and wall seconds."""
    with tempfile.TemporaryDirectory(prefix="sweep_recipes_") as tmp:
        tmp = Path(tmp)
        data = make_shapes_dataset(tmp / "data", num_train=args.train_images, num_val=args.val_images,
                                   image_size=args.image_size, seed=seed, scene=scene)
        base = TrainConfig(model=args.model, data=str(data), out=str(tmp / "run"), epochs=args.epochs,
                           batch_size=args.batch_size, image_size=args.image_size, workers=args.workers,
                           seed=seed, eval_every=args.epochs, device=args.device,
                           backbone_weights=None if args.scratch else "imagenet")
        cfg = arm_config(arm, base)
        start = time.perf_counter()
        if arm.split(":")[0] == EFFDET:
            num_classes = load_split(load_dataset_yaml(data), "train").num_classes
            history = EffdetTraining(cfg, our_model(cfg, num_classes), "soft").finish()["history"]
        else:
            history = run_ours(cfg)["history"]
        last = history[-1]
        return {"arm": arm, "scene": scene, "seed": seed, "AP": last["AP"], "AP50": last["AP50"],
                "seconds": time.perf_counter() - start}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def table(runs: list[dict], arms: list[str], scenes: list[str], baselines: list[str]) -> str:
    """Rows: arms; per scene AP50 and AP (mean ± sd over seeds, n), then ratios of mean AP50."""
    def cell(arm: str, scene: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["arm"] == arm and r["scene"] == scene]

    head = "| arm | " + " | ".join(f"{s} AP50 | {s} AP" for s in scenes)
    head += "".join(f" | AP50 / {b}" for b in baselines) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(scenes) + len(baselines))]
    for arm in arms:
        cells = []
        for scene in scenes:
            ap50, ap = cell(arm, scene, "AP50"), cell(arm, scene, "AP")
            cells += [f"{spread(ap50)} (n {len(ap50)})" if ap50 else "–", spread(ap) if ap else "–"]
        for base in baselines:
            ratios = []
            for scene in scenes:
                mine, theirs = cell(arm, scene, "AP50"), cell(base, scene, "AP50")
                if mine and theirs and statistics.mean(theirs) > 0:
                    ratios.append(f"{statistics.mean(mine) / statistics.mean(theirs):.2f}×")
            cells.append(", ".join(ratios) or "–")
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv])
    runs = json.loads(args.json.read_text())["runs"] if args.json and args.json.exists() else []
    done = {(r["arm"], r["scene"], r["seed"]) for r in runs}
    print(machine_line(), flush=True)
    for scene in args.scenes:
        for seed in args.seeds:
            for arm in args.arms:
                if (arm, scene, seed) in done:
                    continue
                run = run_arm(arm, scene, seed, args)
                runs.append(run)
                print(f"[sweep] {arm} on {scene} seed {seed}: AP {run['AP']:.3f} AP50 {run['AP50']:.3f} "
                      f"({run['seconds'] / 60:.1f} min)", flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"command": command, "runs": runs}, indent=2))
    mine = [r for r in runs if r["arm"] in args.arms and r["scene"] in args.scenes and r["seed"] in args.seeds]
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    model = args.model.removeprefix("efficientdet-").capitalize() + (" (scratch)" if args.scratch else "")
    print(f"\n`{command}`\n\n{machine_line()}; trained on {device}; {model} @ {args.image_size}, batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.train_images} train / {args.val_images} val images, seeds "
          f"{','.join(map(str, args.seeds))}; AP50 and AP of the final EMA weights, mean ± sd over seeds\n\n"
          f"{table(mine, args.arms, args.scenes, args.baselines)}")


if __name__ == "__main__":
    main()
