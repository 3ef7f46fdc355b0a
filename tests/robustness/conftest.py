"""Shared set-up of the robustness suite: one torch thread, random Lite0 weights for 4 classes."""

from pathlib import Path

import pytest
import torch

from efficientdet import create_model
from efficientdet.weights import save_safetensors


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while these tests run. On a 2-core machine shared with other jobs, two
    OpenMP threads wait at every barrier for the one that is descheduled: a Lite0 forward at 128²
    measured 2.9 s with two threads against 14 ms with one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory) -> Path:
    """``efficientdet-lite0`` with 4 classes (the suite's datasets have 4) as our safetensors."""
    torch.manual_seed(0)
    model = create_model("efficientdet-lite0", num_classes=4, image_size=128)
    return save_safetensors(model, tmp_path_factory.mktemp("weights") / "lite0-4.safetensors")
