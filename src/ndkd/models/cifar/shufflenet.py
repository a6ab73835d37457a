"""ShuffleNet V1 (``ShuffleV1``, 3 groups) and V2 (``ShuffleV2``, width 1) of the CIFAR distillation benchmark.

Both start with a 1x1 stem of 24 channels and stride 1, run three stages that each begin with a stride-2
block, and end in global average pooling and one Linear ``linear``. Parameter names and shapes match
the shared pretrained CIFAR-100 checkpoints.

V1 block: grouped 1x1 conv -> channel shuffle -> 3x3 depthwise -> grouped 1x1 conv; the shortcut is added
(stride 1) or, at stride 2, a 3x3 average pool of the input is concatenated. Stage widths 240/480/960.
V2 block: the input is split in halves, one half goes through 1x1 -> 3x3 depthwise -> 1x1 and is
concatenated back, then shuffled; the stride-2 block runs both halves' branches on the full input.
Stage widths 116/232/464, then a 1x1 conv to 1024 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ndkd.models.cifar.common import channel_shuffle, init_conv_bn, residual_stages
from ndkd.models.features import Stage
from ndkd.models.registry import register_model


def add_stem(model: nn.Module, in_channels: int) -> int:
    """Give ``model`` the 1x1 stem ``conv1 -> bn1 -> relu`` of 24 channels (registered first); returns 24."""
    model.conv1 = _conv1x1(in_channels, 24)
    model.bn1 = _bn(24)
    model.relu = nn.ReLU()  # not in place: hooks on bn1 read the stem's pre-activation
    return 24


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


def _conv1x1(in_channels: int, out_channels: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


class ShuffleV1Block(nn.Module):
    """``out_channels`` is the branch width; at stride 2 the input's channels are concatenated to it.

    ``residual_sum`` (no parameters) sees the block output before its final ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = out_channels // 4
        # the first block of the network sees the 24-channel stem: too few channels to split in groups
        self.first_groups = 1 if in_channels == 24 else groups
        self.stride = stride
        self.conv1 = _conv1x1(in_channels, mid, self.first_groups)
        self.bn1 = _bn(mid)
        self.conv2 = _depthwise(mid, stride)
        self.bn2 = _bn(mid)
        self.conv3 = _conv1x1(mid, out_channels, groups)
        self.bn3 = _bn(out_channels)
        self.residual_sum = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            out = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], dim=1)
        else:
            out = out + x
        return F.relu(self.residual_sum(out))


class ShuffleNetV1(nn.Module):
    def __init__(self, num_classes: int = 100, in_channels: int = 3, groups: int = 3) -> None:
        super().__init__()
        widths, depths = (240, 480, 960), (4, 8, 4)
        channels = add_stem(self, in_channels)
        layers = []
        for width, depth in zip(widths, depths):
            blocks = [ShuffleV1Block(channels, width - channels, 2, groups)]
            blocks += [ShuffleV1Block(width, width, 1, groups) for _ in range(depth - 1)]
            layers.append(nn.Sequential(*blocks))
            channels = width
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        """Stem and the three stages (after ReLU; pre-ReLU at the last block's residual sum)."""
        return residual_stages(self, ("layer1", "layer2", "layer3"))


class ShuffleV2Block(nn.Module):
    """Stride 1: split, transform one half, concatenate, shuffle. Width is kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        half = channels - self.split
        self.conv1 = _conv1x1(half, half)
        self.bn1 = _bn(half)
        self.conv2 = _depthwise(half, 1)
        self.bn2 = _bn(half)
        self.conv3 = _conv1x1(half, half)
        self.bn3 = _bn(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, transformed = x[:, : self.split], x[:, self.split :]
        out = F.relu(self.bn1(self.conv1(transformed)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return channel_shuffle(torch.cat([kept, out], dim=1), 2)


class ShuffleV2DownBlock(nn.Module):
    """Stride 2: two branches on the whole input (depthwise -> 1x1; 1x1 -> depthwise -> 1x1), concatenated."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = _depthwise(in_channels, 2)
        self.bn1 = _bn(in_channels)
        self.conv2 = _conv1x1(in_channels, mid)
        self.bn2 = _bn(mid)
        self.conv3 = _conv1x1(in_channels, mid)
        self.bn3 = _bn(mid)
        self.conv4 = _depthwise(mid, 2)
        self.bn4 = _bn(mid)
        self.conv5 = _conv1x1(mid, mid)
        self.bn5 = _bn(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        widths, depths = (116, 232, 464), (3, 7, 3)
        channels = add_stem(self, in_channels)
        layers = []
        for width, depth in zip(widths, depths):
            layers.append(nn.Sequential(ShuffleV2DownBlock(channels, width), *[ShuffleV2Block(width) for _ in range(depth)]))
            channels = width
        self.layer1, self.layer2, self.layer3 = layers
        self.conv2 = _conv1x1(channels, 1024)
        self.bn2 = _bn(1024)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1024, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        """Stem and the three stages; a stage output mixes activated and passed-through halves, so no pre-activation."""
        return [Stage("stem", "relu", "bn1"), Stage("layer1", "layer1"), Stage("layer2", "layer2"), Stage("layer3", "layer3")]


@register_model("ShuffleV1", family="cifar", description="CIFAR ShuffleNet V1, 3 groups", aliases=("shufflenetv1", "shufflev1"))
def shufflev1(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes, in_channels=in_channels)


@register_model("ShuffleV2", family="cifar", description="CIFAR ShuffleNet V2, width 1", aliases=("shufflenetv2", "shufflev2"))
def shufflev2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes, in_channels=in_channels)
