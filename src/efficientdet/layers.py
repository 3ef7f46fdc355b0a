"""Building blocks with TensorFlow semantics: SAME padding, BN eps 1e-3, separable convs.

The official model is a TF model; "SAME" padding there is asymmetric for stride 2 on even
sizes (the extra pixel goes bottom/right), which PyTorch's symmetric ``padding=`` cannot
express. Stride-1 convs get static symmetric padding; only strided convs and pools pad in
``forward``, from the actual input size, so any input size works as in the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# TF BatchNormalization(momentum=0.99, epsilon=1e-3) == torch momentum 0.01, eps 1e-3.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def activation(name: str) -> nn.Module:
    if name == "swish":
        return nn.SiLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}; valid: swish, relu6, relu")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' along one axis."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0) -> torch.Tensor:
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF 'SAME' padding (static for stride 1, per input size otherwise)."""

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, groups=1, bias=True):
        static = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel_size, stride, static, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            x = _pad_same(x, self.kernel_size, self.stride)
        return super().forward(x)


def max_pool2d_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool with TF 'SAME' padding: padded cells never win (-inf), unlike zero padding."""
    return F.max_pool2d(_pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D: depthwise k×k (no bias) then pointwise 1×1 (+bias)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        self.depthwise = Conv2dSame(in_ch, in_ch, kernel_size, groups=in_ch, bias=False)
        self.pointwise = Conv2dSame(in_ch, out_ch, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def drop_path(x: torch.Tensor, survival_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (official ``utils.drop_connect``): keep and rescale by 1/p."""
    if not training or survival_prob >= 1.0:
        return x
    keep = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) < survival_prob
    return x * keep / survival_prob



# The official initialisers, with Keras' fan counts: Keras counts a depthwise kernel ``(k, k, C, 1)``
# as fan-in ``k·k·C`` and fan-out ``k·k``, so the official depthwise weights start ≈ √C times smaller
# than torch's per-group count gives. That scale sets the effective step size of the BN-followed
# convs and the spread of the first class logits around the prior, which short fine-tunes feel.
# Each initialiser sets a conv's weight and zeroes its bias.
def keras_fans(conv: nn.Conv2d) -> tuple[int, int]:
    """(fan_in, fan_out) of ``conv``'s kernel as Keras counts them."""
    k = conv.kernel_size[0] * conv.kernel_size[1]
    return k * conv.in_channels, k * conv.out_channels // conv.groups


def conv_layers(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _zero_bias(conv: nn.Conv2d) -> None:
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def he_normal_fan_out_(conv: nn.Conv2d) -> None:
    """EfficientNet's conv initialiser (``conv_kernel_initializer``)."""
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / keras_fans(conv)[1]))
    _zero_bias(conv)


def glorot_uniform_(conv: nn.Conv2d) -> None:
    """Keras' default, which the official BiFPN keeps."""
    limit = math.sqrt(6.0 / sum(keras_fans(conv)))
    nn.init.uniform_(conv.weight, -limit, limit)
    _zero_bias(conv)


def variance_scaling_(conv: nn.Conv2d) -> None:
    """Keras ``VarianceScaling()`` (the official separable heads'): a normal truncated at two
    standard deviations, rescaled so that the std is √(1/fan_in)."""
    std = math.sqrt(1.0 / keras_fans(conv)[0]) / 0.87962566103423978
    nn.init.trunc_normal_(conv.weight, 0.0, std, -2 * std, 2 * std)
    _zero_bias(conv)
