"""Tests for the pure-Python TF V2 checkpoint reader and its small writer."""

from __future__ import annotations

import os
import struct
import tracemalloc
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from efficientdet.weights.tf_checkpoint import (
    CheckpointError,
    TFCheckpoint,
    resolve_checkpoint_prefix,
)
from efficientdet.weights.tf_checkpoint import table as tf_table
from efficientdet.weights.tf_checkpoint import wire as tf_wire
from efficientdet.weights.tf_checkpoint import writer as tf_writer
from efficientdet.weights.tf_checkpoint.writer import write_tf_checkpoint

DATA_SUFFIX = ".data-00000-of-00001"
STEM_KERNEL = "efficientnet-b0/stem/conv2d/kernel"
EMA = "/ExponentialMovingAverage"


def _official_dir() -> Path:
    """The official-format D0 checkpoint; EFFICIENTDET_FIXTURES may point at the fixtures folder."""
    root = os.environ.get("EFFICIENTDET_FIXTURES")
    fixtures = Path(root) if root else Path(__file__).resolve().parents[3] / "shared" / "fixtures"
    return fixtures / "official-tf" / "efficientdet-d0"


def _mask(crc: int) -> int:
    """Masked CRC as specified by LevelDB/TF, written out independently of the module."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def _data(prefix: Path) -> Path:
    return Path(f"{prefix}{DATA_SUFFIX}")


def _index(prefix: Path) -> Path:
    return Path(f"{prefix}.index")


def _write_entries(
    prefix: Path, entries: dict[str, bytes], data: bytes = b"", header: bytes | None = None
) -> Path:
    """A bundle from hand-encoded BundleEntryProtos, for entries the public writer never makes."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    items = [(b"", tf_writer.encode_header() if header is None else header)]
    items += [(name.encode(), value) for name, value in sorted(entries.items())]
    _data(prefix).write_bytes(data)
    _index(prefix).write_bytes(tf_writer.build_table(items))
    return prefix


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------- official fixture


@pytest.fixture(scope="module")
def official_dir() -> Path:
    path = _official_dir()
    if not (path / "model.index").is_file():
        pytest.skip(f"official TF checkpoint fixture not found at {path} (set EFFICIENTDET_FIXTURES)")
    return path


@pytest.fixture(scope="module")
def official(official_dir: Path) -> TFCheckpoint:
    return TFCheckpoint(official_dir)


def test_official_keys_hold_plain_and_ema_copies(official: TFCheckpoint) -> None:
    keys = official.keys()
    assert len(keys) == 1419 and keys == sorted(keys)
    ema = {k for k in keys if k.endswith(EMA)}
    plain = set(keys) - ema - {"global_step"}
    assert len(ema) == 709 and len(plain) == 709
    assert {k[: -len(EMA)] for k in ema} == plain
    assert "global_step" in official and "nonexistent" not in official


def test_official_global_step(official: TFCheckpoint) -> None:
    info = official.info("global_step")
    assert (info.dtype, info.shape, info.size) == (np.int64, (), 8)
    step = official.read("global_step")
    assert step.dtype == np.int64 and step.shape == () and step == 0


def test_official_stem_kernel(official: TFCheckpoint) -> None:
    assert official.info(STEM_KERNEL).shape == (3, 3, 3, 32)
    kernel = official.read(STEM_KERNEL)
    assert kernel.dtype == np.float32 and kernel.shape == (3, 3, 3, 32)
    assert np.isfinite(kernel).all() and kernel.std() > 0


def test_official_ema_and_plain_copies_differ(official: TFCheckpoint) -> None:
    for name in (STEM_KERNEL, "class_net/class-predict/bias", "fpn_cells/cell_0/fnode0/WSM"):
        plain, ema = official.read(name), official.read(name + EMA)
        assert plain.shape == ema.shape and plain.dtype == ema.dtype
        assert not np.array_equal(plain, ema)


def test_official_every_tensor_reads_with_its_crc(official: TFCheckpoint, official_dir: Path) -> None:
    tensors = official.read_all()
    assert list(tensors) == official.keys()
    for name, array in tensors.items():
        info = official.info(name)
        assert array.shape == info.shape and array.dtype == info.dtype and array.flags.writeable
        assert _mask(google_crc32c.value(array.tobytes())) == info.crc32c
    data_size = _data(official_dir / "model").stat().st_size
    assert sum(official.info(name).size for name in tensors) == data_size


def test_official_path_forms_resolve_to_one_prefix(official_dir: Path, tmp_path: Path) -> None:
    prefix = official_dir / "model"
    for form in (official_dir, prefix, str(prefix), official_dir / "model.index"):
        assert resolve_checkpoint_prefix(form) == prefix
    for name in ("model.index", "model" + DATA_SUFFIX):  # a directory without a `checkpoint` file
        (tmp_path / name).symlink_to(official_dir / name)
    assert resolve_checkpoint_prefix(tmp_path) == tmp_path / "model"
    assert TFCheckpoint(tmp_path).keys() == TFCheckpoint(prefix).keys()


def test_writer_reproduces_tensorflow_files_byte_for_byte(
    official: TFCheckpoint, official_dir: Path, tmp_path: Path
) -> None:
    write_tf_checkpoint(tmp_path / "model", official.read_all())
    for name in ("model.index", "model" + DATA_SUFFIX, "checkpoint"):
        assert (tmp_path / name).read_bytes() == (official_dir / name).read_bytes(), name


def test_official_index_corruption_is_caught(official_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "model.index").write_bytes((official_dir / "model.index").read_bytes())
    (tmp_path / ("model" + DATA_SUFFIX)).symlink_to(official_dir / ("model" + DATA_SUFFIX))
    _flip(tmp_path / "model.index", 30000)
    with pytest.raises(CheckpointError, match=r"model\.index: block at offset 0: CRC32C mismatch"):
        TFCheckpoint(tmp_path / "model")


# --------------------------------------------------------------------------- round trips


def _random_array(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


DTYPES = [np.float32, np.float64, np.int32, np.uint8, np.int16, np.int8, np.int64, np.bool_,
          np.float16, np.uint16, np.uint32, np.uint64]
SHAPES = [(), (5,), (2, 3, 4), (0,), (3, 0, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype_and_shape(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    tensors = {f"t{i}": _random_array(rng, dtype, shape) for i, shape in enumerate(SHAPES)}
    ckpt = TFCheckpoint(write_tf_checkpoint(tmp_path / "model", tensors))
    assert ckpt.keys() == sorted(tensors)
    for name, expected in tensors.items():
        info = ckpt.info(name)
        assert (info.dtype, info.shape, info.size) == (expected.dtype, expected.shape, expected.nbytes)
        got = ckpt.read(name)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_big_endian_input_is_stored_little_endian(tmp_path: Path) -> None:
    prefix = write_tf_checkpoint(tmp_path / "model", {"x": np.arange(3, dtype=">i4")})
    assert _data(prefix).read_bytes() == struct.pack("<3i", 0, 1, 2)
    np.testing.assert_array_equal(TFCheckpoint(prefix).read("x"), [0, 1, 2])


def test_bfloat16_is_widened_to_float32(tmp_path: Path) -> None:
    values = np.array([[1.0, -2.5, 3.140625], [0.0, -0.0, np.inf]], np.float32)
    bits = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    crc = _mask(google_crc32c.value(bits))
    entry = tf_writer.encode_entry(14, (2, 3), 0, 0, len(bits), crc)
    prefix = _write_entries(tmp_path / "model", {"b": entry}, bits)
    ckpt = TFCheckpoint(prefix)
    assert ckpt.info("b").dtype == np.float32
    got = ckpt.read("b")
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_array_equal(got, values)
    assert np.signbit(got[1, 1])


def test_round_trip_strings(tmp_path: Path) -> None:
    tensors = {
        "scalar": np.array(b"hello", dtype=object),
        "vector": np.array([b"", b"a", b"\x00\xff", b"x" * 300], dtype=object),
        "matrix": np.array([["ab", "c"], ["", "\u00e9"]]),
        "empty": np.empty((0, 3), dtype=object),
    }
    ckpt = TFCheckpoint(write_tf_checkpoint(tmp_path / "model", tensors))
    assert ckpt.info("scalar").dtype == "string"
    scalar = ckpt.read("scalar")
    assert scalar.shape == () and scalar.item() == b"hello"
    assert ckpt.read("vector").tolist() == [b"", b"a", b"\x00\xff", b"x" * 300]
    assert ckpt.read("matrix").tolist() == [[b"ab", b"c"], [b"", "\u00e9".encode()]]
    assert ckpt.read("empty").shape == (0, 3)


def test_string_tensor_layout_follows_tensorflow(tmp_path: Path) -> None:
    """TF: varint64 lengths, masked CRC of the lengths as uint32s, then the bytes;
    the entry CRC runs over the uint32 lengths, the length checksum and the bytes."""
    values = [b"ab", b"", b"x" * 200]
    lengths = struct.pack("<3I", 2, 0, 200)
    checksum = struct.pack("<I", _mask(google_crc32c.value(lengths)))
    body = b"ab" + b"x" * 200
    prefix = write_tf_checkpoint(tmp_path / "model", {"s": np.array(values, dtype=object)})
    assert _data(prefix).read_bytes() == bytes([2, 0, 0xC8, 0x01]) + checksum + body
    ckpt = TFCheckpoint(prefix)
    assert ckpt.info("s").crc32c == _mask(google_crc32c.value(lengths + checksum + body))
    assert ckpt.read("s").tolist() == values


@pytest.mark.parametrize(("block_size", "min_blocks"), [(256, 10), (tf_writer.TF_BLOCK_SIZE, 1)])
def test_many_tensors_across_blocks(tmp_path: Path, block_size: int, min_blocks: int) -> None:
    tensors = {f"layer_{i:03d}/kernel": np.full((i % 4, 2), i, np.float32) for i in range(150)}
    prefix = write_tf_checkpoint(tmp_path / "model", tensors, block_size=block_size)
    assert len(tf_table.data_block_handles(_index(prefix).read_bytes())) >= min_blocks
    ckpt = TFCheckpoint(prefix)
    assert ckpt.keys() == sorted(tensors)
    for name, array in ckpt.read_all().items():
        np.testing.assert_array_equal(array, tensors[name])


# --------------------------------------------------------------------------- paths


@pytest.fixture
def small(tmp_path: Path) -> Path:
    tensors = {
        "a": np.arange(4, dtype=np.float32),
        "b": np.ones((2, 3), np.int64),
        "c": np.array([b"str"], dtype=object),
    }
    return write_tf_checkpoint(tmp_path / "ckpt" / "model", tensors)


def test_path_forms_of_a_written_checkpoint(small: Path) -> None:
    for form in (small.parent, small, small.parent / "model.index"):
        assert resolve_checkpoint_prefix(form) == small
    (small.parent / "checkpoint").unlink()
    assert resolve_checkpoint_prefix(small.parent) == small
    assert TFCheckpoint(small.parent).prefix == small


def test_state_file_with_absolute_and_escaped_paths(tmp_path: Path) -> None:
    prefix = write_tf_checkpoint(tmp_path / "d" / 'we"ird \u00e9', {"x": np.zeros(1, np.float32)})
    assert TFCheckpoint(tmp_path / "d").prefix == prefix
    escaped = f"{tmp_path}/d/we\\\"ird \\303\\251"  # TF escapes quotes and non-ASCII bytes (octal)
    (tmp_path / "d" / "checkpoint").write_text(f'model_checkpoint_path: "{escaped}"\n')
    assert resolve_checkpoint_prefix(tmp_path / "d") == prefix


def test_missing_prefix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing.*not a checkpoint directory"):
        TFCheckpoint(tmp_path / "nothing")


def test_missing_index(small: Path) -> None:
    _index(small).unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint: names checkpoint 'model', but .*model\.index"):
        TFCheckpoint(small.parent)
    with pytest.raises(CheckpointError, match=r"model: not a checkpoint .*no model\.index"):
        TFCheckpoint(small)


def test_state_file_pointing_at_missing_prefix(small: Path) -> None:
    (small.parent / "checkpoint").write_text('model_checkpoint_path: "gone"\n')
    with pytest.raises(CheckpointError, match=r"ckpt/checkpoint: names checkpoint 'gone'.*gone\.index"):
        TFCheckpoint(small.parent)


def test_state_file_without_a_path(small: Path) -> None:
    (small.parent / "checkpoint").write_text("garbage\n")
    with pytest.raises(CheckpointError, match="checkpoint: no model_checkpoint_path"):
        TFCheckpoint(small.parent)


def test_directory_without_index(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"{tmp_path}: directory has no 'checkpoint' .* 0 \\*.index"):
        TFCheckpoint(tmp_path)


def test_directory_with_two_indexes_and_no_state_file(small: Path) -> None:
    write_tf_checkpoint(small.parent / "other", {"x": np.zeros(1, np.float32)})
    (small.parent / "checkpoint").unlink()
    with pytest.raises(CheckpointError, match=r"2 \*\.index files"):
        TFCheckpoint(small.parent)


# --------------------------------------------------------------------------- corrupt files


def test_missing_data_shard(small: Path) -> None:
    _data(small).unlink()
    with pytest.raises(CheckpointError, match=r"model\.data-00000-of-00001: missing data shard 0 of 1"):
        TFCheckpoint(small)


@pytest.mark.parametrize("cut", ["half", "minus1", "empty"])
def test_truncated_index(small: Path, cut: str) -> None:
    raw = _index(small).read_bytes()
    _index(small).write_bytes(raw[: {"half": len(raw) // 2, "minus1": len(raw) - 1, "empty": 0}[cut]])
    with pytest.raises(CheckpointError, match=r"model\.index: .*(magic|too short)"):
        TFCheckpoint(small)


def test_wrong_magic(small: Path) -> None:
    _flip(_index(small), len(_index(small).read_bytes()) - 1)
    with pytest.raises(CheckpointError, match=r"model\.index: bad table magic number"):
        TFCheckpoint(small)


def test_corrupt_block_byte(small: Path) -> None:
    _flip(_index(small), 12)
    with pytest.raises(CheckpointError, match=r"model\.index: block at offset 0: CRC32C mismatch"):
        TFCheckpoint(small)


def test_block_handle_past_end(small: Path) -> None:
    raw = _index(small).read_bytes()
    past_end = tf_wire.varint(len(raw)) + tf_wire.varint(1)
    _index(small).write_bytes(raw[:-48] + (past_end * 2).ljust(40, b"\0") + raw[-8:])
    with pytest.raises(CheckpointError, match=r"model\.index: block handle .* past the end"):
        TFCheckpoint(small)


def test_compressed_block_is_refused(small: Path) -> None:
    raw = bytearray(_index(small).read_bytes())
    [(offset, size)] = tf_table.data_block_handles(bytes(raw))
    raw[offset + size : offset + size + 5] = tf_table.crc_trailer(bytes(raw[offset : offset + size]), 1)
    _index(small).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.index: block at offset 0 is compressed \(type 1\)"):
        TFCheckpoint(small)


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_corrupt_tensor_byte(small: Path, name: str) -> None:
    ckpt = TFCheckpoint(small)
    info = ckpt.info(name)
    _flip(_data(small), info.offset + info.size - 1)
    message = rf"model\.data-00000-of-00001: tensor '{name}': .*(CRC32C|checksum)"
    with pytest.raises(CheckpointError, match=message):
        ckpt.read(name)
    for other in set(ckpt.keys()) - {name}:
        ckpt.read(other)


def test_truncated_data_file(small: Path) -> None:
    _data(small).write_bytes(_data(small).read_bytes()[:-1])
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001: tensor 'c': bytes \[\d+, \d+\) run"):
        TFCheckpoint(small)


def test_absurd_declared_size_fails_without_allocating(tmp_path: Path) -> None:
    entry = tf_writer.encode_entry(1, (2**58,), 0, 0, 2**60, 0)
    prefix = _write_entries(tmp_path / "model", {"huge": entry}, b"\0" * 16)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=rf"tensor 'huge': bytes \[0, {2**60}\) run past"):
            TFCheckpoint(prefix)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def _entry_with_shape_field(shape_proto: bytes) -> bytes:
    return b"\x08\x01" + tf_writer.message(2, shape_proto)


BAD_ENTRIES = {
    "size_mismatch": (tf_writer.encode_entry(1, (3,), 0, 0, 8, 0), r"declared size 8 bytes does not match shape"),
    "sliced": (tf_writer.encode_entry(1, (1,), 0, 0, 4, 0) + b"\x3a\x00", "partitioned"),
    "shard": (tf_writer.encode_entry(1, (1,), 1, 0, 4, 0), r"shard id 1 out of range \[0, 1\)"),
    "negative_shard": (tf_writer.encode_entry(1, (1,), -1, 0, 4, 0), "shard id -1"),
    "negative_dim": (tf_writer.encode_entry(1, (-1,), 0, 0, 4, 0), "negative dimension"),
    "negative_offset": (tf_writer.encode_entry(1, (1,), 0, -4, 4, 0), "negative offset -4"),
    "unknown_rank": (_entry_with_shape_field(b"\x18\x01"), "unknown rank"),
    "truncated_varint": (b"\x08\xff", "truncated varint"),
    "long_varint": (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    "length_past_end": (b"\x12\x05\x12", "runs past the end"),
    "group_wire_type": (b"\x0b", "wire type 3"),
    "wrong_wire_type": (b"\x0d\x01\x00\x00\x00", "field 1 has wire type 5"),
    "string_too_small": (tf_writer.encode_entry(7, (2,), 0, 0, 5, 0), "too small for string shape"),
}


@pytest.mark.parametrize("case", BAD_ENTRIES)
def test_bad_entries_are_refused(tmp_path: Path, case: str) -> None:
    entry, message = BAD_ENTRIES[case]
    prefix = _write_entries(tmp_path / "model", {"bad": entry}, b"\0" * 64)
    with pytest.raises(CheckpointError, match=rf"model\.index: tensor 'bad': .*{message}"):
        TFCheckpoint(prefix)


def test_unknown_dtype_fails_only_for_that_tensor(tmp_path: Path) -> None:
    good = np.float32(1.5).tobytes()
    entries = {
        "bad": tf_writer.encode_entry(21, (1,), 0, 0, 4, 0),
        "good": tf_writer.encode_entry(1, (), 0, 0, 4, _mask(google_crc32c.value(good))),
    }
    ckpt = TFCheckpoint(_write_entries(tmp_path / "model", entries, good))
    assert ckpt.keys() == ["bad", "good"] and ckpt.read("good") == 1.5
    for method in (ckpt.info, ckpt.read):
        with pytest.raises(CheckpointError, match=r"model\.index: tensor 'bad' has unsupported TF dtype 21"):
            method("bad")


def test_unknown_tensor_name(small: Path) -> None:
    with pytest.raises(CheckpointError, match=r"model\.index: no tensor named 'nope'"):
        TFCheckpoint(small).read("nope")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (tf_writer.scalar(1, 1) + tf_writer.scalar(2, 1), "big-endian"),
        (tf_writer.scalar(1, 0), "invalid number of data shards 0"),
        (tf_writer.scalar(1, 1) + tf_writer.message(3, tf_writer.scalar(2, 2)), "needs bundle reader version >= 2"),
    ],
)
def test_bad_headers_are_refused(tmp_path: Path, header: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=rf"model\.index: {message}"):
        TFCheckpoint(_write_entries(tmp_path / "model", {}, header=header))


def test_missing_header_entry(tmp_path: Path) -> None:
    _index(tmp_path / "model").write_bytes(tf_writer.build_table([(b"x", tf_writer.encode_entry(1, (), 0, 0, 4, 0))]))
    with pytest.raises(CheckpointError, match=r"model\.index: no bundle header entry"):
        TFCheckpoint(tmp_path / "model")


# --------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def fuzz_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """A small multi-block checkpoint, a spare prefix to write mutated indexes to, and all block handles."""
    rng = np.random.default_rng(1)
    shapes = {f"t{i:02d}/{'w' * (i % 5)}": (i % 3, 2) for i in range(40)}
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    tensors |= {"names": np.array([b"p", b"qq"], dtype=object), "step": np.int64(7)}
    folder = tmp_path_factory.mktemp("fuzz")
    table = _index(write_tf_checkpoint(folder / "model", tensors, block_size=200)).read_bytes()
    _data(folder / "mutant").symlink_to(_data(folder / "model"))
    metaindex, pos = tf_table.read_handle(table[-48:], 0, 40)
    index, _ = tf_table.read_handle(table[-48:], pos, 40)
    return folder / "mutant", table, [metaindex, index, *tf_table.data_block_handles(table)]


def _open_and_read_everything(prefix: Path, table: bytes) -> None:
    """The property: whatever the index holds, only CheckpointError comes out."""
    _index(prefix).write_bytes(table)
    try:
        TFCheckpoint(prefix).read_all()
    except CheckpointError:
        pass


@settings(max_examples=120, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=6),
    reseal=st.booleans(),
    cut=st.none() | st.integers(0, 2**20),
)
def test_mutated_index_raises_only_checkpoint_error(fuzz_case, edits, reseal, cut) -> None:
    prefix, table, handles = fuzz_case
    mutated = bytearray(table)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    if reseal:  # recompute block CRCs so the edits reach the block and protobuf parsers
        for offset, size in handles:
            end = offset + size
            mutated[end : end + 5] = tf_table.crc_trailer(bytes(mutated[offset:end]), mutated[end])
    if cut is not None:
        del mutated[cut % len(mutated) :]
    _open_and_read_everything(prefix, bytes(mutated))


@settings(max_examples=80, deadline=None)
@given(noise=st.binary(max_size=300), with_magic=st.booleans())
def test_random_index_bytes_raise_only_checkpoint_error(fuzz_case, noise, with_magic) -> None:
    prefix, table, _ = fuzz_case
    _open_and_read_everything(prefix, noise + (table[-8:] if with_magic else b""))


@settings(max_examples=100, deadline=None)
@given(value=st.binary(max_size=48), name=st.binary(min_size=1, max_size=8))
def test_random_entry_values_raise_only_checkpoint_error(fuzz_case, value, name) -> None:
    prefix, _, _ = fuzz_case
    _open_and_read_everything(prefix, tf_writer.build_table([(b"", tf_writer.encode_header()), (name, value)]))
