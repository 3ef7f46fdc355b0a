"""Reading a checkpoint: the index parsed and checked whole when opened, tensors read one by one."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from ..errors import CheckpointError
from .bundle import (
    BUNDLE_VERSION,
    DISK_DTYPES,
    DT_STRING,
    HEADER_KEY,
    Entry,
    decode_fixed,
    decode_strings,
    expected_size,
    output_dtype,
    parse_entry,
    parse_header,
)
from .paths import index_path, resolve_checkpoint_prefix
from .table import parse_table
from .wire import FormatError, mask


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
        self._index = index_path(self.prefix)
        items = self._read_index()
        self._num_shards = self._check_header(items)
        self._data_sizes = [self._data_file_size(shard) for shard in range(self._num_shards)]
        self._entries: dict[str, Entry] = {}
        for key, value in items[1:]:
            name = self._tensor_name(key)
            try:
                entry = parse_entry(value)
            except FormatError as err:
                raise CheckpointError(f"{self._index}: tensor {name!r}: {err}") from None
            self._check_entry(name, entry)
            self._entries[name] = entry

    def _read_index(self) -> list[tuple[bytes, bytes]]:
        try:
            table = self._index.read_bytes()
        except OSError as err:
            raise CheckpointError(f"{self._index}: cannot read checkpoint index ({err.strerror})") from None
        try:
            return parse_table(table)
        except FormatError as err:
            raise CheckpointError(f"{self._index}: {err}") from None

    def _check_header(self, items: list[tuple[bytes, bytes]]) -> int:
        """Validate the header entry and return the number of data shards."""
        if not items or items[0][0] != HEADER_KEY:
            raise CheckpointError(f"{self._index}: no bundle header entry (not a TF V2 checkpoint index)")
        try:
            num_shards, endianness, min_consumer = parse_header(items[0][1])
        except FormatError as err:
            raise CheckpointError(f"{self._index}: bundle header: {err}") from None
        if endianness != 0:
            raise CheckpointError(f"{self._index}: big-endian checkpoints are not supported")
        if min_consumer > BUNDLE_VERSION:
            raise CheckpointError(
                f"{self._index}: needs bundle reader version >= {min_consumer} (this is {BUNDLE_VERSION})"
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

    def _check_entry(self, name: str, entry: Entry) -> None:
        """Reject entries whose location or size cannot be right, before any data is read."""
        where = f"{self._index}: tensor {name!r}"
        if not 0 <= entry.shard < self._num_shards:
            raise CheckpointError(f"{where}: shard id {entry.shard} out of range [0, {self._num_shards})")
        if entry.offset < 0 or entry.size < 0:
            raise CheckpointError(f"{where}: negative offset {entry.offset} or size {entry.size}")
        if entry.dtype in DISK_DTYPES and entry.size != expected_size(entry):
            raise CheckpointError(
                f"{where}: declared size {entry.size} bytes does not match shape {list(entry.shape)} "
                f"of dtype {DISK_DTYPES[entry.dtype]} ({expected_size(entry)} bytes)"
            )
        if entry.dtype == DT_STRING and entry.size < math.prod(entry.shape) + 4:
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

    def _entry(self, name: str) -> Entry:
        try:
            entry = self._entries[name]
        except KeyError:
            raise CheckpointError(f"{self._index}: no tensor named {name!r} ({len(self)} tensors)") from None
        if entry.dtype not in DISK_DTYPES and entry.dtype != DT_STRING:
            raise CheckpointError(f"{self._index}: tensor {name!r} has unsupported TF dtype {entry.dtype}")
        return entry

    def info(self, name: str) -> TensorInfo:
        """Metadata of one tensor, without reading its data."""
        entry = self._entry(name)
        return TensorInfo(name, output_dtype(entry.dtype), *entry[1:])

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
            if entry.dtype == DT_STRING:
                strings, crc = decode_strings(data, math.prod(entry.shape))
                flat = np.empty(len(strings), dtype=object)
                flat[:] = strings
            else:
                flat, crc = decode_fixed(data, entry.dtype), google_crc32c.value(data)
        except FormatError as err:
            raise CheckpointError(f"{where}: {err}") from None
        if mask(crc) != entry.crc32c:
            raise CheckpointError(
                f"{where}: CRC32C mismatch (stored 0x{entry.crc32c:08x}, "
                f"computed 0x{mask(crc):08x}; corrupt data)"
            )
        try:
            return flat.reshape(entry.shape)
        except ValueError as err:
            raise CheckpointError(f"{where}: shape {list(entry.shape)} not representable ({err})") from None

    def read_all(self) -> dict[str, np.ndarray]:
        """Every tensor by name, in key order."""
        return {name: self.read(name) for name in self._entries}
