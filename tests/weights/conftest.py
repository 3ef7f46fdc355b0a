"""Fixtures for the weights zoo's download tests: a local mirror, :mod:`mirror`."""

from __future__ import annotations

import pytest
from mirror import MirrorServer


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

