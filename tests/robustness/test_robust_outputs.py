"""Where ``predict`` reads and writes: folders are searched with their subfolders, outputs keep
each file's path below its folder, files of other kinds are counted, and no output may land on an
input: an output folder that holds an input (at any depth) or is a file is refused before
anything is written."""

import json
from pathlib import Path

import pytest
from robust_builders import MODEL_ARGS, assert_user_error, picture, png_bytes, run_cli


def predict(capsys, weights: Path, *args: object):
    return run_cli(capsys, "predict", *MODEL_ARGS, "--weights", weights, "--workers", "0", "--quiet", *args)


def photo_folder(root: Path) -> tuple[Path, dict[Path, bytes]]:
    folder = root / "photos"
    (folder / "sub" / "deeper").mkdir(parents=True)
    files = {folder / "a.png": png_bytes(picture(seed=1)), folder / "sub" / "a.png": png_bytes(picture(seed=2)),
             folder / "sub" / "deeper" / "b.png": png_bytes(picture(seed=3))}
    for path, data in files.items():
        path.write_bytes(data)
    return folder, files


@pytest.mark.parametrize("where", ["the folder", "its parent", "the folder by another path", "a subfolder"])
def test_output_folder_holding_an_input_is_refused_before_anything_is_written(where, lite0_weights, tmp_path,
                                                                             capsys):
    folder, files = photo_folder(tmp_path)
    out = {"the folder": folder, "its parent": tmp_path, "the folder by another path": folder / "sub" / "..",
           "a subfolder": folder / "sub"}[where]
    inputs = [folder / "sub" / "a.png"] if where == "a subfolder" else [folder]
    before = sorted(tmp_path.rglob("*"))
    result = predict(capsys, lite0_weights, *inputs, "--out", out)
    assert_user_error(result, "predict", f"output folder {out} holds the input")
    assert sorted(tmp_path.rglob("*")) == before
    assert all(path.read_bytes() == data for path, data in files.items())


def test_output_path_that_is_a_file_is_one_line_naming_it(lite0_weights, tmp_path, capsys):
    folder, _ = photo_folder(tmp_path)
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    result = predict(capsys, lite0_weights, folder, "--out", taken)
    assert_user_error(result, "predict", f"{taken}: exists and is not a folder")
    assert taken.read_text() == "mine"


def test_folders_are_searched_with_their_subfolders_and_other_files_are_counted(lite0_weights, tmp_path, capsys):
    folder, _ = photo_folder(tmp_path)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "labels.csv").write_text("a,b")
    out = tmp_path / "out"
    result = predict(capsys, lite0_weights, folder, "--out", out, "--save-json")
    assert result.code == 0, result.err
    assert "3 images and 0 video frames" in result.out and "2 other files in the folders not read" in result.out
    names = [e["file_name"] for e in json.loads((out / "images.json").read_text())]
    assert names == ["a.png", "sub/a.png", "sub/deeper/b.png"]
    for name in names:
        assert (out / name).is_file() and (out / "labels" / f"{name}.json").is_file()


def test_output_names_stay_unique_when_annotated_copies_would_collide(tmp_path):
    from efficientdet.inference.sources import scan_inputs

    for name in ("x.gif", "x.gif.png", "X.GIF"):  # x.gif is drawn as x.gif.png
        (tmp_path / name).write_bytes(b"")
    sources, left_out = scan_inputs([tmp_path / "x.gif", tmp_path / "x.gif.png", tmp_path / "X.GIF"])
    assert [s.name for s in sources] == ["x.gif", "x.gif_1.png", "X_1.GIF"] and left_out == []
