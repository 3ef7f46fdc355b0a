"""The backbone name tables: every scheme names every backbone tensor once."""

from __future__ import annotations

import pytest

from efficientdet.backbone import EfficientNet
from efficientdet.config import get_config
from efficientdet.weights.names import (
    LUKEMELAS,
    TIMM,
    backbone_names,
    official_backbone_names,
)


@pytest.mark.parametrize("variant", ["efficientdet-d0", "efficientdet-lite0"])  # with and without SE
def test_each_scheme_names_every_backbone_tensor_once(variant):
    config = get_config(variant)
    backbone = EfficientNet(config.backbone, config.act)
    keys = {k for k in backbone.state_dict() if not k.endswith("num_batches_tracked")}
    for scheme in (TIMM, LUKEMELAS):
        names = backbone_names(backbone, scheme)
        assert set(names) == keys and len(set(names.values())) == len(keys)
    official = official_backbone_names(backbone, config.backbone.name, prefix="b")
    assert set(official) == {f"b.{k}" for k in keys} and len({v for v, _ in official.values()}) == len(keys)


def test_a_block_without_expansion_numbers_its_layers_from_the_depthwise_conv():
    config = get_config("efficientdet-d0")
    backbone = EfficientNet(config.backbone, config.act)
    assert not backbone.blocks[0].expand and backbone.blocks[1].expand
    timm = backbone_names(backbone, TIMM)
    assert timm["blocks.0.project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert timm["blocks.1.project_bn.running_var"] == "blocks.1.0.bn3.running_var"
    assert timm["blocks.2.dw_conv.weight"] == "blocks.1.1.conv_dw.weight"
    assert backbone_names(backbone, LUKEMELAS)["blocks.0.dw_bn.weight"] == "_blocks.0._bn1.weight"
    official = official_backbone_names(backbone, "efficientnet-b0")
    assert official["backbone.blocks.0.project_bn.bias"] == ("efficientnet-b0/blocks_0/tpu_batch_normalization_1/beta",
                                                              "vector")
    assert official["backbone.blocks.1.project_conv.weight"] == ("efficientnet-b0/blocks_1/conv2d_1/kernel", "conv")
