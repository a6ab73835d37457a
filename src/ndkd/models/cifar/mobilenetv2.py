"""MobileNetV2 of the CIFAR distillation benchmark: the half-width "mobile_half" model (name ``MobileNetV2``).

Width multiplier 0.5 and expansion 6: a stride-2 3x3 stem of 16 channels, seven groups ``blocks.0..6`` of
inverted residual blocks (1x1 expand -> 3x3 depthwise -> 1x1 linear projection, each with BatchNorm;
ReLU after the first two; identity shortcut when the shape is kept) of 8/12/16/32/48/80/160 channels with
strides 1/1/2/2/1/2/1, a 1x1 conv to 1280 channels, global average pooling and ``classifier.0`` (Linear).
Parameter names and shapes match the shared pretrained CIFAR-100 checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.models.cifar.common import init_conv_bn
from ndkd.models.features import Stage
from ndkd.models.registry import register_model

# (expansion, output channels at width 1, blocks, stride of the first block)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_LAST_CHANNELS = 1280


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (always present, also at expansion 1) -> 3x3 depthwise -> 1x1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_shortcut else out


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier ``width`` (0.5 for the benchmark's model)."""

    def __init__(self, width: float = 0.5, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        stem = int(32 * width)
        self.conv1 = _conv_bn_relu(in_channels, stem, 3, 2)
        groups = []
        channels = stem
        for expansion, base, count, stride in _SETTINGS:
            out_channels = int(base * width)
            blocks = [InvertedResidual(channels, out_channels, stride, expansion)]
            blocks += [InvertedResidual(out_channels, out_channels, 1, expansion) for _ in range(count - 1)]
            groups.append(nn.Sequential(*blocks))
            channels = out_channels
        self.blocks = nn.ModuleList(groups)
        last = _LAST_CHANNELS if width <= 1.0 else int(_LAST_CHANNELS * width)
        self.conv2 = _conv_bn_relu(channels, last, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        x = self.conv2(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        """Stem and the last group at each resolution; block outputs are linear, so no pre-activation."""
        return [
            Stage("stem", "conv1"),
            Stage("layer1", "blocks.1"),
            Stage("layer2", "blocks.2"),
            Stage("layer3", "blocks.4"),
            Stage("layer4", "blocks.6"),
        ]


@register_model(
    "MobileNetV2", family="cifar", description="CIFAR MobileNetV2, half width (the benchmark's mobile_half)",
    aliases=("mobilenetv2", "mobile_half", "mobilenetv2_half"),
)  # fmt: skip
def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> CifarMobileNetV2:
    return CifarMobileNetV2(0.5, num_classes=num_classes, in_channels=in_channels)
