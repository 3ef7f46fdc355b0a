import json

import numpy as np
import pytest

from efficientdet.evaluate import METRIC_KEYS, coco_metrics, load_results, results_from_detections


def synthetic_coco(seed=0, images=8):
    g = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    results = []
    ann_id = 1
    for i in range(1, images + 1):
        gt["images"].append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(g.integers(1, 6)):
            x, y = g.uniform(0, 400), g.uniform(0, 300)
            w, h = g.uniform(8, 200), g.uniform(8, 150)
            cat = int(g.choice([3, 7]))
            gt["annotations"].append({"id": ann_id, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                                      "area": w * h, "iscrowd": 0})
            ann_id += 1
            if g.uniform() < 0.8:  # a noisy detection of it
                jitter = g.normal(0, 6, 4)
                results.append({"image_id": i, "category_id": cat, "score": float(g.uniform(0.2, 1)),
                                "bbox": [x + jitter[0], y + jitter[1], max(1, w + jitter[2]), max(1, h + jitter[3])]})
        for _ in range(2):  # false positives
            results.append({"image_id": i, "category_id": 3, "score": float(g.uniform(0, 0.5)),
                            "bbox": [float(g.uniform(0, 500)), float(g.uniform(0, 400)), 30.0, 30.0]})
    return gt, results


@pytest.mark.parametrize("seed", [0, 1])
def test_identical_to_pycocotools(seed):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results = synthetic_coco(seed)
    ours = coco_metrics(gt, results)
    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt))
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(results))), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert 0.2 < ours["AP"] < 1.0
    for k, ref in zip(METRIC_KEYS, ev.stats):
        assert ours[k] == pytest.approx(ref, abs=1e-9), k


def test_perfect_and_empty_predictions():
    gt, _ = synthetic_coco(2, images=3)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    assert coco_metrics(gt, perfect)["AP"] == pytest.approx(1.0)

def test_empty_results_score_zero_where_there_is_ground_truth_and_minus_one_where_there_is_none():
    gt, _ = synthetic_coco(2, images=3)
    for a in gt["annotations"]:  # every object medium-sized: no small or large ones
        a["area"] = 2000.0
    metrics = coco_metrics(gt, [])
    assert {k for k, v in metrics.items() if v == -1} == {"APs", "APl", "ARs", "ARl"}
    assert all(v == 0 for k, v in metrics.items() if v != -1)


def test_results_from_detections_converts_xyxy():
    res = results_from_detections(5, [[10, 20, 50, 80]], [0.9], [7])
    assert res == [{"image_id": 5, "category_id": 7, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.9}]


@pytest.mark.parametrize("content, match", [
    ("not json", "cannot read COCO results"),
    ('{"a": 1}', "must be a JSON list"),
    ('[{"image_id": 1}]', "entry 0 needs image_id, category_id, bbox and score"),
    ('[{"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}]', "image_id 99 is not in"),
    ('[{"image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 1}]', "category_id 4 is not in"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1], "score": 1}]', "bbox must be 4 finite numbers"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, NaN, 1], "score": 1}]', "bbox must be 4 finite"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1},'
     ' {"image_id": 1, "category_id": 3, "bbox": [5, 5, -2, 1], "score": 1}]', "entry 1: bbox width and height"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, -1], "score": 1}]', "entry 0: bbox width and height"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": NaN}]', "entry 0: score must be"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": "0.9"}]', "entry 0: score must be"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": null}]', "entry 0: score must be"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.5}]', "entry 0: score must be"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": -0.1}]', "entry 0: score must be"),
])
def test_bad_results_files_are_named(tmp_path, content, match):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        load_results(path, [1, 2], [3, 7])
    assert "results.json" in str(e.value)
