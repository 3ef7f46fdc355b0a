import json

import numpy as np
import pytest

from efficientdet.shapes import SCENES, make_shapes_dataset

pytest.importorskip("skimage", reason="the shapes are drawn on scikit-image's photos")


def boxes_per_image(data_yaml):
    coco = json.loads((data_yaml.parent / "train.json").read_text())
    per_image = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann["bbox"])
    return [np.array(b).reshape(-1, 4) for b in per_image.values()]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return {name: boxes_per_image(make_shapes_dataset(root / name, 12, 0, 256, seed=0, scene=name))
            for name in SCENES}


def test_each_scene_has_the_boxes_it_promises(scenes):
    small = np.concatenate(scenes["small"])
    assert small[:, 2:].max() <= 32 and np.mean([len(b) for b in scenes["small"]]) >= 6
    thin = np.concatenate(scenes["thin"])
    assert np.all(np.maximum(thin[:, 2], thin[:, 3]) >= 2.5 * np.minimum(thin[:, 2], thin[:, 3]))
    large = np.concatenate(scenes["large"])
    assert large[:, 2:].min() >= 0.06 * 256 and max(len(b) for b in scenes["large"]) <= 4


def test_crowded_scenes_overlap_and_the_others_do_not(scenes):
    import torch
    from torchvision.ops import box_iou

    def max_iou(images):
        best = 0.0
        for b in images:
            xyxy = torch.tensor(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1))
            iou = box_iou(xyxy, xyxy).fill_diagonal_(0)
            best = max(best, float(iou.max()) if len(b) > 1 else 0.0)
        return best

    assert max_iou(scenes["crowded"]) > 0.1
    assert max_iou(scenes["small"]) < 0.1  # shapes apart; only box corners may meet


def test_an_unknown_scene_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown scene 'tiny'; scenes: large, small, crowded, thin"):
        make_shapes_dataset(tmp_path, 1, 0, 128, scene="tiny")
