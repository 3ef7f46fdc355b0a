"""One bounded transfer of a file from a URL or a local mirror folder into a temporary file.

Written here rather than with ``torch.hub.download_url_to_file`` because that helper opens the URL
with no timeout (a dead server hangs it for ever) and reads until the server stops sending (an
endless or oversized reply fills the disk): here every read has a timeout, the whole transfer a
deadline, and the size a ceiling, and the sha256 is computed on the way. The progress bar is tqdm.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import WeightsError

CHUNK = 1 << 20
READ_TIMEOUT_S = 30.0  # one read (or the connection) stalled this long fails the transfer


class DownloadError(WeightsError):
    """The file could not be fetched (HTTP error, no connection, broken or stalled transfer): a
    problem of the network or the mirror, not of the file."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str


def fetch_to(source: str, dest: Path, max_bytes: int, deadline_s: float, progress: bool = True) -> Fetched:
    """Copy ``source`` (``http(s)://`` URL or a local file) to ``dest``, never past ``max_bytes``.

    Raises DownloadError naming ``source`` for an HTTP error, a refused or stalled connection, a
    truncated reply (fewer bytes than its Content-Length) or a passed deadline, WeightsError for a
    reply over the ceiling; ``dest`` is then removed.
    """
    try:
        if source.startswith(("http://", "https://")):
            return _fetch_url(source, dest, max_bytes, deadline_s, progress)
        return _fetch_file(Path(source), dest, max_bytes)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _fetch_url(url: str, dest: Path, max_bytes: int, deadline_s: float, progress: bool) -> Fetched:
    request = urllib.request.Request(url, headers={"User-Agent": "efficientdet"})
    try:
        response = urllib.request.urlopen(request, timeout=READ_TIMEOUT_S)  # http(s) only: see fetch_to
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from None
    with response:
        declared = response.headers.get("Content-Length")
        expected = int(declared) if declared and declared.isdigit() else None
        if expected is not None and expected > max_bytes:
            raise WeightsError(f"{url}: the server announces {expected:,} bytes, more than the "
                               f"{max_bytes:,} this file can be; not downloaded")
        digest, size = hashlib.sha256(), 0
        end = time.monotonic() + deadline_s
        bar = tqdm(total=expected, unit="B", unit_scale=True, desc=dest.name.split(".partial")[0].lstrip("."),
                   disable=not progress, leave=False)
        with bar, open(dest, "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, ValueError) as e:  # timeouts, resets; http.client's IncompleteRead
                    raise DownloadError(f"{url}: transfer broken after {size:,} bytes ({e})") from None
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise WeightsError(f"{url}: more than {max_bytes:,} bytes, larger than this file can be; "
                                       f"stopped reading")
                if time.monotonic() > end:
                    raise DownloadError(f"{url}: not done within {deadline_s:.0f} s ({size:,} bytes read)")
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    if expected is not None and size != expected:
        raise DownloadError(f"{url}: truncated: {size:,} of {expected:,} bytes arrived")
    return Fetched(dest, size, digest.hexdigest())


def _fetch_file(path: Path, dest: Path, max_bytes: int) -> Fetched:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DownloadError(f"{path}: cannot read ({e.strerror})") from None
    if size > max_bytes:
        raise WeightsError(f"{path}: {size:,} bytes, more than the {max_bytes:,} this file can be")
    digest = hashlib.sha256()
    with open(path, "rb") as src, open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    return Fetched(dest, size, digest.hexdigest())


def check_space(folder: Path, needed: int) -> None:
    """Fail before a transfer that cannot fit, naming the folder."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(28, f"{folder}: {free:,} bytes free, {needed:,} needed for this download")


def partial_name(name: str) -> str:
    """The temporary name of a file being fetched: hidden and unlike any finished cache entry."""
    return f".{name}.partial-{os.getpid()}"
