"""``eval``, ``predict`` and ``train`` under ``torchrun`` (gloo on the CPU): the files and numbers of one process."""

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from model_builders import lively
from PIL import Image
from skimage import data as skimage_data

import efficientdet
from efficientdet import create_model
from efficientdet.cli import main
from efficientdet.shapes import make_shapes_dataset
from efficientdet.weights import save_safetensors

# Each launch is bounded: a rank that waits for a lost peer fails after EFFICIENTDET_DIST_TIMEOUT.
LAUNCH_TIMEOUT_S = 240


def torchrun_env() -> dict[str, str]:
    """This checkout's sources first (as in the test process), one thread a rank, short collective timeouts."""
    src = str(Path(efficientdet.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "EFFICIENTDET_DIST_TIMEOUT": "120"}


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "efficientdet", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, check=False,
                          env=torchrun_env())


@contextmanager
def one_thread():
    """The threads of a torchrun rank, so that one process computes as each rank does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """5 val images: uneven shards (3 and 2)."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=5, image_size=128, seed=3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = lively(create_model("efficientdet-lite0", num_classes=4, image_size=128))
    with torch.no_grad():  # spread the scores: at init every class sits at the prior, all near-ties
        for p in model.class_net.parameters():
            p.add_(torch.randn_like(p), alpha=0.5)
    return save_safetensors(model, tmp_path_factory.mktemp("w") / "lite0.safetensors")


def with_own_detections(data_yaml: Path, predictions: Path, out: Path, per_image: int = 2) -> Path:
    """The dataset with each val image's best ``per_image`` predictions added to its boxes, so that
    a random model scores an AP that is neither 0 nor 1."""
    root = data_yaml.parent
    val = json.loads((root / "val.json").read_text())
    results = sorted(json.loads(predictions.read_text()), key=lambda r: -r["score"])
    for image in val["images"]:
        for r in [r for r in results if r["image_id"] == image["id"]][:per_image]:
            val["annotations"].append({"id": len(val["annotations"]) + 1000, "image_id": image["id"],
                                       "category_id": r["category_id"], "bbox": r["bbox"],
                                       "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0})
    out.mkdir()
    (out / "val.json").write_text(json.dumps(val))
    images = root / "images"
    (out / "data.yaml").write_text(f"format: coco\ntrain: {{images: {images}, annotations: {root / 'train.json'}}}\n"
                                   f"val: {{images: {images}, annotations: {out / 'val.json'}}}\n")
    return out / "data.yaml"


def test_eval_under_torchrun_gives_the_metrics_of_one_process(shapes, weights, tmp_path, capsys):
    args = ["eval", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "128",
            "--workers", "0", "--batch-size", "2", "--data"]
    with one_thread():
        assert main([*args, str(shapes), "--save-predictions", str(tmp_path / "first.json")]) == 0
        data = with_own_detections(shapes, tmp_path / "first.json", tmp_path / "data")
        assert main([*args, str(data), "--json", str(tmp_path / "one.json"),
                     "--save-predictions", str(tmp_path / "one-p.json")]) == 0
    proc = torchrun(*args, str(data), "--json", str(tmp_path / "two.json"),
                    "--save-predictions", str(tmp_path / "two-p.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("val: 5 images") == 1 and proc.stdout.count("AP50") == 1, proc.stdout  # rank 0 alone
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one.keys() == two.keys() and all(abs(one[k] - two[k]) <= 1e-9 for k in one), (one, two)
    assert 0 < one["AP"] < 1
    results_one, results_two = (json.loads((tmp_path / f"{n}-p.json").read_text()) for n in ("one", "two"))
    assert results_two == results_one  # in the split's order


def test_predict_under_torchrun_writes_the_files_of_one_process_and_names_a_bad_file_once(weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(skimage_data, name)()).resize((160, 120)).save(folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes((folder / "coffee.jpg").read_bytes()[:300])  # source 1: rank 1's
    args = ["predict", "--model", "efficientdet-lite0", "--weights", str(weights), "--image-size", "128",
            "--workers", "0", "--batch-size", "2", "--quiet", str(folder), "--out"]
    with one_thread():
        assert main([*args, str(tmp_path / "one")]) == 0
    proc = torchrun(*args, str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("skipped") == 1 and f"skipped {folder / 'broken.jpg'}" in proc.stderr, proc.stderr
    assert proc.stdout.count("4 images and 0 video frames") == 1 and "1 files skipped" in proc.stdout, proc.stdout
    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((two / "images.json").read_text()) == json.loads((one / "images.json").read_text())
    found_one, found_two = (json.loads((d / "detections.json").read_text()) for d in (one, two))
    assert len(found_one) > 0 and len(found_two) == len(found_one)
    for a, b in zip(found_one, found_two):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])) <= 1e-5 and abs(a["score"] - b["score"]) <= 1e-5
    assert sorted(p.name for p in two.glob("*.jpg")) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_one_epoch_and_only_the_first_writes(shapes, tmp_path):
    """Two launches on one machine, as on two: node 1 is given its own --out, where nothing may appear."""
    port = free_port()
    procs = []
    for node in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                   "--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "efficientdet", "train",
                   "--data", str(shapes), "--out", str(tmp_path / f"node{node}"), "--image-size", "128",
                   "--batch-size", "2", "--workers", "0", "--epochs", "1", "--scratch", "--set", "eval_every=1"]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=torchrun_env()))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=LAUNCH_TIMEOUT_S))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert outputs[0][0].count("done: 1 epochs") == 1 and "done:" not in outputs[1][0]
    records = [json.loads(line) for line in (tmp_path / "node0" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["step"] == 2 and "AP" in records[0]  # 8 images / (2 ranks × 2)
    assert sorted(p.name for p in (tmp_path / "node0" / "weights").iterdir()) == ["best.safetensors",
                                                                                   "last.safetensors"]
    assert not (tmp_path / "node1").exists()
