"""The zoo's local mirror (:mod:`mirror`) serves, counts and misbehaves as asked."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request

import mirror as mirror_module
import pytest
from mirror import HTML_PAGE, MirrorServer

DATA = bytes(range(256)) * 400  # 100 KiB, every byte value
TIMEOUT = 5


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.status, dict(response.headers), response.read()



# ---------------------------------------------------------------- the server


def test_serves_files_with_length_and_type_and_counts_requests(mirror):
    mirror.files["efficientdet-d0.tar.gz"] = DATA
    mirror.files["sub/dir/x.pth"] = b"x"
    status, headers, body = get(mirror.url("efficientdet-d0.tar.gz"))
    assert (status, body) == (200, DATA)
    assert headers["Content-Length"] == str(len(DATA))
    assert headers["Content-Type"] == "application/octet-stream"
    assert mirror.base_url == f"http://127.0.0.1:{mirror.port}"
    assert get(f"{mirror.base_url}/sub/dir/x.pth?token=1")[2] == b"x"
    get(mirror.url("efficientdet-d0.tar.gz"))
    assert mirror.requests == ["/efficientdet-d0.tar.gz", "/sub/dir/x.pth?token=1", "/efficientdet-d0.tar.gz"]
    assert (mirror.count("efficientdet-d0.tar.gz"), mirror.count("sub/dir/x.pth"), mirror.count("nope")) == (2, 1, 0)
    assert mirror.bytes_sent["efficientdet-d0.tar.gz"] == 2 * len(DATA)


def test_unknown_name_is_404_and_counted(mirror):
    with pytest.raises(urllib.error.HTTPError) as e:
        get(mirror.url("efficientdet-d9.tar.gz"))
    assert e.value.code == 404
    assert mirror.count("efficientdet-d9.tar.gz") == 1


def test_requests_from_many_threads_are_all_counted(mirror):
    mirror.files["a"] = DATA
    errors = []

    def fetch():
        try:
            assert get(mirror.url("a"))[2] == DATA
        except (AssertionError, OSError) as e:  # collected: an assert in a thread would pass unseen
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors and mirror.count("a") == 8


@pytest.mark.parametrize("code", [404, 500])
def test_error_modes(mirror, code):
    mirror.files["a"] = DATA
    mirror.behave("a", str(code))
    with pytest.raises(urllib.error.HTTPError) as e:
        get(mirror.url("a"))
    assert e.value.code == code
    mirror.behave("a", "ok")
    assert get(mirror.url("a"))[2] == DATA


def test_html_mode_answers_200_with_a_page(mirror):
    mirror.files["a"] = DATA
    mirror.behave("a", "html")
    status, headers, body = get(mirror.url("a"))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == HTML_PAGE and body.startswith(b"<!DOCTYPE html>")


def test_truncate_mode_declares_the_length_and_sends_half(mirror):
    mirror.files["a"] = DATA
    mirror.behave("a", "truncate")
    with urllib.request.urlopen(mirror.url("a"), timeout=TIMEOUT) as response:
        assert response.headers["Content-Length"] == str(len(DATA))
        with pytest.raises(http.client.IncompleteRead) as e:
            response.read()
    assert e.value.partial == DATA[:len(DATA) // 2]


def read_in_thread(url: str) -> tuple[threading.Thread, dict]:
    """Start reading ``url`` to the end in a thread; the dict gets its ``body`` or ``error``."""
    result: dict = {}

    def run():
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                result["body"] = response.read()
        except (OSError, http.client.HTTPException) as e:
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_stall_mode_waits_for_release_then_sends_the_rest(mirror):
    mirror.files["a"] = DATA
    mirror.behave("a", "stall")
    thread, result = read_in_thread(mirror.url("a"))
    assert mirror.wait_stalled(TIMEOUT)
    assert mirror.bytes_sent["a"] == len(DATA) // 2
    time.sleep(0.2)
    assert thread.is_alive()  # still waiting for the rest
    mirror.release()
    thread.join(TIMEOUT)
    assert result == {"body": DATA}


def test_stop_ends_a_stalled_transfer_at_once_and_refuses_connections():
    with MirrorServer({"a": DATA}) as server:
        server.behave("a", "stall")
        thread, result = read_in_thread(server.url("a"))
        assert server.wait_stalled(TIMEOUT)
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 2
        thread.join(TIMEOUT)
        assert isinstance(result["error"], http.client.IncompleteRead)
        assert server.open_connections == 0
        with pytest.raises(urllib.error.URLError) as e:
            get(server.url("a"))
        assert isinstance(e.value.reason, ConnectionRefusedError)
        server.stop()  # again: nothing to do


def test_leaving_the_with_stops_the_server():
    with MirrorServer({"a": b"x"}) as server:
        url = server.url("a")
        assert get(url)[2] == b"x"
    with pytest.raises(urllib.error.URLError):
        get(url)


def test_huge_mode_streams_without_length_until_the_client_hangs_up(mirror):
    mirror.files["a"] = DATA
    mirror.behave("a", "huge")
    bound = 5 << 20
    with urllib.request.urlopen(mirror.url("a"), timeout=TIMEOUT) as response:
        assert "Content-Length" not in response.headers
        head = response.read(bound)
    assert len(head) == bound and head.startswith(DATA) and head[len(DATA):2 * len(DATA)] == DATA
    assert mirror.wait_idle(TIMEOUT)  # the handler noticed the hang-up and ended
    assert mirror.bytes_sent["a"] < mirror_module.HUGE_CAP


def test_slow_mode_sends_the_whole_file_at_the_set_rate(mirror):
    mirror.files["a"] = DATA
    mirror.slow_bytes_per_s = 1 << 20
    mirror.behave("a", "slow")
    start = time.monotonic()
    assert get(mirror.url("a"))[2] == DATA
    assert time.monotonic() - start >= 0.8 * len(DATA) / mirror.slow_bytes_per_s


def test_unknown_mode_is_refused(mirror):
    with pytest.raises(ValueError, match="mode 'flaky'"):
        mirror.behave("a", "flaky")
