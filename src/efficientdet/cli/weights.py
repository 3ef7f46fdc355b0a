"""``efficientdet weights list | download NAME... | path NAME | verify [NAME...] | remove NAME...``.

The published weights (google/automl's official checkpoints, effdet's ports) by name, e.g.
``efficientdet-d0`` (= ``efficientdet-d0:coco``), ``efficientdet-d0:coco:effdet``,
``efficientdet-d3:advprop``, ``efficientdet-d4:coco640``. ``download`` fetches ahead of time (on a
connected machine; copy the cache folder to an offline one), ``path`` prints where a cached file
lives, ``verify`` re-checks cached files, ``remove`` prunes. The cache folder is
``$EFFICIENTDET_HOME/weights`` (default ``~/.cache/efficientdet/weights``);
``EFFICIENTDET_WEIGHTS_MIRROR`` (an http(s) base or a folder) replaces the original hosts and
``EFFICIENTDET_OFFLINE=1`` forbids the network.
"""

from __future__ import annotations

import argparse
import sys

from .options import subcommand


def run_list(args: argparse.Namespace) -> int:
    from ..weights.hub import cache_dir, cached_path
    from ..weights.zoo import ENTRIES, OFFICIAL, PARAMS

    rows = [("name", "source", "COCO AP", "params", "cached")]
    for e in ENTRIES:
        path = cached_path(e)
        cached = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "-"
        source = "official" if e.kind == OFFICIAL else "effdet port"
        rows.append((e.name, source, f"{e.coco_ap:.1f}", f"{PARAMS[e.variant] / 1e6:.1f}M", cached))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i in (0, 1) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print(f"cache: {cache_dir()}; COCO AP: val2017 as each source states it (`efficientdet.weights.zoo`)")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..weights.hub import fetch
    from ..weights.zoo import find

    entries = [find(name) for name in args.names]  # every name checked before any download
    for entry in entries:
        print(f"{entry.name}: {fetch(entry, progress=not args.quiet)}")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from ..weights.hub import cached_path
    from ..weights.zoo import find

    path = cached_path(find(args.name))
    if not path.is_file():
        raise ValueError(f"{args.name}: not in the cache ({path}); `efficientdet weights download {args.name}` fetches it")
    print(path)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..weights.errors import WeightsError
    from ..weights.hub import cached_entries, cached_path, verify
    from ..weights.zoo import find

    entries = [find(name) for name in args.names] if args.names else [e for e, _ in cached_entries()]
    bad = 0
    for entry in entries:
        if not cached_path(entry).is_file():
            print(f"{entry.name}: not cached")
            continue
        try:
            print(f"ok   {verify(entry)}")
        except WeightsError as e:
            bad += 1
            print(f"BAD  {e}", file=sys.stderr)
    print(f"{len(entries) - bad} of {len(entries)} checked entries are sound" if entries else "the cache is empty")
    return 1 if bad else 0


def run_remove(args: argparse.Namespace) -> int:
    from ..weights.hub import cached_path, remove
    from ..weights.zoo import find

    for entry in [find(name) for name in args.names]:
        print(f"{entry.name}: {'removed ' if remove(entry) else 'was not cached at '}{cached_path(entry)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "weights", "list, download, locate, verify or remove published weights", __doc__)
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the table of published weights and what is cached").set_defaults(func=run_list)
    download = actions.add_parser("download", help="fetch, verify and convert into the cache")
    download.add_argument("names", nargs="+", metavar="NAME")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(func=run_download)
    path = actions.add_parser("path", help="print the cached file of NAME")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(func=run_path)
    check = actions.add_parser("verify", help="re-check cached files (default: all)")
    check.add_argument("names", nargs="*", metavar="NAME")
    check.set_defaults(func=run_verify)
    prune = actions.add_parser("remove", help="delete cached files")
    prune.add_argument("names", nargs="+", metavar="NAME")
    prune.set_defaults(func=run_remove)
