"""``efficientdet train --model M --data DATA.yaml --out RUN [--recipe official|finetune|auto]``: train
or fine-tune on any dataset. ``--recipe auto`` (the default) takes the official recipe for a long
schedule on large data and ``finetune`` otherwise, and says which at the start; ``--set`` changes
any field, the recipe's included.

Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m efficientdet.cli train ...`` (add
``--nnodes``, ``--node-rank``, ``--rdzv-endpoint`` for several machines); ``--batch-size`` is per
process and the learning rate scales with the global batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from ..loss import LossConfig
from ..train.recipes import AUTO, OFFICIAL_MIN_EPOCHS, OFFICIAL_MIN_IMAGES, RECIPE_FIELDS, RECIPE_NAMES
from .options import add_device, add_image_size, add_model, add_weights, parse_image_size, subcommand


def _convert(value: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if value.lower() in ("none", "null") and type(None) in typing.get_args(kind):
        return None
    if origin is tuple:
        parts = value.split(",")
        return tuple(_convert(p, args[0], key) for p in parts)
    if args and origin is not None:  # X | None, X | Y | None: the first type that reads the value
        for arg in args[:-1]:
            try:
                return _convert(value, arg, key)
            except ValueError:
                pass
        return _convert(value, args[-1], key)
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"--set {key}: expected true/false, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"--set {key}: expected {getattr(kind, '__name__', kind)}, got {value!r}") from None


def apply_sets(cfg, sets: list[str]):
    """``key=value`` (``lr=0.04``, ``loss.gamma=2``) onto a frozen dataclass, typed by its annotations;
    ``section.field`` reaches into a field that is itself a dataclass (``loss``). The recipe is
    chosen before (``--recipe``): its fields are set like any other, and win over the recipe's."""
    sections = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        target, field_name = cfg, key
        if "." in key:
            section, field_name = key.split(".", 1)
            if section not in sections:
                raise ValueError(f"--set {key}: only {', '.join(f'{s}.<field>' for s in sections)} are nested")
            target = getattr(cfg, section)
        if key == "recipe":
            raise ValueError("--set recipe: the recipe is chosen with --recipe, before --set changes its fields")
        hints = typing.get_type_hints(type(target))
        if field_name not in hints or field_name.startswith("_"):
            valid = ", ".join(sorted(f.name for f in dataclasses.fields(target) if not f.name.startswith("_")))
            recipe = f" (the recipe's: {', '.join(RECIPE_FIELDS)})" if target is cfg else ""
            raise ValueError(f"--set {key}: unknown field; valid: {valid}{recipe}")
        new = dataclasses.replace(target, **{field_name: _convert(value, hints[field_name], key)})
        cfg = dataclasses.replace(cfg, **{key.split(".")[0]: new}) if target is not cfg else new
    return cfg


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from ..train import Interrupted, NonFiniteLoss, TrainConfig, train

    cfg = TrainConfig(model=args.model, data=args.data, out=args.out, recipe=args.recipe, loss=LossConfig())
    for name in ("epochs", "batch_size", "weights", "workers", "device", "seed"):
        if getattr(args, name) is not None:
            cfg = dataclasses.replace(cfg, **{name: getattr(args, name)})
    if args.image_size is not None:  # TrainConfig checks it against the model
        cfg = dataclasses.replace(cfg, image_size=parse_image_size(args.image_size))
    if args.scratch:
        cfg = dataclasses.replace(cfg, backbone_weights=None)
    elif args.backbone_weights:
        cfg = dataclasses.replace(cfg, backbone_weights=args.backbone_weights)
    cfg = dataclasses.replace(cfg, resume=args.resume, exist_ok=args.exist_ok)
    cfg = apply_sets(cfg, args.set or [])
    try:
        summary = train(cfg)
    except Interrupted as e:
        print(f"efficientdet train: {e}", file=sys.stderr)
        return 130
    except NonFiniteLoss as e:
        print(f"efficientdet train: error: {e}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":  # under torchrun: one line, from the rank that evaluates
        print(f"done: {summary['epochs']} epochs, best AP {summary['best_AP']:.4f}; weights in {summary['out']}/weights")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "train", "train or fine-tune on a COCO / VOC / YOLO dataset", __doc__)
    add_model(p, default="efficientdet-lite0")
    p.add_argument("--data", required=True, help="dataset YAML (format: coco | voc | yolo)")
    p.add_argument("--recipe", default=AUTO, metavar="|".join(RECIPE_NAMES),
                   help=f"the settings --set starts from (default auto: official from {OFFICIAL_MIN_IMAGES:,} "
                        f"train images and {OFFICIAL_MIN_EPOCHS} epochs, finetune below)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    add_image_size(p)
    add_weights(p, note=" to start from (the class head re-initialised when the class count differs)")
    p.add_argument("--backbone-weights", help="ImageNet backbone file (default: packaged Lite0-2 weights)")
    p.add_argument("--scratch", action="store_true", help="no pretrained backbone")
    p.add_argument("--workers", type=int)
    add_device(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--exist-ok", action="store_true",
                   help="train into a non-empty --out, removing the previous run's weights, metrics and state")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any TrainConfig field, e.g. lr=0.04")
    p.set_defaults(func=run)
