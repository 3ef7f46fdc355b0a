"""Read (and, for tests and fixtures, write) TensorFlow V2 "tensor bundle" checkpoints.

No well-kept library reads this format without TensorFlow, so it is decoded by hand
here and TensorFlow never becomes a dependency.

A checkpoint with prefix ``dir/model`` is three kinds of file:

* ``dir/checkpoint``: text state file, ``model_checkpoint_path: "model"``.
* ``dir/model.index``: a LevelDB-style sorted table. Data blocks hold prefix-compressed
  key/value entries with restart points; an index block maps each data block to its
  BlockHandle (varint offset, varint size); a 48-byte footer holds the metaindex and
  index handles and a magic number. Every block is followed by a compression byte
  and a masked CRC32C. The key ``""`` holds a ``BundleHeaderProto``; every other key
  is a tensor name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset,
  size, masked CRC32C of the tensor bytes).
* ``dir/model.data-00000-of-00001``: raw little-endian tensor bytes.

Everything read is verified (block and tensor CRCs, sizes against dtype x shape and
against the file sizes) and every problem raises :class:`CheckpointError` naming the
file and tensor. ``DT_BFLOAT16`` tensors are returned widened to float32 (exact),
because numpy has no bfloat16; ``DT_STRING`` tensors come back as object arrays of
``bytes``.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import google_crc32c
import numpy as np

__all__ = [
    "CheckpointError",
    "TFCheckpoint",
    "TensorInfo",
    "resolve_checkpoint_prefix",
    "write_tf_checkpoint",
]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_HANDLES_SIZE = 40
_BLOCK_TRAILER_SIZE = 5
_NO_COMPRESSION = 0
_RESTART_INTERVAL = 16
_TF_BLOCK_SIZE = 262144
_CRC_MASK_DELTA = 0xA282EAD8
_BUNDLE_VERSION = 1
_HEADER_KEY = b""
_STRING = "string"

# TF DataType enum -> on-disk numpy dtype (little-endian).
_DT_STRING = 7
_DT_BFLOAT16 = 14
_DISK_DTYPES: dict[int, np.dtype] = {
    enum: np.dtype(code)
    for enum, code in {
        1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8",
        10: "?", _DT_BFLOAT16: "<u2", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8",
    }.items()
}
# numpy dtype -> TF enum for the writer; uint16 means DT_UINT16, never bfloat16.
_ENUM_OF_DTYPE = {dt: enum for enum, dt in _DISK_DTYPES.items() if enum != _DT_BFLOAT16}


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, corrupt or uses an unsupported feature."""


class _FormatError(Exception):
    """Low-level decoding failure; callers re-raise it as CheckpointError with the file."""


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what :meth:`TFCheckpoint.read` will return for it.

    ``dtype`` is the numpy dtype of the returned array (float32 for bfloat16), or the
    string ``"string"`` for string tensors; ``size`` and ``crc32c`` (masked, as stored)
    describe the bytes in the data file.
    """

    name: str
    dtype: np.dtype | str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int


class _Entry(NamedTuple):
    """A decoded BundleEntryProto, kept apart from TensorInfo so unknown dtypes still open."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int


# --------------------------------------------------------------------------- CRC32C


def _mask(crc: int) -> int:
    """LevelDB/TF store CRCs rotated and offset so CRCs of CRCs do not degenerate."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    return _mask(google_crc32c.value(data))


# --------------------------------------------------------------------------- varints and protobuf


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint inside ``buf[pos:end]``; strict so corrupt input fails fast."""
    result = 0
    for i in range(10):
        if pos >= end:
            raise _FormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if result >> 64:
                raise _FormatError("varint overflows 64 bits")
            return result, pos
    raise _FormatError("varint longer than 10 bytes")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _signed64(value: int) -> int:
    """Protobuf int32/int64 fields are two's-complement in 64 bits."""
    return value - (1 << 64) if value >> 63 else value


_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a serialized message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _FormatError("protobuf field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            width = 8 if wire == _FIXED64 else 4
            if pos + width > end:
                raise _FormatError(f"protobuf field {field} runs past the end of its message")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire == _BYTES:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end:
                raise _FormatError(f"protobuf field {field} runs past the end of its message")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise _FormatError(f"unsupported protobuf wire type {wire} (field {field})")
        yield field, wire, value


def _decode(buf: bytes, schema: Mapping[int, int], what: str) -> dict[int, list]:
    """Collect the fields named in ``schema`` (field -> wire type); unknown fields are skipped."""
    found: dict[int, list] = {field: [] for field in schema}
    for field, wire, value in _proto_fields(buf):
        if field in schema:
            if wire != schema[field]:
                raise _FormatError(f"{what} field {field} has wire type {wire}, expected {schema[field]}")
            found[field].append(value)
    return found


def _last(fields: dict[int, list], field: int, default: int | bytes) -> int | bytes:
    """Protobuf semantics: the last occurrence of a singular field wins."""
    return fields[field][-1] if fields[field] else default


def _parse_header(value: bytes) -> tuple[int, int, int]:
    """BundleHeaderProto -> (num_shards, endianness, VersionDef.min_consumer)."""
    fields = _decode(value, {1: _VARINT, 2: _VARINT, 3: _BYTES}, "BundleHeaderProto")
    version = _decode(_last(fields, 3, b""), {2: _VARINT}, "VersionDef")
    return _signed64(_last(fields, 1, 0)), _last(fields, 2, 0), _signed64(_last(version, 2, 0))


def _parse_shape(value: bytes) -> tuple[int, ...]:
    fields = _decode(value, {2: _BYTES, 3: _VARINT}, "TensorShapeProto")
    if _last(fields, 3, 0):
        raise _FormatError("shape has unknown rank")
    dims = tuple(_signed64(_last(_decode(d, {1: _VARINT}, "Dim"), 1, 0)) for d in fields[2])
    if any(d < 0 for d in dims):
        raise _FormatError(f"shape {list(dims)} has a negative dimension")
    return dims


def _parse_entry(value: bytes) -> _Entry:
    """Decode a BundleEntryProto, refusing partitioned variables we cannot reassemble."""
    schema = {1: _VARINT, 2: _BYTES, 3: _VARINT, 4: _VARINT, 5: _VARINT, 6: _FIXED32, 7: _BYTES}
    fields = _decode(value, schema, "BundleEntryProto")
    if fields[7]:
        raise _FormatError("is a partitioned (sliced) variable, which is not supported")
    return _Entry(
        dtype=_last(fields, 1, 0),
        shape=_parse_shape(_last(fields, 2, b"")),
        shard=_signed64(_last(fields, 3, 0)),
        offset=_signed64(_last(fields, 4, 0)),
        size=_signed64(_last(fields, 5, 0)),
        crc32c=_last(fields, 6, 0),
    )


# --------------------------------------------------------------------------- LevelDB table


def _read_handle(buf: bytes, pos: int, end: int) -> tuple[tuple[int, int], int]:
    offset, pos = _read_varint(buf, pos, end)
    size, pos = _read_varint(buf, pos, end)
    return (offset, size), pos


def _crc_trailer(contents: bytes, kind: int) -> bytes:
    """The 5 bytes after a block: compression type, then masked CRC32C of contents + type."""
    crc = google_crc32c.extend(google_crc32c.value(contents), bytes([kind]))
    return bytes([kind]) + _mask(crc).to_bytes(4, "little")


def _read_block(table: bytes, handle: tuple[int, int]) -> bytes:
    """Return a block's contents after checking its bounds, CRC and compression byte."""
    offset, size = handle
    end = offset + size
    if end + _BLOCK_TRAILER_SIZE > len(table) - _FOOTER_SIZE:
        raise _FormatError(f"block handle (offset {offset}, size {size}) points past the end of the table")
    contents, kind = table[offset:end], table[end]
    if _crc_trailer(contents, kind) != table[end : end + _BLOCK_TRAILER_SIZE]:
        raise _FormatError(f"block at offset {offset}: CRC32C mismatch (corrupt file)")
    if kind != _NO_COMPRESSION:
        raise _FormatError(f"block at offset {offset} is compressed (type {kind}); TF writes none")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Expand a block's prefix-compressed entries, checking the restart array against them."""
    if len(block) < 4:
        raise _FormatError("block too short to hold its restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    entries_end = len(block) - 4 - 4 * num_restarts
    if entries_end < 0:
        raise _FormatError(f"block restart array ({num_restarts} entries) is larger than the block")
    restarts = struct.unpack_from(f"<{num_restarts}I", block, entries_end)
    entries: list[tuple[bytes, bytes]] = []
    full_key_starts: set[int] = set()
    key, pos = b"", 0
    while pos < entries_end:
        start = pos
        shared, pos = _read_varint(block, pos, entries_end)
        unshared, pos = _read_varint(block, pos, entries_end)
        value_size, pos = _read_varint(block, pos, entries_end)
        if shared > len(key) or pos + unshared + value_size > entries_end:
            raise _FormatError(f"block entry at offset {start} is inconsistent with the block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_size]))
        pos += value_size
        if shared == 0:
            full_key_starts.add(start)
    if not full_key_starts.issuperset(restarts):
        raise _FormatError("block restart point does not start an entry with a full key")
    return entries


def _data_block_handles(table: bytes) -> list[tuple[int, int]]:
    """Check the footer, metaindex and index block; return the data blocks in key order."""
    if len(table) < _FOOTER_SIZE:
        raise _FormatError(f"{len(table)} bytes, too short for the {_FOOTER_SIZE}-byte footer (truncated?)")
    footer = table[-_FOOTER_SIZE:]
    magic = int.from_bytes(footer[_HANDLES_SIZE:], "little")
    if magic != _TABLE_MAGIC:
        raise _FormatError(f"bad table magic number 0x{magic:016x} (truncated, or not a TF checkpoint index)")
    metaindex, pos = _read_handle(footer, 0, _HANDLES_SIZE)
    index, _ = _read_handle(footer, pos, _HANDLES_SIZE)
    _read_block(table, metaindex)
    handles = []
    for _, value in _block_entries(_read_block(table, index)):
        handle, end = _read_handle(value, 0, len(value))
        if end != len(value):
            raise _FormatError("index block entry has bytes after its block handle")
        handles.append(handle)
    return handles


def _parse_table(table: bytes) -> list[tuple[bytes, bytes]]:
    """All key/value pairs of the table, which must be strictly sorted (TF writes them so)."""
    items = []
    for handle in _data_block_handles(table):
        items.extend(_block_entries(_read_block(table, handle)))
    for (previous, _), (key, _) in zip(items, items[1:]):
        if key <= previous:
            raise _FormatError(f"table keys out of order or duplicated at {key!r}")
    return items


# --------------------------------------------------------------------------- tensor bytes


def _length_crc_bytes(length: int) -> bytes:
    """TF checksums each string length as uint32, or uint64 when it does not fit."""
    return length.to_bytes(4 if length <= 0xFFFFFFFF else 8, "little")


def _decode_strings(data: bytes, count: int) -> tuple[list[bytes], int]:
    """Split a DT_STRING payload: ``count`` varint lengths, masked CRC of the lengths, bytes.

    Returns the strings and the unmasked running CRC that TF stores (masked) in the entry.
    """
    lengths, pos, crc = [], 0, 0
    for _ in range(count):
        length, pos = _read_varint(data, pos, len(data))
        lengths.append(length)
        crc = google_crc32c.extend(crc, _length_crc_bytes(length))
    if pos + 4 > len(data):
        raise _FormatError("string lengths run past the end of the tensor")
    raw_checksum = data[pos : pos + 4]
    if _unmask(int.from_bytes(raw_checksum, "little")) != crc:
        raise _FormatError("string length checksum mismatch (corrupt data)")
    crc = google_crc32c.extend(crc, raw_checksum)
    pos += 4
    if pos + sum(lengths) != len(data):
        raise _FormatError(f"string lengths add up to {sum(lengths)} bytes, tensor holds {len(data) - pos}")
    crc = google_crc32c.extend(crc, data[pos:])
    strings = []
    for length in lengths:
        strings.append(data[pos : pos + length])
        pos += length
    return strings, crc


def _encode_strings(values: list[bytes]) -> tuple[bytes, int]:
    """Inverse of :func:`_decode_strings`; returns the payload and its masked entry CRC."""
    crc = 0
    for value in values:
        crc = google_crc32c.extend(crc, _length_crc_bytes(len(value)))
    checksum = _mask(crc).to_bytes(4, "little")
    body = b"".join(values)
    crc = google_crc32c.extend(google_crc32c.extend(crc, checksum), body)
    return b"".join(_varint(len(v)) for v in values) + checksum + body, _mask(crc)


def _expected_size(entry: _Entry) -> int:
    return math.prod(entry.shape) * _DISK_DTYPES[entry.dtype].itemsize


def _output_dtype(enum: int) -> np.dtype | str:
    if enum == _DT_STRING:
        return _STRING
    if enum == _DT_BFLOAT16:
        return np.dtype(np.float32)
    return _DISK_DTYPES[enum].newbyteorder("=")


def _decode_fixed(data: bytes, enum: int) -> np.ndarray:
    """Raw little-endian bytes -> writable native-order array (bfloat16 widened to float32)."""
    flat = np.frombuffer(data, dtype=_DISK_DTYPES[enum])
    if enum == _DT_BFLOAT16:
        return (flat.astype(np.uint32) << 16).view(np.float32)
    return flat.astype(_output_dtype(enum))


# --------------------------------------------------------------------------- path resolution

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


def _index_path(prefix: Path) -> Path:
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
    if not _index_path(prefix).is_file():
        raise CheckpointError(f"{state}: names checkpoint {name!r}, but {_index_path(prefix)} does not exist")
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
    if _index_path(path).is_file():
        return path
    raise CheckpointError(
        f"{path}: not a checkpoint directory, checkpoint prefix (no {_index_path(path).name}) or .index file"
    )


# --------------------------------------------------------------------------- reader


class TFCheckpoint:
    """A TF V2 checkpoint opened for reading, without TensorFlow.

    The whole index is parsed and checked when the object is made, so a corrupt or
    truncated checkpoint fails at once rather than halfway through loading a model.
    Tensor data is read per tensor with a seek, so large checkpoints are never loaded
    whole. Tensors of unsupported dtypes do not stop the checkpoint from opening; only
    :meth:`info` / :meth:`read` of such a tensor fail.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.prefix = resolve_checkpoint_prefix(path)
        self._index = _index_path(self.prefix)
        items = self._read_index()
        self._num_shards = self._check_header(items)
        self._data_sizes = [self._data_file_size(shard) for shard in range(self._num_shards)]
        self._entries: dict[str, _Entry] = {}
        for key, value in items[1:]:
            name = self._tensor_name(key)
            try:
                entry = _parse_entry(value)
            except _FormatError as err:
                raise CheckpointError(f"{self._index}: tensor {name!r}: {err}") from None
            self._check_entry(name, entry)
            self._entries[name] = entry

    def _read_index(self) -> list[tuple[bytes, bytes]]:
        try:
            table = self._index.read_bytes()
        except OSError as err:
            raise CheckpointError(f"{self._index}: cannot read checkpoint index ({err.strerror})") from None
        try:
            return _parse_table(table)
        except _FormatError as err:
            raise CheckpointError(f"{self._index}: {err}") from None

    def _check_header(self, items: list[tuple[bytes, bytes]]) -> int:
        """Validate the header entry and return the number of data shards."""
        if not items or items[0][0] != _HEADER_KEY:
            raise CheckpointError(f"{self._index}: no bundle header entry (not a TF V2 checkpoint index)")
        try:
            num_shards, endianness, min_consumer = _parse_header(items[0][1])
        except _FormatError as err:
            raise CheckpointError(f"{self._index}: bundle header: {err}") from None
        if endianness != 0:
            raise CheckpointError(f"{self._index}: big-endian checkpoints are not supported")
        if min_consumer > _BUNDLE_VERSION:
            raise CheckpointError(
                f"{self._index}: needs bundle reader version >= {min_consumer} (this is {_BUNDLE_VERSION})"
            )
        if not 1 <= num_shards <= 99999:
            raise CheckpointError(f"{self._index}: invalid number of data shards {num_shards}")
        return num_shards

    def _tensor_name(self, key: bytes) -> str:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{self._index}: tensor name {key!r} is not valid UTF-8") from None

    def _data_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self._num_shards:05d}")

    def _data_file_size(self, shard: int) -> int:
        path = self._data_path(shard)
        try:
            return path.stat().st_size
        except OSError:
            raise CheckpointError(f"{path}: missing data shard {shard} of {self._num_shards}") from None

    def _check_entry(self, name: str, entry: _Entry) -> None:
        """Reject entries whose location or size cannot be right, before any data is read."""
        where = f"{self._index}: tensor {name!r}"
        if not 0 <= entry.shard < self._num_shards:
            raise CheckpointError(f"{where}: shard id {entry.shard} out of range [0, {self._num_shards})")
        if entry.offset < 0 or entry.size < 0:
            raise CheckpointError(f"{where}: negative offset {entry.offset} or size {entry.size}")
        if entry.dtype in _DISK_DTYPES and entry.size != _expected_size(entry):
            raise CheckpointError(
                f"{where}: declared size {entry.size} bytes does not match shape {list(entry.shape)} "
                f"of dtype {_DISK_DTYPES[entry.dtype]} ({_expected_size(entry)} bytes)"
            )
        if entry.dtype == _DT_STRING and entry.size < math.prod(entry.shape) + 4:
            raise CheckpointError(
                f"{where}: declared size {entry.size} is too small for string shape {list(entry.shape)}"
            )
        data_size = self._data_sizes[entry.shard]
        if entry.offset + entry.size > data_size:
            raise CheckpointError(
                f"{self._data_path(entry.shard)}: tensor {name!r}: bytes [{entry.offset}, "
                f"{entry.offset + entry.size}) run past the end of the file ({data_size} bytes; truncated?)"
            )

    def keys(self) -> list[str]:
        """Sorted tensor names, without the bundle header entry."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, name: str) -> _Entry:
        try:
            entry = self._entries[name]
        except KeyError:
            raise CheckpointError(f"{self._index}: no tensor named {name!r} ({len(self)} tensors)") from None
        if entry.dtype not in _DISK_DTYPES and entry.dtype != _DT_STRING:
            raise CheckpointError(f"{self._index}: tensor {name!r} has unsupported TF dtype {entry.dtype}")
        return entry

    def info(self, name: str) -> TensorInfo:
        """Metadata of one tensor, without reading its data."""
        entry = self._entry(name)
        return TensorInfo(name, _output_dtype(entry.dtype), *entry[1:])

    def read(self, name: str) -> np.ndarray:
        """Read one tensor, verifying its CRC32C; string tensors come back as object arrays of bytes."""
        entry = self._entry(name)
        path = self._data_path(entry.shard)
        where = f"{path}: tensor {name!r}"
        try:
            with open(path, "rb") as file:
                file.seek(entry.offset)
                data = file.read(entry.size)
        except OSError as err:
            raise CheckpointError(f"{where}: cannot read ({err.strerror})") from None
        if len(data) != entry.size:
            raise CheckpointError(f"{where}: file ends after {len(data)} of {entry.size} bytes (truncated?)")
        try:
            if entry.dtype == _DT_STRING:
                strings, crc = _decode_strings(data, math.prod(entry.shape))
                flat = np.empty(len(strings), dtype=object)
                flat[:] = strings
            else:
                flat, crc = _decode_fixed(data, entry.dtype), google_crc32c.value(data)
        except _FormatError as err:
            raise CheckpointError(f"{where}: {err}") from None
        if _mask(crc) != entry.crc32c:
            raise CheckpointError(
                f"{where}: CRC32C mismatch (stored 0x{entry.crc32c:08x}, "
                f"computed 0x{_mask(crc):08x}; corrupt data)"
            )
        try:
            return flat.reshape(entry.shape)
        except ValueError as err:
            raise CheckpointError(f"{where}: shape {list(entry.shape)} not representable ({err})") from None

    def read_all(self) -> dict[str, np.ndarray]:
        """Every tensor by name, in key order."""
        return {name: self.read(name) for name in self._entries}


# --------------------------------------------------------------------------- writer


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
        self._out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
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


def _build_table(items: list[tuple[bytes, bytes]], block_size: int = _TF_BLOCK_SIZE) -> bytes:
    """Serialize sorted key/value pairs as an uncompressed table, laid out as TF's TableBuilder does."""
    out = bytearray()

    def write_block(block: _BlockBuilder) -> bytes:
        contents = block.finish()
        handle = _varint(len(out)) + _varint(len(contents))
        out.extend(contents + _crc_trailer(contents, _NO_COMPRESSION))
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
    return bytes(out) + handles.ljust(_HANDLES_SIZE, b"\0") + _TABLE_MAGIC.to_bytes(8, "little")


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _scalar(number: int, value: int) -> bytes:
    """A proto3 varint field: omitted when zero, negative values as 64-bit two's complement."""
    return _field(number, _VARINT, _varint(value & 0xFFFFFFFFFFFFFFFF)) if value else b""


def _message(number: int, payload: bytes) -> bytes:
    return _field(number, _BYTES, _varint(len(payload)) + payload)


def _encode_header(num_shards: int = 1) -> bytes:
    return _scalar(1, num_shards) + _message(3, _scalar(1, _BUNDLE_VERSION))


def _encode_entry(
    dtype: int, shape: tuple[int, ...], shard: int, offset: int, size: int, crc32c: int
) -> bytes:
    """Serialize a BundleEntryProto as TF does: proto3, so zero scalars are left out."""
    shape_proto = b"".join(_message(2, _scalar(1, d)) for d in shape)
    fixed_crc = _field(6, _FIXED32, crc32c.to_bytes(4, "little")) if crc32c else b""
    scalars = _scalar(3, shard) + _scalar(4, offset) + _scalar(5, size)
    return _scalar(1, dtype) + _message(2, shape_proto) + scalars + fixed_crc


def _as_bytes(name: str, value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise CheckpointError(f"tensor {name!r}: string tensors hold bytes or str, not {type(value).__name__}")


def _serialize(name: str, array: np.ndarray) -> tuple[int, bytes, int]:
    """Array -> (TF dtype enum, payload bytes, masked entry CRC)."""
    if array.dtype.kind in "OSU":
        payload, crc = _encode_strings([_as_bytes(name, v) for v in array.reshape(-1).tolist()])
        return _DT_STRING, payload, crc
    disk = array.dtype.newbyteorder("<")
    if disk not in _ENUM_OF_DTYPE:
        raise CheckpointError(f"tensor {name!r}: dtype {array.dtype} has no TF checkpoint equivalent here")
    payload = np.ascontiguousarray(array, dtype=disk).tobytes()
    return _ENUM_OF_DTYPE[disk], payload, _masked_crc(payload)


def write_tf_checkpoint(
    prefix: str | os.PathLike, tensors: Mapping[str, np.ndarray], *, block_size: int = _TF_BLOCK_SIZE
) -> Path:
    """Write a single-shard bundle plus ``checkpoint`` state file that TF (and this reader) accept.

    Meant for tests and small fixtures. The files match what TF writes for the same
    tensors byte for byte; ``block_size`` (TF's default 256 KiB) sets how much key/value
    data goes in one index data block, so small values force many blocks.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data, items = bytearray(), [(_HEADER_KEY, _encode_header())]
    for name in sorted(tensors):
        if not name:
            raise CheckpointError("the empty tensor name is reserved for the bundle header")
        array = np.asarray(tensors[name])
        dtype, payload, crc = _serialize(name, array)
        entry = _encode_entry(dtype, array.shape, 0, len(data), len(payload), crc)
        items.append((name.encode("utf-8"), entry))
        data += payload
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    _index_path(prefix).write_bytes(_build_table(items, block_size))
    quoted = prefix.name.replace("\\", "\\\\").replace('"', '\\"')
    (prefix.parent / "checkpoint").write_text(
        f'model_checkpoint_path: "{quoted}"\nall_model_checkpoint_paths: "{quoted}"\n', encoding="utf-8"
    )
    return prefix
