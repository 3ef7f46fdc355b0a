"""Images end to end: every bad file is named with its problem, every good one still works.

``predict`` skips what it cannot read (one stderr line per file) and processes the rest of a
folder; ``train`` and ``eval`` refuse a dataset holding a bad image, listing every bad file in
one error, so that it is fixed in one pass instead of crashing in a worker mid-epoch. Good but
unusual images (CMYK, 16-bit, palette with transparency, RGBA, greyscale, 1×1, every EXIF
orientation, unicode names with spaces) decode to upright RGB everywhere.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from robust_builders import (
    BAD_IMAGES,
    DECODE_TIME,
    EXIF_STORED,
    MODEL_ARGS,
    assert_user_error,
    coco_record,
    picture,
    run_cli,
    run_cli_captured,
    run_cli_subprocess,
    write_bad_images,
    write_coco_dataset,
    write_good_images,
)
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

FOLDER = "ïmages with spaces 名"
MISMATCHED = "upright.png"  # a good image, which one dataset below annotates with another size


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, int]], dict[str, str]]:
    """One folder (unicode name, spaces) of every good and every bad image: (folder, good, bad)."""
    folder = tmp_path_factory.mktemp("images") / FOLDER
    good = write_good_images(folder)
    Image.fromarray(picture()[::-1]).save(folder / "flipped-no-exif.png")  # the control, below
    good["flipped-no-exif.png"] = (72, 48)
    bad = write_bad_images(folder)
    return folder, good, bad


@pytest.fixture(scope="module")
def predicted(images, lite0_weights, tmp_path_factory):
    """``predict`` over the mixed folder once; batch size 1, so equal pixels give equal detections."""
    folder, _, _ = images
    out = tmp_path_factory.mktemp("predict") / "out dir ü"
    result = run_cli_captured("predict", *MODEL_ARGS, "--weights", lite0_weights, folder, "--out", out,
                              "--batch-size", "1", "--workers", "0", "--quiet")
    entries = json.loads((out / "images.json").read_text())
    detections = json.loads((out / "detections.json").read_text())
    by_name = {e["file_name"]: [{k: d[k] for k in ("category_id", "score", "bbox")}
                                for d in detections if d["image_id"] == e["id"]] for e in entries}
    return result, out, entries, by_name


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_predict_skips_a_bad_image_with_one_line_naming_it(images, predicted, name):
    folder, _, bad = images
    result, *_ = predicted
    lines = [line for line in result.err.splitlines() if name in line]
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"efficientdet predict: skipped {folder / name}: "), lines[0]
    assert bad[name] in lines[0]


def test_predict_processes_every_good_image_of_a_mixed_folder(images, predicted):
    _, good, bad = images
    result, out, entries, _ = predicted
    assert result.code == 0 and "Traceback" not in result.err
    assert f"{len(good)} images and 0 video frames" in result.out
    assert f"{len(bad)} files skipped" in result.out
    assert sorted(e["file_name"] for e in entries) == sorted(good)
    for entry in entries:
        assert (entry["width"], entry["height"]) == good[entry["file_name"]], entry
        assert (out / entry["file_name"]).is_file()  # the annotated copy, unicode name included


def test_predict_boxes_of_unusual_images_are_finite_and_in_their_pixels(images, predicted):
    """CMYK, 16-bit, palette, RGBA, grey and 1×1 images get detections like any other. Boxes are
    clipped to the (square, padded) network input, as officially, so the bound is the longer side."""
    _, good, _ = images
    _, _, _, by_name = predicted
    for name, (width, height) in good.items():
        boxes = np.array([d["bbox"] for d in by_name[name]])
        assert len(boxes) and np.isfinite(boxes).all() and (boxes >= 0).all(), name
        assert (boxes[:, :2] + boxes[:, 2:] <= max(width, height) + 0.01).all(), name


@pytest.mark.parametrize("orientation", EXIF_STORED)
def test_predict_on_exif_oriented_copy_gives_the_upright_detections(predicted, orientation):
    """The copy is stored turned; decoded upright, its detections are the upright image's."""
    _, _, _, by_name = predicted
    assert by_name[f"exif-{orientation}.png"] == by_name["upright.png"]


def test_exif_comparison_is_sensitive_to_orientation(predicted):
    """Control for the test above: orientation 4's stored pixels without the tag give other detections."""
    _, _, _, by_name = predicted
    assert by_name["flipped-no-exif.png"] != by_name["upright.png"]


# ---------------------------------------------------------------- datasets (train, eval)


@pytest.fixture(scope="module")
def good_dataset(images, tmp_path_factory) -> Path:
    """A COCO dataset of only the good images (upright sizes), as both train and val splits."""
    folder, good, _ = images
    record = coco_record(good)
    return write_coco_dataset(tmp_path_factory.mktemp("good-data"), folder, record)


def test_train_and_eval_accept_every_good_image_kind(good_dataset, images, tmp_path, capsys):
    """One training step over all of them in one batch (then the epoch's evaluation), then eval."""
    _, good, _ = images
    run = tmp_path / "run ü"
    trained = run_cli(capsys, "train", *MODEL_ARGS, "--data", good_dataset, "--out", run, "--scratch",
                      "--batch-size", str(len(good)), "--epochs", "1", "--workers", "0")
    assert trained.code == 0, trained.err
    assert f"train: {len(good)} images, {len(good)} boxes" in trained.out
    assert "epoch=1" in trained.out and "AP=" in trained.out
    evaluated = run_cli(capsys, "eval", *MODEL_ARGS, "--data", good_dataset, "--workers", "0",
                        "--weights", run / "weights" / "last.safetensors")
    assert evaluated.code == 0, evaluated.err
    assert f"val: {len(good)} images" in evaluated.out and "AP50" in evaluated.out


@pytest.fixture(scope="module")
def refused(images, lite0_weights, tmp_path_factory):
    """``train`` and ``eval`` on a dataset of the good images (one annotated with a wrong size) and
    every bad one."""
    folder, good, bad = images
    sizes = {**good, **{name: (72, 48) for name in bad}, MISMATCHED: (100, 100)}
    data = write_coco_dataset(tmp_path_factory.mktemp("bad-data"), folder, coco_record(sizes))
    runs = {
        "train": run_cli_captured("train", *MODEL_ARGS, "--data", data, "--scratch", "--workers", "0",
                                  "--out", tmp_path_factory.mktemp("run")),
        "eval": run_cli_captured("eval", *MODEL_ARGS, "--data", data, "--weights", lite0_weights, "--workers", "0"),
    }
    problems = {name: problem for name, problem in bad.items() if name not in DECODE_TIME}
    problems[MISMATCHED] = "image is 72x48 but its annotation says 100x100"
    return runs, problems, len(sizes)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_dataset_with_bad_images_is_refused_listing_every_one(refused, images, command):
    """The one multi-line user error: a header with the count, then one line per bad file (its
    path and problem), no good file named, no traceback, exit 2. Files whose header reads
    (truncated pixels) pass this check; the test below covers them."""
    folder, good, _ = images
    runs, problems, total = refused
    result = runs[command]
    assert result.code == 2 and "Traceback" not in result.err
    header, *listed = result.err.splitlines()
    assert header == f"efficientdet {command}: error: {len(problems)} of {total} images are unusable:"
    assert len(listed) == len(problems)
    for name, problem in problems.items():
        line = next(line for line in listed if f"{folder / name}:" in line)
        assert problem in line, line
    assert not any(f"{folder / name}:" in result.err for name in set(good) - {MISMATCHED})



@pytest.mark.parametrize("command, workers", [
    ("train", "0"), ("train", "1"),
    ("eval", "0"), ("eval", "1"),
])
def test_dataset_image_truncated_after_its_header_stops_the_run_with_one_line(
        lite0_weights, tmp_path, capsys, command, workers):
    """Only decoding finds truncated pixels, in a loader worker or in-process: the run stops there
    with the file and the problem, however the images are loaded."""
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(picture(seed=seed)).save(folder / f"good-{seed}.png")
    BAD_IMAGES["truncated.jpg"][0](folder / "truncated.jpg")
    record = coco_record({p.name: (72, 48) for p in folder.iterdir()})
    data = write_coco_dataset(tmp_path / "data", folder, record)
    args = {"train": ["--scratch", "--out", tmp_path / "run", "--batch-size", "4", "--epochs", "1"],
            "eval": ["--weights", lite0_weights, "--batch-size", "4"]}[command]
    result = run_cli(capsys, command, *MODEL_ARGS, "--data", data, "--workers", workers, *args)
    assert_user_error(result, command, f"{folder / 'truncated.jpg'}: cannot decode the image",
                      "image file is truncated")


def test_a_run_stopped_by_an_error_in_a_loader_worker_exits(tmp_path):
    """The loader is abandoned mid-epoch, so multiprocessing ends its worker at exit with SIGTERM:
    a worker ignoring that signal (as they once did) made the process wait for it forever."""
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(picture(seed=seed)).save(folder / f"good-{seed}.png")
    BAD_IMAGES["truncated.jpg"][0](folder / "truncated.jpg")
    data = write_coco_dataset(tmp_path / "data", folder, coco_record({p.name: (72, 48) for p in folder.iterdir()}))
    result = run_cli_subprocess("train", *MODEL_ARGS, "--data", data, "--workers", "1", "--scratch", "--out",
                                tmp_path / "run", "--batch-size", "4", "--epochs", "1", cwd=tmp_path, timeout=120)
    assert result.code == 2 and "cannot decode the image" in result.err
