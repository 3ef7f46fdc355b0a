import re

import pytest

from efficientdet import list_models
from efficientdet.weights.zoo import (
    EFFDET,
    ENTRIES,
    OFFICIAL,
    PARAMS,
    TAGS,
    find,
    is_weights_name,
)


def test_every_variant_has_official_and_effdet_coco_weights():
    for variant in list_models():
        official, port = find(f"{variant}:coco"), find(f"{variant}:coco:effdet")
        assert official.kind == OFFICIAL and official.url.startswith("https://storage.googleapis.com/")
        assert official.filename in (f"{variant}.tar.gz", f"{variant}.tgz")
        assert official.archive_folder == variant
        assert port.kind == EFFDET and port.url.startswith("https://github.com/rwightman/efficientdet-pytorch/")
        assert 20 < official.coco_ap < 60 and 20 < port.coco_ap < 60
    assert set(PARAMS) == set(list_models())


def test_entries_are_unique_and_effdet_files_carry_their_hash_prefix():
    assert len({e.name for e in ENTRIES}) == len(ENTRIES)
    assert len({e.url for e in ENTRIES}) == len(ENTRIES)
    for e in ENTRIES:
        if e.kind == EFFDET:
            assert re.fullmatch(r"[0-9a-f]{8}", e.sha256_prefix) and e.filename.endswith(f"-{e.sha256_prefix}.pth")
        else:
            assert e.sha256_prefix is None  # the official archives publish no hash


def test_further_official_sets_carry_what_they_were_trained_with():
    assert find("efficientdet-d4:coco640").overrides == {"image_size": 640}
    assert find("efficientdet-d4:coco640").filename == "efficientdet-d4-640.tar.gz"
    advprop = find("efficientdet-d2:advprop").overrides["preprocess"]
    assert advprop.mean == (127.5,) * 3 and advprop.std == (127.5,) * 3  # input scaled to [-1, 1]
    assert find("efficientdet-d2:advprop:effdet").overrides["preprocess"] == advprop
    assert not find("efficientdet-d2").overrides


def test_names_resolve_with_and_without_the_variant():
    assert find("efficientdet-d0").name == "efficientdet-d0:coco"
    assert find("coco", "efficientdet-lite2").name == "efficientdet-lite2:coco"
    assert find("coco:effdet", "efficientdet-d3").filename == "tf_efficientdet_d3_47-0b525f35.pth"
    assert find("efficientdet-d1:advprop", "efficientdet-d1").tag == "advprop"


@pytest.mark.parametrize("name, variant, message", [
    ("coco", None, "need a model"),
    ("efficientdet-d0:cocoo", None, "valid names for efficientdet-d0: efficientdet-d0:coco"),
    ("efficientdet-d9", None, "VARIANT one of efficientdet-d0"),
    ("efficientdet-d7:advprop", None, "valid names for efficientdet-d7"),
    ("efficientdet-d1:coco", "efficientdet-d0", "are for efficientdet-d1, not efficientdet-d0"),
    ("imagenet", "efficientdet-d0", "valid names for efficientdet-d0"),
])
def test_unknown_names_list_the_valid_ones(name, variant, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        find(name, variant)


def test_names_are_told_from_paths():
    for tag in TAGS:
        assert is_weights_name(tag)
    assert is_weights_name("efficientdet-d0") and is_weights_name("efficientdet-d0:coco:effdet")
    assert is_weights_name("cocoo:effdet")  # a misspelt name gets the valid names, not "no such file"
    for path in ("runs/exp/weights/best.safetensors", "d0.safetensors", "efficientdet-d0/", "model.index",
                 "tf_efficientdet_d0_34-f153e0cf.pth", "./coco"):
        assert not is_weights_name(path)
