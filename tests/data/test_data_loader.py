import shutil

import numpy as np
import pytest
import torch
from efficientdet.config import PreprocessConfig
from efficientdet.data import (
    DetectionDataset,
    EvalTransform,
    ImageError,
    Sample,
    TrainTransform,
    build_loader,
    collate,
    load_dataset_yaml,
    load_split,
)
from efficientdet.train.sampling import SeededDataset

SIZE = (64, 96)
NORMALISE = PreprocessConfig((124.0, 116.0, 104.0), (58.0, 57.0, 57.0))


@pytest.fixture(scope="module")
def split(dataset_yamls):
    return load_split(load_dataset_yaml(dataset_yamls["coco"]), "train")


def test_item_holds_targets_without_crowd(split):
    dataset = DetectionDataset(split.samples, EvalTransform(SIZE, NORMALISE), validate=True)
    image, target = dataset[0]  # a.jpg 512x512: one box and one crowd box
    assert image.shape == (3, *SIZE) and image.dtype == torch.float32
    assert target["boxes"].shape == (1, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [0] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 0 and target["orig_size"] == (512, 512)
    assert target["image_scale"] == pytest.approx(512 / 64)
    torch.testing.assert_close(target["boxes"], torch.tensor([[10, 20, 200, 300]]) / 8.0)


def test_collate_pads_to_the_most_boxes(split):
    dataset = DetectionDataset(split.samples, EvalTransform(SIZE, NORMALISE))
    batch = collate([dataset[i] for i in range(3)])  # 1, 2 and 0 boxes
    assert batch.images.shape == (3, 3, *SIZE)
    assert batch.boxes.shape == (3, 2, 4) and batch.labels.shape == (3, 2)
    assert batch.labels.tolist() == [[0, -1], [1, 2], [-1, -1]]
    assert torch.equal(batch.boxes[1], batch.targets[1]["boxes"]) and (batch.boxes[2] == 0).all()
    assert [t["image_id"] for t in batch.targets] == [0, 1, 2]
    empty = collate([dataset[2], dataset[2]])
    assert empty.boxes.shape == (2, 1, 4) and (empty.labels == -1).all()  # never an empty box axis


def bad_samples(tmp_path, photos):
    shutil.copy(photos / "a.jpg", tmp_path / "good.jpg")
    (tmp_path / "corrupt.jpg").write_bytes((photos / "a.jpg").read_bytes()[:200])
    (tmp_path / "empty.png").write_bytes(b"")
    shutil.copy(photos / "b.png", tmp_path / "wrong-size.png")
    sizes = {"good.jpg": (512, 512), "corrupt.jpg": (512, 512), "empty.png": (5, 5), "missing.jpg": (5, 5),
             "wrong-size.png": (300, 451)}  # b.png is 451 wide, 300 high
    return [Sample(tmp_path / name, np.zeros((0, 4)), np.zeros(0), i, w, h) for i, (name, (w, h)) in
            enumerate(sizes.items())]


def test_validate_reports_every_bad_image_at_once(tmp_path, photos):
    with pytest.raises(ImageError) as error:
        DetectionDataset(bad_samples(tmp_path, photos), EvalTransform(SIZE, NORMALISE), validate=True)
    message = str(error.value)
    assert message.startswith("4 of 5 images are unusable:")
    for name in ("corrupt.jpg", "empty.png", "missing.jpg"):
        assert f"{name}: cannot read the image header" in message
    assert "wrong-size.png: image is 451x300 but its annotation says 300x451" in message
    assert "good.jpg" not in message


def test_corrupt_image_at_load_time_names_the_file(tmp_path, photos):
    samples = bad_samples(tmp_path, photos)
    dataset = DetectionDataset(samples, EvalTransform(SIZE, NORMALISE))
    assert dataset[0][0].shape == (3, *SIZE)
    with pytest.raises(ImageError, match="corrupt.jpg"):
        dataset[1]
    # a file whose header reads but whose pixels do not: caught at decode time
    (tmp_path / "cut.jpg").write_bytes((photos / "a.jpg").read_bytes()[:5000])
    with pytest.raises(ImageError, match="cut.jpg: cannot decode the image"):
        DetectionDataset([Sample(tmp_path / "cut.jpg", [], [], 0)], EvalTransform(SIZE, NORMALISE))[0]
    with pytest.raises(ImageError, match="wrong-size.png: image is 451x300"):
        dataset[4]


def test_corrupt_image_in_a_worker_surfaces_as_image_error(tmp_path, photos):
    samples = bad_samples(tmp_path, photos)[:2]
    loader = build_loader(DetectionDataset(samples, EvalTransform(SIZE, NORMALISE)), 2, workers=2)
    batches = iter(loader)
    with pytest.raises(ImageError, match="corrupt.jpg"):
        next(batches)
    # Shut the workers down now: left to garbage collection after a worker error, PyTorch's
    # teardown waits 5 s per worker (and its queue threads may complain), in a later test.
    batches._shutdown_workers()


def many(split, n=10):
    return [split.samples[i % len(split.samples)] for i in range(n)]


def test_eval_loader_keeps_order_and_every_image(split):
    loader = build_loader(DetectionDataset(many(split, 5), EvalTransform(SIZE, NORMALISE)), 2)
    batches = list(loader)
    assert [b.images.shape[0] for b in batches] == [2, 2, 1]
    assert [t["image_id"] for b in batches for t in b.targets] == [0, 1, 2, 0, 1]
    assert not loader.persistent_workers


def test_mosaic_items_are_reproducible_and_hold_boxes_of_several_images(split):
    """Under SeededDataset a mosaic item is a function of (seed, epoch, index); with the whole
    canvas shrunk into view (scale 0.5, no flip), it holds more boxes than any one image has (2)."""
    images = many(split, 12)
    transform = TrainTransform(SIZE, NORMALISE, scale_range=(0.5, 0.5), hflip=0.0)
    mixed = SeededDataset(DetectionDataset(images, transform, mosaic=1.0), seed=5)
    plain = SeededDataset(DetectionDataset(images, transform), seed=5)
    first, again = mixed[3], mixed[3]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    assert first[0].shape == (3, *SIZE) and not torch.equal(first[0], plain[3][0])
    assert max(len(mixed[key][1]["labels"]) for key in range(12)) >= 3


def test_mosaic_needs_a_transform_with_an_image_size(split):
    with pytest.raises(ValueError, match="mosaic needs a transform with an image_size"):
        DetectionDataset(split.samples, lambda image, boxes, labels: None, mosaic=0.5)
