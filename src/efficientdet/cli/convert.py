"""``efficientdet convert SRC --out FILE.safetensors``: official / effdet weights → our format."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import list_models
from .options import add_model


def variant_from_path(path: Path) -> str:
    """Our ``.safetensors`` name it in their metadata; official archives unpack to ``efficientdet-dX/``;
    effdet files start ``tf_efficientdet_dX``."""
    if path.suffix == ".safetensors":
        from ..weights import read_own_metadata

        return read_own_metadata(path)["variant"]
    for part in (path.name, path.parent.name, path.stem):
        name = part.replace("tf_efficientdet_", "efficientdet-").split("_")[0]
        if name in list_models():
            return name
    raise ValueError(f"cannot tell the model variant from {path}; pass --model (one of {', '.join(list_models())})")


def run(args: argparse.Namespace) -> int:
    from .. import create_model
    from ..weights import save_safetensors
    from ..weights.zoo import find, is_weights_name

    src = Path(args.src)
    if not args.out.endswith(".safetensors"):
        raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
    if not src.exists() and is_weights_name(args.src):  # published weights, fetched into the cache
        name = find(args.src, args.model).variant
        src = args.src
    else:
        name = args.model or variant_from_path(src)
    model = create_model(name, num_classes=args.num_classes, weights=src)
    out = save_safetensors(model, args.out, source=str(src))
    print(f"wrote {out} ({name}, {model.config.num_classes} classes) from {src}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="official checkpoint / effdet .pth → our .safetensors")
    p.add_argument("src", help="official checkpoint directory or prefix, an effdet .pth file, our .safetensors, "
                                "or published weights by name (efficientdet-d0:coco, or coco with --model)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    add_model(p, note=" (default: read from the source's name)")
    p.add_argument("--num-classes", type=int, help="class count of the source (default 90)")
    p.set_defaults(func=run)
