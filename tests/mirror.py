"""A local weights mirror and the release files it serves, for the zoo's download tests.

:class:`MirrorServer` stands in for the google/automl and effdet release hosts (and for a
``EFFICIENTDET_WEIGHTS_MIRROR``): an HTTP server on 127.0.0.1 that serves bytes under their
release names, counts the downloads and misbehaves on request (404, 500, an HTML page, a cut or
stalled or endless body). Nothing leaves the machine.

The builders make the files a release would hold, or a hostile or broken one would:

* :func:`official_archive` / :func:`model_archive`: ``efficientdet-dN.tar.gz`` laid out as the
  official release (``efficientdet-dN/`` holding ``checkpoint``, ``model.index``,
  ``model.data-00000-of-00001``), from the shared fixture or from a random model of any variant;
* :func:`evil_archive`: archives that an extractor must refuse (paths that escape, links,
  devices, a cut stream) or that hold the wrong checkpoint (TF2 object-based, another variant);
* :func:`effdet_release` / :func:`effdet_pth`: an effdet ``tf_efficientdet_d0_34-<sha>.pth``.

Archives are gzip level 1 with fixed member metadata and gzip mtime, so equal inputs give equal
bytes, and each builder is cached: a test asks for them freely.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import socket
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import numpy as np
import torch

import efficientdet
from efficientdet.weights.official import LAYOUTS, official_names
from efficientdet.weights.tf_checkpoint.writer import (
    message,
    scalar,
    write_tf_checkpoint,
)

CHECKPOINT_FILES = ("checkpoint", "model.index", "model.data-00000-of-00001")
MODES = ("ok", "404", "500", "html", "truncate", "stall", "huge", "slow")
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>\n"
             b"<body><h1>Network login required</h1><p>This page replaced the file you asked for.</p>"
             b"</body></html>\n")
STALL_S = 30.0  # a stalled response gives up after this long, if nothing released it
HUGE_CAP = 1 << 30  # an endless body ends here at the latest
SOCKET_TIMEOUT_S = 10.0  # a client that stops reading frees its handler after this long
SLOW_CHUNK = 16 * 1024
EFFDET_D0 = "tf_efficientdet_d0"
EFFDET_D0_RELEASE = "tf_efficientdet_d0_34-{sha8}.pth"  # effdet's naming: weights' COCO AP, sha256 prefix
_CHUNK = 1 << 20
_MTIME = 1584000000  # 2020-03-12, about when the official checkpoints were published


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


# ---------------------------------------------------------------- archives

Member = tuple[tarfile.TarInfo, bytes | Path | None]  # a header and what to write (bytes, a file, nothing)


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
    """Fixed metadata (time, owner), so that equal contents give equal archives."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def tar_gz(members: Iterable[Member]) -> bytes:
    """A ``.tar.gz`` of ``(header, contents)`` written as given (no name cleaning: ``/abs`` and ``..``
    stay), gzip level 1 (fast; the tests need the format, not the ratio) and a fixed gzip mtime."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, contents in members:
            if isinstance(contents, Path):
                with contents.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info, io.BytesIO(contents) if contents is not None else None)
    return buf.getvalue()


def release_members(files: Mapping[str, bytes | Path], top: str) -> list[Member]:
    """The members of a release archive: ``top/``, then ``files`` (name → bytes or a file to copy) in
    it, as ``tar czf top.tar.gz top`` lists them; for :func:`tar_gz`."""
    members: list[Member] = [(_member(f"{top}/", tarfile.DIRTYPE, mode=0o755), None)]
    for name, contents in files.items():
        size = contents.stat().st_size if isinstance(contents, Path) else len(contents)
        members.append((_member(f"{top}/{name}", size=size), contents))
    return members


def official_archive(checkpoint_dir: str | Path, top: str = "efficientdet-d0",
                     extra: Mapping[str, bytes] | None = None) -> bytes:
    """The official release archive of the checkpoint in ``checkpoint_dir``: ``top/`` holding
    ``checkpoint``, ``model.index``, ``model.data-00000-of-00001`` (and ``extra``: name → bytes,
    e.g. a ``model.meta`` a loader must pass over). Cached per arguments (the D0 fixture's ~31 MB
    take about a second to pack)."""
    return _official_archive(str(Path(checkpoint_dir).resolve()), top, tuple(sorted((extra or {}).items())))


@functools.lru_cache(maxsize=4)
def _official_archive(checkpoint_dir: str, top: str, extra: tuple[tuple[str, bytes], ...]) -> bytes:
    folder = Path(checkpoint_dir)
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: no {', '.join(missing)}: not an official checkpoint folder")
    files: dict[str, bytes | Path] = {name: folder / name for name in CHECKPOINT_FILES}
    files.update(extra)
    return tar_gz(release_members(files, top))


# TF layout of each official layout, from torch's (the inverse of efficientdet.weights.official.LAYOUTS).
TF_LAYOUTS = {
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # [out, in, kh, kw] → [kh, kw, in, out]
    "depthwise": lambda a: a.transpose(2, 3, 0, 1),  # [in, 1, kh, kw] → [kh, kw, in, 1]
    "vector": lambda a: a,
}


def official_tensors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """``model``'s tensors under their official names and TF layouts, as the official checkpoints
    hold them (a BiFPN node's fusion vector as its scalars ``WSM``, ``WSM_1``, ...), plus
    ``global_step``; no EMA copies (the loader falls back to the plain names)."""
    state = model.state_dict()
    tensors: dict[str, np.ndarray] = {"global_step": np.int64(0)}
    for key, (tf_name, layout) in official_names(model).items():
        value = state[key].detach().cpu().numpy()
        if layout == "stack":
            for j, scalar in enumerate(value):
                tensors[f"{tf_name}_{j}" if j else tf_name] = np.float32(scalar)
        else:
            tf = TF_LAYOUTS[layout](value)
            assert LAYOUTS[layout](tf).shape == value.shape, (key, layout)
            tensors[tf_name] = np.ascontiguousarray(tf)
    return tensors


def checkpoint_files(tensors: Mapping[str, np.ndarray]) -> dict[str, bytes]:
    """The three files of an official checkpoint (prefix ``model``) holding ``tensors``, by name."""
    with tempfile.TemporaryDirectory(prefix="mirror-") as tmp:
        folder = Path(tmp)
        write_tf_checkpoint(folder / "model", tensors)
        return {name: (folder / name).read_bytes() for name in CHECKPOINT_FILES}


@functools.lru_cache(maxsize=4)
def model_archive(variant: str, top: str | None = None, seed: int = 0) -> bytes:
    """An official-layout archive (``top``, default ``variant``) of a randomly initialised
    ``efficientdet.create_model(variant)`` (``torch.manual_seed(seed)``), converted to the official
    names: a loadable release of any variant without the shared fixture. D1 takes ~2 s."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = efficientdet.create_model(variant)
    return tar_gz(release_members(checkpoint_files(official_tensors(model)), top or variant))


# ---------------------------------------------------------------- bad archives

EVIL_KINDS = ("dotdot", "absolute", "symlink", "device", "truncated", "tf2", "other-variant")
TF2_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@functools.lru_cache(maxsize=1)
def stand_in_checkpoint() -> dict[str, bytes]:
    """A tiny but well-formed official checkpoint (``global_step`` and the D0 stem kernel), for
    archives whose point is their structure: an extractor must refuse them before reading it."""
    rng = np.random.default_rng(0)
    return checkpoint_files({"global_step": np.int64(0),
                             "efficientnet-b0/stem/conv2d/kernel": rng.standard_normal((3, 3, 3, 32), np.float32)})


def _checkpoint_of(checkpoint_dir: str | Path | None) -> dict[str, bytes | Path]:
    if checkpoint_dir is None:
        return dict(stand_in_checkpoint())
    return {name: Path(checkpoint_dir) / name for name in CHECKPOINT_FILES}


def evil_archive(kind: str, checkpoint_dir: str | Path | None = None, top: str = "efficientdet-d0",
                 target: str | None = None) -> bytes:
    """An archive the zoo must refuse, each for one reason (:data:`EVIL_KINDS`).

    Apart from its fault each is a complete release layout (``top/`` with the three checkpoint
    files, from ``checkpoint_dir`` or :func:`stand_in_checkpoint`), so an extractor that merely
    skips what it does not like would go on: the test sees whether it refused.

    * ``"dotdot"``: an extra member ``target`` (default ``top/../../evil``), after the good ones.
    * ``"absolute"``: an extra member ``target`` (default ``/tmp/evil``: give a path of your own
      under ``tmp_path`` so that a bad extractor shows, and harms nothing, where you look).
    * ``"symlink"``: ``top/model.index`` is a symlink to ``target`` (default ``/etc/passwd``).
    * ``"device"``: ``top/model.data-00000-of-00001`` is a character device (1, 3: ``/dev/null``).
    * ``"truncated"``: a good archive cut in half (``tarfile`` raises on reading past the cut).
    * ``"tf2"``: a TF2 object-based checkpoint (first index key ``_CHECKPOINTABLE_OBJECT_GRAPH``,
      variables under ``.../.ATTRIBUTES/VARIABLE_VALUE``) in the official layout.
    * ``"other-variant"``: ``top/`` (efficientdet-d0) holding a random efficientdet-d1 checkpoint,
      ``checkpoint_dir`` unused (:func:`model_archive`).
    """
    if kind not in EVIL_KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(EVIL_KINDS)}")
    key = str(Path(checkpoint_dir).resolve()) if checkpoint_dir is not None else None
    return _evil_archive(kind, key, top, target)


@functools.lru_cache(maxsize=16)
def _evil_archive(kind: str, checkpoint_dir: str | None, top: str, target: str | None) -> bytes:
    if kind == "other-variant":
        return model_archive("efficientdet-d1", top)
    if kind == "tf2":
        return tar_gz(release_members(tf2_checkpoint(), top))
    files = _checkpoint_of(checkpoint_dir)
    if kind == "truncated":
        whole = tar_gz(release_members(files, top))
        return whole[:len(whole) // 2]
    members = release_members(files, top)
    if kind in ("dotdot", "absolute"):
        name = target or (f"{top}/../../evil" if kind == "dotdot" else "/tmp/evil")
        payload = b"written outside the extraction folder\n"
        members.append((_member(name, size=len(payload)), payload))
    elif kind == "symlink":
        link = _member(f"{top}/model.index", tarfile.SYMTYPE, mode=0o777)
        link.linkname = target or "/etc/passwd"
        members = [m if m[0].name != link.name else (link, None) for m in members]
    elif kind == "device":
        device = _member(f"{top}/model.data-00000-of-00001", tarfile.CHRTYPE, mode=0o666)
        device.devmajor, device.devminor = 1, 3
        members = [m if m[0].name != device.name else (device, None) for m in members]
    return tar_gz(members)


def tf2_checkpoint() -> dict[str, bytes]:
    """The three files of a small TF2 object-based checkpoint (``tf.train.Checkpoint`` keys: the
    object graph, ``save_counter`` and ``model/...`` variables), written by our TF writer."""
    rng = np.random.default_rng(1)
    variables = {
        "model/efficientnet-b0/stem/conv2d/kernel": rng.standard_normal((3, 3, 3, 32), np.float32),
        "model/class_net/class-predict/bias": np.full(810, -4.6, np.float32),
    }
    keys = {name: f"{name}/.ATTRIBUTES/VARIABLE_VALUE" for name in ["save_counter", *variables]}
    tensors: dict[str, np.ndarray] = {key: variables[name] for name, key in keys.items() if name in variables}
    tensors[keys["save_counter"]] = np.int64(1)
    tensors[TF2_GRAPH_KEY] = np.array(_object_graph(keys), dtype=object)
    return checkpoint_files(tensors)


def _object_graph(keys: Mapping[str, str]) -> bytes:
    """A ``TrackableObjectGraph`` proto: the root with one child per variable, each variable's
    ``VARIABLE_VALUE`` attribute naming its checkpoint key (how TF2 finds a variable's tensor)."""
    def text(number: int, value: str) -> bytes:
        return message(number, value.encode())

    children = b"".join(message(1, scalar(1, i + 1) + text(2, name)) for i, name in enumerate(keys))
    nodes = [message(1, children)]
    for key in keys.values():
        nodes.append(message(1, message(2, text(1, "VARIABLE_VALUE") + text(3, key))))
    return b"".join(nodes)


# ---------------------------------------------------------------- effdet release file


@dataclass(frozen=True)
class Release:
    """A release file: its published name, its bytes and their sha256 (hex)."""

    name: str
    data: bytes
    sha256: str


@functools.lru_cache(maxsize=1)
def effdet_release() -> Release:
    """effdet's ``tf_efficientdet_d0`` as its release file: the state dict of
    ``effdet.create_model("tf_efficientdet_d0")`` (no pretrained weights, ``torch.manual_seed(0)``)
    saved with ``torch.save``, named ``tf_efficientdet_d0_34-<sha256[:8]>.pth`` as effdet names its
    releases (the hash that a loader checks against the name). Needs the ``effdet`` package."""
    import effdet

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = effdet.create_model(EFFDET_D0, pretrained=False, pretrained_backbone=False)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    data = buf.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    return Release(EFFDET_D0_RELEASE.format(sha8=sha256[:8]), data, sha256)


def effdet_pth(directory: str | Path) -> Path:
    """:func:`effdet_release` written into ``directory`` under its release name; its sha256 is
    ``effdet_release().sha256``."""
    release = effdet_release()
    path = Path(directory) / release.name
    path.write_bytes(release.data)
    return path
