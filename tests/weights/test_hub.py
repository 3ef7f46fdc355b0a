"""The weights cache against a mirror on 127.0.0.1 (:mod:`mirror`) or in a local folder: first use
fetches, verifies and converts; later uses need no network; bad files and broken transfers leave
nothing in the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from mirror import evil_archive, model_archive

from efficientdet import create_model
from efficientdet.weights import download as download_module
from efficientdet.weights import read_metadata, read_weights, zoo
from efficientdet.weights.hub import (
    ENV_MIRROR,
    ENV_OFFLINE,
    PARTIAL,
    cache_dir,
    cached_path,
    fetch,
    verify,
)
from efficientdet.weights.zoo import find

D0 = find("efficientdet-d0:coco")
D0_EFFDET = find("efficientdet-d0:coco:effdet")
LEVELS = range(3, 8)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv(ENV_OFFLINE, raising=False)


@pytest.fixture(scope="module")
def random_d0_archive() -> bytes:
    """An official-layout D0 release of random weights (no shared fixture needed)."""
    return model_archive("efficientdet-d0")


def _leftovers() -> list[str]:
    """Whatever a failed fetch could have left in the cache folder (the lock file aside)."""
    folder = cache_dir()
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def _head_outputs(model, reference) -> float:
    x = torch.from_numpy(reference["input_image"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        cls, box = model.eval()(x)
    return max(float(np.abs(out.permute(0, 2, 3, 1).numpy() - reference[f"{kind}_p{level}"]).max())
               for outs, kind in ((cls, "class_logits"), (box, "box_regression")) for out, level in zip(outs, LEVELS))


def test_first_use_fetches_converts_and_reproduces_the_official_outputs(official_d0, official_d0_archive,
                                                                          mirror_env, online):
    mirror_env.files[D0.filename] = official_d0_archive
    model = create_model("efficientdet-d0", weights="coco")
    assert _head_outputs(model, np.load(official_d0 / "reference.npz")) <= 1e-4
    assert mirror_env.count(D0.filename) == 1
    meta = read_metadata(cached_path(D0))
    assert meta["weights"] == "efficientdet-d0:coco" and meta["source"] == mirror_env.url(D0.filename)
    assert meta["file_sha256"] == hashlib.sha256(official_d0_archive).hexdigest()
    assert float(meta["coco_ap"]) == D0.coco_ap
    assert _leftovers() == [cached_path(D0).name]  # only the converted file is kept

    mirror_env.stop()  # the second use needs no network
    again = create_model("efficientdet-d0", weights="coco")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    assert "efficientdet-d0:coco: " in verify(D0)


def test_a_local_folder_serves_as_the_mirror(official_d0, official_d0_archive, tmp_path, monkeypatch, online):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / D0.filename).write_bytes(official_d0_archive)
    monkeypatch.setenv(ENV_MIRROR, str(folder))
    model = create_model("efficientdet-d0", weights="efficientdet-d0:coco")
    assert _head_outputs(model, np.load(official_d0 / "reference.npz")) <= 1e-4
    (folder / D0.filename).unlink()
    create_model("efficientdet-d0", weights="coco")  # from the cache


def test_effdet_port_is_checked_against_its_hash_and_converted(effdet_d0_release, tmp_path, mirror_env, online,
                                                               monkeypatch):
    release = effdet_d0_release
    entry = dataclasses.replace(D0_EFFDET, url=f"{zoo.EFFDET_BASE}/{release.name}", sha256_prefix=release.sha256[:8])
    monkeypatch.setitem(zoo._BY_NAME, entry.name, entry)
    mirror_env.files[release.name] = release.data
    model = create_model("efficientdet-d0", weights="coco:effdet")
    local = tmp_path / release.name
    local.write_bytes(release.data)
    expected = read_weights(create_model("efficientdet-d0"), local)
    for key, value in expected.items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert read_metadata(cached_path(entry))["file_sha256"] == release.sha256


def test_offline_with_an_empty_cache_says_what_to_do_in_one_line():
    with pytest.raises(ValueError) as error:
        create_model("efficientdet-d0", weights="coco")
    message = str(error.value)
    assert "\n" not in message
    for part in ("efficientdet-d0:coco", D0.url, str(cached_path(D0)), "efficientdet weights download",
                 "--weights PATH", ENV_OFFLINE):
        assert part in message


def _fetch_in_subprocess(env_extra: dict[str, str]) -> subprocess.Popen:
    code = textwrap.dedent("""
        from efficientdet.weights.hub import fetch
        from efficientdet.weights.zoo import find
        print(fetch(find("efficientdet-d0"), progress=False))
    """)
    env = {**os.environ, **env_extra}
    env.pop(ENV_OFFLINE, None)
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_processes_asking_at_once_download_once(random_d0_archive, mirror):
    mirror.files[D0.filename] = random_d0_archive
    mirror.behave(D0.filename, "stall")  # the first holds the lock mid-transfer while the second starts
    procs = [_fetch_in_subprocess({ENV_MIRROR: mirror.base_url}) for _ in range(2)]
    assert mirror.wait_stalled(timeout=120)
    time.sleep(1.0)
    mirror.release()
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert mirror.count(D0.filename) == 1
    assert {out.strip() for out, _ in outputs} == {str(cached_path(D0))}


def test_a_download_killed_mid_transfer_leaves_no_entry_and_the_next_call_succeeds(random_d0_archive, mirror,
                                                                                   monkeypatch, online):
    mirror.files[D0.filename] = random_d0_archive
    mirror.behave(D0.filename, "stall")
    proc = _fetch_in_subprocess({ENV_MIRROR: mirror.base_url})
    assert mirror.wait_stalled(timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not cached_path(D0).exists()
    assert all(PARTIAL in name for name in _leftovers())  # nothing that looks complete
    mirror.behave(D0.filename, "ok")
    monkeypatch.setenv(ENV_MIRROR, mirror.base_url)
    assert fetch(D0, progress=False) == cached_path(D0)
    assert _leftovers() == [cached_path(D0).name]  # the killed run's partial file was removed
    assert mirror.count(D0.filename) == 2


# ---- bad input: one line naming the file or URL, nothing left in the cache, other entries intact ----

@pytest.fixture
def previous_entry():
    """Another entry already in the cache, which no failure may touch."""
    path = cached_path(find("efficientdet-lite0"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"previous entry")
    return path


def _fails(match: str, error=ValueError) -> str:
    with pytest.raises(error) as e:
        fetch(D0, progress=False)
    message = str(e.value)
    assert "\n" not in message and match in message, message
    return message


@pytest.mark.parametrize("kind, match", [
    ("truncated", "not a complete tar archive"),
    ("dotdot", "points outside its folder"),
    ("absolute", "points outside its folder"),
    ("symlink", "is a link"),
    ("device", "is a device or special file"),
    ("tf2", "TF2 object-based checkpoint"),
    ("other-variant", "holds another variant's checkpoint (backbone efficientnet-b1; efficientdet-d0 has efficientnet-b0)"),
])
def test_a_bad_archive_is_refused(kind, match, mirror_env, previous_entry, online, tmp_path):
    target = str(tmp_path / "evil")
    mirror_env.files[D0.filename] = evil_archive(kind, target=target)
    message = _fails(match)
    assert mirror_env.url(D0.filename) in message
    assert not os.path.exists(target)
    assert _leftovers() == [previous_entry.name] and previous_entry.read_bytes() == b"previous entry"


@pytest.mark.parametrize("mode, match", [
    ("404", "HTTP 404"), ("500", "HTTP 500"), ("html", "web page instead of the file"), ("truncate", "truncated"),
])
def test_a_bad_reply_is_refused(mode, match, random_d0_archive, mirror_env, previous_entry, online):
    mirror_env.files[D0.filename] = random_d0_archive
    mirror_env.behave(D0.filename, mode)
    assert mirror_env.url(D0.filename) in _fails(match)
    assert _leftovers() == [previous_entry.name] and previous_entry.read_bytes() == b"previous entry"


def test_an_endless_reply_is_cut_at_the_entrys_bound(random_d0_archive, mirror_env, online):
    mirror_env.files[D0.filename] = random_d0_archive
    mirror_env.behave(D0.filename, "huge")
    _fails("larger than this file can be; stopped reading")
    assert mirror_env.wait_idle(timeout=30)
    assert mirror_env.bytes_sent[D0.filename] < 2 * download_module_bound()
    assert _leftovers() == []


def download_module_bound() -> int:
    from efficientdet.weights.hub import max_bytes

    return max_bytes(D0)


def test_a_wrong_hash_prefix_is_refused(effdet_d0_release, mirror_env, previous_entry, online):
    mirror_env.files[D0_EFFDET.filename] = effdet_d0_release.data  # not the file the published prefix names
    with pytest.raises(ValueError) as e:
        fetch(D0_EFFDET, progress=False)
    assert "\n" not in str(e.value) and "does not start with the published f153e0cf" in str(e.value)
    assert _leftovers() == [previous_entry.name]


def test_a_refused_connection_gives_the_ways_out(mirror_env, online):
    mirror_env.stop()
    message = _fails("cannot connect")
    assert "efficientdet weights download efficientdet-d0:coco" in message and "--weights PATH" in message


def test_an_unwritable_or_full_cache_is_named(random_d0_archive, mirror_env, monkeypatch, online, previous_entry):
    mirror_env.files[D0.filename] = random_d0_archive
    monkeypatch.setenv("EFFICIENTDET_HOME", "/proc/self/no-such-home")  # not creatable, even by root
    _fails("cannot create the weights cache /proc/self/no-such-home/weights", OSError)

    monkeypatch.setenv("EFFICIENTDET_HOME", str(previous_entry.parent.parent))
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(download_module, "open", full_disk_open, raising=False)
    message = _fails("No space left on device", OSError)
    assert "nothing was kept" in message and str(cached_path(D0)) in message
    assert _leftovers() == [previous_entry.name] and previous_entry.read_bytes() == b"previous entry"


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names for efficientdet-d0: efficientdet-d0:coco"):
        create_model("efficientdet-d0", weights="coco:nope")


def test_detector_from_pretrained_is_the_official_coco_detector(random_d0_archive, mirror_env, online):
    from efficientdet import Detector

    mirror_env.files[D0.filename] = random_d0_archive
    detector = Detector.from_pretrained("efficientdet-d0")
    assert detector.config.name == "efficientdet-d0" and detector.label_ids == list(range(1, 91))
    assert detector.class_names[0] == "person"
    result = detector(np.zeros((96, 128, 3), dtype=np.uint8))
    assert result["boxes"].shape[1] == 4 and len(result["names"]) == len(result["labels"])
