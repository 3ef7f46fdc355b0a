"""Models for tests that compare outputs."""

import math

import torch
from torch import nn


def lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw every conv kernel at unit gain per group: He-normal on fan-out in the backbone,
    normal on fan-in elsewhere (both counting a depthwise kernel's group, not its channels).

    The official initialisers start the BiFPN and head depthwise kernels about √C times smaller
    than that; with BN at its initial statistics (mean 0, var 1) in eval mode the signal then
    fades to ~1e-7 by the heads, and two implementations' outputs would agree whatever they
    compute. Redrawn this way every layer shows in the outputs. The class prior bias is kept.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1]
                if name.startswith("backbone."):
                    std = math.sqrt(2.0 / (k * m.out_channels // m.groups))
                else:
                    std = math.sqrt(1.0 / (k * m.in_channels // m.groups))
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
    return model
