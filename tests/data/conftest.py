"""Session fixtures: the photos and the same tiny dataset in the three formats."""

from pathlib import Path

import pytest
from data_builders import save_photos, write_coco, write_voc, write_yolo


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    return save_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def dataset_yamls(tmp_path_factory, photos) -> dict[str, Path]:
    """``{"coco": data.yaml, "voc": ..., "yolo": ...}``, each in its own folder."""
    writers = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}
    return {fmt: write(tmp_path_factory.mktemp(fmt), photos) for fmt, write in writers.items()}
