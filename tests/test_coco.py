from efficientdet.coco import COCO_CATEGORIES, coco_label_space, predicts_coco


def test_ninety_outputs_predict_coco_ids_and_names():
    """The one place that decides it: an official checkpoint's output c is COCO category id c + 1."""
    assert predicts_coco(90) and not predicts_coco(80) and not predicts_coco(91)
    ids, names = coco_label_space()
    assert ids == list(range(1, 91)) and len(names) == 90
    assert names[0] == COCO_CATEGORIES[1] == "person" and names[11] == "unused-12"
