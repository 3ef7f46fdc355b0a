"""Shared set-up of the serving tests: a small detector (Lite0 at 128², random weights whose scores
spread) and a gated copy of it (serve_builders.py). The serve extra is imported where used: each
test module skips without it."""

import pytest
import torch
from serve_builders import Gate

from efficientdet import Detector, create_model
from efficientdet.benchmark import spread_random_weights


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread (see tests/robustness/conftest.py: two stall at every barrier on a shared
    2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def model():
    torch.manual_seed(0)
    return spread_random_weights(create_model("efficientdet-lite0", image_size=128).eval())


@pytest.fixture(scope="session")
def detector(model) -> Detector:
    return Detector.from_model(model)


@pytest.fixture
def gated(model):
    """A fresh detector whose ``predict`` waits on a :class:`Gate` (returned beside it)."""
    detector = Detector.from_model(model)
    gate = Gate(detector)
    detector.predict = gate.predict
    yield detector, gate
    gate.open.set()
