"""From what a user holds (a folder, a prefix, an ``.index`` file) to the bundle prefix.

A folder's ``checkpoint`` state file is a text protobuf, ``model_checkpoint_path: "model"``,
relative to the folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CheckpointError

_STATE_LINE = re.compile(rb'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\\n]|\\.)*)"\s*$', re.MULTILINE)
_C_ESCAPE = re.compile(rb"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)")
_SIMPLE_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t"}


def _c_unescape(raw: bytes) -> bytes:
    """Undo the C escaping of text-format protobuf strings (TF escapes non-ASCII as octal)."""

    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code[0] in b"01234567":
            return bytes([int(code, 8) & 0xFF])
        if code[0] == ord("x") and len(code) > 1:
            return bytes([int(code[1:], 16)])
        return _SIMPLE_ESCAPES.get(code, code)

    return _C_ESCAPE.sub(one, raw)


def index_path(prefix: Path) -> Path:
    return Path(f"{prefix}.index")


def _prefix_of_index(index: Path) -> Path:
    return index.parent / index.name[: -len(".index")]


def _prefix_from_state_file(state: Path) -> Path:
    """The prefix named by a ``checkpoint`` state file (relative to its directory)."""
    try:
        text = state.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{state}: cannot read checkpoint state file ({err.strerror})") from None
    match = _STATE_LINE.search(text)
    if match is None:
        raise CheckpointError(f'{state}: no model_checkpoint_path: "..." line in the checkpoint state file')
    try:
        name = _c_unescape(match.group(1)).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{state}: model_checkpoint_path is not valid UTF-8") from None
    prefix = state.parent / name
    if not index_path(prefix).is_file():
        raise CheckpointError(f"{state}: names checkpoint {name!r}, but {index_path(prefix)} does not exist")
    return prefix


def resolve_checkpoint_prefix(path: str | os.PathLike) -> Path:
    """Turn a checkpoint directory, prefix or ``.index`` path into the bundle prefix.

    Accepts what users hold in practice: an unpacked release directory (with or without
    its ``checkpoint`` state file), the prefix ``dir/model``, or ``dir/model.index``.
    """
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.exists():
            return _prefix_from_state_file(state)
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise CheckpointError(
                f"{path}: directory has no 'checkpoint' state file and {len(indexes)} *.index files "
                "(expected exactly 1)"
            )
        return _prefix_of_index(indexes[0])
    if path.name.endswith(".index") and path.is_file():
        return _prefix_of_index(path)
    if index_path(path).is_file():
        return path
    raise CheckpointError(
        f"{path}: not a checkpoint directory, checkpoint prefix (no {index_path(path).name}) or .index file"
    )
