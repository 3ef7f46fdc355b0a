"""The ``efficientdet`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import get_config, list_models
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


def _variant_from_path(path: Path) -> str:
    """Official archives unpack to ``efficientdet-dX/``; effdet files start ``tf_efficientdet_dX``."""
    for part in (path.name, path.parent.name, path.stem):
        name = part.replace("tf_efficientdet_", "efficientdet-").split("_")[0]
        if name in list_models():
            return name
    raise ValueError(f"cannot tell the model variant from {path}; pass --model (one of {', '.join(list_models())})")


def _convert(args: argparse.Namespace) -> int:
    from . import create_model
    from .weights import save_safetensors

    src = Path(args.src)
    if not args.out.endswith(".safetensors"):
        raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
    name = args.model or _variant_from_path(src)
    model = create_model(name, num_classes=args.num_classes, weights=src)
    out = save_safetensors(model, args.out, source=str(src))
    print(f"wrote {out} ({name}, {model.config.num_classes} classes) from {src}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="efficientdet", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="resolved config, parameter count and FLOPs of a model")
    info.add_argument("model")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_info)
    convert = sub.add_parser("convert", help="official checkpoint / effdet .pth → our .safetensors")
    convert.add_argument("src", help="official checkpoint directory or prefix, or an effdet .pth file")
    convert.add_argument("--out", required=True, help="output .safetensors file")
    convert.add_argument("--model", help="variant (default: read from the source's name)")
    convert.add_argument("--num-classes", type=int, help="class count of the source (default 90)")
    convert.set_defaults(func=_convert)
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
