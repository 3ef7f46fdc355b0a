"""``efficientdet info MODEL``: resolved config, parameter count and FLOPs."""

from __future__ import annotations

import argparse
import json

import torch

from ..config import config_to_dict, get_config
from ..model import EfficientDet
from ..profile import count_flops, count_parameters


def run(args: argparse.Namespace) -> int:
    config = get_config(args.model)
    with torch.device("meta"):
        params = count_parameters(EfficientDet(config))
    flops = count_flops(config)
    report = {"model": config.name, "parameters": params, "flops": flops, "config": config_to_dict(config)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    h, w = config.image_size
    print(f"{config.name}: {params:,} parameters, {flops / 1e9:.3f}B FLOPs (multiply-adds) at {h}x{w}")
    for section, value in report["config"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if k != "stages")
        print(f"  {section}: {value}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="resolved config, parameter count and FLOPs of a model")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
