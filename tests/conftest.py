import os
from pathlib import Path

import pytest
import torch
from mirror import MirrorServer, Release, effdet_release, official_archive

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _torch_threads():
    """Commands run in-process set torch's thread count for their process (``--threads``): each
    test gets the suite's back, so that none runs with the setting another left."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_network_weights(tmp_path_factory, monkeypatch):
    """No test reaches a real weights host or the user's cache: each starts with an empty cache of
    its own, offline and without a mirror; the zoo tests set a 127.0.0.1 mirror themselves."""
    monkeypatch.setenv("EFFICIENTDET_HOME", str(tmp_path_factory.mktemp("efficientdet-home")))
    monkeypatch.setenv("EFFICIENTDET_OFFLINE", "1")
    monkeypatch.delenv("EFFICIENTDET_WEIGHTS_MIRROR", raising=False)


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


# ---- the weights zoo's download tests: a mirror on 127.0.0.1 and the release files it serves (mirror.py) ----

@pytest.fixture
def mirror():
    """A :class:`~mirror.MirrorServer` with no files yet, stopped after the test."""
    with MirrorServer() as server:
        yield server


@pytest.fixture
def mirror_env(mirror, monkeypatch):
    """``mirror``, with ``EFFICIENTDET_WEIGHTS_MIRROR`` pointing at it for the test."""
    monkeypatch.setenv("EFFICIENTDET_WEIGHTS_MIRROR", mirror.base_url)
    return mirror


@pytest.fixture(scope="session")
def official_d0_archive(official_d0) -> bytes:
    """``efficientdet-d0.tar.gz`` of the shared official-format D0 fixture (skips without it)."""
    return official_archive(official_d0)


@pytest.fixture(scope="session")
def effdet_d0_release() -> Release:
    """effdet's ``tf_efficientdet_d0_34-<sha8>.pth`` (skips without the effdet package)."""
    pytest.importorskip("effdet", reason="effdet writes the reference .pth (test extra)")
    return effdet_release()
