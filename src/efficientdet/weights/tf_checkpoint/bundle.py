"""What the index's values and the data shards hold: the bundle header, one ``BundleEntryProto``
per tensor (dtype, shape, shard, offset, size, masked CRC32C of the tensor bytes), and the tensor
bytes themselves (raw little-endian values, or length-prefixed strings).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import google_crc32c
import numpy as np

from .wire import (
    BYTES,
    FIXED32,
    VARINT,
    FormatError,
    decode,
    last,
    read_varint,
    signed64,
    unmask,
)

BUNDLE_VERSION = 1
HEADER_KEY = b""
STRING = "string"

# TF DataType enum -> on-disk numpy dtype (little-endian).
DT_STRING = 7
DT_BFLOAT16 = 14
DISK_DTYPES: dict[int, np.dtype] = {
    enum: np.dtype(code)
    for enum, code in {
        1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8",
        10: "?", DT_BFLOAT16: "<u2", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8",
    }.items()
}


class Entry(NamedTuple):
    """A decoded BundleEntryProto, kept apart from TensorInfo so unknown dtypes still open."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int


def parse_header(value: bytes) -> tuple[int, int, int]:
    """BundleHeaderProto -> (num_shards, endianness, VersionDef.min_consumer)."""
    fields = decode(value, {1: VARINT, 2: VARINT, 3: BYTES}, "BundleHeaderProto")
    version = decode(last(fields, 3, b""), {2: VARINT}, "VersionDef")
    return signed64(last(fields, 1, 0)), last(fields, 2, 0), signed64(last(version, 2, 0))


def _parse_shape(value: bytes) -> tuple[int, ...]:
    fields = decode(value, {2: BYTES, 3: VARINT}, "TensorShapeProto")
    if last(fields, 3, 0):
        raise FormatError("shape has unknown rank")
    dims = tuple(signed64(last(decode(d, {1: VARINT}, "Dim"), 1, 0)) for d in fields[2])
    if any(d < 0 for d in dims):
        raise FormatError(f"shape {list(dims)} has a negative dimension")
    return dims


def parse_entry(value: bytes) -> Entry:
    """Decode a BundleEntryProto, refusing partitioned variables we cannot reassemble."""
    schema = {1: VARINT, 2: BYTES, 3: VARINT, 4: VARINT, 5: VARINT, 6: FIXED32, 7: BYTES}
    fields = decode(value, schema, "BundleEntryProto")
    if fields[7]:
        raise FormatError("is a partitioned (sliced) variable, which is not supported")
    return Entry(
        dtype=last(fields, 1, 0),
        shape=_parse_shape(last(fields, 2, b"")),
        shard=signed64(last(fields, 3, 0)),
        offset=signed64(last(fields, 4, 0)),
        size=signed64(last(fields, 5, 0)),
        crc32c=last(fields, 6, 0),
    )


def length_crc_bytes(length: int) -> bytes:
    """TF checksums each string length as uint32, or uint64 when it does not fit."""
    return length.to_bytes(4 if length <= 0xFFFFFFFF else 8, "little")


def decode_strings(data: bytes, count: int) -> tuple[list[bytes], int]:
    """Split a DT_STRING payload: ``count`` varint lengths, masked CRC of the lengths, bytes.

    Returns the strings and the unmasked running CRC that TF stores (masked) in the entry.
    """
    lengths, pos, crc = [], 0, 0
    for _ in range(count):
        length, pos = read_varint(data, pos, len(data))
        lengths.append(length)
        crc = google_crc32c.extend(crc, length_crc_bytes(length))
    if pos + 4 > len(data):
        raise FormatError("string lengths run past the end of the tensor")
    raw_checksum = data[pos : pos + 4]
    if unmask(int.from_bytes(raw_checksum, "little")) != crc:
        raise FormatError("string length checksum mismatch (corrupt data)")
    crc = google_crc32c.extend(crc, raw_checksum)
    pos += 4
    if pos + sum(lengths) != len(data):
        raise FormatError(f"string lengths add up to {sum(lengths)} bytes, tensor holds {len(data) - pos}")
    crc = google_crc32c.extend(crc, data[pos:])
    strings = []
    for length in lengths:
        strings.append(data[pos : pos + length])
        pos += length
    return strings, crc


def expected_size(entry: Entry) -> int:
    return math.prod(entry.shape) * DISK_DTYPES[entry.dtype].itemsize


def output_dtype(enum: int) -> np.dtype | str:
    if enum == DT_STRING:
        return STRING
    if enum == DT_BFLOAT16:
        return np.dtype(np.float32)
    return DISK_DTYPES[enum].newbyteorder("=")


def decode_fixed(data: bytes, enum: int) -> np.ndarray:
    """Raw little-endian bytes -> writable native-order array (bfloat16 widened to float32)."""
    flat = np.frombuffer(data, dtype=DISK_DTYPES[enum])
    if enum == DT_BFLOAT16:
        return (flat.astype(np.uint32) << 16).view(np.float32)
    return flat.astype(output_dtype(enum))
