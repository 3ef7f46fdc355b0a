"""The ``efficientdet`` command: one module per subcommand, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines ``add_parser(subparsers)`` that registers its subcommand and sets ``func``.
SUBCOMMANDS = ("info", "convert", "data", "train", "eval", "demo", "predict", "export", "benchmark", "weights",
               "serve")
DEBUG_HELP = "show the full traceback on errors"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="efficientdet", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    for subparser in sub.choices.values():
        # Also after the subcommand; SUPPRESS keeps a --debug given before it.
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as e:  # user errors: one line, no traceback
        if args.debug:
            raise
        print(f"efficientdet {args.command}: error: {_message(e)}", file=sys.stderr)
        return 2


def _message(error: Exception) -> str:
    """The error's own message; for one re-raised from a DataLoader worker, whose message torch
    prefixes with the worker's traceback, the last line without its ``module.Type: `` prefix."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


if __name__ == "__main__":
    sys.exit(main())
