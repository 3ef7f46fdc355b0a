"""atomic_write: the file and its folder reach the disk, a failure keeps the old file."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from efficientdet import create_model
from efficientdet.atomic import atomic_write
from efficientdet.weights import save_safetensors


@pytest.fixture
def fsynced(monkeypatch):
    """The kinds ('file' / 'folder') of what os.fsync was called on, in order."""
    calls, real = [], os.fsync

    def record(fd):
        calls.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return calls


def test_file_then_folder_are_fsynced(tmp_path, fsynced):
    atomic_write(tmp_path / "a.bin", lambda tmp: tmp.write_bytes(b"new"))
    assert (tmp_path / "a.bin").read_bytes() == b"new" and fsynced == ["file", "folder"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_save_safetensors_fsyncs_the_folder_too(tmp_path, fsynced):
    save_safetensors(create_model("efficientdet-lite0", num_classes=2, image_size=128), tmp_path / "w.safetensors")
    assert fsynced == ["file", "folder"]


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"old")

    def full_disk(tmp):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=rf"cannot write {path} \(No space left on device\); the previous file is intact"):
        atomic_write(path, full_disk)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]
