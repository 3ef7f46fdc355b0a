"""What ``GET /metrics`` shows, in Prometheus' text format (``prometheus-client``).

Each app has a registry of its own, so that two apps in one process (tests) count apart.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Requests and their latency by endpoint and status, batch sizes, queue depth, errors by kind."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size: int, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter("efficientdet_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)
        self.latency = Histogram("efficientdet_request_seconds", "time from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        sizes = sorted({1, *(2**i for i in range(1, max_batch_size.bit_length())), max_batch_size})
        self.batch_size = Histogram("efficientdet_batch_size", "images per batch the model ran",
                                    buckets=sizes, registry=self.registry)
        self.batch_seconds = Histogram("efficientdet_batch_seconds", "time the model took per batch",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("efficientdet_errors", "requests refused or failed, by kind", ["kind"],
                              registry=self.registry)
        self.queue_depth = Gauge("efficientdet_queue_depth", "requests admitted and not yet in a running batch",
                                 registry=self.registry)
        self.queue_depth.set_function(queue_depth)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
