"""The byte-level pieces of the format: masked CRC32C, varints and protobuf wire fields."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import google_crc32c

_CRC_MASK_DELTA = 0xA282EAD8

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class FormatError(Exception):
    """Low-level decoding failure; the reader re-raises it as CheckpointError with the file."""


def mask(crc: int) -> int:
    """LevelDB/TF store CRCs rotated and offset so CRCs of CRCs do not degenerate."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    return mask(google_crc32c.value(data))


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint inside ``buf[pos:end]``; strict so corrupt input fails fast."""
    result = 0
    for i in range(10):
        if pos >= end:
            raise FormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if result >> 64:
                raise FormatError("varint overflows 64 bits")
            return result, pos
    raise FormatError("varint longer than 10 bytes")


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def signed64(value: int) -> int:
    """Protobuf int32/int64 fields are two's-complement in 64 bits."""
    return value - (1 << 64) if value >> 63 else value


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a serialized message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise FormatError("protobuf field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if pos + width > end:
                raise FormatError(f"protobuf field {field} runs past the end of its message")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire == BYTES:
            length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise FormatError(f"protobuf field {field} runs past the end of its message")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise FormatError(f"unsupported protobuf wire type {wire} (field {field})")
        yield field, wire, value


def decode(buf: bytes, schema: Mapping[int, int], what: str) -> dict[int, list]:
    """Collect the fields named in ``schema`` (field -> wire type); unknown fields are skipped."""
    found: dict[int, list] = {field: [] for field in schema}
    for field, wire, value in _proto_fields(buf):
        if field in schema:
            if wire != schema[field]:
                raise FormatError(f"{what} field {field} has wire type {wire}, expected {schema[field]}")
            found[field].append(value)
    return found


def last(fields: dict[int, list], field: int, default: int | bytes) -> int | bytes:
    """Protobuf semantics: the last occurrence of a singular field wins."""
    return fields[field][-1] if fields[field] else default
