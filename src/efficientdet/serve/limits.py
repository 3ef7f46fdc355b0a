"""What a request may cost and who may send one: body size, upload time, pixels, queue, request
time, the API key; and :class:`RequestRefused`, how a refused request is answered.

The server reads nothing a client names: no URL is fetched and no path is opened; an image comes
in the request body, read here within its size and time limits before any decoding.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import secrets

import anyio
from starlette.requests import Request

from ..data.images import DEFAULT_MAX_PIXELS

API_KEY_ENV = "EFFICIENTDET_API_KEY"
API_KEY_HEADER = "X-API-Key"


@dataclasses.dataclass(frozen=True)
class Limits:
    """``max_body_bytes``: an upload's size; ``upload_timeout``: seconds to send it; ``max_pixels``:
    an image's (the same guard as ``predict``); ``max_queue``: requests waiting for the model;
    ``request_timeout``: seconds from admission to answer."""

    max_body_bytes: int = 20 * 2**20
    upload_timeout: float = 10.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_queue: int = 64
    request_timeout: float = 30.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field.name} must be a positive number, got {value}")


class RequestRefused(Exception):
    """A request refused: answered with ``status`` and ``{"error": message}``, counted under ``kind``
    in the metrics, logged below error level (a client's fault or a full server, not a broken one)."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


async def read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, refused past ``max_body_bytes`` (from its Content-Length before a byte is
    read, or as it arrives) or when not received within ``upload_timeout``: a slow client holds
    the connection, never a model worker or a queue slot."""
    too_large = RequestRefused(413, "body_too_large", f"the body is over the limit of {limits.max_body_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_large
    chunks, size = [], 0
    try:
        with anyio.fail_after(limits.upload_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise RequestRefused(408, "upload_timeout", f"the upload did not finish within {limits.upload_timeout:g} s",
                          {"Connection": "close"}) from None
    return b"".join(chunks)


def check_api_key(request: Request, api_key: str | None) -> None:
    """The request's key (``X-API-Key`` or ``Authorization: Bearer``) against ``api_key``, if set."""
    if api_key is None:
        return
    given = request.headers.get(API_KEY_HEADER)
    bearer = request.headers.get("authorization", "")
    if given is None and bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    if not given:
        raise RequestRefused(401, "unauthorized", f"missing API key: send it in the {API_KEY_HEADER} header",
                          {"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(given.encode(), api_key.encode()):
        raise RequestRefused(401, "unauthorized", "wrong API key", {"WWW-Authenticate": "Bearer"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Binding beyond this machine needs an API key: the model is then one request away for anyone
    on the network."""
    if not is_loopback(host) and not api_key:
        raise ValueError(f"--host {host} is reachable from other machines: give an API key "
                         f"(--api-key or ${API_KEY_ENV}), or bind to 127.0.0.1")
