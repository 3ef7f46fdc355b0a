"""Parameter and FLOP counts measured on the real module (not a formula)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .model import EfficientDet


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(config: ModelConfig, image_size: tuple[int, int] | None = None) -> int:
    """Multiply-adds of one forward pass at ``image_size`` (default: native), as the paper counts FLOPs.

    The model is built on the meta device, so this costs no memory or compute even for D7x;
    ``torch.utils.flop_counter`` counts convolutions and matmuls (2 FLOPs per multiply-add).
    Element-wise work (BN, activations, fusion, pooling) is not counted, as in the paper.
    """
    size = image_size or config.image_size
    with torch.device("meta"):
        model = EfficientDet(config).eval()
        x = torch.empty(1, 3, *size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2
