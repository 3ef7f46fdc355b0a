"""The HTTP API (efficientdet.serve.app) through a TestClient: every endpoint, every bad input a
4xx JSON ``{"error": ...}`` naming the problem, the server healthy after it and nothing logged at
error level; the queue bound, timeouts, readiness and the API key."""

import io
import logging
import re
import threading
import time

import numpy as np
import pytest
from PIL import Image
from serve_builders import jpeg, serving, wait_ready

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from efficientdet.serve.limits import Limits

MAX_BODY = 200_000
MAX_PIXELS = 100_000  # 160x120 passes, 400x400 does not
LIMITS = Limits(max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS, upload_timeout=5, request_timeout=60)


@pytest.fixture(scope="module")
def client(detector):
    with serving(detector, limits=LIMITS, max_batch_size=2, batch_timeout_ms=5) as client:
        yield client


def metric(client, name: str, **labels) -> float:
    """One sample of ``/metrics`` (0 when absent), read with prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_detect_multipart_and_raw_body_agree_with_the_detector(client, detector):
    image = jpeg()
    multipart = client.post("/v1/detect", files={"image": ("photo.jpg", image, "image/jpeg")})
    raw = client.post("/v1/detect", content=image, headers={"Content-Type": "image/jpeg"})
    assert multipart.status_code == raw.status_code == 200
    body = multipart.json()
    assert body["model"] == "efficientdet-lite0" and body["image"] == {"width": 160, "height": 120}
    assert body["detections"] == raw.json()["detections"] and body["detections"]
    assert set(body["timing_ms"]) == {"upload", "decode", "queue", "inference", "total"}
    assert 1 <= body["batch_size"] <= 2

    expected = detector(np.array(Image.open(io.BytesIO(image))))
    got = body["detections"]
    assert [d["name"] for d in got] == expected["names"]
    assert [d["label"] for d in got] == expected["labels"].tolist()
    np.testing.assert_allclose([d["box"] for d in got], expected["boxes"].numpy(), atol=0.01)
    np.testing.assert_allclose([d["score"] for d in got], expected["scores"].numpy(), atol=1e-4)
    for d in got:  # xyxy within the original image
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120


def test_detect_options_filter_the_detections(client):
    everything = client.post("/v1/detect", content=jpeg()).json()["detections"]
    scores = sorted(d["score"] for d in everything)
    cut = scores[len(scores) // 2]
    above = client.post("/v1/detect", params={"score_threshold": cut}, content=jpeg()).json()["detections"]
    assert above == [d for d in everything if d["score"] >= cut]
    top = client.post("/v1/detect", params={"max_detections": 3}, content=jpeg()).json()["detections"]
    assert top == everything[:3]
    names = sorted({d["name"] for d in everything})[:2]
    chosen = client.post("/v1/detect", params={"classes": ",".join(names)}, content=jpeg()).json()["detections"]
    repeated = client.post("/v1/detect", params=[("classes", n) for n in names], content=jpeg()).json()["detections"]
    assert chosen == repeated == [d for d in everything if d["name"] in names] and chosen


def test_model_health_readiness_page_and_schema(client, detector):
    info = client.get("/v1/model").json()
    assert info["model"] == "efficientdet-lite0" and info["input_size"] == [128, 128]
    assert info["backend"] == "eager" and info["weights"] == "as given" and info["max_batch_size"] == 2
    assert info["classes"][0] == {"id": 1, "name": "person"} and len(info["classes"]) == 90
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200
    assert "https://" not in page.text + client.get("/static/page.js").text  # nothing from a CDN
    schema = client.get("/openapi.json").json()
    detect = schema["paths"]["/v1/detect"]["post"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(detect["requestBody"]["content"])
    assert {p["name"] for p in detect["parameters"]} == {"score_threshold", "max_detections", "classes"}
    assert {"/v1/model", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])


def test_metrics_count_requests_batches_queue_and_errors(client):
    before = metric(client, "efficientdet_requests_total", endpoint="/v1/detect", code="200")
    batches = metric(client, "efficientdet_batch_size_count")
    client.post("/v1/detect", content=jpeg())
    client.post("/v1/detect", content=b"")
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert metric(client, "efficientdet_requests_total", endpoint="/v1/detect", code="200") == before + 1
    assert metric(client, "efficientdet_batch_size_count") == batches + 1
    assert metric(client, "efficientdet_request_seconds_count", endpoint="/v1/detect") >= 2
    assert metric(client, "efficientdet_errors_total", kind="empty_body") >= 1
    assert metric(client, "efficientdet_queue_depth") == 0


def huge_png_header(side: int = 12_000) -> bytes:
    """A PNG whose header claims side×side pixels but holds almost no data."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def photo(height: int, width: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, "PNG")
    return out.getvalue()


BAD = {  # name: (request keyword arguments, status, words the error names)
    "empty body": (dict(content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty body"),
    "not an image": (dict(content=b"these are notes, not pixels", headers={"Content-Type": "image/png"}), 400,
                     "cannot identify image file"),
    "truncated jpeg": (dict(content=jpeg(240, 320)[:20_000], headers={"Content-Type": "image/jpeg"}), 400,
                       "image file is truncated"),
    "over the pixel limit": (dict(content=photo(400, 400)), 413, "over the limit of 100000"),
    "header claims 144 MP": (dict(content=huge_png_header()), 413, "12000x12000"),
    "body over the size limit": (dict(content=b"\xff" * (MAX_BODY + 1), headers={"Content-Type": "image/jpeg"}), 413,
                                 f"over the limit of {MAX_BODY} bytes"),
    "multipart with no file": (dict(data={"note": "no file here"}, files={"other": (None, "text")}), 400,
                               "holds no file"),
    "multipart with two files": (dict(files=[("image", ("a.jpg", jpeg(), "image/jpeg")),
                                              ("image", ("b.jpg", jpeg(), "image/jpeg"))]), 400, "Too many files"),
    "wrong content type": (dict(json={"url": "http://example.com/cat.jpg"}), 415, "'application/json' is not an image"),
    "negative score_threshold": (dict(content=jpeg(), params={"score_threshold": -0.1}), 422,
                                 "score_threshold: Input should be greater than or equal to 0"),
    "non-numeric score_threshold": (dict(content=jpeg(), params={"score_threshold": "high"}), 422,
                                    "score_threshold: Input should be a valid number"),
    "zero max_detections": (dict(content=jpeg(), params={"max_detections": 0}), 422, "max_detections"),
    "unknown class names": (dict(content=jpeg(), params={"classes": "person,unicorn,dragon"}), 422,
                            "unknown class names: dragon, unicorn"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_a_named_4xx_and_the_server_stays_healthy(client, case, caplog):
    kwargs, status, words = BAD[case]
    with caplog.at_level(logging.INFO):
        response = client.post("/v1/detect", **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and words in response.json()["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("refused" in r.getMessage() for r in caplog.records)  # logged, below error level
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    assert client.post("/v1/detect", content=jpeg()).status_code == 200


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/v2/detect").json() == {"error": "Not Found"}
    assert client.get("/v1/detect").status_code == 405 and "error" in client.get("/v1/detect").json()


def test_api_key(detector, caplog):
    with serving(detector, api_key="s3cret", limits=LIMITS) as client:
        with caplog.at_level(logging.INFO):
            missing = client.post("/v1/detect", content=jpeg())
            wrong = client.get("/v1/model", headers={"X-API-Key": "guess"})
            metrics = client.get("/metrics")
        assert missing.status_code == wrong.status_code == metrics.status_code == 401
        assert "missing API key" in missing.json()["error"] and wrong.json() == {"error": "wrong API key"}
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert client.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = client.post("/v1/detect", content=jpeg(), headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        assert client.get("/healthz").status_code == client.get("/readyz").status_code == 200  # probes stay open
        assert client.get("/").status_code == 200  # the page asks for the key itself


def test_not_ready_until_warmed_up(gated):
    detector, gate = gated
    gate.open.clear()
    with serving(detector, ready=False, max_batch_size=2) as client:
        assert gate.entered.wait(60)  # warm-up is running
        assert client.get("/readyz").status_code == 503 and client.get("/readyz").json() == {"error": "warming up"}
        early = client.post("/v1/detect", content=jpeg())
        assert early.status_code == 503 and early.headers["Retry-After"] == "1"
        assert client.get("/healthz").status_code == 200
        gate.open.set()
        wait_ready(client)
        assert client.post("/v1/detect", content=jpeg()).status_code == 200


def post_in_thread(client, results: list, **kwargs) -> threading.Thread:
    def post():
        start = time.perf_counter()
        response = client.post("/v1/detect", content=jpeg(), **kwargs)
        results.append((response, time.perf_counter() - start))

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_burst_beyond_the_queue_gets_503_with_retry_after_and_the_rest_complete(gated, caplog):
    detector, gate = gated
    with serving(detector, max_batch_size=1, batch_timeout_ms=0,
                 limits=Limits(max_queue=2, request_timeout=60)) as client:
        gate.open.clear()
        gate.entered.clear()
        accepted: list = []
        threads = [post_in_thread(client, accepted)]
        assert gate.entered.wait(30)  # the first request's batch is running: the queue is empty again
        threads += [post_in_thread(client, accepted) for _ in range(2)]
        wait_for(lambda: metric(client, "efficientdet_queue_depth") == 2)
        with caplog.at_level(logging.INFO):
            refused = [client.post("/v1/detect", content=jpeg()) for _ in range(3)]
        for response in refused:
            assert response.status_code == 503 and "queue is full" in response.json()["error"]
            assert int(response.headers["Retry-After"]) >= 1
        assert client.get("/readyz").status_code == 200
        gate.open.set()
        for thread in threads:
            thread.join(60)
        assert [r.status_code for r, _ in accepted] == [200, 200, 200]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_request_timeout_is_504_and_the_late_result_is_dropped(gated):
    detector, gate = gated
    with serving(detector, max_batch_size=1, limits=Limits(request_timeout=0.5)) as client:
        gate.open.clear()
        response = client.post("/v1/detect", content=jpeg())
        assert response.status_code == 504 and response.json() == {"error": "no answer within 0.5 s"}
        gate.open.set()
        wait_for(lambda: metric(client, "efficientdet_queue_depth") == 0)
        assert client.post("/v1/detect", content=jpeg()).status_code == 200


def test_a_failing_model_is_a_500_logged_as_an_error(gated, caplog):
    detector, gate = gated
    with serving(detector, max_batch_size=1) as client:
        gate.fail = True
        with caplog.at_level(logging.INFO):
            response = client.post("/v1/detect", content=jpeg())
        assert response.status_code == 500 and response.json() == {"error": "detection failed: the model broke"}
        assert [r for r in caplog.records if r.levelno >= logging.ERROR]  # the server's fault, logged as one
        gate.fail = False
        assert client.post("/v1/detect", content=jpeg()).status_code == 200


@pytest.mark.parametrize("fmt, runtime", [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_an_exported_file_serves_the_models_detections(model, detector, tmp_path, fmt, runtime):
    """``efficientdet serve --backend onnxruntime|openvino --weights FILE``: the file, run by its
    runtime behind the same API, answers with the PyTorch model's detections."""
    pytest.importorskip(runtime)
    from efficientdet import Detector
    from efficientdet.export import SUFFIXES, export_model

    path = export_model(model, tmp_path / f"model{SUFFIXES[fmt]}", fmt)
    exported = Detector.from_onnx(path) if fmt == "onnx" else Detector.from_openvino(path)
    with serving(exported, backend=runtime, limits=LIMITS, max_batch_size=2) as client:
        assert client.get("/v1/model").json()["backend"] == runtime
        got = client.post("/v1/detect", content=jpeg(), headers={"Content-Type": "image/jpeg"}).json()["detections"]
    expected = detector(np.array(Image.open(io.BytesIO(jpeg()))))
    assert got and [d["label"] for d in got] == expected["labels"].tolist()
    np.testing.assert_allclose([d["box"] for d in got], expected["boxes"].numpy(), atol=0.05)
    np.testing.assert_allclose([d["score"] for d in got], expected["scores"].numpy(), atol=1e-4)
