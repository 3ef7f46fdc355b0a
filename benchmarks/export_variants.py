"""Every variant in every export format at a small input: each cell exports and checks, or says why not.

For each ``--models`` variant (default: the whole table, D0–D7x and Lite0–4) at ``--image-size``
(default 128; 256 for D7x, whose P8 needs more; conversion time hardly depends on it), with random
weights whose BN statistics are measured on the photos it is checked on (every layer passes a
unit-scale signal there; the official initialisers' signal all but vanishes by the heads, where
any two computations agree), each ``--formats`` export runs through
:func:`efficientdet.export.export_model` (BN folded) and its file is checked:

* ONNX, OpenVINO, TorchScript, torch.export, TFLite: the preprocessed photos (scikit-image's
  astronaut, chelsea, coffee, rocket) through the file's runtime; the cell gives the largest absolute difference of the
  raw outputs from PyTorch's;
* Core ML: its spec — image input at the model's size, output names and shapes as PyTorch's,
  our metadata — since running it needs macOS;
* TensorRT: built and compared the same way on an NVIDIA GPU; without one, the one-line refusal.

A refusal or a failure fills its cell with the first clause of the error. The first column is
what folding BatchNorm changes in PyTorch itself (unfused against fused model, same photos): the
scale of float32 rounding on these weights, against which the formats' differences read. Prints a markdown table
(and the seconds each export took) with the machine line.

    python benchmarks/export_variants.py [--models efficientdet-d0 ...] [--formats onnx tflite ...]
        [--image-size 128] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from skimage import data as photos

from efficientdet import create_model
from efficientdet.benchmark import machine_line, spread_random_weights
from efficientdet.config import get_config, list_models
from efficientdet.export import FORMATS, SUFFIXES, export_model
from efficientdet.export.onnx import raw_output_names
from efficientdet.fuse import fuse_model
from efficientdet.inference.backends import litert_backend, onnx_backend, openvino_backend, tensorrt_backend
from efficientdet.preprocess import preprocess

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def run_file(fmt: str, path: Path, batch: torch.Tensor) -> list[torch.Tensor]:
    """The raw outputs of the exported file at ``path`` on ``batch``, in the order PyTorch gives them."""
    if fmt in ("torchscript", "torch-export"):
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
        with torch.no_grad():
            return list(module(batch))
    backend = {"onnx": onnx_backend, "openvino": openvino_backend, "tflite": litert_backend,
               "tensorrt": tensorrt_backend}[fmt](path)
    cls_out, box_out = backend.network(batch.to(backend.device))
    return [t.cpu() for t in [*cls_out, *box_out]]


def check(fmt: str, path: Path, model, batch: torch.Tensor, want: list[torch.Tensor]) -> str:
    """The cell's text: the largest raw-output difference, or the Core ML spec's verdict."""
    if fmt == "coreml":
        from efficientdet.export.coreml import IMAGE_INPUT, coreml_summary
        from efficientdet.export.metadata import parse_metadata

        summary = coreml_summary(path)
        h, w = model.config.image_size
        problems = []
        if summary["inputs"] != {IMAGE_INPUT: ("imageType", [1, 3, h, w])}:
            problems.append(f"input {summary['inputs']}")
        if summary["outputs"] != {n: [1, *t.shape[1:]] for n, t in zip(raw_output_names(model.config), want)}:
            problems.append("outputs differ")
        if parse_metadata(path, summary["metadata"]).config != model.config:
            problems.append("metadata config differs")
        return "spec ok" if not problems else "spec: " + "; ".join(problems)
    got = run_file(fmt, path, batch)
    return f"{max(float((g.float() - r).abs().max()) for g, r in zip(got, want)):.0e}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--json", help="also write every cell to this file")
    args = parser.parse_args()
    images = [torch.from_numpy(getattr(photos, name)()).permute(2, 0, 1) for name in PHOTOS]
    cells = []
    print(f"| model | BN folding | {' | '.join(args.formats)} |")
    print(f"|---|---|{'---|' * len(args.formats)}")
    for name in args.models:
        torch.manual_seed(0)
        size = max(args.image_size, 2 ** get_config(name).max_level)
        model = create_model(name, image_size=size).eval()
        batch, _ = preprocess(images, model.config.image_size, model.config.preprocess)
        spread_random_weights(model, batch=batch)
        with torch.no_grad():
            cls_out, box_out = fuse_model(model).eval()(batch)
            unfused = [t for level in model(batch) for t in level]
        want = [*cls_out, *box_out]
        folding = f"{max(float((u - w).abs().max()) for u, w in zip(unfused, want)):.0e}"
        row = []
        for fmt in args.formats:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"model{SUFFIXES[fmt]}"
                start = time.perf_counter()
                try:
                    export_model(model, path, fmt)
                    seconds = time.perf_counter() - start
                    text = f"{check(fmt, path, model, batch, want)} ({seconds:.0f} s)"
                except Exception as e:  # a cell that fails says how, and the table goes on
                    lines = str(e).strip().splitlines()
                    text = f"{type(e).__name__}: {lines[0].split(';')[0] if lines else ''}"
            row.append(text)
            cells.append({"model": name, "format": fmt, "result": text})
        print(f"| {name} ({size}) | {folding} | {' | '.join(row)} |", flush=True)
    print(f"\n{machine_line()}; random weights with BN statistics measured on the photos checked "
          f"({', '.join(PHOTOS)}); cells: max |exported - PyTorch| over the raw outputs (export seconds)")
    if args.json:
        Path(args.json).write_text(json.dumps(cells, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
