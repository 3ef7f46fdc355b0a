"""``efficientdet weights`` and the commands that take ``--weights coco``, against a 127.0.0.1 mirror."""

import json

import pytest
from mirror import model_archive
from PIL import Image

from efficientdet.cli import main
from efficientdet.weights.hub import cached_path
from efficientdet.weights.zoo import find

D0 = find("efficientdet-d0")


@pytest.fixture
def served_d0(mirror_env, monkeypatch):
    monkeypatch.delenv("EFFICIENTDET_OFFLINE")
    mirror_env.files[D0.filename] = model_archive("efficientdet-d0")
    return mirror_env


def test_predict_with_no_weights_uses_coco_for_d0_and_a_fresh_output_folder(served_d0, tmp_path, monkeypatch,
                                                                              capsys):
    from skimage import data

    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.astronaut()).save("photo.jpg")
    assert main(["predict", "photo.jpg", "--quiet"]) == 0
    assert (tmp_path / "runs/predict/photo.jpg").is_file()
    detections = json.loads((tmp_path / "runs/predict/detections.json").read_text())
    assert len(detections) == 100 and all(1 <= d["category_id"] <= 90 for d in detections)  # COCO ids
    assert main(["predict", "photo.jpg", "--quiet", "--no-draw"]) == 0  # a second run: a new folder
    assert (tmp_path / "runs/predict2/detections.json").is_file()
    assert served_d0.count(D0.filename) == 1


def test_download_path_list_verify_remove(served_d0, capsys):
    assert main(["weights", "download", "efficientdet-d0", "--quiet"]) == 0
    path = cached_path(D0)
    assert str(path) in capsys.readouterr().out
    assert main(["weights", "path", "efficientdet-d0:coco"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["weights", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["efficientdet-d0:coco"].split()[-1] == "MB" and rows["efficientdet-d1:coco"].split()[-1] == "-"
    assert "34.3" in rows["efficientdet-d0:coco"] and "3.9M" in rows["efficientdet-d0:coco"]
    assert main(["weights", "verify"]) == 0
    assert "1 of 1 checked entries are sound" in capsys.readouterr().out

    data = bytearray(path.read_bytes())
    data[-100:] = b"\0" * 100  # damage the last tensor's bytes... and its shape stays: still loads
    path.write_bytes(bytes(data[: len(data) // 2]))  # a truncated file does not
    assert main(["weights", "verify"]) == 1
    assert "BAD" in capsys.readouterr().err

    assert main(["weights", "remove", "efficientdet-d0"]) == 0
    assert not path.exists()
    assert main(["weights", "path", "efficientdet-d0"]) == 2
    err = capsys.readouterr().err
    assert "not in the cache" in err and "efficientdet weights download efficientdet-d0" in err


def test_convert_and_export_take_published_weights_by_name(served_d0, tmp_path, capsys):
    from efficientdet.weights import read_own_metadata

    out = tmp_path / "d0.safetensors"
    assert main(["convert", "coco", "--model", "efficientdet-d0", "--out", str(out)]) == 0
    assert read_own_metadata(out)["variant"] == "efficientdet-d0"
    assert main(["convert", "efficientdet-d0:coco", "--out", str(tmp_path / "again.safetensors")]) == 0
    assert served_d0.count(D0.filename) == 1


def test_unknown_names_fail_in_one_line(capsys):
    assert main(["weights", "download", "efficientdet-d0:cocoo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "valid names for efficientdet-d0: efficientdet-d0:coco" in err
    assert main(["predict", "x.jpg", "--weights", "coco:nope", "--out", "o"]) == 2
    assert "unknown weights 'efficientdet-d0:coco:nope'" in capsys.readouterr().err


def test_offline_predict_gives_the_ways_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64)).save("photo.jpg")
    assert main(["predict", "photo.jpg"]) == 2
    err = capsys.readouterr().err
    assert "EFFICIENTDET_OFFLINE is set" in err and "--weights PATH" in err
    assert not (tmp_path / "runs").exists()
