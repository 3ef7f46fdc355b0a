"""``efficientdet data check``: the report, its JSON, and the exit status (0 clean, 1 problems,
warnings too under --strict, 2 a YAML that cannot be read or a wrong option)."""

import json

import pytest

from efficientdet.cli import main
from efficientdet.shapes import make_shapes_dataset


@pytest.fixture
def data(tmp_path):
    return make_shapes_dataset(tmp_path / "d", num_train=6, num_val=2, image_size=128, seed=4)


def edit(data, split, change):
    path = data.parent / f"{split}.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    return path


def test_a_clean_dataset_passes_with_its_statistics_and_json(data, tmp_path, capsys):
    report = tmp_path / "check.json"
    assert main(["data", "check", str(data), "--image-size", "128", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{data} (coco; train, val): 0 errors, 0 warnings\n")
    assert "train: 6 images" in out and "val: 2 images" in out and "anchor fit (efficientdet-lite0 at 128x128" in out
    written = json.loads(report.read_text())
    assert written["problems"] == {"errors": {}, "warnings": {}} and written["image_size"] == [128, 128]
    assert written["splits"]["train"]["images"] == 6 and 0 < written["anchor_fit"]["share"] <= 1


def test_warnings_pass_unless_strict(data, capsys):
    """A box past the image's edge is clipped: a warning, which --strict makes a failure."""
    annotations = edit(data, "train", lambda r: r["annotations"][0].__setitem__("bbox", [100, 100, 60, 60]))
    assert main(["data", "check", str(data), "--image-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "0 errors, 1 warnings" in out and f"{annotations}: annotation id " in out
    assert main(["data", "check", str(data), "--image-size", "128", "--strict"]) == 1


def test_every_error_is_listed_once_and_fails_the_check(data, capsys):
    def change(record):
        record["annotations"][0]["bbox"] = [1, 1, -5, 5]
        record["annotations"][1]["category_id"] = 77
        record["images"][0]["file_name"] = "gone.jpg"
    annotations = edit(data, "train", change)
    assert main(["data", "check", str(data), "--image-size", "128"]) == 1
    out = capsys.readouterr().out
    assert "3 errors" in out.splitlines()[0]
    for line in ("  negative box size: 1", f"    {annotations}: annotation id ", "  unknown class: 1",
                 "category_id 77 is not in 'categories'", "  missing file: 1", "1 of 6 images missing: "):
        assert line in out, line


@pytest.mark.parametrize("argv, message", [
    (["data", "check", "missing.yaml"], "missing.yaml: cannot read"),
    (["data", "check", "missing.yaml", "--image-size", "0"], "--image-size must be N or HxW with sides of at least 65"),
    (["data", "check", "missing.yaml", "--model", "efficientdet-d9"], "unknown model 'efficientdet-d9'"),
])
def test_a_dataset_that_cannot_be_read_or_a_wrong_option_is_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("efficientdet data: error: ") and message in err and err.count("\n") == 1
