"""ResNet-18 and ResNet-50 of the CIFAR distillation benchmark (names ``ResNet18``, ``ResNet50``).

The ImageNet layouts adapted to 32x32 images: a 3x3 stride-1 stem of 64 channels (no max pooling), four
stages ``layer1..layer4`` of basic (ResNet-18: 2, 2, 2, 2) or bottleneck (ResNet-50: 3, 4, 6, 3) blocks
with widths 64/128/256/512 (x4 for bottlenecks) and strides 1/2/2/2, global average pooling and one
Linear ``linear``. The projection shortcut is a child ``shortcut`` (1x1 conv + BN) as in the shared
pretrained CIFAR-100 checkpoints, whose parameter names and shapes these models match.

Not to be confused with torchvision's ImageNet ResNets, registered as ``torchvision/resnet18`` etc.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.models.cifar.common import init_conv_bn, residual_stages
from ndkd.models.features import Stage
from ndkd.models.registry import register_model


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()  # identity, no parameters
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)
        self.residual_sum = nn.Identity()  # the block output before its final ReLU, for hooks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(self.residual_sum(out + self.shortcut(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(in_planes, planes * 4, stride)
        self.residual_sum = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(self.residual_sum(out + self.shortcut(x)))


class CifarResNetLarge(nn.Module):
    def __init__(self, block: type, depths: tuple[int, ...], num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()  # not in place: hooks on bn1 read the stem's pre-activation
        in_planes = 64
        layers = []
        for index, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for position in range(depth):
                blocks.append(block(in_planes, planes, 2 if index > 0 and position == 0 else 1))
                in_planes = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        """Stem and the four stages (after ReLU; pre-ReLU at the last block's residual sum)."""
        return residual_stages(self, ("layer1", "layer2", "layer3", "layer4"))


@register_model("ResNet18", family="cifar", description="CIFAR ResNet-18 (64-wide 3x3 stem, no max pool)", aliases=("cifar_resnet18",))
def resnet18(num_classes: int = 100, in_channels: int = 3) -> CifarResNetLarge:
    return CifarResNetLarge(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)


@register_model("ResNet50", family="cifar", description="CIFAR ResNet-50 (64-wide 3x3 stem, no max pool)", aliases=("cifar_resnet50",))
def resnet50(num_classes: int = 100, in_channels: int = 3) -> CifarResNetLarge:
    return CifarResNetLarge(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)
