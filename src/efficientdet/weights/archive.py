"""Unpacking a downloaded official archive without trusting it.

``tarfile``'s ``data`` filter already refuses absolute names, ``..`` and links out of the target;
on top of it, every member must be a plain file or folder under the one expected top folder (a
checkpoint has no links or devices, so any is refused rather than judged), and the unpacked total
is bounded, so that a small compressed archive cannot fill the disk.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from .errors import WeightsError


def unpack(archive: Path, into: Path, top: str, max_bytes: int, what: str) -> Path:
    """Unpack ``archive`` (tar, any compression) into ``into``; returns ``into / top``.

    ``what`` (the URL) names the archive in errors.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, top, max_bytes, what)
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{what}: not a complete tar archive ({_describe(archive, e)})") from None
    folder = into / top
    if not folder.is_dir():
        raise WeightsError(f"{what}: the archive has no {top}/ folder")
    return folder


def _checked_members(tar: tarfile.TarFile, top: str, max_bytes: int, what: str) -> list[tarfile.TarInfo]:
    """The members, each checked as it is read (a refused archive is not read to its end)."""
    members, total = [], 0
    for m in tar:
        path = PurePosixPath(m.name)
        if path.is_absolute() or ".." in path.parts:
            raise WeightsError(f"{what}: archive member {m.name!r} points outside its folder; refused")
        if not (m.isfile() or m.isdir()):
            kind = "link" if m.issym() or m.islnk() else "device or special file"
            raise WeightsError(f"{what}: archive member {m.name!r} is a {kind}; a checkpoint has only files")
        if path.parts[:1] != (top,):
            raise WeightsError(f"{what}: archive member {m.name!r} is outside the expected {top}/ folder")
        total += m.size
        if total > max_bytes:
            raise WeightsError(f"{what}: unpacks to more than {max_bytes:,} bytes, larger than this checkpoint "
                               f"can be; refused")
        members.append(m)
    return members


def _describe(archive: Path, error: Exception) -> str:
    """The error, and what the file is instead when it is a web page (a portal's or a CDN's)."""
    with open(archive, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "the server sent a web page instead of the file"
    return str(error) or type(error).__name__
