import json
import subprocess
import sys

import pytest

from efficientdet.cli import main


def test_info_json(capsys):
    assert main(["info", "efficientdet-d0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] == 3_880_067
    assert abs(report["flops"] / 2.54e9 - 1) < 0.02
    assert report["config"]["bifpn"] == {"channels": 64, "repeats": 3, "fusion": "fastattn", "separable": True}


def test_info_table(capsys):
    assert main(["info", "efficientdet-lite0"]) == 0
    out = capsys.readouterr().out
    assert "3,243,470 parameters" in out and "at 320x320" in out and "act: relu6" in out


def test_unknown_model_is_one_line_error(capsys):
    assert main(["info", "efficientdet-d9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'efficientdet-d9'" in err and "efficientdet-lite4" in err


@pytest.mark.parametrize("argv", [["--debug", "info", "nope"], ["info", "nope", "--debug"]])
def test_debug_shows_traceback_before_or_after_the_subcommand(argv):
    with pytest.raises(ValueError, match="unknown model"):
        main(argv)


def test_python_dash_m_efficientdet_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "efficientdet", "info", "efficientdet-lite0", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parameters"] == 3_243_470


def test_convert_official_to_safetensors_and_back(official_d0, tmp_path, capsys):
    import torch

    from efficientdet import create_model
    from efficientdet.weights import read_metadata

    out = tmp_path / "d0.safetensors"
    assert main(["convert", str(official_d0), "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["variant"] == "efficientdet-d0" and meta["num_classes"] == "90" and meta["source"] == str(official_d0)
    a = create_model("efficientdet-d0", weights=official_d0)
    b = create_model("efficientdet-d0", weights=out)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left nothing behind


def test_convert_refuses_bad_output_and_unknown_variant(tmp_path, capsys):
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "x.bin")]) == 2
    assert "--out must end in .safetensors" in capsys.readouterr().err
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "pass --model" in capsys.readouterr().err


def test_safetensors_of_other_variant_is_refused(tmp_path):
    from efficientdet import create_model
    from efficientdet.weights import WeightsError, save_safetensors

    path = save_safetensors(create_model("efficientdet-lite0", num_classes=5), tmp_path / "l0.safetensors")
    assert create_model("efficientdet-lite0", weights=path).config.num_classes == 5  # read from metadata
    with pytest.raises(WeightsError, match="holds efficientdet-lite0 with 5 classes, the model is efficientdet-lite1"):
        create_model("efficientdet-lite1", weights=path)
    with pytest.raises(WeightsError, match="holds efficientdet-lite0 with 5 classes.*with 7 classes"):
        create_model("efficientdet-lite0", num_classes=7, weights=path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(WeightsError, match="bad.safetensors: not a readable safetensors file"):
        create_model("efficientdet-lite0", weights=tmp_path / "bad.safetensors")


def test_convert_effdet_pth_then_load_gives_identical_outputs(tmp_path):
    import effdet
    import torch

    from efficientdet import create_model

    torch.manual_seed(0)
    theirs = effdet.EfficientDet(effdet.get_efficientdet_config("tf_efficientdet_lite0"), pretrained_backbone=False).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    pth = tmp_path / "tf_efficientdet_lite0_random.pth"
    torch.save(theirs.state_dict(), pth)
    out = tmp_path / "lite0.safetensors"
    assert main(["convert", str(pth), "--out", str(out)]) == 0  # variant read from the file name
    direct = create_model("efficientdet-lite0", weights=pth).eval()
    ours = create_model("efficientdet-lite0", weights=out).eval()
    x = torch.randn(1, 3, 320, 320)  # effdet's native Lite0 size
    with torch.no_grad():
        ref_cls, ref_box = theirs(x)
        for model in (direct, ours):
            cls_out, box_out = model(x)
            for a, b in zip(cls_out + box_out, ref_cls + ref_box):
                assert (a - b).abs().max() <= 1e-5


def test_convert_reads_the_variant_and_labels_of_our_safetensors(tmp_path, capsys):
    from efficientdet import create_model
    from efficientdet.weights import read_metadata, save_safetensors

    labels = {"names": json.dumps(["a", "b"]), "label_ids": json.dumps([1, 2])}
    src = save_safetensors(create_model("efficientdet-lite0", num_classes=2), tmp_path / "run.safetensors",
                           extra=labels)
    out = tmp_path / "copy.safetensors"
    assert main(["convert", str(src), "--out", str(out)]) == 0  # no --model: the metadata names it
    meta = read_metadata(out)
    assert meta["variant"] == "efficientdet-lite0" and {k: meta[k] for k in labels} == labels


def test_convert_of_a_foreign_safetensors_says_what_it_lacks(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    assert main(["convert", str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks format='efficientdet', variant and num_classes" in err
    assert "convert the file with" not in err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_weights_files_follow_the_umask(umask, mode, tmp_path):
    import os
    import stat

    from efficientdet import create_model
    from efficientdet.weights import save_safetensors

    previous = os.umask(umask)
    try:
        path = save_safetensors(create_model("efficientdet-lite0"), tmp_path / "w.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
