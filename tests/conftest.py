import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def fixtures_root() -> Path:
    """``../shared/fixtures`` beside the checkout (CI), or ``$EFFICIENTDET_FIXTURES``."""
    env = os.environ.get("EFFICIENTDET_FIXTURES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(scope="session")
def official_d0() -> Path:
    path = fixtures_root() / "official-tf" / "efficientdet-d0"
    if not (path / "reference.npz").is_file():
        pytest.skip(f"official D0 fixture not found at {path} (it ships beside the repo in CI, not in a clone)")
    return path
