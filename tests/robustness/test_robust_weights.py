"""Weights end to end: a damaged, foreign or hostile weights file is refused with one line naming
it and the problem, by ``create_model(weights=…)`` and by every command that loads weights
(``convert``, ``predict``, ``eval``, ``export``, ``train --weights``), without running code from
it or allocating what its header claims.

Each case damages a copy of a good file: our safetensors, an effdet-style ``.pth`` or an
official-layout TF checkpoint of the same random Lite0 (written through our name map).
"""

import contextlib
import os
import pickle
import resource
import shutil
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from mirror import official_tensors
from PIL import Image
from robust_builders import (
    assert_user_error,
    coco_record,
    picture,
    run_cli,
    run_cli_subprocess,
    write_coco_dataset,
)
from safetensors.torch import save_file

from efficientdet import create_model
from efficientdet.weights import save_safetensors
from efficientdet.weights import tf_checkpoint as tfc
from efficientdet.weights.tf_checkpoint import writer as tf_writer

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hostile pickle's

STEM = "efficientnet-lite0/stem/conv2d/kernel"  # the first tensor the loader reads


# ---------------------------------------------------------------- good files to damage


@pytest.fixture(scope="module")
def official(lite0_weights, tmp_path_factory) -> Path:
    """The suite's Lite0 (4 classes) as an official-layout TF checkpoint directory, checked to load."""
    model = create_model("efficientdet-lite0", weights=lite0_weights)
    state = model.state_dict()
    tensors = official_tensors(model)
    folder = tmp_path_factory.mktemp("official") / "efficientdet-lite0"
    tf_writer.write_tf_checkpoint(folder / "model", tensors)
    loaded = create_model("efficientdet-lite0", num_classes=4, weights=folder)
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())  # the control: it is good
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class RunsCode:
    """A pickle that runs a shell command when loaded: it must be refused, never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


# ---------------------------------------------------------------- the cases

# Each maker writes the bad file under tmp_path (from the good safetensors or TF checkpoint) and
# returns it with the variant to load it into, always with 4 classes.
Maker = Callable[[Path, Path, Path], tuple[Path, str]]


def truncated_safetensors(tmp, good, _):
    path = tmp / "truncated.safetensors"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path, "efficientdet-lite0"


def absurd_safetensors_header(tmp, good, _):
    """The 8-byte header length claims 2**60 bytes: safetensors refuses before allocating it."""
    path = tmp / "header.safetensors"
    path.write_bytes((2**60).to_bytes(8, "little") + good.read_bytes()[8:1000])
    return path, "efficientdet-lite0"


def plain_safetensors(tmp, good, _):
    path = tmp / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    return path, "efficientdet-lite0"


def other_variant_safetensors(tmp, _, __):
    path = save_safetensors(create_model("efficientdet-lite1", num_classes=4), tmp / "lite1.safetensors")
    return path, "efficientdet-lite0"


def other_class_count_safetensors(tmp, _, __):
    path = save_safetensors(create_model("efficientdet-lite0", num_classes=20), tmp / "lite0-20.safetensors")
    return path, "efficientdet-lite0"


def code_running_pth(tmp, _, __):
    path = tmp / "evil.pth"
    path.write_bytes(pickle.dumps({"backbone.conv_stem.weight": RunsCode(tmp / "pwned")}))
    return path, "efficientdet-lite0"


def list_pth(tmp, _, __):
    path = tmp / "list.pth"
    torch.save([torch.zeros(1)], path)
    return path, "efficientdet-lite0"


def text_pth(tmp, _, __):
    path = tmp / "notes.pth"
    path.write_text("not a checkpoint")
    return path, "efficientdet-lite0"


def truncated_tf_index(tmp, _, official):
    folder = copy_of(official, tmp)
    truncate(folder / "model.index", 0.5)
    return folder, "efficientdet-lite0"


def truncated_tf_shard(tmp, _, official):
    folder = copy_of(official, tmp)
    truncate(folder / "model.data-00000-of-00001", 0.5)
    return folder, "efficientdet-lite0"


def corrupt_tf_shard(tmp, _, official):
    folder = copy_of(official, tmp)
    flip_last_byte(folder / "model.data-00000-of-00001")
    return folder, "efficientdet-lite0"


def absurd_tf_size(tmp, _, __):
    """The index declares a 1 TiB stem kernel behind a 16-byte data file."""
    folder = tmp / "absurd"
    write_index(folder, {STEM: tf_writer.encode_entry(1, (2**38,), 0, 0, 2**40, 0)}, data_size=16)
    return folder, "efficientdet-lite0"


def tf_of_other_variant(tmp, _, official):
    return copy_of(official, tmp), "efficientdet-lite1"


def tf_without_index(tmp, _, official):
    folder = copy_of(official, tmp)
    (folder / "model.index").unlink()
    (folder / "checkpoint").unlink()
    return folder, "efficientdet-lite0"


def missing_file(tmp, _, __):
    return tmp / "nowhere.pth", "efficientdet-lite0"


def unknown_format(tmp, _, __):
    path = tmp / "weights.npz"
    np.savez(path, x=np.zeros(2))
    return path, "efficientdet-lite0"


def write_index(folder: Path, entries: dict[str, bytes], data_size: int, sparse: bool = False) -> None:
    """A checkpoint of hand-made index entries; a sparse data file has the size but no blocks."""
    folder.mkdir(parents=True)
    items = [(b"", tf_writer.encode_header())] + [(name.encode(), entry) for name, entry in sorted(entries.items())]
    (folder / "model.index").write_bytes(tf_writer.build_table(items))
    with open(folder / "model.data-00000-of-00001", "wb") as f:
        f.truncate(data_size) if sparse else f.write(b"\0" * data_size)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model"\n')


# case → (maker, the command that loads it, what the error line must hold: {path} is the file)
CASES: dict[str, tuple[Maker, str, list[str]]] = {
    "truncated-safetensors": (truncated_safetensors, "predict", ["{path}: not a readable safetensors file"]),
    "safetensors-header-absurd": (absurd_safetensors_header, "eval", ["{path}: not a readable safetensors file"]),
    "safetensors-without-metadata": (plain_safetensors, "export", ["{path}: no efficientdet metadata"]),
    "safetensors-of-other-variant": (other_variant_safetensors, "train",
                                     ["{path}: holds efficientdet-lite1 with 4 classes, the model is "
                                      "efficientdet-lite0 with 4 classes"]),
    "safetensors-of-other-class-count": (other_class_count_safetensors, "convert",
                                         ["{path}: holds efficientdet-lite0 with 20 classes, the model is "
                                          "efficientdet-lite0 with 4 classes"]),
    "pth-whose-pickle-runs-code": (code_running_pth, "convert",
                                   ["{path}: not a plain state dict: loading its pickle would need code"]),
    "pth-not-a-state-dict": (list_pth, "predict", ["{path}: not a state dict (got a list)"]),
    "pth-text": (text_pth, "eval", ["{path}: not a torch file"]),
    "tf-index-truncated": (truncated_tf_index, "convert", ["{path}/model.index: ", "truncated"]),
    "tf-shard-truncated": (truncated_tf_shard, "export",
                           ["{path}/model.data-00000-of-00001: tensor ", "run past the end of the file"]),
    "tf-shard-corrupt": (corrupt_tf_shard, "train", ["{path}/model.data-00000-of-00001: tensor ",
                                                     "CRC32C mismatch"]),
    "tf-declared-size-absurd": (absurd_tf_size, "convert",
                                [f"{{path}}/model.data-00000-of-00001: tensor '{STEM}': bytes [0, {2**40}) run "
                                 "past the end of the file (16 bytes; truncated?)"]),
    "tf-of-other-variant": (tf_of_other_variant, "predict",
                            ["{path}/model: missing tensor 'efficientnet-lite1/"]),
    "tf-directory-without-index": (tf_without_index, "eval",
                                   ["{path}: directory has no 'checkpoint' state file and 0 *.index files"]),
    "weights-file-missing": (missing_file, "export", ["{path}: no such file or directory"]),
    "weights-format-unknown": (unknown_format, "train", ["{path}: unknown weights format"]),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two images with a box each, 4 classes: what ``eval`` and ``train --weights`` read first."""
    root = tmp_path_factory.mktemp("weights-data")
    for seed in range(2):
        Image.fromarray(picture(seed=seed)).save(root / f"{seed}.png")
    record = coco_record({"0.png": (72, 48), "1.png": (72, 48)})
    return write_coco_dataset(root, root, record)


def command_line(command: str, path: Path, model: str, dataset: Path, tmp: Path) -> list:
    """``command`` loading weights ``path`` into ``model`` with the suite's inputs."""
    model_args = ["--model", model, "--image-size", "128"]
    return {
        "convert": ["convert", path, "--model", model, "--num-classes", "4", "--out", tmp / "out.safetensors"],
        "predict": ["predict", *model_args, "--weights", path, dataset.parent / "0.png", "--out", tmp / "pred",
                    "--workers", "0", "--quiet"],
        "eval": ["eval", *model_args, "--weights", path, "--data", dataset, "--workers", "0"],
        "export": ["export", *model_args, "--weights", path, "--format", "onnx", "--out", tmp / "m.onnx"],
        "train": ["train", *model_args, "--weights", path, "--data", dataset, "--out", tmp / "run",
                  "--workers", "0", "--epochs", "1"],
    }[command]


@pytest.mark.parametrize("case", CASES)
def test_bad_weights_are_refused_by_create_model_and_the_cli(case, lite0_weights, official, dataset, tmp_path,
                                                             capsys):
    maker, command, needles = CASES[case]
    path, model = maker(tmp_path, lite0_weights, official)
    expected = [n.format(path=path) for n in needles]
    with pytest.raises(ValueError) as error:  # WeightsError and CheckpointError are ValueErrors
        create_model(model, num_classes=4, weights=path)
    assert all(n in str(error.value) for n in expected), str(error.value)
    result = run_cli(capsys, *command_line(command, path, model, dataset, tmp_path))
    assert_user_error(result, command, *expected)
    assert not (tmp_path / "pwned").exists()  # the hostile pickle never ran
    assert not {"out.safetensors", "m.onnx"} & {p.name for p in tmp_path.iterdir()}  # nothing written


def test_absurd_declared_size_is_refused_without_allocating_it(tmp_path):
    """Peak Python allocation while refusing the 1 TiB tensor stays far below its size."""
    path, model = absurd_tf_size(tmp_path, None, None)
    skeleton = create_model(model, num_classes=4)  # built first: only the loading is measured
    from efficientdet.weights import load_weights

    tracemalloc.start()
    try:
        with pytest.raises(tfc.CheckpointError, match="run past the end of the file"):
            load_weights(skeleton, path)
        assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
    finally:
        tracemalloc.stop()


@contextlib.contextmanager
def address_space_limit(headroom: int):
    """This process may map only ``headroom`` more bytes: an allocation of what a hostile header
    declares fails at once with MemoryError instead of paging in (whatever the overcommit policy)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_absurd_declared_size_within_a_sparse_shard_is_refused_before_reading(tmp_path):
    folder = tmp_path / "sparse"
    write_index(folder, {STEM: tf_writer.encode_entry(1, (2**38,), 0, 0, 2**40, 0)}, data_size=2**40, sparse=True)
    skeleton = create_model("efficientdet-lite0", num_classes=4)
    from efficientdet.weights import load_weights

    with address_space_limit(4 * 2**30), pytest.raises(ValueError, match=rf"{STEM}.*\[32, 3, 3, 3\]"):
        load_weights(skeleton, folder)


def test_truncated_checkpoint_is_refused_in_a_real_process(official, tmp_path):
    """The user's view: ``python -m efficientdet.cli convert``, exit 2, one line, no traceback."""
    folder = copy_of(official, tmp_path)
    truncate(folder / "model.data-00000-of-00001", 0.5)
    result = run_cli_subprocess("convert", folder, "--num-classes", "4", "--out", tmp_path / "x.safetensors",
                                cwd=tmp_path)
    assert_user_error(result, "convert", f"{folder}/model.data-00000-of-00001: tensor ", "run past the end")
    assert not (tmp_path / "x.safetensors").exists()


def test_corrupt_onnx_file_is_refused_by_the_onnxruntime_backend(dataset, tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07 these bytes are no ONNX model")
    result = run_cli(capsys, "predict", "--backend", "onnxruntime", "--weights", onnx, dataset.parent / "0.png",
                     "--out", tmp_path / "out", "--quiet")
    assert_user_error(result, "predict", f"{onnx}: not a readable ONNX file")
