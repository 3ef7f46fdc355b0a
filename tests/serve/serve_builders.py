"""Helpers of the serving tests: test images, apps under a TestClient, a real uvicorn server on
127.0.0.1 in a thread, and a gate that holds the model's batches."""

import contextlib
import io
import threading
import time
from collections.abc import Iterator

import numpy as np
from PIL import Image

from efficientdet import Detector


def jpeg(height: int = 120, width: int = 160, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def wait_ready(client, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.05)


@contextlib.contextmanager
def serving(detector: Detector, ready: bool = True, **options) -> Iterator:
    """A TestClient on ``create_app(detector, **options)`` (lifespan run), ready unless ``ready=False``."""
    from fastapi.testclient import TestClient

    from efficientdet.serve.app import create_app

    with TestClient(create_app(detector, **options), raise_server_exceptions=False) as client:
        if ready:
            wait_ready(client)
        yield client


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1, a free port, in a thread; yields its base URL."""
    from efficientdet.serve.server import server

    uv = server(app, "127.0.0.1", 0, graceful_timeout=5, log_level="warning")
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (uv.started and uv.servers):
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(30)


class Gate:
    """Holds the detector's batches until opened: makes queues fill and requests time out on cue."""

    def __init__(self, detector: Detector):
        self.open, self.entered = threading.Event(), threading.Event()
        self.fail = False
        self._predict = detector.predict
        self.open.set()

    def predict(self, *args, **kwargs):
        self.entered.set()
        assert self.open.wait(60), "the gate was never opened"
        if self.fail:
            raise RuntimeError("the model broke")
        return self._predict(*args, **kwargs)
