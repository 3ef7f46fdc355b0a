"""A local weights mirror, for the zoo's download tests.

:class:`MirrorServer` stands in for the google/automl and effdet release hosts (and for a
``EFFICIENTDET_WEIGHTS_MIRROR``): an HTTP server on 127.0.0.1 that serves bytes under their
release names, counts the downloads and misbehaves on request (404, 500, an HTML page, a cut or
stalled or endless body). Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

MODES = ("ok", "404", "500", "html", "truncate", "stall", "huge", "slow")
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>\n"
             b"<body><h1>Network login required</h1><p>This page replaced the file you asked for.</p>"
             b"</body></html>\n")
STALL_S = 30.0  # a stalled response gives up after this long, if nothing released it
HUGE_CAP = 1 << 30  # an endless body ends here at the latest
SOCKET_TIMEOUT_S = 10.0  # a client that stops reading frees its handler after this long
SLOW_CHUNK = 16 * 1024
_CHUNK = 1 << 20


# ---------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still running never keeps the test process alive
    block_on_close = False

    def __init__(self, mirror: MirrorServer) -> None:
        self.mirror = mirror
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        """Quiet: a client hanging up mid-body is what the misbehaving modes are for."""


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: one request per connection, and a body without Content-Length ends at close."""

    server: _Server
    timeout = SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.mirror._opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.mirror._closed(self.connection)

    def do_GET(self) -> None:
        mirror = self.server.mirror
        name = mirror._record(self.path)
        data = mirror.files.get(name)
        if data is None:
            return self._error(404)
        mode = mirror.mode(name)
        try:
            if mode in ("404", "500"):
                self._error(int(mode))
            elif mode == "html":
                self._headers(200, "text/html; charset=utf-8", len(HTML_PAGE))
                self.wfile.write(HTML_PAGE)
            elif mode == "huge":
                self._headers(200, "application/octet-stream", None)
                self._endless(name, data)
            else:
                self._headers(200, "application/octet-stream", len(data))
                self._body(name, data, mode)
        except OSError:  # the client hung up (broken pipe, reset, our socket timeout)
            self.close_connection = True

    def _error(self, code: int) -> None:
        body = f"{code} {self.responses[code][0]}\n".encode()
        self._headers(code, "text/plain", len(body))
        self.wfile.write(body)

    def _headers(self, code: int, content_type: str, length: int | None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

    def _body(self, name: str, data: bytes, mode: str) -> None:
        mirror, half = self.server.mirror, len(data) // 2
        if mode == "truncate":
            self._send(name, data[:half])
        elif mode == "stall":
            self._send(name, data[:half])
            mirror._stalled.set()
            released = mirror._wait_release(STALL_S)
            if released:
                self._send(name, data[half:])
        elif mode == "slow":
            view = memoryview(data)
            for start in range(0, len(data), SLOW_CHUNK):
                if mirror._stopping.wait(SLOW_CHUNK / mirror.slow_bytes_per_s):
                    return
                self._send(name, view[start:start + SLOW_CHUNK])
        else:
            self._send(name, data)
        # "truncate" and an unreleased "stall" end here: the connection closes before Content-Length

    def _endless(self, name: str, data: bytes) -> None:
        """The file's bytes over and over (so it starts like the real file), until the cap or a hang-up."""
        mirror = self.server.mirror
        chunk = (data or b"\0") * max(1, _CHUNK // max(len(data), 1))
        sent = 0
        while sent < HUGE_CAP and not mirror._stopping.is_set():
            piece = chunk[:HUGE_CAP - sent]
            self._send(name, piece)
            sent += len(piece)

    def _send(self, name: str, piece: bytes | memoryview) -> None:
        self.server.mirror._sent(name, len(piece))  # before: a client that has it all sees it counted
        self.wfile.write(piece)
        self.wfile.flush()


class MirrorServer:
    """An HTTP mirror on 127.0.0.1 (a free port) serving ``files`` at ``/<name>``, run in a daemon thread.

    ``with MirrorServer({"efficientdet-d0.tar.gz": data}) as mirror: ... mirror.base_url ...``

    * ``files``: name → bytes, changeable at any time; ``a/b`` is served at ``/a/b``. A name not
      there is a 404.
    * :meth:`behave` sets how a file is served (:data:`MODES`, default ``"ok"``).
    * ``requests`` (the GET paths received, in order) and :meth:`count` tell what was downloaded;
      ``bytes_sent`` how many body bytes of each name were handed to the socket (all requests
      together; a write the client hung up on counts too).
    * :meth:`stop` (also on leaving the ``with``) closes the port, so later connections are
      refused, and hangs up every open connection; it returns within a second or so whatever
      the handlers are doing.

    HTTP/1.0 with ``Connection: close``; GET only (other methods get 501); no request logging.
    """

    def __init__(self, files: Mapping[str, bytes] | None = None, slow_bytes_per_s: int = 1 << 20) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.slow_bytes_per_s = slow_bytes_per_s
        self._lock = threading.Lock()
        self._modes: dict[str, str] = {}
        self._requests: list[str] = []
        self._bytes_sent: dict[str, int] = {}
        self._connections: set[socket.socket] = set()
        self._release = threading.Event()
        self._stalled = threading.Event()
        self._stopping = threading.Event()
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"mirror-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, name: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(name)}"

    # -------------------------------------------------------- behaviour

    def behave(self, name: str, mode: str) -> None:
        """Serve ``name`` so from the next request on:

        ``"ok"``: 200, ``Content-Length``, ``application/octet-stream``. ``"404"``, ``"500"``: that status.
        ``"html"``: 200 ``text/html`` with an HTML page instead of the file (captive portal, CDN error).
        ``"truncate"``: the full Content-Length declared, the first half sent, the connection closed.
        ``"stall"``: the first half sent, then nothing until :meth:`release` (the rest follows),
        :meth:`stop` or :data:`STALL_S` (the connection closes); :meth:`wait_stalled` tells when a
        client is in that state, e.g. to kill a downloading process mid-transfer. Setting it re-arms
        the stall (clears an earlier :meth:`release`).
        ``"huge"``: no Content-Length; the file's bytes repeated until the client hangs up or
        :data:`HUGE_CAP` bytes (a client must stop at its own size bound).
        ``"slow"``: the file in :data:`SLOW_CHUNK` pieces at ``slow_bytes_per_s``.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        with self._lock:
            self._modes[name] = mode
        if mode == "stall":
            self._release.clear()
            self._stalled.clear()

    def mode(self, name: str) -> str:
        with self._lock:
            return self._modes.get(name, "ok")

    def release(self) -> None:
        """Let every stalled response (now and until ``behave(..., "stall")`` again) send its rest."""
        self._release.set()

    def wait_stalled(self, timeout: float = 10.0) -> bool:
        """Whether a ``"stall"`` response has sent its first half (and now waits) within ``timeout`` s."""
        return self._stalled.wait(timeout)

    # -------------------------------------------------------- what happened

    @property
    def requests(self) -> list[str]:
        """The GET paths received so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    def count(self, name: str) -> int:
        """How many GET requests asked for ``name``."""
        with self._lock:
            return sum(1 for path in self._requests if _name_of(path) == name)

    @property
    def bytes_sent(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bytes_sent)

    # -------------------------------------------------------- stopping

    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new connections and hang up the open ones; idempotent and bounded by ``timeout``."""
        if self._stopping.is_set():
            return
        self._stopping.set()  # wakes stalled and slow handlers, ends endless bodies
        self._server.shutdown()  # returns within poll_interval: serve_forever is polling
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # a handler blocked in a write gets an error at once
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout)
        self.wait_idle(timeout)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Whether every connection's handler has finished within ``timeout`` s (e.g. after a client
        hung up on an endless body)."""
        deadline = time.monotonic() + timeout
        while self.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.open_connections

    # -------------------------------------------------------- for the handler

    def _record(self, path: str) -> str:
        with self._lock:
            self._requests.append(path)
        return _name_of(path)

    def _sent(self, name: str, n: int) -> None:
        with self._lock:
            self._bytes_sent[name] = self._bytes_sent.get(name, 0) + n

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _wait_release(self, timeout: float) -> bool:
        """True when released; False when the server stops or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if self._release.wait(0.05):
                return not self._stopping.is_set()
        return False


def _name_of(path: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(path).path).lstrip("/")
