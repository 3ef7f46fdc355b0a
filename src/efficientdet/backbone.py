"""EfficientNet / EfficientNet-Lite feature extractor (C3, C4, C5), built from the stage table.

Our own implementation rather than timm's so that every module maps one-to-one onto the
official checkpoint names (``efficientnet-bX/blocks_N/...`` → ``blocks.N``) and the TF
conventions (SAME padding, BN eps, stochastic depth schedule) are explicit.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import BackboneConfig, round_filters, round_repeats
from .layers import Conv2dSame, activation, batch_norm, conv_layers, drop_path, he_normal_fan_out_


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, act: str):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: [expand 1×1] → depthwise k×k → [SE] → project 1×1 (+ skip)."""

    def __init__(self, in_ch, out_ch, kernel, stride, expand, se_ratio, act, survival_prob):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self.expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self.expand_bn = batch_norm(mid)
        self.dw_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid, bias=False)
        self.dw_bn = batch_norm(mid)
        self.act = activation(act)
        # SE width comes from the block's *input* channels (official efficientnet_model.py).
        self.se = SqueezeExcite(mid, max(1, int(in_ch * se_ratio)), act) if se_ratio else None
        self.project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self.project_bn = batch_norm(out_ch)
        self.residual = stride == 1 and in_ch == out_ch
        self.survival_prob = survival_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand:
            out = self.act(self.expand_bn(self.expand_conv(out)))
        out = self.act(self.dw_bn(self.dw_conv(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.project_bn(self.project_conv(out))
        if self.residual:
            if self.survival_prob is not None:
                out = drop_path(out, self.survival_prob, self.training)
            out = out + x
        return out


class EfficientNet(nn.Module):
    """Returns the features of strides 8, 16, 32 (outputs of the last block at each stride)."""

    def __init__(self, config: BackboneConfig, act: str = "swish"):
        super().__init__()
        width = config.width
        stem_ch = config.stages[0].in_channels
        if not config.lite:  # Lite keeps the stem unscaled (fix_head_stem)
            stem_ch = round_filters(stem_ch, width, config.divisor)
        self.stem_conv = Conv2dSame(3, stem_ch, 3, 2, bias=False)
        self.stem_bn = batch_norm(stem_ch)
        self.stem_act = activation(act)

        specs = []  # (in, out, kernel, stride, expand, se) per block, in official order
        last = len(config.stages) - 1
        in_ch = stem_ch  # a block reads what the previous layer gives (Lite3/4: unscaled stem)
        for i, stage in enumerate(config.stages):
            out_ch = round_filters(stage.out_channels, width, config.divisor)
            fixed = config.lite and i in (0, last)  # Lite keeps first/last stage depth
            repeats = stage.repeats if fixed else round_repeats(stage.repeats, config.depth)
            se = 0.0 if config.lite else stage.se_ratio
            for r in range(repeats):
                specs.append((in_ch, out_ch, stage.kernel, stage.stride if r == 0 else 1, stage.expand, se))
                in_ch = out_ch
        n = len(specs)
        blocks = []
        for idx, (in_ch, out_ch, k, s, e, se) in enumerate(specs):
            # Official schedule: survival decays linearly with the block index.
            p = None if config.survival_prob is None else 1.0 - (1.0 - config.survival_prob) * idx / n
            blocks.append(MBConv(in_ch, out_ch, k, s, e, se, act, p))
        self.blocks = nn.ModuleList(blocks)

        # A block ends a stride when the next one down-samples (or it is the last block).
        strides, cum = [], 2
        for idx, spec in enumerate(specs):
            cum *= spec[3]
            strides.append(cum)
        ends = [i for i in range(n) if i == n - 1 or specs[i + 1][3] > 1]
        self.feature_blocks = [i for i in ends if strides[i] in (8, 16, 32)]
        self.feature_channels = [specs[i][1] for i in self.feature_blocks]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialiser (He-normal on fan-out); pretrained weights replace it in practice."""
        for conv in conv_layers(self):
            he_normal_fan_out_(conv)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_act(self.stem_bn(self.stem_conv(x)))
        features = []
        for idx, block in enumerate(self.blocks):
            x = block(x)
            if idx in self.feature_blocks:
                features.append(x)
        return features


class TimmBackbone(nn.Module):
    """Any timm ``features_only`` model giving strides 8/16/32, imported only when asked for."""

    def __init__(self, name: str, pretrained: bool = False):
        super().__init__()
        try:
            import timm
        except ImportError as e:
            raise ImportError("backbone.timm_name needs timm: pip install 'efficientdet[timm]'") from e
        self.model = timm.create_model(name, features_only=True, pretrained=pretrained, out_indices=(2, 3, 4))
        reductions = self.model.feature_info.reduction()
        if list(reductions) != [8, 16, 32]:
            raise ValueError(f"timm model {name!r} gives feature strides {reductions}, need [8, 16, 32]")
        self.feature_channels = list(self.model.feature_info.channels())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialiser of our EfficientNet, so that a random start does not depend on the backbone's origin."""
        for conv in conv_layers(self):
            he_normal_fan_out_(conv)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def build_backbone(config: BackboneConfig, act: str) -> nn.Module:
    if config.timm_name:
        return TimmBackbone(config.timm_name)
    return EfficientNet(config, act)
