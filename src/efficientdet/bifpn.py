"""BiFPN (paper Fig. 2d): the node graph as data, resampling, weighted fusion, stacked cells.

Node ``i`` of a cell reads the features at ``inputs`` (offsets into the list that starts with
the cell's P_min..P_max inputs and grows by one entry per node), resizes each to its level,
fuses them and applies act → separable conv → BN (official ``OpAfterCombine``). The cell's
outputs are the last node written at each level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BiFPNConfig
from .layers import SeparableConv2d, activation, batch_norm, conv_layers, glorot_uniform_, max_pool2d_same


@dataclass(frozen=True)
class Node:
    level: int
    inputs: tuple[int, ...]


def bifpn_nodes(min_level: int, max_level: int) -> list[Node]:
    """Top-down then bottom-up path, as the official ``fpn_configs.bifpn_config`` builds it.

    For levels 3..7: P6←[3,4], P5←[2,5], P4←[1,6], P3←[0,7], P4←[1,7,8], P5←[2,6,9],
    P6←[3,5,10], P7←[4,11].
    """
    ids = {level: [i] for i, level in enumerate(range(min_level, max_level + 1))}
    nodes, next_id = [], max_level - min_level + 1
    for level in range(max_level - 1, min_level - 1, -1):
        nodes.append(Node(level, (ids[level][-1], ids[level + 1][-1])))
        ids[level].append(next_id)
        next_id += 1
    for level in range(min_level + 1, max_level + 1):
        nodes.append(Node(level, (*ids[level], ids[level - 1][-1])))
        ids[level].append(next_id)
        next_id += 1
    return nodes


def _upsample_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``resize_nearest_neighbor`` (src = floor(dst·in/out)); torch's 'nearest' is the same rule.

    A ratio that is not whole (P7 3×3 → P6 5×5 at 320 px) is written as a gather of the rows and
    columns torch's kernel picks (its float32 scale, floored): the TFLite converter lowers
    ``interpolate`` there to a resize with other pixel centres, which picks others.
    """
    (h, w), (th, tw) = x.shape[-2:], size
    if th % h == 0 and tw % w == 0:
        return F.interpolate(x, size=size, mode="nearest")
    return x.index_select(-2, _nearest_index(h, th, x.device)).index_select(-1, _nearest_index(w, tw, x.device))


def _nearest_index(size: int, out: int, device: torch.device) -> torch.Tensor:
    """Source index of each of ``out`` positions, as torch's CPU and CUDA kernels compute it."""
    scale = torch.tensor(size, dtype=torch.float32) / torch.tensor(out, dtype=torch.float32)
    index = (torch.arange(out, dtype=torch.float32) * scale).floor().long().clamp(max=size - 1)
    return index.to(device)


class Resample(nn.Module):
    """Bring a feature map to ``channels`` (1×1 conv + BN, only if needed) and to a target size.

    Down-sampling is a SAME max-pool of kernel stride+1 (official ``ResampleFeatureMap``),
    up-sampling is TF-legacy nearest.
    """

    def __init__(self, in_ch: int, channels: int):
        super().__init__()
        if in_ch != channels:
            self.conv = nn.Conv2d(in_ch, channels, 1)
            self.bn = batch_norm(channels)
        else:
            self.conv = self.bn = None

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = size
        if self.conv is not None:
            x = self.bn(self.conv(x))
        if h > th and w > tw:
            sh, sw = (h - 1) // th + 1, (w - 1) // tw + 1
            x = max_pool2d_same(x, (sh + 1, sw + 1), (sh, sw))
        elif h <= th and w <= tw:
            if h < th or w < tw:
                x = _upsample_nearest(x, (th, tw))
        else:
            raise ValueError(f"cannot resample a {h}x{w} feature map to {th}x{tw}")
        return x


class FNode(nn.Module):
    def __init__(self, node: Node, in_channels: list[int], channels: int, fusion: str, act: str, separable: bool):
        super().__init__()
        self.node = node
        self.fusion = fusion
        self.resample = nn.ModuleList(Resample(in_channels[i], channels) for i in node.inputs)
        # Official ``WSM``, ``WSM_1``, ...: one scalar weight per input, initialised to 1.
        self.weights = nn.Parameter(torch.ones(len(node.inputs))) if fusion != "sum" else None
        self.act = activation(act)
        if separable:
            self.conv = SeparableConv2d(channels, channels, 3)
        else:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = batch_norm(channels)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        inputs = [r(feats[i], size) for r, i in zip(self.resample, self.node.inputs)]
        if self.fusion == "fastattn":
            # Each term is divided separately with eps inside, as the official code does.
            w = F.relu(self.weights.to(inputs[0].dtype))
            denom = w.sum() + 1e-4
            fused = sum(x * w[i] / denom for i, x in enumerate(inputs))
        elif self.fusion == "attn":
            w = torch.softmax(self.weights.to(inputs[0].dtype), 0)
            fused = sum(x * w[i] for i, x in enumerate(inputs))
        else:
            fused = sum(inputs)
        return self.bn(self.conv(self.act(fused)))


class BiFPNCell(nn.Module):
    def __init__(self, in_channels: list[int], config: BiFPNConfig, act: str, min_level: int, max_level: int):
        super().__init__()
        self.min_level = min_level
        nodes = bifpn_nodes(min_level, max_level)
        channels = list(in_channels)
        fnodes = []
        for node in nodes:
            fnodes.append(FNode(node, channels, config.channels, config.fusion, act, config.separable))
            channels.append(config.channels)
        self.fnodes = nn.ModuleList(fnodes)
        # Output index per level: the last node written at that level.
        last = {level: i for i, level in enumerate(range(min_level, max_level + 1))}
        for i, node in enumerate(nodes):
            last[node.level] = len(in_channels) + i
        self.outputs = [last[level] for level in range(min_level, max_level + 1)]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes = [tuple(f.shape[-2:]) for f in feats]
        feats = list(feats)
        for fnode in self.fnodes:
            feats.append(fnode(feats, sizes[fnode.node.level - self.min_level]))
        return [feats[i] for i in self.outputs]


class BiFPN(nn.Module):
    """Extra levels from the last backbone feature (P6: 1×1 conv + BN + pool; P7+: pool), then cells."""

    def __init__(self, backbone_channels: list[int], config: BiFPNConfig, act: str, min_level: int, max_level: int):
        super().__init__()
        self.extra = nn.ModuleList()
        channels = list(backbone_channels)
        for _ in range(min_level + len(backbone_channels), max_level + 1):
            self.extra.append(Resample(channels[-1], config.channels))
            channels.append(config.channels)
        self.cells = nn.ModuleList()
        for _ in range(config.repeats):
            self.cells.append(BiFPNCell(channels, config, act, min_level, max_level))
            channels = [config.channels] * len(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official: Keras' default glorot-uniform for every conv, fusion weights 1."""
        for conv in conv_layers(self):
            glorot_uniform_(conv)
        for module in self.modules():
            if isinstance(module, FNode) and module.weights is not None:
                nn.init.ones_(module.weights)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = list(features)
        for resample in self.extra:
            h, w = feats[-1].shape[-2:]
            feats.append(resample(feats[-1], ((h - 1) // 2 + 1, (w - 1) // 2 + 1)))
        for cell in self.cells:
            feats = cell(feats)
        return feats
