"""remap_state, the one key and shape check: both ways, ``ignore`` on both sides, lazy sources."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from efficientdet.weights.errors import CheckpointError, WeightsError
from efficientdet.weights.remap import remap_state

EXPECTED = {"conv.weight": torch.zeros(4, 3), "head.bias": torch.zeros(5), "bn.num_batches_tracked": torch.tensor(0)}


def test_names_map_our_keys_to_the_source_and_dtypes_follow_the_model():
    source = {"c.w": torch.ones(4, 3, dtype=torch.float16), "h.b": torch.ones(5),
              "bn.num_batches_tracked": torch.tensor(3)}
    state = remap_state(source, EXPECTED, "f.pth", {"conv.weight": "c.w", "head.bias": "h.b"})
    assert set(state) == {"conv.weight", "head.bias"} and state["conv.weight"].dtype == torch.float32


def test_errors_name_the_file_the_tensor_and_both_shapes():
    shapes = r"f\.pth: tensor 'head\.bias' has shape \[7\], the model's head\.bias needs \[5\]"
    with pytest.raises(WeightsError, match=shapes):
        remap_state({"conv.weight": torch.ones(4, 3), "head.bias": torch.ones(7)}, EXPECTED, "f.pth")
    with pytest.raises(WeightsError, match=r"f\.pth: missing tensor 'head\.bias' \(for the model's head\.bias\)"):
        remap_state({"conv.weight": torch.ones(4, 3)}, EXPECTED, "f.pth")
    with pytest.raises(WeightsError, match=r"f\.pth: 1 tensor\(s\) the model has no place for, e\.g\. \['extra'\]"):
        remap_state({"conv.weight": torch.ones(4, 3), "head.bias": torch.ones(5), "extra": torch.ones(1)},
                    EXPECTED, "f.pth")
    with pytest.raises(WeightsError, match=r"f\.pth: no source name for model tensor\(s\) head\.bias"):
        remap_state({"c.w": torch.ones(4, 3)}, EXPECTED, "f.pth", {"conv.weight": "c.w"})


def test_ignore_leaves_out_model_tensors_and_source_tensors():
    """A class head for another class count: neither its shape nor its absence is an error, and
    it is not returned (the model keeps its fresh one); a source-only prefix may go unused."""
    source = {"conv.weight": torch.ones(4, 3), "head.bias": torch.ones(9), "classifier.weight": torch.ones(2)}
    state = remap_state(source, EXPECTED, "f.pth", ignore=("head.", "classifier."))
    assert set(state) == {"conv.weight"}
    del source["head.bias"]
    assert set(remap_state(source, EXPECTED, "f.pth", ignore=("head.", "classifier."))) == {"conv.weight"}
    with pytest.raises(WeightsError, match="no place for.*classifier.weight"):
        remap_state(source, EXPECTED, "f.pth", ignore=("head.",))


class Declared(Mapping):
    """A source that declares shapes and must not be read."""

    def __init__(self, shapes):
        self.shapes = shapes

    def __getitem__(self, name):
        raise AssertionError(f"{name} was read")

    def __contains__(self, name):
        return name in self.shapes

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self):
        return len(self.shapes)

    def declared_shape(self, name):
        return self.shapes[name]


def test_a_declared_shape_is_refused_before_reading():
    source = Declared({"conv.weight": (2**40,), "head.bias": (5,)})
    with pytest.raises(WeightsError, match=r"'conv\.weight' has shape \[1099511627776\], .* needs \[4, 3\]"):
        remap_state(source, EXPECTED, "f")


def test_checkpoint_errors_are_weights_errors():
    assert issubclass(CheckpointError, WeightsError) and issubclass(WeightsError, ValueError)
