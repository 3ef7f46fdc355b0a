"""Annotations end to end: every malformed dataset is refused by ``train`` and ``eval`` with one
line naming the file, the record and the problem; imperfect boxes are fixed up and counted.

Each case starts from a valid two-image dataset (COCO, VOC or YOLO, train and val splits over the
same files) and breaks one thing in it. Both commands parse before they build a model, so a case
costs milliseconds.
"""

import json
from pathlib import Path
from typing import Callable

import pytest
from robust_builders import (
    DATASETS,
    MODEL_ARGS,
    VOC_OBJECT,
    assert_user_error,
    coco_dataset,
    run_cli,
    run_cli_subprocess,
    voc_dataset,
    voc_xml,
    yolo_dataset,
)


# ---------------------------------------------------------------- the breakages


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))  # json writes NaN / Infinity for float('nan') / float('inf')


def coco(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "annotations.json", change)


def annotation(key: str, value) -> Callable[[Path], None]:
    return coco(lambda r: r["annotations"][0].__setitem__(key, value))


def image_record(key: str, value) -> Callable[[Path], None]:
    return coco(lambda r: r["images"][0].__setitem__(key, value))


def voc_a(xml: str) -> Callable[[Path], None]:
    return lambda root: (root / "VOC/Annotations/a.xml").write_text(xml)


def voc_object(**fields) -> Callable[[Path], None]:
    values = {"name": "square", "x1": 2, "x2": 20, **fields}
    return voc_a(voc_xml("a.png", VOC_OBJECT.format(**values)))


def yolo_line(line: str) -> Callable[[Path], None]:
    return lambda root: (root / "labels/b.txt").write_text(f"1 0.5 0.5 0.2 0.2\n{line}\n")


def yaml_text(text: str) -> Callable[[Path], None]:
    return lambda root: (root / "data.yaml").write_text(text)


XXE = ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
       "<annotation><filename>&secret;</filename></annotation>")
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]><annotation>&d;</annotation>')
ANN = "{root}/annotations.json"
A_XML = "{root}/VOC/Annotations/a.xml"
B_TXT = "{root}/labels/b.txt:2"

# case → (format, breakage, what the error line must hold; {root} is the dataset folder)
CASES = {
    "coco-invalid-json": ("coco", lambda root: (root / "annotations.json").write_text('{"images": [{"id": 1,'),
                          [ANN, "not valid JSON"]),
    "coco-missing-top-level-key": ("coco", coco(lambda r: r.pop("annotations")),
                                   [ANN, "missing key 'annotations' (a list)"]),
    "coco-annotation-missing-bbox": ("coco", coco(lambda r: r["annotations"][0].pop("bbox")),
                                     [ANN, "annotation id 1: missing key 'bbox'"]),
    "coco-bbox-wrong-type": ("coco", annotation("bbox", "4,4,20,10"),
                             [ANN, "annotation id 1: bbox must be [x, y, width, height], got '4,4,20,10'"]),
    "coco-image-id-wrong-type": ("coco", annotation("image_id", "1"),
                                 [ANN, "annotation id 1: image_id must be an integer", "got '1'"]),
    "coco-width-wrong-type": ("coco", image_record("width", 48.5), [ANN, "image id 1: width must be an integer"]),
    "coco-nan-box": ("coco", annotation("bbox", [float("nan"), 4, 20, 10]),
                     [ANN, "annotation id 1: bbox must be finite, got nan"]),
    "coco-inf-box": ("coco", annotation("bbox", [4, 4, float("inf"), 10]),
                     [ANN, "annotation id 1: bbox must be finite, got inf"]),
    "coco-negative-box": ("coco", annotation("bbox", [4, 4, -20, 10]),
                          [ANN, "annotation id 1: bbox has negative width -20"]),
    "coco-duplicate-image-id": ("coco", image_record("id", 2), [ANN, "duplicate image id 2"]),
    "coco-duplicate-category-id": ("coco", coco(lambda r: r["categories"][1].__setitem__("id", 1)),
                                   [ANN, "duplicate category id 1"]),
    "coco-unknown-category-id": ("coco", annotation("category_id", 99),
                                 [ANN, "annotation id 1: category_id 99 is not in 'categories'"]),
    "coco-unknown-image-id": ("coco", annotation("image_id", 99),
                              [ANN, "annotation id 1: image_id 99 is not in 'images'"]),
    "coco-file-name-escapes-root": ("coco", image_record("file_name", "../annotations.json"),
                                    [ANN, "image id 1: file name '../annotations.json' leaves the folder"]),
    "coco-absolute-file-name": ("coco", image_record("file_name", "/etc/passwd"),
                                [ANN, "image id 1: file name '/etc/passwd' leaves the folder"]),
    "coco-image-file-missing": ("coco", image_record("file_name", "gone.png"),
                                [ANN, "1 of 2 images missing: {root}/images/gone.png"]),
    "yaml-invalid": ("coco", yaml_text("format: coco\ntrain: [unclosed\n"), ["{root}/data.yaml: not valid YAML"]),
    "yaml-unknown-format": ("coco", yaml_text("format: kitti\ntrain: {images: images}\n"),
                            ["{root}/data.yaml: format: expected one of coco, voc, yolo, got 'kitti'"]),
    "yaml-split-path-missing": ("coco", yaml_text("format: coco\ntrain: {images: nowhere, annotations: a.json}\n"),
                                ["{root}/data.yaml: train.images: {root}/nowhere does not exist"]),
    "voc-invalid-xml": ("voc", voc_a("<annotation><object></annotation>"), [A_XML, "not well-formed XML"]),
    "voc-external-entity": ("voc", voc_a(XXE), [A_XML, "refused: EntitiesForbidden",
                                                "entity declarations and external references are not allowed"]),
    "voc-entity-expansion": ("voc", voc_a(LAUGHS), [A_XML, "refused: EntitiesForbidden"]),
    "voc-missing-bndbox": ("voc", voc_a(voc_xml("a.png", "<object><name>square</name></object>")),
                           [A_XML, "object #0: missing <bndbox>"]),
    "voc-coordinate-not-a-number": ("voc", voc_object(x1="two"),
                                    [A_XML, "object #0: <bndbox/xmin> must be a number, got 'two'"]),
    "voc-inverted-box": ("voc", voc_object(x1=30, x2=20), [A_XML, "object #0: bndbox has xmax < xmin"]),
    "voc-unknown-class": ("voc", voc_object(name="dog"), [A_XML, "object #0: class 'dog' is not one of the 4 names"]),
    "voc-filename-escapes-root": ("voc", voc_a("<annotation><filename>../../data.yaml</filename></annotation>"),
                                  [A_XML, "<filename>: file name '../../data.yaml' leaves the folder"]),
    "yolo-wrong-column-count": ("yolo", yolo_line("1 0.5 0.5 0.2"),
                                [B_TXT, "expected 5 values 'class cx cy w h', got 4"]),
    "yolo-value-out-of-range": ("yolo", yolo_line("1 1.5 0.5 0.2 0.2"),
                                [B_TXT, "cx cy w h must be normalised to [0, 1], got '1.5 0.5 0.2 0.2'"]),
    "yolo-nan-value": ("yolo", yolo_line("1 nan 0.5 0.2 0.2"), [B_TXT, "must be normalised to [0, 1]"]),
    "yolo-class-out-of-range": ("yolo", yolo_line("7 0.5 0.5 0.2 0.2"), [B_TXT, "class 7 is not in 0..3 (4 names)"]),
    "yolo-label-not-utf8": ("yolo", lambda root: (root / "labels/a.txt").write_bytes(b"0 0.5 \xff\xfe 0.1 0.1\n"),
                            ["{root}/labels/a.txt: not UTF-8 text"]),
    "yolo-names-missing": ("yolo", yaml_text("format: yolo\ntrain: {images: images, labels: labels}\n"),
                           ["{root}/data.yaml: names: required for the yolo format"]),
}


# train reads the whole dataset before refusing it (every problem in one pass): where a breakage
# leaves other records without what they refer to, train lists those too, under the first.
TRAIN_ALSO = {"coco-duplicate-image-id": "{root}/annotations.json: annotation id 1: image_id 1 is not in 'images'"}


@pytest.fixture
def results_file(tmp_path) -> Path:
    """An empty COCO results file: ``eval --predictions`` parses the dataset, then scores it."""
    path = tmp_path / "results.json"
    path.write_text("[]")
    return path


# Cases where the code answers otherwise than specified: kept to the specification, expected to fail.


@pytest.mark.parametrize("case", CASES)
def test_malformed_dataset_is_refused_by_train_and_eval_with_one_line(case, tmp_path, results_file, capsys):
    fmt, breakage, needles = CASES[case]
    root = tmp_path / "data"
    root.mkdir()
    data = DATASETS[fmt](root)
    breakage(root)
    expected = [n.format(root=root) for n in needles]
    trained = run_cli(capsys, "train", *MODEL_ARGS, "--data", data, "--out", tmp_path / "run", "--scratch",
                      "--workers", "0")
    if case in TRAIN_ALSO:
        assert trained.code == 2 and trained.err.startswith(f"efficientdet train: error: {data}: 2 problems ")
        assert all(n in trained.err for n in [*expected, TRAIN_ALSO[case].format(root=root)]), trained.err
    else:
        assert_user_error(trained, "train", *expected)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    evaluated = run_cli(capsys, "eval", "--data", data, "--predictions", results_file)
    assert_user_error(evaluated, "eval", *expected)


def test_external_entity_is_refused_in_a_real_process_without_leaking_the_file(tmp_path):
    """The user's view: ``python -m efficientdet.cli``, exit 2, one line, no traceback, and nothing of
    the file the entity names (/etc/passwd) in the output."""
    root = tmp_path / "data"
    root.mkdir()
    data = voc_dataset(root)
    voc_a(XXE)(root)
    result = run_cli_subprocess("eval", "--data", data, "--predictions", "unused.json", cwd=tmp_path)
    assert_user_error(result, "eval", f"{root}/VOC/Annotations/a.xml: refused: EntitiesForbidden")
    assert "root:" not in result.out + result.err


# What each format can say wrong about a box of a.png (48x32), and the report it must give.
IMPERFECT = {
    "coco": (coco(lambda r: r["annotations"].extend([
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [40, 20, 30, 30]},  # past the edge: clipped
        {"id": 4, "image_id": 1, "category_id": 2, "bbox": [60, 40, 5, 5]},  # wholly outside: dropped
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [10, 10, 0, 5]}])),  # no area: dropped
        "2 images, 3 boxes; clipped to the image: 1; dropped: 1 zero-area, 1 outside the image"),
    "voc": (voc_a(voc_xml("a.png", "".join([  # 1-based inclusive indices: no box can be empty
        VOC_OBJECT.format(name="square", x1=2, x2=20),
        VOC_OBJECT.format(name="circle", x1=40, x2=60),  # past the edge: clipped
        VOC_OBJECT.format(name="circle", x1=50, x2=60)]))),  # wholly outside: dropped
        "2 images, 3 boxes; clipped to the image: 1; dropped: 1 outside the image"),
    "yolo": (lambda root: (root / "labels/a.txt").write_text(  # normalised: never wholly outside
        "0 0.5 0.5 0.25 0.25\n1 0.95 0.5 0.3 0.3\n1 0.5 0.5 0 0.2\n"),
        "2 images, 4 boxes; clipped to the image: 1; dropped: 1 zero-area"),
}


@pytest.mark.parametrize("fmt", IMPERFECT)
def test_boxes_outside_the_image_or_empty_are_clipped_or_dropped_and_counted(fmt, tmp_path, results_file, capsys):
    """Not errors: the box past the edge is clipped, the one wholly outside or of no area dropped,
    each counted in the report; both images and every good box are kept."""
    root = tmp_path / "data"
    root.mkdir()
    data = DATASETS[fmt](root)
    breakage, report = IMPERFECT[fmt]
    breakage(root)
    result = run_cli(capsys, "eval", "--data", data, "--predictions", results_file)
    assert result.code == 0, result.err
    assert f"val: {report}\n" in result.out


@pytest.mark.parametrize("command", ["train", "eval"])
def test_empty_split_is_refused_naming_its_annotation_file(command, tmp_path, results_file, capsys):
    root = tmp_path / "data"
    root.mkdir()
    data = coco_dataset(root)
    coco(lambda r: (r.__setitem__("images", []), r.__setitem__("annotations", [])))(root)
    args = {"train": ["--out", tmp_path / "run", "--scratch", "--workers", "0", "--batch-size", "4", *MODEL_ARGS],
            "eval": ["--predictions", results_file]}[command]
    result = run_cli(capsys, command, "--data", data, *args)
    assert_user_error(result, command, f"{root}/annotations.json", "no images")


def test_results_file_with_non_finite_box_is_refused_by_eval(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    data = coco_dataset(root)
    results = tmp_path / "results.json"
    results.write_text('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, NaN, 4], "score": 0.5}]')
    assert_user_error(run_cli(capsys, "eval", "--data", data, "--predictions", results), "eval",
                      f"{results}: entry 0: bbox must be 4 finite numbers")


@pytest.mark.parametrize("entry, needle", [
    ('{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": "0.5"}', "entry 1: score must be a number"),
    ('{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": null}', "entry 1: score must be a number"),
    ('{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": NaN}', "entry 1: score must be a number"),
    ('{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1.5}', "entry 1: score must be a number"),
    ('{"image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.5}', "entry 1: bbox width and height"),
])
def test_results_file_with_a_bad_score_or_negative_size_is_refused_naming_file_and_entry(entry, needle, tmp_path,
                                                                                         capsys):
    root = tmp_path / "data"
    root.mkdir()
    data = coco_dataset(root)
    results = tmp_path / "results.json"
    results.write_text(f'[{{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}}, {entry}]')
    assert_user_error(run_cli(capsys, "eval", "--data", data, "--predictions", results), "eval",
                      f"{results}: {needle}")


def test_empty_results_give_minus_one_for_sizes_without_objects(tmp_path, results_file, capsys):
    """As COCO: -1 where the split has no object of that size (both boxes here are small), 0 elsewhere."""
    root = tmp_path / "data"
    root.mkdir()
    result = run_cli(capsys, "eval", "--data", coco_dataset(root), "--predictions", results_file)
    assert result.code == 0, result.err
    values = result.out.strip().splitlines()[-1].split("|")
    assert [float(v) for v in values] == [0.0, 0.0, 0.0, 0.0, -1.0, -1.0]  # AP AP50 AP75 APs APm APl


def all_crowd(root: Path) -> None:
    edit_json(root / "annotations.json", lambda r: [a.__setitem__("iscrowd", 1) for a in r["annotations"]])


def no_label_files(root: Path) -> None:
    for path in (root / "labels").iterdir():
        path.unlink()


NOTHING_TO_TRAIN = {
    "coco-all-crowd": (coco_dataset, all_crowd, "all its 2 boxes are crowd / difficult, which training ignores"),
    "yolo-no-labels": (yolo_dataset, no_label_files, "none of its 2 images has a label file in"),
}


@pytest.mark.parametrize("case", NOTHING_TO_TRAIN)
def test_train_split_without_a_box_to_learn_from_is_refused_before_training(case, tmp_path, capsys):
    """Training on negatives only would end with exit 0 and a model that learnt nothing."""
    root = tmp_path / "data"
    root.mkdir()
    make, breakage, why = NOTHING_TO_TRAIN[case]
    data = make(root)
    breakage(root)
    result = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "run", "--scratch", "--workers", "0",
                     "--batch-size", "2", "--epochs", "1", *MODEL_ARGS)
    assert_user_error(result, "train", f"{data}: the train split has nothing to train on: ", why)
    assert not (tmp_path / "run").exists()


def test_empty_yolo_images_folder_is_refused_naming_it(tmp_path, results_file, capsys):
    root = tmp_path / "data"
    root.mkdir()
    data = yolo_dataset(root)
    for path in (root / "images").iterdir():
        path.unlink()
    result = run_cli(capsys, "eval", "--data", data, "--predictions", results_file)
    assert_user_error(result, "eval", f"{root / 'images'}: the val split has no images")


def test_dangling_symlink_image_in_a_yolo_dataset_is_named_not_dropped(tmp_path, results_file, capsys):
    root = tmp_path / "data"
    root.mkdir()
    data = yolo_dataset(root)
    (root / "images" / "gone.png").symlink_to(root / "deleted.png")
    result = run_cli(capsys, "eval", "--data", data, "--predictions", results_file)
    assert result.code == 2 and "Traceback" not in result.err
    gone = root / "images" / "gone.png"
    assert result.err.splitlines() == ["efficientdet eval: error: 1 of 3 images are unusable:",
                                       (f"  {gone}: cannot read the image header ([Errno 2] No such file or "
                                        f"directory: '{gone}')")]
