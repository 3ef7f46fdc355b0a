"""Files that a crash, a power cut or a full disk cannot leave half-written.

The writer fills a temporary file in the target's folder (a rename is atomic only within one file
system), which is fsynced, renamed over the target, and the folder fsynced so that the rename
itself is on disk. Until then the previous file stays intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary path)``, then put that file at ``path`` as described above.

    An OSError on the way names ``path`` and says the previous file is intact; the temporary file
    never stays behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path} ({e.strerror or e}); the previous file is intact") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_files(paths: Sequence[str | os.PathLike], write: Callable[[Path], None]) -> list[Path]:
    """Files that only make sense together (an OpenVINO IR's ``.xml`` and ``.bin``): ``write(folder)``
    makes them, under the names of ``paths``, in a temporary folder beside them; each is fsynced,
    then renamed into place in the order of ``paths`` (put last the file readers open first), and
    the folder fsynced. An OSError names that last path; the temporary folder never stays behind.
    """
    paths = [Path(p) for p in paths]
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{paths[0].name}.tmp-", dir=paths[0].parent))
        write(folder)
        for path in paths:
            with open(folder / path.name, "rb+") as f:
                os.fsync(f.fileno())
        for path in paths:
            os.replace(folder / path.name, path)
        _fsync_folder(paths[0].parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {paths[-1]} ({e.strerror or e})") from None
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return paths


def atomic_write_folder(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """A folder that is one file to its readers (a Core ML ``.mlpackage``): ``write(temporary
    path)`` fills it beside ``path``, then it replaces ``path``, whose previous folder is removed
    only once the new one is in place. The temporary folder never stays behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(20, f"cannot write {path}: a file of that name is in the way")
    # The suffix stays last: writers check it (coremltools wants .mlpackage).
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    old = path.with_name(f".{path.stem}.old-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as e:
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise OSError(e.errno, f"cannot write {path} ({e.strerror or e}); the previous folder is intact") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
