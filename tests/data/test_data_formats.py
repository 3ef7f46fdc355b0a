import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_builders import COCO_IDS, NAMES, OBJECTS, PHOTOS, coco_dict, voc_xml, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from efficientdet.data import (
    VOC_CLASSES,
    DatasetError,
    ImageError,
    Problems,
    Sample,
    load_coco,
    load_dataset_yaml,
    load_split,
    load_voc,
    load_yolo,
)
from efficientdet.data import sample as kinds
from efficientdet.data.sample import ERROR, WARNING


def expected_objects(name, with_crowd=True):
    objects = [(box, label, crowd) for box, label, crowd in OBJECTS[name] if with_crowd or not crowd]
    boxes = np.array([box for box, _, _ in objects], np.float32).reshape(-1, 4)
    return boxes, np.array([label for _, label, _ in objects]), np.array([crowd for _, _, crowd in objects], bool)


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_three_formats_give_the_same_samples(dataset_yamls, fmt):
    split = load_split(load_dataset_yaml(dataset_yamls[fmt]), "train")
    assert split.names == NAMES
    assert split.label_ids == (COCO_IDS if fmt == "coco" else [0, 1, 2])
    assert [s.image_path.name for s in split.samples] == list(PHOTOS)
    assert [s.image_id for s in split.samples] == [0, 1, 2]
    for sample, name in zip(split.samples, PHOTOS):
        width, height = Image.open(sample.image_path).size
        assert (sample.width, sample.height) == (width, height)
        boxes, labels, crowd = expected_objects(name)
        assert sample.boxes.dtype == np.float32 and sample.labels.dtype == np.int64
        np.testing.assert_allclose(sample.boxes, boxes, atol=1e-3)  # YOLO goes through normalised floats
        np.testing.assert_array_equal(sample.labels, labels)
        np.testing.assert_array_equal(sample.crowd, crowd if fmt != "yolo" else np.zeros_like(crowd))
    report = split.report
    assert (report.images, report.boxes, report.empty_images) == (3, 4, 1)
    assert report.crowd == (0 if fmt == "yolo" else 1)
    assert report.missing_labels == (1 if fmt == "yolo" else 0)


def test_voc_coordinates_are_one_based_inclusive(tmp_path, photos):
    """VOC (1, 1, W, H) is the whole image: xyxy (0, 0, W, H)."""
    voc = tmp_path / "VOC"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    shutil.copy(photos / "b.png", voc / "JPEGImages" / "b.png")
    xml = voc_xml("b.png", 451, 300, []).replace(
        "</annotation>", "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>451</xmax>"
        "<ymax>300</ymax></bndbox></object></annotation>")
    (voc / "Annotations" / "b.xml").write_text(xml)
    split = load_voc(voc)  # no split: every XML; default names: the 20 VOC classes
    assert split.names == list(VOC_CLASSES)
    np.testing.assert_array_equal(split.samples[0].boxes, [[0, 0, 451, 300]])
    assert split.samples[0].labels.tolist() == [VOC_CLASSES.index("cat")]
    assert split.report.clipped == 0


def test_voc_without_size_reads_the_image_header(tmp_path, photos):
    voc = tmp_path / "VOC"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    shutil.copy(photos / "c.jpg", voc / "JPEGImages" / "c.jpg")
    (voc / "Annotations" / "c.xml").write_text("<annotation><size><width>0</width><height>0</height></size>"
                                              "</annotation>")  # no <filename>: <id>.jpg
    sample = load_voc(voc).samples[0]
    assert (sample.image_path.name, sample.width, sample.height) == ("c.jpg", 600, 400)


# ---------------------------------------------------------------- COCO: clipping, dropping, errors


def write_json(tmp_path, record) -> Path:
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(record))
    return path


def test_coco_clips_drops_and_counts(tmp_path, photos):
    record = coco_dict(photos)  # a.jpg is 512x512
    extra = [[-10, -10, 50, 50], [500, 500, 100, 100], [600, 10, 20, 20], [10, 10, 0, 5], [10, 10, 5, 1e-9]]
    record["annotations"] += [{"id": 100 + i, "image_id": 0, "category_id": 1, "bbox": b} for i, b in enumerate(extra)]
    split = load_coco(photos, write_json(tmp_path, record))
    r = split.report
    assert (r.clipped, r.outside, r.zero_area, r.crowd, r.empty_images, r.boxes) == (2, 1, 2, 1, 1, 6)
    boxes = split.samples[0].boxes
    np.testing.assert_array_equal(boxes[2:], [[0, 0, 40, 40], [500, 500, 512, 512]])
    assert r.summary() == ("3 images (1 without boxes), 6 boxes (1 crowd); clipped to the image: 2; "
                           "dropped: 2 zero-area, 1 outside the image")


def mutate(record, change):
    record = copy.deepcopy(record)
    change(record)
    return record


def set_in(path, value):
    def change(record):
        *parents, key = path
        target = record
        for p in parents:
            target = target[p]
        target[key] = value
    return change


def delete(path):
    def change(record):
        *parents, key = path
        target = record
        for p in parents:
            target = target[p]
        del target[key]
    return change


COCO_ERRORS = [
    (set_in(("annotations", 0, "bbox"), [float("nan"), 0, 5, 5]), "annotation id 17: bbox must be finite, got nan"),
    (set_in(("annotations", 0, "bbox"), [0, 0, float("inf"), 5]), "annotation id 17: bbox must be finite, got inf"),
    (set_in(("annotations", 0, "bbox"), [0, 0, -3.0, 5]), "annotation id 17: bbox has negative width -3.0"),
    (set_in(("annotations", 1, "bbox"), [0, 0, 3, -1]), "annotation id 18: bbox has negative height -1"),
    (set_in(("annotations", 0, "bbox"), [0, 0, 3]), "annotation id 17: bbox must be [x, y, width, height]"),
    (set_in(("annotations", 0, "bbox"), [0, "1", 3, 4]), "annotation id 17: bbox must be a number, got '1'"),
    (delete(("annotations", 0, "bbox")), "annotation id 17: missing key 'bbox'"),
    (set_in(("annotations", 1), {"image_id": 0}), "annotation #1: missing key 'category_id'"),  # no id: position
    (set_in(("annotations", 0, "image_id"), 99), "annotation id 17: image_id 99 is not in 'images'"),
    (set_in(("annotations", 0, "category_id"), 5), "annotation id 17: category_id 5 is not in 'categories'"),
    (set_in(("annotations", 0, "category_id"), True), "annotation id 17: category_id must be an integer"),
    (set_in(("annotations", 0, "iscrowd"), 2), "annotation id 17: iscrowd must be 0 or 1, got 2"),
    (set_in(("images", 1, "id"), 0), "duplicate image id 0"),
    (set_in(("categories", 1, "id"), 1), "duplicate category id 1"),
    (set_in(("images", 0, "file_name"), "../a.jpg"), "image id 0: file name '../a.jpg' leaves the folder"),
    (set_in(("images", 0, "file_name"), "/etc/passwd"), "image id 0: file name '/etc/passwd' leaves the folder"),
    (set_in(("images", 0, "file_name"), "sub/../../a.jpg"), "image id 0: file name 'sub/../../a.jpg' leaves"),
    (set_in(("images", 0, "file_name"), 7), "image id 0: file name must be a non-empty string, got 7"),
    (set_in(("images", 0, "width"), "512"), "image id 0: width must be an integer"),
    (set_in(("images", 2, "height"), 0), "image id 2: height must be an integer in [1,"),
    (delete(("images", 0, "height")), "image id 0: missing key 'height'"),
    (delete(("categories",)), "missing key 'categories'"),
    (set_in(("annotations",), {}), "'annotations' must be a list, got dict"),
    (set_in(("categories", 0), "person"), "category #0: must be an object"),
]


@pytest.mark.parametrize("change, message", COCO_ERRORS, ids=[m for _, m in COCO_ERRORS])
def test_coco_errors_name_the_file_and_record(tmp_path, photos, change, message):
    path = write_json(tmp_path, mutate(coco_dict(photos), change))
    with pytest.raises(DatasetError) as error:
        load_coco(photos, path)
    assert type(error.value) is DatasetError
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ("[]", "expected a JSON object, got list"),
                                           (b"\xff\xfe\x00", "not valid JSON")])
def test_coco_unreadable_json(tmp_path, photos, text, message):
    path = tmp_path / "annotations.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DatasetError, match=message) as error:
        load_coco(photos, path)
    assert str(path) in str(error.value)


def test_coco_missing_images_are_listed(tmp_path, photos):
    record = coco_dict(photos)
    record["images"] += [{"id": 10 + i, "file_name": f"gone{i}.jpg", "width": 10, "height": 10} for i in range(7)]
    with pytest.raises(DatasetError) as error:
        load_coco(photos, write_json(tmp_path, record))
    message = str(error.value)
    assert "7 of 10 images missing" in message and "gone0.jpg" in message and "gone4.jpg" in message
    assert "gone5.jpg" not in message and "... and 2 more" in message


def test_sample_normalises_and_checks_its_arrays():
    sample = Sample("x.jpg", [], [], 0)
    assert sample.boxes.shape == (0, 4) and sample.crowd.shape == (0,) and isinstance(sample.image_path, Path)
    with pytest.raises(ValueError, match="must be"):
        Sample("x.jpg", np.zeros((2, 4)), np.zeros(3), 0)


# ---------------------------------------------------------------- VOC errors


def voc_with(tmp_path, xml: str) -> Path:
    voc = tmp_path / "VOC"
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "JPEGImages").mkdir(exist_ok=True)
    Image.new("RGB", (20, 10)).save(voc / "JPEGImages" / "x.jpg")
    (voc / "Annotations" / "x.xml").write_text(xml)
    return voc


OBJECT = ("<object><name>{name}</name><bndbox><xmin>{x}</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
          "{extra}</object>")
SIZE = "<filename>x.jpg</filename><size><width>20</width><height>10</height></size>"
VOC_ERRORS = [
    ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><annotation>&e;</annotation>',
     "refused: EntitiesForbidden"),
    ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;&l;&l;">]><annotation>&l2;</annotation>',
     "refused: EntitiesForbidden"),
    ("<annotation><object></annotation>", "not well-formed XML"),
    (f"<annotation>{SIZE}{OBJECT.format(name='dog', x=1, extra='')}</annotation>", "object #0: class 'dog' is not one"),
    (f"<annotation>{SIZE}{OBJECT.format(name='cat', x='abc', extra='')}</annotation>",
     "object #0: <bndbox/xmin> must be a number, got 'abc'"),
    (f"<annotation>{SIZE}{OBJECT.format(name='cat', x='nan', extra='')}</annotation>",
     "object #0: <bndbox/xmin> must be finite"),
    (f"<annotation>{SIZE}{OBJECT.format(name='cat', x=9, extra='')}</annotation>", "object #0: bndbox has xmax < xmin"),
    (f"<annotation>{SIZE}{OBJECT.format(name='cat', x=1, extra='<difficult>2</difficult>')}</annotation>",
     "object #0: <difficult> must be 0 or 1"),
    (f"<annotation>{SIZE}<object><name>cat</name></object></annotation>", "object #0: missing <bndbox>"),
    ("<annotation><filename>../../x.jpg</filename></annotation>", "<filename>: file name '../../x.jpg' leaves"),
    ("<annotation><filename>x.jpg</filename><size><width>2.5</width><height>10</height></size></annotation>",
     "<size> must be positive whole pixels"),
]


@pytest.mark.parametrize("xml, message", VOC_ERRORS, ids=[m for _, m in VOC_ERRORS])
def test_voc_errors_name_the_file_and_object(tmp_path, xml, message):
    voc = voc_with(tmp_path, xml)
    with pytest.raises(DatasetError) as error:
        load_voc(voc, names=NAMES)
    assert str(error.value).startswith(str(voc / "Annotations" / "x.xml")) and message in str(error.value)


def test_voc_split_list_and_missing_files(tmp_path):
    voc = voc_with(tmp_path, f"<annotation>{SIZE}</annotation>")
    (voc / "ImageSets/Main").mkdir(parents=True)
    (voc / "ImageSets/Main/train.txt").write_text("x\ny\n")
    with pytest.raises(DatasetError, match=r"train.txt: 1 of 2 annotation files missing: .*y.xml"):
        load_voc(voc, "train")
    (voc / "ImageSets/Main/val.txt").write_text("../../secret\n")
    with pytest.raises(DatasetError, match="val.txt: id '../../secret'.* leaves"):
        load_voc(voc, "val")


# ---------------------------------------------------------------- YOLO errors


@pytest.fixture
def yolo_dirs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "x.jpg")
    return tmp_path / "images", tmp_path / "labels"


YOLO_ERRORS = [
    ("0 0.5 0.5 0.1", "x.txt:2: expected 5 values 'class cx cy w h', got 4"),
    ("0 0.5 0.5 0.1 0.1 0.3", "x.txt:2: expected 5 values"),
    ("a 0.5 0.5 0.1 0.1", "x.txt:2: class 'a' is not an integer"),
    ("1.0 0.5 0.5 0.1 0.1", "x.txt:2: class '1.0' is not an integer"),
    ("0 0.5 zero 0.1 0.1", "x.txt:2: cx cy w h must be numbers"),
    ("0 1.5 0.5 0.1 0.1", "x.txt:2: cx cy w h must be normalised to [0, 1]"),
    ("0 0.5 0.5 nan 0.1", "x.txt:2: cx cy w h must be normalised to [0, 1]"),
    ("0 0.5 0.5 -0.1 0.1", "x.txt:2: cx cy w h must be normalised"),
    ("3 0.5 0.5 0.1 0.1", "x.txt:2: class 3 is not in 0..2 (3 names)"),
    ("-1 0.5 0.5 0.1 0.1", "x.txt:2: class -1 is not in 0..2"),
]


@pytest.mark.parametrize("line, message", YOLO_ERRORS, ids=[m for _, m in YOLO_ERRORS])
def test_yolo_errors_name_file_and_line(yolo_dirs, line, message):
    images, labels = yolo_dirs
    (labels / "x.txt").write_text(f"1 0.5 0.5 0.5 0.5\n{line}\n")
    with pytest.raises(DatasetError) as error:
        load_yolo(images, labels, NAMES)
    assert str(error.value).startswith(str(labels / "x.txt")) and message in str(error.value)


def test_yolo_reads_sizes_from_upright_headers(yolo_dirs):
    images, labels = yolo_dirs
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, shown 20x40
    Image.new("RGB", (40, 20)).save(images / "x.jpg", exif=exif)
    (labels / "x.txt").write_text("2 0.5 0.5 0.5 0.25\n\n")  # blank lines are fine
    sample = load_yolo(images, labels, NAMES).samples[0]
    assert (sample.width, sample.height) == (20, 40)
    np.testing.assert_allclose(sample.boxes, [[5, 15, 15, 25]])


def test_yolo_unreadable_image_is_an_image_error(yolo_dirs):
    images, labels = yolo_dirs
    (images / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"1 of 2 images are unusable:\n  .*bad.png: cannot read"):
        load_yolo(images, labels, NAMES)


def test_yolo_dangling_symlink_image_is_named_not_dropped(yolo_dirs):
    images, labels = yolo_dirs
    (images / "gone.jpg").symlink_to(images / "deleted.jpg")
    with pytest.raises(ImageError, match=r"1 of 2 images are unusable:\n  .*gone.jpg: cannot read"):
        load_yolo(images, labels, NAMES)


def test_empty_yolo_split_is_refused_naming_its_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    path = write_yaml(tmp_path, {"format": "yolo", "names": NAMES, "train": {"images": "images", "labels": "labels"}})
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'images'}: the train split has no images$"):
        load_split(load_dataset_yaml(path), "train")


# ---------------------------------------------------------------- YAML


@pytest.mark.parametrize("text, message", [
    ("format: [coco", "not valid YAML"),
    ("- a\n- b", "expected a mapping"),
    ("format: kitti\ntrain: {images: ., annotations: x.json}", "format: expected one of coco, voc, yolo, got 'kitti'"),
    ("format: coco\ntrain: {images: .}", "train.annotations: missing"),
    ("format: coco\ntrain: {images: ., annotations: nope.json}", "train.annotations: "),
    ("format: coco\ntrain: {images: ., annotations: x.json, labels: .}", "train.labels: unknown key for coco"),
    ("format: coco\ntrian: {images: ., annotations: x.json}", "unknown key 'trian'"),
    ("format: coco\nroot: elsewhere\ntrain: {images: ., annotations: x.json}", "root: "),
    ("format: coco", "no split"),
    ("format: yolo\ntrain: {images: ., labels: .}", "names: required for the yolo format"),
    ("format: yolo\nnames: [a, a]\ntrain: {images: ., labels: .}", "names: duplicate names ['a']"),
    ("format: yolo\nnames: {0: a, 2: b}\ntrain: {images: ., labels: .}", "names: a names mapping needs the keys 0..1"),
    ("format: voc\ntrain: {root: ., split: 3}", "train.split: expected a split name"),
])
def test_yaml_errors_name_the_file_and_key(tmp_path, text, message):
    (tmp_path / "x.json").write_text("{}")
    path = tmp_path / "data.yaml"
    path.write_text(text)
    with pytest.raises(DatasetError) as error:
        load_dataset_yaml(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    if message.endswith(": ") and "annotations" in message:
        assert "nope.json does not exist" in str(error.value)


def test_yaml_resolves_root_and_accepts_ultralytics_names(tmp_path, photos):
    (tmp_path / "data/images").mkdir(parents=True)
    (tmp_path / "data/labels").mkdir()
    shutil.copy(photos / "a.jpg", tmp_path / "data/images/a.jpg")
    path = write_yaml(tmp_path, {"format": "yolo", "root": "data", "names": {0: "x", 1: "y"},
                                 "val": {"images": "images", "labels": "labels"}})
    spec = load_dataset_yaml(path)
    assert spec.splits["val"]["images"] == tmp_path / "data/images" and spec.names == ["x", "y"]
    assert len(load_split(spec, "val").samples) == 1
    with pytest.raises(DatasetError, match=r"data.yaml: train: no such split \(has val\)"):
        load_split(spec, "train")


def test_yaml_names_override_coco_categories(dataset_yamls):
    spec = load_dataset_yaml(dataset_yamls["coco"])
    assert load_coco(**spec.splits["train"], names=["p", "c", "u"]).names == ["p", "c", "u"]
    with pytest.raises(DatasetError, match="2 names given for 3 categories"):
        load_coco(**spec.splits["train"], names=["p", "c"])


# ---------------------------------------------------------------- every problem in one pass


def test_coco_problems_of_several_kinds_are_all_filed_in_one_pass(tmp_path, photos):
    """Each malformed record is filed under its kind with its file and record and left out; the
    annotations of a malformed image are not filed again; good records still parse."""
    record = coco_dict(photos)  # annotations 17, 18 (crowd) on a.jpg; 19, 20 on b.png
    record["annotations"][0]["bbox"] = [4, 4, -20, 10]
    record["annotations"][2]["category_id"] = 5
    record["images"][2]["file_name"] = "gone.jpg"
    record["images"].append({"id": 7, "file_name": "a.jpg", "width": "wide", "height": 10})
    record["annotations"] += [
        {"id": 30, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 31, "image_id": 0, "category_id": 1, "bbox": [500, 500, 100, 100]},  # clipped: a warning
        {"id": 32, "image_id": 1, "category_id": 1, "bbox": [1, float("nan"), 5, 5]},
        {"id": 33, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]},  # on the malformed image
    ]
    path = write_json(tmp_path, record)
    problems = Problems()
    split = load_coco(photos, path, problems=problems)
    assert problems.kinds(ERROR) == {kinds.INVALID: 2, kinds.NEGATIVE_SIZE: 1, kinds.UNKNOWN_CLASS: 1,
                                     kinds.UNKNOWN_IMAGE: 1, kinds.MISSING_FILE: 1}
    listed = "\n".join(problems.lines(ERROR))
    for needle in ("image id 7: width must be an integer", "annotation id 17: bbox has negative width -20",
                   "annotation id 19: category_id 5 is not in 'categories'",
                   "annotation id 30: image_id 99 is not in 'images'", "annotation id 32: bbox must be finite",
                   f"1 of 3 images missing: {photos / 'gone.jpg'}"):
        assert f"{path}: {needle}" in listed, needle
    assert "annotation id 33" not in listed
    assert problems.kinds(WARNING) == {kinds.CLIPPED: 1}
    assert problems.first[WARNING, kinds.CLIPPED] == [f"{path}: annotation id 31: box (500, 500, 600, 600) in a "
                                                      "512x512 image"]
    assert [s.image_path.name for s in split.samples] == ["a.jpg", "b.png"]
    assert [len(s.boxes) for s in split.samples] == [2, 1]  # a.jpg: the crowd box and the clipped one


def test_voc_problems_of_several_kinds_are_all_filed_in_one_pass(tmp_path):
    good = f"{OBJECT.format(name='cat', x=1, extra='')}"
    voc = voc_with(tmp_path, f"<annotation>{SIZE}{OBJECT.format(name='dog', x=1, extra='')}"
                             f"{OBJECT.format(name='cat', x=9, extra='')}{good}</annotation>")
    (voc / "Annotations/y.xml").write_text("<annotation><object></annotation>")
    (voc / "Annotations/w.xml").write_text(f"<annotation>{SIZE.replace('x.jpg', 'w.jpg')}{good}</annotation>")
    (voc / "ImageSets/Main").mkdir(parents=True)
    (voc / "ImageSets/Main/train.txt").write_text("x\ny\nz\nw\n")
    problems = Problems()
    split = load_voc(voc, "train", names=NAMES, problems=problems)
    assert problems.kinds(ERROR) == {kinds.MISSING_FILE: 2, kinds.UNKNOWN_CLASS: 1, kinds.NEGATIVE_SIZE: 1,
                                     kinds.UNREADABLE_FILE: 1}
    listed = "\n".join(problems.lines(ERROR))
    annotations = voc / "Annotations"
    for needle in (f"train.txt: 1 of 4 annotation files missing: {annotations / 'z.xml'}",
                   f"{annotations / 'x.xml'}: object #0: class 'dog'", f"{annotations / 'x.xml'}: object #1: bndbox",
                   f"{annotations / 'y.xml'}: not well-formed XML",
                   f"train.txt: 1 of 2 images missing: {voc / 'JPEGImages' / 'w.jpg'}"):
        assert needle in listed, needle
    assert [s.image_path.name for s in split.samples] == ["x.jpg"] and len(split.samples[0].boxes) == 1


def test_yolo_problems_of_several_kinds_are_all_filed_in_one_pass(yolo_dirs):
    images, labels = yolo_dirs
    (labels / "x.txt").write_text("7 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n0 nan 0.5 0.1 0.1\n1 0.5 0.5 0.5 0.5\n")
    (images / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 20)).save(images / "y.jpg")  # no label file: a warning
    Image.new("RGB", (40, 20)).save(images / "z.jpg")
    (labels / "z.txt").write_bytes(b"0 0.5 \xff 0.1 0.1\n")
    problems = Problems()
    split = load_yolo(images, labels, NAMES, problems=problems)
    assert problems.kinds(ERROR) == {kinds.UNREADABLE_IMAGE: 1, kinds.UNKNOWN_CLASS: 1, kinds.INVALID: 2,
                                     kinds.UNREADABLE_FILE: 1}
    listed = "\n".join(problems.lines(ERROR))
    for needle in (f"{images / 'bad.png'}: cannot read the image header", f"{labels / 'x.txt'}:1: class 7",
                   f"{labels / 'x.txt'}:2: expected 5 values", f"{labels / 'x.txt'}:3: cx cy w h",
                   f"{labels / 'z.txt'}: not UTF-8 text"):
        assert needle in listed, needle
    assert problems.first[WARNING, kinds.NO_LABEL_FILE] == [f"{images / 'y.jpg'}: no label file {labels / 'y.txt'}"]
    assert [s.image_path.name for s in split.samples] == ["x.jpg", "y.jpg"]
    assert [len(s.boxes) for s in split.samples] == [1, 0]


def test_problems_count_a_message_once_list_the_first_of_each_kind_and_raise_them_together(dataset_yamls):
    """Two splits over one file find its problems once; one problem raises as its own line,
    several as one error listing them by kind."""
    spec = load_dataset_yaml(dataset_yamls["coco"])
    problems = Problems(listed=2)
    for _ in range(2):
        load_split(spec, "train", problems=problems)  # the same split twice: nothing new the second time
    assert problems.total(ERROR) == problems.total(WARNING) == 0
    problems.raise_errors("data.yaml")  # nothing to raise
    single = Problems()
    single.error(DatasetError("a.json: annotation id 1: bbox has negative width -2", kinds.NEGATIVE_SIZE))
    with pytest.raises(DatasetError, match="^a.json: annotation id 1: bbox has negative width -2$") as error:
        single.raise_errors("data.yaml")
    assert error.value.kind == kinds.NEGATIVE_SIZE
    for i in range(3):
        problems.error(DatasetError(f"a.json: annotation id {i}: bbox has negative width -2", kinds.NEGATIVE_SIZE))
        problems.error(DatasetError(f"a.json: annotation id {i}: bbox has negative width -2", kinds.NEGATIVE_SIZE))
    problems.error(DatasetError("a.json: 3 of 9 images missing: x, y, z", kinds.MISSING_FILE), count=3)
    with pytest.raises(DatasetError) as error:
        problems.raise_errors("data.yaml")
    assert str(error.value).splitlines() == [
        "data.yaml: 6 problems in the dataset, the first 2 of each kind listed (`efficientdet data check` adds "
        "the statistics):",
        f"  {kinds.NEGATIVE_SIZE}: 3 (the first 2 listed)",
        "    a.json: annotation id 0: bbox has negative width -2",
        "    a.json: annotation id 1: bbox has negative width -2",
        f"  {kinds.MISSING_FILE}: 3",
        "    a.json: 3 of 9 images missing: x, y, z"]
    assert problems.to_dict()["errors"][kinds.MISSING_FILE] == {"count": 3,
                                                                 "first": ["a.json: 3 of 9 images missing: x, y, z"]}


# ---------------------------------------------------------------- property tests: only DatasetError


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10, max_value=10), st.integers(), st.floats(),
    st.text(max_size=8), st.sampled_from(["../a.jpg", "/a.jpg", "a.jpg", "", "C:\\a.jpg", "b.png\0"]),
    st.lists(st.one_of(st.integers(-5, 600), st.floats()), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers()),
)
RECORD_KEYS = {"images": ["id", "file_name", "width", "height"],
               "annotations": ["id", "image_id", "category_id", "bbox", "iscrowd"],
               "categories": ["id", "name"]}


@st.composite
def coco_mutations(draw):
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        table = draw(st.sampled_from(sorted(RECORD_KEYS)))
        key = draw(st.sampled_from(RECORD_KEYS[table]))
        index = draw(st.integers(0, 2))
        changes.append((table, index, key, draw(st.one_of(st.just("<delete>"), JSON_VALUES))))
    return changes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=coco_mutations())
def test_coco_parser_raises_only_dataset_errors(photos, tmp_path_factory, changes):
    record = coco_dict(photos)
    for table, index, key, value in changes:
        rows = record[table]
        if index < len(rows):
            if value == "<delete>":
                rows[index].pop(key, None)
            else:
                rows[index][key] = value
    path = tmp_path_factory.getbasetemp() / "fuzz.json"
    path.write_text(json.dumps(record))
    for problems in (None, Problems()):  # the first problem raises; or each is filed and its record left out
        try:
            split = load_coco(photos, path, problems=problems)
        except DatasetError as e:
            assert str(path) in str(e)
            continue
        for sample in split.samples:  # what does parse is a valid split
            assert np.isfinite(sample.boxes).all() and (sample.boxes[:, 2:] > sample.boxes[:, :2]).all()
            assert (sample.boxes[:, 2] <= sample.width).all() and (sample.boxes[:, 3] <= sample.height).all()
            assert ((0 <= sample.labels) & (sample.labels < len(split.names))).all()


TOKENS = st.one_of(st.integers(-2, 4).map(str), st.floats(-0.5, 1.5).map(repr), st.floats().map(repr),
                   st.text(max_size=4), st.sampled_from(["nan", "inf", "1e999", "0x1", "1_0", "٣"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(TOKENS, max_size=7), max_size=4), raw=st.one_of(st.none(), st.binary(max_size=20)))
def test_yolo_parser_raises_only_dataset_errors(tmp_path_factory, lines, raw):
    root = tmp_path_factory.getbasetemp() / "yolo-fuzz"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    if not (root / "images/x.png").exists():
        Image.new("RGB", (40, 20)).save(root / "images/x.png")
    text = "\n".join(" ".join(tokens) for tokens in lines).encode()
    (root / "labels/x.txt").write_bytes(raw if raw is not None else text)
    try:
        split = load_yolo(root / "images", root / "labels", NAMES)
    except DatasetError as e:
        assert "x.txt" in str(e)
        split = None
    problems = Problems()
    filed = load_yolo(root / "images", root / "labels", NAMES, problems=problems)  # filed, never raised
    assert (split is None) == (problems.total(ERROR) > 0)
    for sample in filed.samples:
        assert np.isfinite(sample.boxes).all() and (sample.boxes[:, 2:] > sample.boxes[:, :2]).all()
