"""atomic_write: the file and its folder reach the disk, a failure keeps the old file."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from efficientdet import create_model
from efficientdet.atomic import atomic_write, atomic_write_folder
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


def test_a_folder_replaces_the_previous_one_whole_or_not_at_all(tmp_path):
    """A Core ML package is a folder: it appears complete; a failed write keeps the previous one."""
    path = tmp_path / "m.mlpackage"

    def write(content):
        def fill(tmp):
            assert tmp.suffix == ".mlpackage"  # writers check the suffix
            (tmp / "Data").mkdir(parents=True)
            (tmp / "Data" / "weights").write_text(content)
            if content == "fail":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fill

    atomic_write_folder(path, write("one"))
    atomic_write_folder(path, write("two"))
    assert (path / "Data" / "weights").read_text() == "two"
    with pytest.raises(OSError, match="the previous folder is intact"):
        atomic_write_folder(path, write("fail"))
    assert (path / "Data" / "weights").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]
    (tmp_path / "f.mlpackage").write_text("a file")
    with pytest.raises(OSError, match="a file of that name is in the way"):
        atomic_write_folder(tmp_path / "f.mlpackage", write("one"))
