"""``efficientdet data check DATA.yaml``: every problem of a dataset in one pass (each kind with its
count and first 20 files and records), the statistics to read before training (images and boxes
per split and class, boxes per image, box sizes at the network input, crowd / difficult boxes), and
how the model's anchors fit the training boxes, with what a larger --image-size, another
anchors.anchor_scale or wider anchors.aspect_ratios would give when the fit is low.

Exit status: 0 without errors, 1 with errors (with warnings too under --strict), 2 when the
dataset YAML itself cannot be read or an option is wrong.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import add_image_size, add_model, resolve_image_size, subcommand


def run_check(args: argparse.Namespace) -> int:
    from ..config import get_config, override
    from ..data import load_dataset_yaml
    from ..data.check import check_dataset
    from ..data.formats import DEFAULT_MAX_BOXES
    from ..data.sample import ERROR, WARNING
    from ..loss import LossConfig

    config = get_config(args.model)  # options first: a bad one fails before the dataset is read
    image_size = resolve_image_size(args, args.model)
    if image_size:
        config = override(config, image_size=image_size)
    check = check_dataset(load_dataset_yaml(args.data), config, LossConfig().match_threshold, DEFAULT_MAX_BOXES)
    print("\n".join(check.lines()))
    if args.json:
        Path(args.json).write_text(json.dumps(check.to_dict(), indent=2))
    failing = check.problems.total(ERROR) + (check.problems.total(WARNING) if args.strict else 0)
    return 1 if failing else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from . import DEBUG_HELP

    p = subcommand(sub, "data", "check a dataset: its problems, statistics and anchor fit", __doc__)
    actions = p.add_subparsers(dest="action", required=True)
    check = subcommand(actions, "check", "every problem of a dataset in one pass, its statistics, the anchor fit",
                       __doc__)
    check.add_argument("data", help="dataset YAML (format: coco | voc | yolo)")
    add_model(check, default="efficientdet-lite0")
    add_image_size(check)
    check.add_argument("--strict", action="store_true", help="warnings fail the check too (exit 1)")
    check.add_argument("--json", help="also write the report here")
    check.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    check.set_defaults(func=run_check)
