"""Faults during training: a hard kill, Ctrl-C / SIGTERM, a full disk, a damaged training state.

Training runs on a generated 16-image dataset (Lite0 at 128², batch 4, 3 epochs of 4 steps). The
runs that are killed or signalled are real ``python -m efficientdet.cli train`` processes; their
``--resume`` (and the reference run, never stopped) run in-process, and must end with the
reference's weights. A full disk is simulated in-process by making the checkpoint writes fail.
"""

import errno
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from robust_builders import CHILD_ENV, assert_user_error, cli_command, message_lines, run_cli, run_cli_captured

from efficientdet.shapes import make_shapes_dataset
from efficientdet.train.checkpoint import atomic_torch_save, load_training_state

EPOCHS = 3
STEPS = EPOCHS * 16 // 4


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=4, image_size=128)


def train_args(data: Path, out: Path, *extra: str) -> list:
    return ["train", "--model", "efficientdet-lite0", "--data", data, "--out", out, "--image-size", "128",
            "--batch-size", "4", "--workers", "0", "--epochs", str(EPOCHS), *extra]


@pytest.fixture(scope="module")
def uninterrupted(shapes, tmp_path_factory) -> dict:
    """The training state of the same run, never stopped (in-process: same code, same seed)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli_captured(*train_args(shapes, out))
    assert result.code == 0, result.err
    return load_training_state(out / "train_state.pt")


def assert_same_model(state: dict, reference: dict) -> None:
    assert state["step"] == reference["step"] == STEPS
    for key, value in reference["model"].items():
        assert torch.allclose(state["model"][key].float(), value.float(), rtol=1e-5, atol=1e-6), key


def start_training(data: Path, out: Path, logs: Path) -> subprocess.Popen:
    """A training process whose stdout / stderr go to files a test can read while it runs."""
    with open(logs / "stdout", "wb") as stdout, open(logs / "stderr", "wb") as stderr:
        return subprocess.Popen(cli_command(*train_args(data, out)), stdout=stdout, stderr=stderr, env=CHILD_ENV)


def wait_until(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll ``condition`` every 5 ms; the run must still be going when it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended (exit {proc.returncode}) before the fault could be injected"
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.005)


def resume(data: Path, out: Path) -> dict:
    """``train --resume`` to the end (in-process: only the interrupted run needs its own process)."""
    result = run_cli_captured(*train_args(data, out, "--resume"))
    assert result.code == 0, result.err
    assert f"resumed from {out / 'train_state.pt'}" in result.out
    return load_training_state(out / "train_state.pt")


def test_sigkill_after_the_first_epoch_then_resume_ends_with_the_uninterrupted_weights(shapes, uninterrupted,
                                                                                     tmp_path):
    """A hard kill (no handler runs) as soon as the first epoch's checkpoint exists: the checkpoint
    on disk is whole, and resuming from it gives the uninterrupted run's weights."""
    out = tmp_path / "run"
    proc = start_training(shapes, out, tmp_path)
    wait_until((out / "train_state.pt").exists, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed = load_training_state(out / "train_state.pt")
    assert 1 <= killed["epoch"] < EPOCHS and killed["batch_in_epoch"] == 0
    assert_same_model(resume(shapes, out), uninterrupted)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_saves_a_checkpoint_exits_130_and_resumes_to_the_same_weights(shapes, uninterrupted,
                                                                                     tmp_path, signum):
    """Ctrl-C or a scheduler's SIGTERM once the first step is done: the step in flight finishes, a
    checkpoint is written at it, one line says how to resume, exit 130; resuming completes."""
    out = tmp_path / "run"
    proc = start_training(shapes, out, tmp_path)
    wait_until(lambda: b"loss=" in (tmp_path / "stderr").read_bytes(), proc)  # tqdm shows a step's loss
    proc.send_signal(signum)
    assert proc.wait(timeout=300) == 130
    err = (tmp_path / "stderr").read_text()
    assert "Traceback" not in err
    lines = message_lines(err)
    assert len(lines) == 1 and re.fullmatch(
        rf"efficientdet train: stopped by signal {int(signum)} (at step \d+|after epoch \d+); resume with "
        rf"--resume( \(state: {re.escape(str(out / 'train_state.pt'))}\))?", lines[0]), err
    assert load_training_state(out / "train_state.pt")["step"] >= 1
    assert_same_model(resume(shapes, out), uninterrupted)


def checkpoint_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in [out / "train_state.pt", *sorted((out / "weights").iterdir())]}


@pytest.mark.parametrize("failing", ["torch.save", "os.fsync"])
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint_intact(shapes, tmp_path, monkeypatch,
                                                                           capsys, failing):
    """ENOSPC from the write itself (torch.save stops half-way) or from fsync (how ext4 reports a
    full disk for delayed allocation), in the second epoch's checkpoint: the first epoch's files are
    left byte for byte, no temporary file stays behind, the error is one line, exit 2."""
    out = tmp_path / "run"
    before: dict[str, bytes] = {}
    real = {"torch.save": torch.save, "os.fsync": os.fsync}[failing]

    def disk_full(*args, **kwargs):
        if not (out / "weights" / "last.safetensors").exists():  # the first checkpoint goes through
            return real(*args, **kwargs)
        if not before:  # the files as they were, without the temporary file being written now
            before.update({k: v for k, v in checkpoint_files(out).items() if ".tmp-" not in k})
        if failing == "torch.save":
            args[1].write(b"\0" * 4096)  # the part that fitted
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch if failing == "torch.save" else os, failing.split(".")[1], disk_full)
    result = run_cli(capsys, *train_args(shapes, out, "--scratch"))
    assert_user_error(result, "train", "No space left on device")
    assert before and checkpoint_files(out) == before
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    assert load_training_state(out / "train_state.pt")["epoch"] == 1


def test_disk_full_error_names_the_checkpoint_file(tmp_path, monkeypatch):
    """The one-line error should say which file could not be written, as for every other bad file."""
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="train_state.pt"):
        atomic_torch_save({"step": 1}, tmp_path / "train_state.pt")


def test_resume_from_a_truncated_training_state_is_a_one_line_error(shapes, tmp_path, capsys):
    """A state file cut short (copied off a full disk, say) is named, not unpickled into a crash."""
    out = tmp_path / "run"
    out.mkdir()
    atomic_torch_save({"model": {"w": torch.zeros(1000)}, "step": 3}, out / "train_state.pt")
    data = (out / "train_state.pt").read_bytes()
    (out / "train_state.pt").write_bytes(data[: len(data) // 2])
    result = run_cli(capsys, *train_args(shapes, out, "--resume", "--scratch"))
    assert_user_error(result, "train", f"{out / 'train_state.pt'}: not a readable training state")


def stop_the_group(argv: list, stop: int, tmp_path: Path) -> str:
    """Run ``efficientdet ARGV`` in its own process group, send ``stop`` to the whole group once it
    trains, and check the exit: 130, no traceback, one line. Returns that line."""
    with open(tmp_path / "stdout", "wb") as stdout, open(tmp_path / "stderr", "wb") as stderr:
        proc = subprocess.Popen(cli_command(*argv), stdout=stdout, stderr=stderr, env=CHILD_ENV,
                                start_new_session=True)
    try:
        wait_until(lambda: b"loss=" in (tmp_path / "stderr").read_bytes(), proc)
        os.killpg(proc.pid, stop)
        assert proc.wait(timeout=300) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = (tmp_path / "stderr").read_text()
    assert "Traceback" not in err, err
    lines = message_lines(err)
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command, stop", [("demo", signal.SIGTERM), ("train", signal.SIGINT)])
def test_stop_signal_to_the_process_group_stops_workers_and_main_cleanly(command, stop, shapes, tmp_path):
    """A stop sent to the whole process group (Ctrl-C sends SIGINT; GNU timeout and SLURM scancel
    SIGTERM: see the next test for train) reaches the DataLoader workers too: SIGINT they leave to
    the main process, SIGTERM ends them; either way the main process checkpoints the step it is
    at, says how to resume in one line and exits 130, and the run then resumes to its end."""
    out = tmp_path / "run"
    args = (train_args(shapes, out, "--workers", "2") if command == "train" else
            ["demo", "--out", out, "--epochs", str(EPOCHS), "--train-images", "16", "--val-images", "4",
             "--image-size", "128", "--batch-size", "4", "--workers", "2"])
    assert stop_the_group(args, stop, tmp_path).startswith(f"efficientdet {command}: stopped by signal {int(stop)}")
    assert (out / "train_state.pt").is_file() and (out / "weights" / "last.safetensors").is_file()
    data = shapes if command == "train" else out / "data" / "data.yaml"
    result = run_cli_captured(*train_args(data, out, "--resume"))
    assert result.code == 0, result.err
    # The demo's 16 images and length: the same steps (a resume keeps the run's own length).
    assert load_training_state(out / "train_state.pt")["step"] == STEPS


def test_workers_killed_by_the_stop_signal_leave_the_last_whole_step_checkpointed(shapes, uninterrupted, tmp_path):
    """SIGTERM to the group kills the workers; their loss is found where the next batch is fetched:
    the checkpoint is of the last whole step, and resuming from it ends with the uninterrupted
    run's weights."""
    out = tmp_path / "run"
    line = stop_the_group(train_args(shapes, out, "--workers", "2"), signal.SIGTERM, tmp_path)
    assert line.startswith("efficientdet train: stopped by signal 15")
    assert_same_model(resume(shapes, out), uninterrupted)

