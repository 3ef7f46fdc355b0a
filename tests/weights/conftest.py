"""Fixtures for the weights zoo's download tests: a local mirror and the release files it serves
(:mod:`mirror`)."""

from __future__ import annotations

import pytest
from mirror import MirrorServer, Release, effdet_release, official_archive


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
