"""Wide ResNets of the CIFAR distillation benchmark (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

WRN-d-k: a 3x3 stem of 16 channels, three groups (``block1..block3``) of (d - 4) / 6 pre-activation
blocks of widths 16k, 32k, 64k (strides 1, 2, 2), a final BatchNorm + ReLU, global average pooling and
one Linear ``fc``. A pre-activation block computes ``conv2(relu(bn2(conv1(relu(bn1(x))))))`` and adds
the input, or a 1x1 ``convShortcut`` of the activated input when the width or stride changes.
Parameter names and shapes match the shared pretrained CIFAR-100 teacher checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.models.cifar.common import init_conv_bn
from ndkd.models.features import Stage
from ndkd.models.registry import register_model


class PreActBlock(nn.Module):
    """Pre-activation basic block; ``relu1`` outputs ``relu(bn1(x))``, the activated input feature."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()  # not in place: hooks on bn1 read the pre-activation of the previous stage
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.convShortcut: nn.Module | None = None  # the checkpoints' name
        if in_planes != planes or stride != 1:
            self.convShortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        # a projection shortcut reads the activated input; an identity shortcut the raw one
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return out + shortcut


class BlockGroup(nn.Module):
    """``layer``: a Sequential of pre-activation blocks (kept as a child so the keys read ``blockN.layer.i``)."""

    def __init__(self, blocks: int, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        layers = [PreActBlock(in_planes, planes, stride)]
        layers += [PreActBlock(planes, planes, 1) for _ in range(blocks - 1)]
        self.layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` for 32x32 images (any resolution works: the pooling is adaptive)."""

    def __init__(self, depth: int, widen: int, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = BlockGroup(blocks, widths[0], widths[1], 1)
        self.block2 = BlockGroup(blocks, widths[1], widths[2], 2)
        self.block3 = BlockGroup(blocks, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        """Each stage output activated by the BN + ReLU that opens the next group (or the final ones).

        In a pre-activation network a stage's output is normalised and activated by whatever reads it
        next; those modules' outputs are the stage features (post) and their BN outputs the pre-activations.
        """
        return [
            Stage("stem", "block1.layer.0.relu1", "block1.layer.0.bn1"),
            Stage("layer1", "block2.layer.0.relu1", "block2.layer.0.bn1"),
            Stage("layer2", "block3.layer.0.relu1", "block3.layer.0.bn1"),
            Stage("layer3", "relu", "bn1"),
        ]


def _register(depth: int, widen: int) -> None:
    name = f"wrn_{depth}_{widen}"

    @register_model(name, family="cifar", description=f"CIFAR Wide ResNet-{depth}-{widen}", aliases=(f"wrn{depth}_{widen}", f"wrn-{depth}-{widen}"))
    def builder(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
        return WideResNet(depth, widen, num_classes=num_classes, in_channels=in_channels)


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _widen)
