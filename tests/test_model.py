import math

import pytest
import torch

from efficientdet import EfficientDet, create_model, get_config, list_models
from efficientdet.profile import count_flops, count_parameters
from efficientdet.weights.zoo import PARAMS

# Paper / official README FLOPs (billions of multiply-adds) at native resolution.
PAPER_FLOPS = {
    "efficientdet-d0": 2.54, "efficientdet-d1": 6.10, "efficientdet-d2": 11.0, "efficientdet-d3": 24.9,
    "efficientdet-d4": 55.2, "efficientdet-d5": 135.4, "efficientdet-d6": 225.6, "efficientdet-d7": 325,
    "efficientdet-d7x": 410,
}


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_is_official(name):
    with torch.device("meta"):
        assert count_parameters(EfficientDet(get_config(name))) == PARAMS[name]  # google/automl's counts, to the unit


@pytest.mark.parametrize("name", sorted(PAPER_FLOPS))
def test_flops_within_2_percent_of_paper(name):
    flops = count_flops(get_config(name)) / 1e9
    assert abs(flops / PAPER_FLOPS[name] - 1) < 0.02, flops


@pytest.mark.parametrize("name", list_models())
def test_every_variant_runs_with_per_level_shapes(name):
    cfg = get_config(name)
    size = 2 ** (cfg.max_level + 1)  # small input: 256 (512 for D7x's P8)
    model = create_model(name, num_classes=5, image_size=size).eval()
    with torch.no_grad():
        cls_out, box_out = model(torch.randn(1, 3, size, size))
    levels = list(cfg.levels)
    assert len(cls_out) == len(box_out) == len(levels)
    for level, c, b in zip(levels, cls_out, box_out):
        side = size // 2**level
        assert c.shape == (1, 9 * 5, side, side)
        assert b.shape == (1, 9 * 4, side, side)
        assert torch.isfinite(c).all() and torch.isfinite(b).all()


@pytest.mark.parametrize("size, expected", [
    ((640, 384), [(80, 48), (40, 24), (20, 12), (10, 6), (5, 3)]),
    ((500, 300), [(63, 38), (32, 19), (16, 10), (8, 5), (4, 3)]),
])
def test_non_square_and_odd_sizes(size, expected):
    model = create_model("efficientdet-d0", image_size=size).eval()
    with torch.no_grad():
        cls_out, box_out = model(torch.randn(2, 3, *size))
    assert [tuple(c.shape[-2:]) for c in cls_out] == expected
    assert [tuple(b.shape[-2:]) for b in box_out] == expected


def test_class_prior_bias():
    model = create_model("efficientdet-lite0", num_classes=3)
    bias = model.class_net.predict.pointwise.bias
    assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, 0.01))


def test_initialisers_use_keras_fan_counts():
    """Official: BiFPN glorot-uniform, heads truncated-normal variance scaling, both with Keras'
    fans, which count a depthwise kernel (3, 3, C, 1) as fan-in 9·C, fan-out 9."""
    torch.manual_seed(0)
    model = create_model("efficientdet-d0", num_classes=3)  # 64 BiFPN channels
    node = model.fpn.cells[0].fnodes[0].conv
    limit = math.sqrt(6 / (9 * 64 + 9))
    assert node.depthwise.weight.abs().max() <= limit
    assert node.depthwise.weight.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)
    assert node.pointwise.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    resample = model.fpn.cells[0].fnodes[1].resample[0].conv  # 320 → 64
    assert resample.weight.std().item() == pytest.approx(math.sqrt(2 / (320 + 64)), rel=0.05)
    for net in (model.class_net, model.box_net):
        for conv in (net.convs[0], net.predict):
            dw_std = math.sqrt(1 / (9 * 64))  # truncated at 2σ and rescaled: the std is the fan's
            assert conv.depthwise.weight.std().item() == pytest.approx(dw_std, rel=0.1)
            assert conv.depthwise.weight.abs().max() <= 2 * dw_std / 0.8796 + 1e-6
            assert conv.pointwise.weight.std().item() == pytest.approx(math.sqrt(1 / 64), rel=0.1)
    assert (model.box_net.predict.pointwise.bias == 0).all()


def test_each_part_initialises_itself():
    """Built alone, the BiFPN and a head start with the official initialisers, as inside the model;
    ``reset_parameters`` draws every part again, with the same statistics."""
    from efficientdet.bifpn import BiFPN
    from efficientdet.config import BiFPNConfig
    from efficientdet.head import HeadNet

    torch.manual_seed(0)
    fpn = BiFPN([40, 112, 320], BiFPNConfig(), "swish", 3, 7)
    limit = math.sqrt(6 / (9 * 64 + 9))
    assert fpn.cells[0].fnodes[0].conv.depthwise.weight.abs().max() <= limit
    assert fpn.extra[0].conv.weight.std().item() == pytest.approx(math.sqrt(2 / (320 + 64)), rel=0.05)
    head = HeadNet(64, 3, 9, 3, 5, "swish", prior_prob=0.01)
    assert head.predict.pointwise.weight.std().item() == pytest.approx(math.sqrt(1 / 64), rel=0.1)
    assert torch.allclose(torch.sigmoid(head.predict.pointwise.bias), torch.tensor(0.01))
    plain = HeadNet(64, 4, 9, 3, 5, "swish", separable=False)
    assert plain.predict.weight.std().item() == pytest.approx(0.01, rel=0.1) and (plain.predict.bias == 0).all()

    model = create_model("efficientdet-d0", num_classes=3)  # fast-attention fusion: weights to reset
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.fpn.cells[0].fnodes[0].weights.fill_(3.0)
    model.reset_parameters()
    after = model.state_dict()
    for key in ("backbone.stem_conv.weight", "fpn.cells.0.fnodes.0.conv.depthwise.weight",
                "class_net.convs.0.pointwise.weight", "box_net.predict.pointwise.weight"):
        assert not torch.equal(before[key], after[key]), key
        assert after[key].std().item() == pytest.approx(before[key].std().item(), rel=0.1), key
    assert (model.fpn.cells[0].fnodes[0].weights == 1).all()  # fusion weights start at 1
    assert torch.equal(before["class_net.predict.pointwise.bias"], after["class_net.predict.pointwise.bias"])


def test_train_mode_gives_same_output_structure_and_gradients():
    model = create_model("efficientdet-d0", num_classes=2, image_size=256).train()
    cls_out, box_out = model(torch.randn(2, 3, 256, 256))
    assert [c.shape[1] for c in cls_out] == [18] * 5 and [b.shape[1] for b in box_out] == [36] * 5
    (sum(c.mean() for c in cls_out) + sum(b.mean() for b in box_out)).backward()
    assert model.backbone.stem_conv.weight.grad.abs().sum() > 0
    assert all(f.weights.grad is not None for f in model.fpn.cells[0].fnodes)  # fast-attention weights learn


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(1, 3, 256, 256, dtype=torch.uint8), "float tensor"),
    (torch.zeros(3, 256, 256), r"shape \[B, 3, H, W\]"),
    (torch.zeros(1, 1, 256, 256), r"shape \[B, 3, H, W\]"),
    (torch.zeros(1, 3, 64, 256), "too small for level P7"),
])
def test_bad_input_is_a_clear_error(bad, match):
    model = create_model("efficientdet-lite0", num_classes=2)
    with pytest.raises(ValueError, match=match):
        model(bad)


def test_bn_matches_tf():
    model = create_model("efficientdet-d0")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


def test_stochastic_depth_schedule():
    b0 = create_model("efficientdet-d0").backbone.blocks
    assert all(b.survival_prob is None for b in b0)  # official: off for B0
    b1 = create_model("efficientdet-d1").backbone.blocks
    probs = [b.survival_prob for b in b1]
    assert probs[0] == 1.0 and probs == sorted(probs, reverse=True) and probs[-1] > 0.8


def test_nearest_upsampling_picks_torchs_pixels_at_every_ratio():
    """Whole ratios go through interpolate, the others through a gather of the same indices
    (which the TFLite converter keeps; its resize picks other pixels at 3 → 5)."""
    from efficientdet.bifpn import _upsample_nearest

    for h, w, th, tw in [(3, 3, 5, 5), (5, 5, 10, 10), (2, 3, 4, 5), (7, 9, 13, 17), (10, 10, 19, 19), (1, 1, 2, 2)]:
        x = torch.randn(2, 3, h, w)
        assert torch.equal(_upsample_nearest(x, (th, tw)), torch.nn.functional.interpolate(x, size=(th, tw)))
