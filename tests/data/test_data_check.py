"""The dataset check: every problem of a dataset in one pass, its statistics, the anchor fit."""

import json
import shutil

import numpy as np
import pytest
from data_builders import coco_dict, write_coco, write_voc, write_yaml, write_yolo
from PIL import Image

from efficientdet.config import get_config, override
from efficientdet.data import load_dataset_yaml
from efficientdet.data import sample as kinds
from efficientdet.data.check import check_dataset
from efficientdet.data.sample import ERROR, WARNING

LITE0 = get_config("efficientdet-lite0")  # 320x320, anchor_scale 3


def check(path, config=LITE0):
    return check_dataset(load_dataset_yaml(path), config, 0.5, max_boxes=100)


def edit_coco(path, change):
    annotations = path.parent / "annotations.json"
    record = json.loads(annotations.read_text())
    change(record)
    annotations.write_text(json.dumps(record))
    return annotations


def test_clean_dataset_statistics_per_split_and_class(dataset_yamls):
    """a.jpg 512x512: a person and a crowd cup; b.png 451x300: a cat (the whole image) and a cup;
    c.jpg: nothing. At 320 the boxes are 144, 261 and 27.5 px (sqrt of area), as the inference
    resize scales their images."""
    found = check(dataset_yamls["coco"])
    assert found.problems.total(ERROR) == found.problems.total(WARNING) == 0
    stats = found.stats["train"]
    assert (stats["images"], stats["images_without_boxes"], stats["boxes"], stats["crowd"]) == (3, 1, 3, 1)
    assert stats["boxes_per_image"] == {"mean": 1.0, "median": 1.0, "max": 2}
    side = stats["box_side"]
    assert (side["min"], side["median"], side["max"]) == (27.5, 144.2, 261.0)
    assert (side["small"], side["medium"], side["large"]) == (1, 0, 2)
    assert stats["classes"] == [{"name": "person", "id": 1, "images": 1, "boxes": 1, "crowd": 0},
                                {"name": "cat", "id": 17, "images": 1, "boxes": 1, "crowd": 0},
                                {"name": "cup", "id": 47, "images": 1, "boxes": 1, "crowd": 1}]
    assert found.fit.boxes == 3 and sum(level.boxes for level in found.fit.levels) == 3
    text = "\n".join(found.lines())
    assert "train: 3 images (1 without boxes), 3 boxes, 1 crowd / difficult" in text
    assert "box side at 320x320 (sqrt of area, pixels): min 27.5" in text
    assert "anchor fit (efficientdet-lite0 at 320x320, anchor_scale 3, aspect ratios 1, 2, 0.5)" in text
    assert json.loads(json.dumps(found.to_dict()))["splits"]["train"] == stats


def break_coco(root):
    """A negative box, an unknown category, a missing image, a malformed image record and a box past
    the edge (a warning), all in one file."""
    def change(record):
        record["annotations"][0]["bbox"] = [4, 4, -20, 10]
        record["annotations"][2]["category_id"] = 5
        record["images"][2]["file_name"] = "gone.jpg"
        record["images"].append({"id": 9, "file_name": "a.jpg", "width": 0, "height": 10})
        record["annotations"].append({"id": 40, "image_id": 0, "category_id": 1, "bbox": [500, 500, 100, 100]})
    annotations = edit_coco(root / "data.yaml", change)
    return {kinds.NEGATIVE_SIZE: [f"{annotations}: annotation id 17: bbox has negative width -20"],
            kinds.UNKNOWN_CLASS: [f"{annotations}: annotation id 19: category_id 5 is not in 'categories'"],
            kinds.MISSING_FILE: [f"{annotations}: 1 of 3 images missing: "],
            kinds.INVALID: [f"{annotations}: image id 9: width must be an integer in [1, "]}, \
        {kinds.CLIPPED: [f"{annotations}: annotation id 40: box (500, 500, 600, 600) in a 512x512 image"]}


def break_voc(root):
    voc = root / "VOC"
    a = voc / "Annotations" / "a.xml"
    a.write_text(a.read_text().replace("<name>person</name>", "<name>dog</name>")
                 .replace("<xmin>101</xmin>", "<xmin>160</xmin>"))  # the second object: xmax 150 < xmin
    (voc / "Annotations" / "c.xml").write_text("<annotation><object></annotation>")
    (voc / "ImageSets/Main/train.txt").write_text("a\nb\nc\nmissing\n")
    return {kinds.UNKNOWN_CLASS: [f"{a}: object #0: class 'dog' is not one of the 3 names"],
            kinds.NEGATIVE_SIZE: [f"{a}: object #1: bndbox has xmax < xmin"],
            kinds.UNREADABLE_FILE: [f"{voc / 'Annotations' / 'c.xml'}: not well-formed XML"],
            kinds.MISSING_FILE: ["train.txt: 1 of 4 annotation files missing: "]}, {}


def break_yolo(root):
    labels = root / "labels/train"
    (labels / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n0 1.5 0.5 0.1 0.1\n0 0.5\n")
    (root / "images/train/bad.jpg").write_bytes(b"not a jpeg")
    return {kinds.UNKNOWN_CLASS: [f"{labels / 'a.txt'}:2: class 5 is not in 0..2 (3 names)"],
            kinds.INVALID: [f"{labels / 'a.txt'}:3: cx cy w h must be normalised", f"{labels / 'a.txt'}:4: expected 5"],
            kinds.UNREADABLE_IMAGE: [f"{root / 'images/train/bad.jpg'}: cannot read the image header"]}, \
        {kinds.NO_LABEL_FILE: [f"{root / 'images/train/c.jpg'}: no label file"]}


@pytest.mark.parametrize("fmt, write, breakage", [("coco", write_coco, break_coco), ("voc", write_voc, break_voc),
                                                  ("yolo", write_yolo, break_yolo)])
def test_problems_of_several_kinds_are_found_in_one_pass_with_counts_and_records(fmt, write, breakage, tmp_path,
                                                                                  photos):
    path = write(tmp_path, photos)
    errors, warnings = breakage(tmp_path)
    found = check(path)
    for severity, expected in ((ERROR, errors), (WARNING, warnings)):
        assert {k: n for k, n in found.problems.kinds(severity).items() if k in expected} == \
            {kind: len(messages) for kind, messages in expected.items()}
        for kind, messages in expected.items():
            for message in messages:
                assert any(m.startswith(message) or message in m for m in found.problems.first[severity, kind]), \
                    (message, found.problems.first[severity, kind])
    assert set(found.problems.kinds(ERROR)) == set(errors)
    text = "\n".join(found.lines())
    assert text.startswith(f"{path} ({fmt}; train): {found.problems.total(ERROR)} errors")
    assert all(f"{kind}: {len(messages)}" in text for kind, messages in errors.items())
    assert found.stats["train"]["images"] >= 1  # the good records still count


def test_image_headers_are_read_once_each_and_every_bad_one_filed(tmp_path, photos):
    record = coco_dict(photos)
    record["images"][0]["width"] = 500  # a.jpg is 512 wide: its boxes would land in the wrong place
    shutil.copy(photos / "b.png", tmp_path / "b.png")
    (tmp_path / "c.jpg").write_bytes(b"truncated")
    shutil.copy(photos / "a.jpg", tmp_path / "a.jpg")
    (tmp_path / "annotations.json").write_text(json.dumps(record))
    path = write_yaml(tmp_path, {"format": "coco", "train": {"images": ".", "annotations": "annotations.json"},
                                 "val": {"images": ".", "annotations": "annotations.json"}})
    found = check(path)
    assert found.problems.kinds(ERROR) == {kinds.SIZE_MISMATCH: 1, kinds.UNREADABLE_IMAGE: 1}
    assert found.problems.first[ERROR, kinds.SIZE_MISMATCH] == [
        f"{tmp_path / 'a.jpg'}: image is 512x512 but its annotation says 500x512"]
    assert [s.image_path.name for s in found.splits["train"].samples] == ["b.png"]


def test_a_class_without_training_boxes_is_a_warning_and_an_all_crowd_split_an_error(dataset_yamls, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(dataset_yamls["coco"].parent, root)
    annotations = edit_coco(root / "data.yaml", lambda r: r["annotations"].pop())  # b.png's cup: cups all crowd
    found = check(root / "data.yaml")
    assert found.problems.first[WARNING, kinds.UNUSED_CLASS] == [
        f"{annotations}: class 'cup' (id 47) has no box to train on"]
    edit_coco(root / "data.yaml", lambda r: [a.__setitem__("iscrowd", 1) for a in r["annotations"]])
    found = check(root / "data.yaml")
    assert found.problems.first[ERROR, kinds.EMPTY_SPLIT] == [
        f"{root / 'data.yaml'}: the train split has nothing to train on: all its 3 boxes are crowd / difficult, "
        "which training ignores"]
    assert found.fit is None


def tiny_boxes(tmp_path, sides: tuple[float, float], count: int = 30):
    """``count`` square boxes, their sides from ``sides[0]`` to ``sides[1]`` pixels, spread over one
    512x512 image."""
    Image.new("RGB", (512, 512)).save(tmp_path / "x.png")
    xy, side = np.linspace(10, 400, count), np.linspace(*sides, count)
    record = {"images": [{"id": 1, "file_name": "x.png", "width": 512, "height": 512}],
              "categories": [{"id": 1, "name": "dot"}],
              "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": [x, x, s, s]}
                              for i, (x, s) in enumerate(zip(xy.tolist(), side.tolist()))]}
    (tmp_path / "a.json").write_text(json.dumps(record))
    return write_yaml(tmp_path, {"format": "coco", "train": {"images": ".", "annotations": "a.json"}})


def test_a_low_fit_is_a_warning_naming_the_change_that_helps(tmp_path):
    """Boxes of 16-40 px at 512 are 10-25 px at Lite0's 320, most under its smallest anchor (24 px): a
    larger input or a smaller anchor scale matches them."""
    found = check(tiny_boxes(tmp_path, (16, 40)))
    options = dict(found.suggestions)
    assert 0 < found.fit.share < 0.8 and max(options.values()) > found.fit.share
    (message,) = found.problems.first[WARNING, kinds.LOW_ANCHOR_FIT]
    best = max(options, key=options.get)
    assert message.startswith(f"{tmp_path / 'data.yaml'}: {found.fit.share:.1%} of the 30 training boxes have an "
                              "anchor with IoU >= 0.5 (efficientdet-lite0 at 320x320, anchor_scale 3); ")
    assert message.endswith(f"{best} would give {options[best]:.1%}")
    assert "  would give: --image-size 480 " in "\n".join(found.lines())


def test_no_box_matched_at_all_is_an_error(tmp_path):
    found = check(tiny_boxes(tmp_path, (1, 1)))
    (message,) = found.problems.first[ERROR, kinds.NO_MATCH]
    assert found.fit.matched == 0
    assert message == (f"{tmp_path / 'data.yaml'}: 0.0% of the 30 training boxes have an anchor with IoU >= 0.5 "
                       "(efficientdet-lite0 at 320x320, anchor_scale 3): none can be matched; no larger "
                       "--image-size, anchors.anchor_scale or anchors.aspect_ratios tried gives more; are the boxes "
                       "in the pixels of their images?")


def test_statistics_follow_the_network_input(dataset_yamls):
    found = check(dataset_yamls["coco"], override(LITE0, image_size=(640, 640)))
    assert found.stats["train"]["box_side"]["min"] == 55.0  # 38.7 px scaled by 640 / 451
    assert found.fit.image_size == (640, 640)
