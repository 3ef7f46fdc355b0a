"""Reading the LevelDB-style sorted table that a checkpoint's ``.index`` file is.

Data blocks hold prefix-compressed key/value entries with restart points; an index block maps
each data block to its BlockHandle (varint offset, varint size); a 48-byte footer holds the
metaindex and index handles and a magic number. Every block is followed by a compression byte
and a masked CRC32C, checked here before anything in the block is used.
"""

from __future__ import annotations

import struct
from itertools import pairwise

import google_crc32c

from .wire import FormatError, mask, read_varint

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
HANDLES_SIZE = 40
BLOCK_TRAILER_SIZE = 5
NO_COMPRESSION = 0


def read_handle(buf: bytes, pos: int, end: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return (offset, size), pos


def crc_trailer(contents: bytes, kind: int) -> bytes:
    """The 5 bytes after a block: compression type, then masked CRC32C of contents + type."""
    crc = google_crc32c.extend(google_crc32c.value(contents), bytes([kind]))
    return bytes([kind]) + mask(crc).to_bytes(4, "little")


def _read_block(table: bytes, handle: tuple[int, int]) -> bytes:
    """Return a block's contents after checking its bounds, CRC and compression byte."""
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(table) - FOOTER_SIZE:
        raise FormatError(f"block handle (offset {offset}, size {size}) points past the end of the table")
    contents, kind = table[offset:end], table[end]
    if crc_trailer(contents, kind) != table[end : end + BLOCK_TRAILER_SIZE]:
        raise FormatError(f"block at offset {offset}: CRC32C mismatch (corrupt file)")
    if kind != NO_COMPRESSION:
        raise FormatError(f"block at offset {offset} is compressed (type {kind}); TF writes none")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Expand a block's prefix-compressed entries, checking the restart array against them."""
    if len(block) < 4:
        raise FormatError("block too short to hold its restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    entries_end = len(block) - 4 - 4 * num_restarts
    if entries_end < 0:
        raise FormatError(f"block restart array ({num_restarts} entries) is larger than the block")
    restarts = struct.unpack_from(f"<{num_restarts}I", block, entries_end)
    entries: list[tuple[bytes, bytes]] = []
    full_key_starts: set[int] = set()
    key, pos = b"", 0
    while pos < entries_end:
        start = pos
        shared, pos = read_varint(block, pos, entries_end)
        unshared, pos = read_varint(block, pos, entries_end)
        value_size, pos = read_varint(block, pos, entries_end)
        if shared > len(key) or pos + unshared + value_size > entries_end:
            raise FormatError(f"block entry at offset {start} is inconsistent with the block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_size]))
        pos += value_size
        if shared == 0:
            full_key_starts.add(start)
    if not full_key_starts.issuperset(restarts):
        raise FormatError("block restart point does not start an entry with a full key")
    return entries


def data_block_handles(table: bytes) -> list[tuple[int, int]]:
    """Check the footer, metaindex and index block; return the data blocks in key order."""
    if len(table) < FOOTER_SIZE:
        raise FormatError(f"{len(table)} bytes, too short for the {FOOTER_SIZE}-byte footer (truncated?)")
    footer = table[-FOOTER_SIZE:]
    magic = int.from_bytes(footer[HANDLES_SIZE:], "little")
    if magic != TABLE_MAGIC:
        raise FormatError(f"bad table magic number 0x{magic:016x} (truncated, or not a TF checkpoint index)")
    metaindex, pos = read_handle(footer, 0, HANDLES_SIZE)
    index, _ = read_handle(footer, pos, HANDLES_SIZE)
    _read_block(table, metaindex)
    handles = []
    for _, value in _block_entries(_read_block(table, index)):
        handle, end = read_handle(value, 0, len(value))
        if end != len(value):
            raise FormatError("index block entry has bytes after its block handle")
        handles.append(handle)
    return handles


def parse_table(table: bytes) -> list[tuple[bytes, bytes]]:
    """All key/value pairs of the table, which must be strictly sorted (TF writes them so)."""
    items = []
    for handle in data_block_handles(table):
        items.extend(_block_entries(_read_block(table, handle)))
    for (previous, _), (key, _) in pairwise(items):
        if key <= previous:
            raise FormatError(f"table keys out of order or duplicated at {key!r}")
    return items
