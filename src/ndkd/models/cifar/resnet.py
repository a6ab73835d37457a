"""CIFAR ResNets of the distillation benchmark (resnet8 ... resnet110, resnet8x4, resnet32x4).

Depth 6n+2: a 3x3 stem, three stages of n basic blocks (stride 1, 2, 2), global average pooling and
one Linear. Parameter names and shapes match the widely shared pretrained CIFAR-100 teacher checkpoints
(reference manifest), so those files load with ``strict=True``. Pooling is adaptive, so the same model
also runs on 28x28 inputs (Fashion-MNIST) without a parameter change.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.models.cifar.common import init_conv_bn, residual_stages
from ndkd.models.features import Stage
from ndkd.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut.

    ``residual_sum`` is an ``nn.Identity`` placed on the sum before the final ReLU: a named point where
    hooks read the pre-activation feature (ReviewKD uses the teacher's). It has no parameters.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.residual_sum = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(self.residual_sum(out + shortcut))


class CifarResNet(nn.Module):
    """ResNet for 32x32 images: stem, ``layer1..layer3`` of ``blocks_per_stage`` blocks, pool, ``fc``."""

    def __init__(
        self,
        blocks_per_stage: int,
        widths: tuple[int, int, int, int],
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        stem, *stage_widths = widths
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()  # not in place: hooks on bn1 read the stem's pre-activation
        in_planes = stem
        layers = []
        for index, planes in enumerate(stage_widths):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_planes, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(blocks_per_stage - 1)]
            layers.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        """Stem and the three stages (outputs after ReLU; pre-ReLU at the last block's residual sum)."""
        return residual_stages(self, ("layer1", "layer2", "layer3"))


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def _register(depth: int, widths: tuple[int, int, int, int], suffix: str = "") -> None:
    name = f"resnet{depth}{suffix}"
    blocks = (depth - 2) // 6

    @register_model(name, family="cifar", description=f"CIFAR ResNet-{depth}{suffix}, widths {widths}")
    def builder(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(blocks, widths, num_classes=num_classes, in_channels=in_channels)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(_depth, _NARROW)
for _depth in (8, 32):
    _register(_depth, _WIDE, suffix="x4")
