"""What the export tests share: the CLI run in-process with its output, and the exported files."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from efficientdet.cli import main

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
