"""Property-based fuzzing, bounded for the suite: a few dozen derandomised examples per target
(the TF checkpoint reader, the COCO / YOLO / VOC parsers and the dataset YAML, box coding, IoU,
NMS). ``benchmarks/fuzz.py`` runs the same targets for thousands of random examples each."""

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from robust_fuzz_targets import TARGETS, prepare

from efficientdet.config import PostprocessConfig
from efficientdet.nms import nms

EXAMPLES = {"tf_checkpoint_bundle": 60, "tf_checkpoint_state_file": 40, "coco_parser": 40, "yolo_parser": 40,
            "voc_parser": 40, "dataset_yaml": 40, "box_coder": 40, "batched_iou": 40, "nms": 60}


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> dict[str, Path]:
    return {name: prepare(tmp_path_factory.mktemp(name)) for name in TARGETS}


@pytest.mark.parametrize("name", TARGETS)
def test_fuzzed_inputs_are_refused_with_documented_errors_or_satisfy_the_properties(name, workdirs):
    target = TARGETS[name]

    @settings(max_examples=EXAMPLES[name], deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(target.strategy)
    def run(example):
        assert target.check(example, workdirs[name]) in ("refused", "accepted")

    run()


# Fuzz findings in hard NMS, from when it ran through torchvision's batched_nms (which keeps groups
# apart by shifting each by its index × (largest coordinate + 1) in float32): images, classes and
# thin boxes stay apart now that groups are compared rather than shifted.
def test_batched_hard_nms_keeps_the_images_apart():
    boxes = torch.tensor([[[600.0, 600.0, 700.0, 700.0]], [[-100.0, -100.0, 0.0, 0.0]]])
    scores = torch.tensor([[0.9], [0.8]])
    _, kept = nms(boxes, scores, torch.zeros(2, 1, dtype=torch.long), PostprocessConfig(method="hard"))
    assert kept.tolist() == [[pytest.approx(0.9)], [pytest.approx(0.8)]]


def test_per_class_hard_nms_keeps_the_classes_apart():
    boxes = torch.tensor([[[600.0, 600.0, 700.0, 700.0], [-100.0, -100.0, 0.0, 0.0]]])
    picked, _ = nms(boxes, torch.tensor([[0.9, 0.8]]), torch.tensor([[0, 1]]),
                    PostprocessConfig(method="hard", class_agnostic=False))
    assert picked[0].tolist() == [0, 1]


def test_per_class_hard_nms_suppresses_an_identical_thin_box():
    boxes = torch.tensor([[[0.0, 0.0, 50.0, 1e-5], [0.0, 0.0, 50.0, 1e-5], [0.0, 0.0, 1000.0, 1000.0]]])
    scores = torch.tensor([[0.9, 0.8, 0.1]])
    classes = torch.tensor([[1, 1, 0]])
    picked, _ = nms(boxes, scores, classes, PostprocessConfig(method="hard", class_agnostic=False))
    assert picked[0].tolist() == [0, 2]
