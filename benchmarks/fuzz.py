"""Long fuzzing run of the robustness targets (``tests/robustness/robust_fuzz_targets.py``).

    python benchmarks/fuzz.py [--iterations 2000] [--targets nms,voc_parser] [--seed 0]

Each target gets ``--iterations`` random examples from its hypothesis strategy (generation only,
no example database). An input refused with the target's documented error type (which must name
the file) counts as ``refused``, one that passes every property as ``accepted``; anything else —
another exception or a broken property — is a crash, counted by type and message and shown with
its first example. Exit status 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "robustness"))
from robust_fuzz_targets import TARGETS, Target, prepare  # noqa: E402


def fuzz(target: Target, iterations: int, workdir: Path, random_seed: int) -> dict:
    """Run one target; returns the outcome counts, the crashes by kind and an example of each."""
    outcomes: Counter = Counter()
    crashes: Counter = Counter()
    examples: dict[str, str] = {}

    @seed(random_seed)
    @settings(max_examples=iterations, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def run(example):
        try:
            outcomes[target.check(example, workdir)] += 1
        except Exception as error:  # noqa: BLE001 - every escape is a finding to count
            kind = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
            crashes[kind] += 1
            examples.setdefault(kind, repr(example)[:400])

    start = time.perf_counter()
    run()
    return {"outcomes": outcomes, "crashes": crashes, "examples": examples, "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000, help="examples per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, default all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine
    names = args.targets.split(",")
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    print(f"{'target':26} {'iterations':>10} {'refused':>8} {'accepted':>8} {'crashes':>7} {'seconds':>8}  allowed")
    total_crashes = 0
    with tempfile.TemporaryDirectory(prefix="efficientdet-fuzz-") as tmp:
        for name in names:
            target = TARGETS[name]
            result = fuzz(target, args.iterations, prepare(Path(tmp) / name), args.seed)
            outcomes, crashes = result["outcomes"], result["crashes"]
            count = sum(crashes.values())
            total_crashes += count
            allowed = ", ".join(e.__name__ for e in target.allowed) or "none"
            print(f"{name:26} {sum(outcomes.values()) + count:>10} {outcomes['refused']:>8} "
                  f"{outcomes['accepted']:>8} {count:>7} {result['seconds']:>8.1f}  {allowed}", flush=True)
            for kind, n in crashes.most_common():
                print(f"    {n} × {kind}\n      e.g. {result['examples'][kind]}")
    print(f"total crashes: {total_crashes}")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
