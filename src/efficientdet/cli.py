"""The ``efficientdet`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .config import get_config
from .model import EfficientDet
from .profile import count_flops, count_parameters


def _info(args: argparse.Namespace) -> int:
    config = get_config(args.model)
    import torch

    with torch.device("meta"):
        params = count_parameters(EfficientDet(config))
    flops = count_flops(config)
    report = {"model": config.name, "parameters": params, "flops": flops, "config": dataclasses.asdict(config)}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="efficientdet", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="resolved config, parameter count and FLOPs of a model")
    info.add_argument("model")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        if args.debug:
            raise
        print(f"efficientdet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
