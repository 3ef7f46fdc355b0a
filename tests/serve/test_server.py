"""The server on real sockets (efficientdet.serve.server): a slow upload times out without holding a
worker, and ``efficientdet serve`` drains the requests in flight when it is told to stop."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from serve_builders import jpeg, live_server

httpx = pytest.importorskip("httpx", reason="the test extra's httpx is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from efficientdet.serve.app import create_app
from efficientdet.serve.limits import Limits
from efficientdet.weights import save_safetensors


def wait_ready(url: str, timeout: float = 180.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process is None or process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the server did not get ready"
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def queue_depth(url: str) -> float:
    line = next(x for x in httpx.get(url + "/metrics").text.splitlines() if x.startswith("efficientdet_queue_depth "))
    return float(line.split()[1])


def test_a_slow_upload_times_out_without_holding_a_worker(detector):
    app = create_app(detector, max_batch_size=1, limits=Limits(upload_timeout=1.0))
    with live_server(app) as url:
        wait_ready(url)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 100000\r\n\r\n\xff\xd8\xff\xe0")  # ... and nothing more
            started = time.monotonic()
            served = httpx.post(url + "/v1/detect", content=jpeg(), timeout=30)  # meanwhile, served
            assert served.status_code == 200
            slow.settimeout(15)
            answer = b""
            while chunk := slow.recv(4096):  # the server answers, then closes the connection
                answer += chunk
            assert 0.9 < time.monotonic() - started < 10
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and body == b'{"error":"the upload did not finish within 1 s"}'
        metrics = httpx.get(url + "/metrics").text
        assert 'efficientdet_errors_total{kind="upload_timeout"} 1.0' in metrics
        assert queue_depth(url) == 0 and httpx.get(url + "/readyz").status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_the_requests_in_flight(model, tmp_path):
    """Four requests wait in one batch (an 8 s batch timeout); SIGTERM comes while they wait: all
    four are answered, then the process ends."""
    weights = save_safetensors(model, tmp_path / "lite0.safetensors")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "efficientdet.cli", "serve", "--model", "efficientdet-lite0", "--weights",
               str(weights), "--image-size", "128", "--port", str(port), "--threads", "1",
               "--max-batch-size", "8", "--batch-timeout-ms", "8000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    try:
        wait_ready(url, process=process)
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(httpx.post(url + "/v1/detect", content=jpeg(),
                                                                             timeout=60)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while queue_depth(url) < 4:
            assert time.monotonic() < deadline, "the requests were not queued"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert [a.status_code for a in answers] == [200] * 4
        assert {a.json()["batch_size"] for a in answers} == {4}
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode in (0, -signal.SIGTERM)
    assert "ERROR" not in err and "Shutting down" in err, err
