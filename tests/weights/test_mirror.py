"""The zoo's test helpers (:mod:`mirror`) do what they say: the local mirror serves, counts and
misbehaves as asked, and the release builders make the archives and files they describe."""

from __future__ import annotations

import hashlib
import http.client
import io
import re
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mirror as mirror_module
import pytest
import torch
from mirror import (
    CHECKPOINT_FILES,
    HTML_PAGE,
    TF2_GRAPH_KEY,
    MirrorServer,
    effdet_pth,
    evil_archive,
    model_archive,
    official_archive,
)

import efficientdet
from efficientdet.weights import WeightsError, load_weights
from efficientdet.weights.official import official_names
from efficientdet.weights.tf_checkpoint import TFCheckpoint

DATA = bytes(range(256)) * 400  # 100 KiB, every byte value
TIMEOUT = 5


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.status, dict(response.headers), response.read()


def members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: m for m in tar.getmembers()}


def extract(archive: bytes, dest: Path) -> Path:
    """Extracted with the stdlib's safe ``data`` filter, which refuses what a zoo must refuse."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


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


# ---------------------------------------------------------------- archives


def test_official_archive_holds_the_release_layout(official_d0_archive, official_d0, tmp_path):
    found = members(official_d0_archive)
    assert list(found) == ["efficientdet-d0", *(f"efficientdet-d0/{name}" for name in CHECKPOINT_FILES)]
    assert found["efficientdet-d0"].isdir()
    folder = extract(official_d0_archive, tmp_path) / "efficientdet-d0"
    for name in CHECKPOINT_FILES:
        assert (folder / name).read_bytes() == (official_d0 / name).read_bytes(), name
    assert official_archive(official_d0) is official_d0_archive  # cached


def test_official_archive_takes_another_top_and_extra_files(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name, data in mirror_module.stand_in_checkpoint().items():
        (folder / name).write_bytes(data)
    archive = official_archive(folder, top="efficientdet-d3", extra={"model.meta": b"graph"})
    names = ["efficientdet-d3", *(f"efficientdet-d3/{name}" for name in (*CHECKPOINT_FILES, "model.meta"))]
    assert list(members(archive)) == names
    with pytest.raises(FileNotFoundError, match="no checkpoint, model.index"):
        official_archive(tmp_path / "empty")


def test_model_archive_is_a_release_that_loads(tmp_path):
    archive = model_archive("efficientdet-d0")
    folder = extract(archive, tmp_path) / "efficientdet-d0"
    model = efficientdet.create_model("efficientdet-d0", weights=folder)
    torch.manual_seed(0)
    expected = efficientdet.create_model("efficientdet-d0").state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize("kind, error", [
    ("dotdot", tarfile.OutsideDestinationError),
    ("symlink", tarfile.AbsoluteLinkError),
    ("device", tarfile.SpecialFileError),
])
def test_unsafe_archives_hold_their_member_and_the_data_filter_refuses_them(kind, error, tmp_path):
    archive = evil_archive(kind)
    found = members(archive)
    for name in CHECKPOINT_FILES:
        assert f"efficientdet-d0/{name}" in found
    if kind == "dotdot":
        assert found["efficientdet-d0/../../evil"].isfile()
    elif kind == "symlink":
        link = found["efficientdet-d0/model.index"]
        assert link.issym() and link.linkname == "/etc/passwd"
    else:
        device = found["efficientdet-d0/model.data-00000-of-00001"]
        assert device.ischr() and (device.devmajor, device.devminor) == (1, 3)
    with pytest.raises(error):
        extract(archive, tmp_path / "out")


def test_absolute_member_keeps_its_leading_slash(tmp_path):
    target = str(tmp_path / "evil")
    assert target.startswith("/") and target in members(evil_archive("absolute", target=target))
    assert "/tmp/evil" in members(evil_archive("absolute"))


def test_truncated_archive_is_half_a_good_one():
    cut = evil_archive("truncated")
    good = mirror_module.release_members(mirror_module.stand_in_checkpoint(), "efficientdet-d0")
    whole = mirror_module.tar_gz(good)
    assert cut == whole[:len(whole) // 2]
    with pytest.raises((tarfile.ReadError, EOFError)):
        members(cut)


def test_tf2_archive_holds_an_object_based_checkpoint(tmp_path):
    folder = extract(evil_archive("tf2"), tmp_path) / "efficientdet-d0"
    ckpt = TFCheckpoint(folder)
    keys = ckpt.keys()
    assert keys[0] == TF2_GRAPH_KEY
    assert all(key.endswith("/.ATTRIBUTES/VARIABLE_VALUE") for key in keys[1:])
    graph = ckpt.read(TF2_GRAPH_KEY)
    assert graph.shape == () and b"save_counter/.ATTRIBUTES/VARIABLE_VALUE" in graph.item()
    with pytest.raises(WeightsError):
        efficientdet.create_model("efficientdet-d0", weights=folder)


def test_other_variant_archive_holds_d1_under_the_d0_folder(tmp_path):
    archive = evil_archive("other-variant")
    assert sorted(members(archive)) == ["efficientdet-d0", *sorted(f"efficientdet-d0/{n}" for n in CHECKPOINT_FILES)]
    folder = extract(archive, tmp_path) / "efficientdet-d0"
    keys = set(TFCheckpoint(folder).keys())
    d1 = efficientdet.create_model("efficientdet-d1")
    names, stacks = set(), set()
    for tf, layout in official_names(d1).values():
        (stacks if layout == "stack" else names).add(tf)
    fusion = {key for key in keys if re.sub(r"_\d+$", "", key) in stacks}  # WSM, WSM_1, ...
    assert keys - fusion == names | {"global_step"} and {re.sub(r"_\d+$", "", k) for k in fusion} == stacks
    assert "efficientnet-b1/stem/conv2d/kernel" in keys
    load_weights(d1, folder)  # every d1 tensor there, with d1's shapes
    with pytest.raises(WeightsError, match="efficientnet-b0"):
        efficientdet.create_model("efficientdet-d0", weights=folder)


def test_unknown_evil_kind_is_refused():
    with pytest.raises(ValueError, match="kind 'zip'"):
        evil_archive("zip")


# ---------------------------------------------------------------- effdet release file


def test_effdet_pth_is_named_by_its_sha256_and_converts(effdet_d0_release, tmp_path):
    from efficientdet.weights.effdet import load_effdet_file

    path = effdet_pth(tmp_path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256 == effdet_d0_release.sha256
    assert re.fullmatch(r"tf_efficientdet_d0_34-([0-9a-f]{8})\.pth", path.name).group(1) == sha256[:8]
    state = load_effdet_file(path)
    assert "backbone.conv_stem.weight" in state
    model = load_weights(efficientdet.create_model("efficientdet-d0"), path)
    assert torch.equal(model.backbone.stem_conv.weight, state["backbone.conv_stem.weight"])
