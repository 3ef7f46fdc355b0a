import pytest
import torch
from model_builders import lively
from skimage import data

from efficientdet import create_model
from efficientdet.preprocess import preprocess
from efficientdet.fuse import fold_bn, fuse_model


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so that a folding mistake shows (fresh BNs are the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a[0] + a[1], b[0] + b[1]))


def test_fold_bn_equals_conv_then_bn():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(16, eps=1e-3)
    _randomise_bn(bn)
    bn.eval()
    x = torch.randn(2, 8, 10, 10)
    fused = fold_bn(conv, bn)
    assert fused.bias is not None and conv.bias is None  # the original is not modified
    assert torch.allclose(fused(x), bn(conv(x)), atol=1e-5)


def test_official_d0_fused_within_1e5_on_a_photo(official_d0):
    model = create_model("efficientdet-d0", weights=official_d0).eval()
    fused = fuse_model(model)
    x, _ = preprocess([torch.from_numpy(data.astronaut()).permute(2, 0, 1)], (512, 512), model.config.preprocess)
    with torch.no_grad():
        assert _max_diff(model(x), fused(x)) <= 1e-5


@pytest.mark.parametrize("name", ["efficientdet-d0", "efficientdet-lite0"])  # swish + SE + fastattn; relu6 + sum
def test_fused_variants_match_and_have_no_batchnorm(name):
    torch.manual_seed(0)
    model = lively(create_model(name, num_classes=5, image_size=128)).eval()
    _randomise_bn(model)
    fused = fuse_model(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy: the original keeps its BNs
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref = model(x)
        scale = max(t.abs().max().item() for t in ref[0] + ref[1])
        assert _max_diff(ref, fused(x)) <= 1e-5 * max(1.0, scale)


def test_fused_model_runs_channels_last_and_bf16():
    torch.manual_seed(0)
    model = lively(create_model("efficientdet-lite0", num_classes=3, image_size=128)).eval()
    fused = fuse_model(model).to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref = model(x)
        assert _max_diff(ref, fused(x.contiguous(memory_format=torch.channels_last))) <= 1e-4
        low = fused.to(torch.bfloat16)(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
        assert _max_diff(ref, ([t.float() for t in low[0]], [t.float() for t in low[1]])) < 0.5
