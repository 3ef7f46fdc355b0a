"""The HTTP API and the page around one :class:`~efficientdet.inference.Detector` (FastAPI).

``POST /v1/detect`` takes an image (multipart upload or the raw body), decodes and preprocesses
it on a thread, and queues it for the :class:`~.batching.Batcher`, whose workers run batches of
requests through the detector on threads of their own: the event loop only reads bodies and
writes answers. ``GET /v1/model``, ``/healthz``, ``/readyz`` (ready once the model has run at
batch sizes 1 and ``max_batch_size``), ``/metrics``, the OpenAPI schema at ``/openapi.json`` (and
``/docs``), and the page at ``/`` (``static/``, shipped in the package, nothing from a CDN).

Every refusal is a 4xx / 503 / 504 with ``{"error": ...}`` naming the problem, counted by kind
and logged below error level; only the server's own faults (500) are logged as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, NamedTuple

import torch
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .. import __version__
from ..data.images import TooManyPixels, read_image
from ..data.sample import ImageError
from ..inference.detector import Detector, ImageDetections
from .batching import Batcher, Closed, QueueFull, check_settings, niced
from .limits import API_KEY_HEADER, Limits, RequestRefused, check_api_key, read_body
from .metrics import Metrics

logger = logging.getLogger("efficientdet.serve")
STATIC = resources.files(__package__) / "static"
ENDPOINTS = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/detect")
RAW_TYPES = ("application/octet-stream", "")  # besides image/*; no Content-Type reads as octet-stream


class Prepared(NamedTuple):
    """One decoded, preprocessed image, ready to join a batch."""

    batch: torch.Tensor  # [1, 3, H, W] network input
    scale: torch.Tensor  # [1] network pixels → original pixels
    size: tuple[int, int]  # original (height, width)


class Detection(BaseModel):
    box: list[float]  # x1, y1, x2, y2 in the image's own pixels
    score: float
    label: int  # label id: a COCO category id for the official weights
    name: str


class ImageInfo(BaseModel):
    width: int
    height: int


class DetectResponse(BaseModel):
    model: str
    image: ImageInfo
    detections: list[Detection]
    batch_size: int  # requests in the batch this one ran in
    timing_ms: dict[str, float]  # upload, decode (+ preprocess), queue, inference (the batch), total


class ClassInfo(BaseModel):
    id: int
    name: str


class ModelResponse(BaseModel):
    model: str
    classes: list[ClassInfo]
    input_size: list[int]  # height, width
    backend: str
    weights: str
    max_batch_size: int
    batch_timeout_ms: float


class ErrorBody(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 408, 413, 415, 422, 503, 504)}
DETECT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}},
                                       "required": ["image"]}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}}


class Readiness:
    """Whether ``/v1/detect`` takes requests, and why not: warming up, warm-up failed, shutting down."""

    def __init__(self) -> None:
        self.ready, self.reason = False, "warming up"

    def set(self, ready: bool, reason: str = "") -> None:
        self.ready, self.reason = ready, reason


def create_app(detector: Detector, *, backend: str = "eager", weights: str = "as given", limits: Limits = Limits(),
               max_batch_size: int = 8, batch_timeout_ms: float = 10.0, workers: int = 1, worker_nice: int = 0,
               api_key: str | None = None) -> FastAPI:
    """The API and page for ``detector``; ``backend`` and ``weights`` are what ``GET /v1/model`` says
    it runs. Batching: up to ``max_batch_size`` requests, waiting ``batch_timeout_ms`` for more once
    one is queued, on ``workers`` threads; decoding on one thread per CPU; both run ``worker_nice``
    below the event loop's priority (:func:`~.batching.niced`). ``api_key``: required on ``/v1/*``
    and ``/metrics`` if set."""
    check_settings(max_batch_size, batch_timeout_ms / 1e3, limits.max_queue, workers)
    thread_init = niced(worker_nice)
    readiness = Readiness()
    batcher: Batcher[Prepared, ImageDetections] | None = None
    decoders: ThreadPoolExecutor | None = None
    metrics = Metrics(max_batch_size, lambda: batcher.depth if batcher else 0)
    name = detector.config.name
    names = set(detector.class_names)

    def run_batch(items: list[Prepared]) -> list[ImageDetections]:
        batch = torch.cat([i.batch for i in items])
        return detector.predict(batch, torch.cat([i.scale for i in items]), [i.size for i in items])

    def prepare(image: torch.Tensor) -> Prepared:
        batch, scales = detector.preprocess([image])
        return Prepared(batch, scales, (image.shape[1], image.shape[2]))

    def decode(body: bytes) -> Prepared:
        """Decoded and preprocessed; too many pixels refused (413), not an image refused (400)."""
        try:
            return prepare(read_image(body, limits.max_pixels))
        except TooManyPixels as e:
            raise RequestRefused(413, "too_many_pixels", str(e)) from None
        except ImageError as e:
            raise RequestRefused(400, "bad_image", str(e)) from None

    async def warm_up() -> None:
        """Every batch size's first run is slow (allocations, kernel choice, NMS compilation): 1 and
        the largest run before the server says it is ready."""
        h, w = detector.config.image_size
        g = torch.Generator().manual_seed(0)
        item = prepare(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        try:
            for size in sorted({1, max_batch_size}):
                await batcher.run_now([item] * size)
        except Exception as e:
            logger.exception("warm-up failed")
            readiness.set(False, f"warm-up failed: {e}")
            return
        readiness.set(True)
        logger.info("%s ready (%s, weights %s)", name, backend, weights)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal batcher, decoders
        batcher = Batcher(run_batch, max_batch_size, batch_timeout_ms / 1e3, limits.max_queue, workers, metrics.batch,
                          thread_init)
        decoders = ThreadPoolExecutor(os.cpu_count() or 1, "efficientdet-decode", thread_init)
        batcher.start()
        warming = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            readiness.set(False, "shutting down")
            await warming
            await batcher.close()
            decoders.shutdown()

    app = FastAPI(title="efficientdet", version=__version__, lifespan=lifespan,
                  description="EfficientDet object detection: POST an image to /v1/detect.")
    app.state.readiness = readiness  # the server marks it when told to stop
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="required when the server has a key")

    async def authorized(request: Request, _: str | None = Security(key_header)) -> None:
        """Async: FastAPI runs a plain function on its thread pool, a detour every request would pay."""
        check_api_key(request, api_key)

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, e: RequestRefused) -> JSONResponse:
        metrics.errors.labels(e.kind).inc()
        logger.info("%s %s refused (%d %s): %s", request.method, request.url.path, e.status, e.kind, e.message)
        return JSONResponse({"error": e.message}, e.status, e.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'][1:])}: {err['msg']}" for err in e.errors())
        return await refused(request, RequestRefused(422, "bad_parameter", problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "bad_request")
        return await refused(request, RequestRefused(e.status_code, kind, str(e.detail), e.headers))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/healthz", summary="the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="ready for /v1/detect: the model is loaded and warmed up",
             responses={503: {"model": ErrorBody}})
    async def readyz() -> Any:
        if readiness.ready:
            return {"status": "ready"}
        return JSONResponse({"error": readiness.reason}, 503, {"Retry-After": "1"})

    @app.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(authorized)],
             response_class=Response, responses={401: {"model": ErrorBody}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/model", response_model=ModelResponse, dependencies=[Depends(authorized)],
             responses={401: {"model": ErrorBody}}, summary="the model served: variant, classes, input size, backend")
    async def model_info() -> dict[str, Any]:
        return {"model": name, "backend": backend, "weights": weights,
                "classes": [{"id": i, "name": n} for i, n in zip(detector.label_ids, detector.class_names)],
                "input_size": list(detector.config.image_size), "max_batch_size": max_batch_size,
                "batch_timeout_ms": batch_timeout_ms}

    @app.post("/v1/detect", response_model=DetectResponse, dependencies=[Depends(authorized)], responses=ERRORS,
              openapi_extra=DETECT_BODY, summary="detect objects in one image")
    async def detect(
        request: Request,
        score_threshold: float | None = Query(None, ge=0, le=1, description="keep detections scoring at least this"),
        max_detections: int | None = Query(None, ge=1, description="keep at most this many, best first"),
        classes: list[str] | None = Query(None, description="keep these class names only (comma-separated or repeated)"),
    ) -> dict[str, Any]:
        """The image is the multipart file (field ``image``) or the whole body (``image/*``,
        ``application/octet-stream``). Boxes are xyxy in the image's own pixels, best first."""
        start = time.perf_counter()
        if not readiness.ready:
            raise RequestRefused(503, "not_ready", readiness.reason, {"Retry-After": "1"})
        wanted = class_filter(classes, names)
        try:
            batcher.check_room()  # a full queue refuses at once, before the body is read
            body = await upload(request, limits)
            uploaded = time.perf_counter()
            with batcher.admit() as slot:
                prepared = await asyncio.get_running_loop().run_in_executor(decoders, decode, body)
                decoded = time.perf_counter()
                left = limits.request_timeout - (decoded - uploaded)
                result, job = await batcher.submit(slot, prepared, left)
        except QueueFull as e:
            raise RequestRefused(503, "queue_full", str(e), {"Retry-After": str(e.retry_after)}) from None
        except Closed as e:
            raise RequestRefused(503, "shutting_down", str(e), {"Connection": "close"}) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise RequestRefused(504, "timeout", f"no answer within {limits.request_timeout:g} s") from None
        except (RequestRefused, HTTPException):  # the request's fault: answered by the handlers above
            raise
        except Exception as e:  # the model failed: the server's fault
            logger.exception("detection failed")
            metrics.errors.labels("internal").inc()
            return JSONResponse({"error": f"detection failed: {e}"}, 500)
        done = time.perf_counter()
        height, width = prepared.size
        return {
            "model": name, "image": {"width": width, "height": height},
            "detections": select(result, score_threshold, max_detections, wanted), "batch_size": job.batch_size,
            "timing_ms": {"upload": ms(uploaded - start), "decode": ms(decoded - uploaded),
                          "queue": ms(job.started - job.queued), "inference": ms(job.finished - job.started),
                          "total": ms(done - start)},
        }

    return app


async def upload(request: Request, limits: Limits) -> bytes:
    """The image bytes of a request: the multipart file, or the raw body."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        body = await multipart_file(request, await read_body(request, limits))
    elif media.startswith("image/") or media in RAW_TYPES:
        body = await read_body(request, limits)
    else:
        raise RequestRefused(415, "unsupported_media_type",
                             f"content type {media!r} is not an image upload: send multipart/form-data with the file "
                             f"in field 'image', or the image bytes as image/* or application/octet-stream")
    if not body:
        raise RequestRefused(400, "empty_body", "the request holds no image (empty body)")
    return body


async def multipart_file(request: Request, body: bytes) -> bytes:
    """The one file of a multipart ``body`` (already read within the limits), parsed by Starlette."""
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    try:
        files = [value for value in form.values() if isinstance(value, UploadFile)]
        if not files:
            raise RequestRefused(400, "no_file", "the multipart body holds no file: send the image in field 'image'")
        return await files[0].read()
    finally:
        await form.close()


def class_filter(classes: list[str] | None, names: set[str]) -> set[str] | None:
    """``classes`` (comma-separated or repeated) as a set of class names, all of them the model's."""
    if not classes:
        return None
    wanted = {n.strip() for text in classes for n in text.split(",") if n.strip()}
    unknown = sorted(wanted - names)
    if unknown:
        raise RequestRefused(422, "unknown_class", f"unknown class names: {', '.join(unknown)} "
                                                   f"(GET /v1/model lists the model's classes)")
    return wanted


def select(result: ImageDetections, score_threshold: float | None, max_detections: int | None,
           wanted: set[str] | None) -> list[dict[str, Any]]:
    """The detections the request asked for, best first, as JSON: boxes to 0.01 pixel, scores to
    4 decimals, the threshold applied to the score as written (what the client sees)."""
    out = []
    for box, score, label, name in zip(result.boxes.tolist(), result.scores.tolist(), result.labels.tolist(),
                                       result.names):
        score = round(score, 4)
        if score_threshold is not None and score < score_threshold or wanted is not None and name not in wanted:
            continue
        out.append({"box": [round(v, 2) for v in box], "score": score, "label": label, "name": name})
        if max_detections is not None and len(out) == max_detections:
            break
    return out


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


class RequestMetrics:
    """ASGI middleware: every HTTP request counted by endpoint and status, and timed."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"]
            endpoint = path if path in ENDPOINTS else "/static" if path.startswith("/static/") else "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
