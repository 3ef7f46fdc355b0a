"""What the export tests share: the CLI run in-process with its output, and the exported files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from efficientdet import create_model
from efficientdet.cli import main
from efficientdet.data import load_dataset_yaml, load_split, read_image
from efficientdet.preprocess import preprocess

MODEL_ARGS = ["--model", "efficientdet-lite0", "--image-size", "128"]


@dataclass
class Exported:
    data: Path  # the dataset's data.yaml (8 train, 4 val images at 128 px)
    weights: Path  # .safetensors
    calibration: Path  # a folder: the dataset's images and one corrupt file
    files: dict[tuple[str, str], Path]  # (format, precision) → file
    stderr: dict[tuple[str, str], str]  # what each export printed on stderr


def cli(*argv: object) -> tuple[int, str, str]:
    """``efficientdet ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def cli_processes(runs: dict[str, list[object]]) -> dict[str, tuple[int, str, str]]:
    """``efficientdet ARGV`` of each run in a process of its own, two at a time: (exit code,
    stdout, stderr) by name. The shared exports are minutes of mostly single-threaded conversion,
    which the two cores share; a process's stdout is what a user's pipe would get."""
    env = {**os.environ, "EFFICIENTDET_OFFLINE": "1"}

    def run(argv: list[object]) -> tuple[int, str, str]:
        proc = subprocess.run([sys.executable, "-m", "efficientdet", *map(str, argv)], capture_output=True,
                              text=True, env=env, timeout=900)
        return proc.returncode, proc.stdout, proc.stderr

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(runs, pool.map(run, runs.values())))


def evaluate(exported, tmp_path, name, *weights):
    metrics, preds = tmp_path / f"{name}.json", tmp_path / f"{name}-preds.json"
    code, out, err = cli("eval", "--data", exported.data, *weights, "--workers", "0", "--threads", "1",
                         "--json", metrics, "--save-predictions", preds)
    assert code == 0, err
    return json.loads(metrics.read_text()), json.loads(preds.read_text())


def assert_same_detections(a: list[dict], b: list[dict], score_tol: float = 1e-4, box_tol: float = 0.05) -> None:
    """The same results per image and category, as sets: equal scores may come in either order."""
    assert len(a) == len(b)
    key = lambda r: (r["image_id"], r["category_id"], -r["score"])  # noqa: E731
    for r, s in zip(sorted(a, key=key), sorted(b, key=key)):
        assert (r["image_id"], r["category_id"]) == (s["image_id"], s["category_id"])
        assert abs(r["score"] - s["score"]) <= score_tol
        assert max(abs(u - v) for u, v in zip(r["bbox"], s["bbox"])) <= box_tol


def val_batch(exported) -> torch.Tensor:
    """The shared dataset's validation images, preprocessed for the shared 128-px Lite0."""
    config = create_model("efficientdet-lite0", num_classes=4, image_size=128).config
    images = [read_image(s.image_path) for s in load_split(load_dataset_yaml(exported.data), "val").samples]
    return preprocess(images, config.image_size, config.preprocess)[0]
