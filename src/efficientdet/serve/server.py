"""Running the app under uvicorn, with a graceful stop.

On SIGINT / SIGTERM uvicorn stops accepting connections and waits (up to ``graceful_timeout``)
for the requests in flight; the app says it is not ready from the first signal on, refuses new
requests on kept-alive connections, and drains its queue before the workers stop.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI


class DrainingServer(uvicorn.Server):
    """A uvicorn server that marks the app not ready as soon as it is asked to stop."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self._readiness = app.state.readiness

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._readiness.set(False, "shutting down")
        super().handle_exit(sig, frame)


def server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, graceful_timeout: float = 60.0,
           log_level: str = "info") -> DrainingServer:
    """A server for ``app`` on ``host:port`` (``port`` 0: a free one); ``run()`` blocks until stopped.
    Forwarded-for headers are not trusted and no server header is sent."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=graceful_timeout)
    return DrainingServer(config, app)
