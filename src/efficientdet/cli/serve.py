"""``efficientdet serve --model M [--weights W|coco] [--backend eager|onnxruntime|openvino] [--port 8000]``: an HTTP API and a page.

``POST /v1/detect`` (an image as a multipart upload or the raw body; ``score_threshold``,
``max_detections``, ``classes``) answers detections in the image's own pixels; ``GET /v1/model``,
``/healthz``, ``/readyz``, ``/metrics`` (Prometheus); the OpenAPI schema at ``/openapi.json`` and
``/docs``; a page at ``/`` to drop images on and see their detections. Requests are batched
(``--max-batch-size``, ``--batch-timeout-ms``; ``--max-batch-size 1``: no batching).

Binds to 127.0.0.1; another ``--host`` needs an API key (``--api-key`` or
``$EFFICIENTDET_API_KEY``), sent as ``X-API-Key``. The model is loaded before the port is bound:
a file that does not load stops here with one line. Needs the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys

from .options import (DEFAULT_MODEL, add_device, add_image_size, add_max_megapixels, add_model, add_nms, add_precision,
                      add_threads, add_weights, build_detector, check_weights_name, pixel_budget,
                      postprocess_overrides, resolve_image_size, subcommand)

SERVE_PACKAGES = ("fastapi", "uvicorn", "starlette", "prometheus_client", "multipart", "python_multipart", "anyio")
BACKENDS = ("eager", "onnxruntime", "openvino")


def run(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from .exported import file_backend

    try:
        from ..serve.app import create_app
        from ..serve.batching import check_settings, niced
        from ..serve.limits import API_KEY_ENV, Limits, check_exposure
        from ..serve.server import server
    except ImportError as e:
        if (e.name or "").split(".")[0] not in SERVE_PACKAGES:
            raise
        raise ImportError(f"efficientdet serve needs {e.name}: pip install 'efficientdet[serve]'") from None

    # Options first, then the model, then the port: each failure is one line before anything listens.
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    check_exposure(args.host, api_key)
    limits = Limits(max_body_bytes=int(args.max_body_mb * 2**20), upload_timeout=args.upload_timeout,
                    max_pixels=pixel_budget(args.max_megapixels), max_queue=args.max_queue,
                    request_timeout=args.request_timeout)
    check_settings(args.max_batch_size, args.batch_timeout_ms / 1e3, args.max_queue, args.workers)
    niced(args.worker_nice)
    if args.weights is not None and file_backend(args) is None:
        check_weights_name(args.weights, args.model or DEFAULT_MODEL)
    changes = postprocess_overrides(args)
    image_size = resolve_image_size(args, args.model)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    detector = build_detector(args, resolve_device(args.device), changes, image_size)
    weights = args.weights or "coco"
    app = create_app(detector, backend=args.backend, weights=weights, limits=limits,
                     max_batch_size=args.max_batch_size, batch_timeout_ms=args.batch_timeout_ms,
                     workers=args.workers, worker_nice=args.worker_nice, api_key=api_key)
    print(f"efficientdet serve: {detector.config.name} ({args.backend}, weights {weights}) on "
          f"http://{args.host}:{args.port}/ (API /v1/detect, schema /docs)", file=sys.stderr, flush=True)
    server(app, args.host, args.port, graceful_timeout=args.request_timeout + args.upload_timeout,
           log_level=args.log_level).run()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "serve", "an HTTP API and a page for detection, with dynamic batching", __doc__)
    add_model(p, note=f" (default {DEFAULT_MODEL}; read from an exported file)")
    add_weights(p, note="; or an exported .onnx (onnxruntime) or OpenVINO .xml (openvino) (default: coco)")
    p.add_argument("--backend", choices=BACKENDS, default="eager")
    add_device(p)
    add_precision(p)
    add_threads(p)
    add_image_size(p)
    add_nms(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this key in X-API-Key on /v1/* and /metrics "
                                     "(default: $EFFICIENTDET_API_KEY; needed to bind beyond 127.0.0.1)")
    p.add_argument("--max-batch-size", type=int, default=8, help="requests per model call (1: no batching)")
    p.add_argument("--batch-timeout-ms", type=float, default=10.0,
                   help="how long a queued request waits for others to share its batch")
    p.add_argument("--workers", type=int, default=1, help="batches run at once, each on its own thread")
    p.add_argument("--worker-nice", type=int, default=0,
                   help="run the model and decoding this much below the HTTP loop's CPU priority (Linux, 1..19): "
                        "refusals and probes stay prompt while they are busy; on a shared machine they also yield "
                        "to other processes")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests admitted and waiting for the model; more get 503 with Retry-After")
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds from admission to answer (504)")
    p.add_argument("--upload-timeout", type=float, default=10.0, help="seconds a client has to send its image (408)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest upload in MiB (413)")
    add_max_megapixels(p)
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)
