"""Writing checkpoints, for tests and small fixtures: the files TF writes for the same tensors,
byte for byte (tables laid out as TF's TableBuilder does, proto3 entries, one data shard).

The encoders are public so that tests can build bundles the writer itself never makes (corrupt
entries, odd headers) and check that the reader refuses them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path

import google_crc32c
import numpy as np

from ..errors import CheckpointError
from .bundle import (
    BUNDLE_VERSION,
    DISK_DTYPES,
    DT_BFLOAT16,
    DT_STRING,
    HEADER_KEY,
    length_crc_bytes,
)
from .paths import index_path
from .table import HANDLES_SIZE, NO_COMPRESSION, TABLE_MAGIC, crc_trailer
from .wire import BYTES, FIXED32, VARINT, mask, masked_crc, varint

TF_BLOCK_SIZE = 262144
_RESTART_INTERVAL = 16
# numpy dtype -> TF enum; uint16 means DT_UINT16, never bfloat16.
_ENUM_OF_DTYPE = {dt: enum for enum, dt in DISK_DTYPES.items() if enum != DT_BFLOAT16}


class _BlockBuilder:
    """One LevelDB block being filled: keys share a prefix with their predecessor between restarts."""

    def __init__(self, restart_interval: int) -> None:
        self._interval = restart_interval
        self._out = bytearray()
        self._restarts: list[int] = []
        self.count = 0
        self.first_key = self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count % self._interval:
            shared = len(os.path.commonprefix([self.last_key, key]))
        else:
            self._restarts.append(len(self._out))
        self._out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        self.first_key = self.first_key if self.count else key
        self.last_key = key
        self.count += 1

    def size_estimate(self) -> int:
        """LevelDB's estimate of the finished size, which decides where blocks are cut."""
        return len(self._out) + 4 * max(len(self._restarts), 1) + 4

    def finish(self) -> bytes:
        restarts = self._restarts or [0]
        return bytes(self._out) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def _index_key(last: bytes, following: bytes | None) -> bytes:
    """A short key >= ``last`` and < ``following``, chosen as TF does so its tables are reproduced exactly."""
    if following is None:
        for i, byte in enumerate(last):
            if byte != 0xFF:
                return last[:i] + bytes([byte + 1])
        return last
    common = len(os.path.commonprefix([last, following]))
    if common < min(len(last), len(following)) and last[common] + 1 < following[common]:
        return last[:common] + bytes([last[common] + 1])
    return last


def build_table(items: list[tuple[bytes, bytes]], block_size: int = TF_BLOCK_SIZE) -> bytes:
    """Serialize sorted key/value pairs as an uncompressed table, laid out as TF's TableBuilder does."""
    out = bytearray()

    def write_block(block: _BlockBuilder) -> bytes:
        contents = block.finish()
        handle = varint(len(out)) + varint(len(contents))
        out.extend(contents + crc_trailer(contents, NO_COMPRESSION))
        return handle

    blocks: list[tuple[_BlockBuilder, bytes]] = []
    block = _BlockBuilder(_RESTART_INTERVAL)
    for key, value in items:
        block.add(key, value)
        if block.size_estimate() >= block_size:
            blocks.append((block, write_block(block)))
            block = _BlockBuilder(_RESTART_INTERVAL)
    if block.count:
        blocks.append((block, write_block(block)))
    metaindex = write_block(_BlockBuilder(1))
    index = _BlockBuilder(1)
    following = [b.first_key for b, _ in blocks[1:]] + [None]
    for (done, handle), first_of_next in zip(blocks, following):
        index.add(_index_key(done.last_key, first_of_next), handle)
    handles = metaindex + write_block(index)
    return bytes(out) + handles.ljust(HANDLES_SIZE, b"\0") + TABLE_MAGIC.to_bytes(8, "little")


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire) + payload


def scalar(number: int, value: int) -> bytes:
    """A proto3 varint field: omitted when zero, negative values as 64-bit two's complement."""
    return _field(number, VARINT, varint(value & 0xFFFFFFFFFFFFFFFF)) if value else b""


def message(number: int, payload: bytes) -> bytes:
    return _field(number, BYTES, varint(len(payload)) + payload)


def encode_header(num_shards: int = 1) -> bytes:
    return scalar(1, num_shards) + message(3, scalar(1, BUNDLE_VERSION))


def encode_entry(
    dtype: int, shape: tuple[int, ...], shard: int, offset: int, size: int, crc32c: int
) -> bytes:
    """Serialize a BundleEntryProto as TF does: proto3, so zero scalars are left out."""
    shape_proto = b"".join(message(2, scalar(1, d)) for d in shape)
    fixed_crc = _field(6, FIXED32, crc32c.to_bytes(4, "little")) if crc32c else b""
    scalars = scalar(3, shard) + scalar(4, offset) + scalar(5, size)
    return scalar(1, dtype) + message(2, shape_proto) + scalars + fixed_crc


def encode_strings(values: list[bytes]) -> tuple[bytes, int]:
    """Inverse of :func:`.bundle.decode_strings`; returns the payload and its masked entry CRC."""
    crc = 0
    for value in values:
        crc = google_crc32c.extend(crc, length_crc_bytes(len(value)))
    checksum = mask(crc).to_bytes(4, "little")
    body = b"".join(values)
    crc = google_crc32c.extend(google_crc32c.extend(crc, checksum), body)
    return b"".join(varint(len(v)) for v in values) + checksum + body, mask(crc)


def _as_bytes(name: str, value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise CheckpointError(f"tensor {name!r}: string tensors hold bytes or str, not {type(value).__name__}")


def _serialize(name: str, array: np.ndarray) -> tuple[int, bytes, int]:
    """Array -> (TF dtype enum, payload bytes, masked entry CRC)."""
    if array.dtype.kind in "OSU":
        payload, crc = encode_strings([_as_bytes(name, v) for v in array.reshape(-1).tolist()])
        return DT_STRING, payload, crc
    disk = array.dtype.newbyteorder("<")
    if disk not in _ENUM_OF_DTYPE:
        raise CheckpointError(f"tensor {name!r}: dtype {array.dtype} has no TF checkpoint equivalent here")
    payload = np.ascontiguousarray(array, dtype=disk).tobytes()
    return _ENUM_OF_DTYPE[disk], payload, masked_crc(payload)


def write_tf_checkpoint(
    prefix: str | os.PathLike, tensors: Mapping[str, np.ndarray], *, block_size: int = TF_BLOCK_SIZE
) -> Path:
    """Write a single-shard bundle plus ``checkpoint`` state file that TF (and this reader) accept.

    Meant for tests and small fixtures. The files match what TF writes for the same
    tensors byte for byte; ``block_size`` (TF's default 256 KiB) sets how much key/value
    data goes in one index data block, so small values force many blocks.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data, items = bytearray(), [(HEADER_KEY, encode_header())]
    for name in sorted(tensors):
        if not name:
            raise CheckpointError("the empty tensor name is reserved for the bundle header")
        array = np.asarray(tensors[name])
        dtype, payload, crc = _serialize(name, array)
        entry = encode_entry(dtype, array.shape, 0, len(data), len(payload), crc)
        items.append((name.encode("utf-8"), entry))
        data += payload
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    index_path(prefix).write_bytes(build_table(items, block_size))
    quoted = prefix.name.replace("\\", "\\\\").replace('"', '\\"')
    (prefix.parent / "checkpoint").write_text(
        f'model_checkpoint_path: "{quoted}"\nall_model_checkpoint_paths: "{quoted}"\n', encoding="utf-8"
    )
    return prefix
