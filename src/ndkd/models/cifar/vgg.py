"""VGG networks with BatchNorm of the CIFAR distillation benchmark (vgg8, vgg11, vgg13, vgg16, vgg19).

Five convolution groups ``block0..block4`` of 3x3 conv (with bias) -> BN -> ReLU layers, 64/128/256/512/512
channels; 2x2 max pooling after each of the first three groups (so for 32x32 inputs the last
two groups both run at 4x4), global average pooling and one Linear ``classifier`` of 512 inputs.
Parameter names and shapes match the shared pretrained CIFAR-100 teacher checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.models.cifar.common import init_conv_bn
from ndkd.models.features import Stage
from ndkd.models.registry import register_model

# convolutions per group
_LAYOUTS = {8: (1, 1, 1, 1, 1), 11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)


def _group(in_channels: int, width: int, convs: int) -> nn.Sequential:
    """conv-BN-ReLU repeated; the last ReLU is not in place so hooks on the last BN read its pre-activation."""
    layers: list[nn.Module] = []
    for index in range(convs):
        last = index == convs - 1
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=not last)]
        in_channels = width
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """VGG-``depth`` with BatchNorm for 32x32 images."""

    def __init__(self, depth: int, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        layout = _LAYOUTS[depth]
        self.block0 = _group(in_channels, _WIDTHS[0], layout[0])
        self.block1 = _group(_WIDTHS[0], _WIDTHS[1], layout[1])
        self.block2 = _group(_WIDTHS[1], _WIDTHS[2], layout[2])
        self.block3 = _group(_WIDTHS[2], _WIDTHS[3], layout[3])
        self.block4 = _group(_WIDTHS[3], _WIDTHS[4], layout[4])
        self.pool = nn.MaxPool2d(2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_WIDTHS[4], num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block0(x))
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        x = self.block4(self.block3(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        """The five groups (after their last ReLU; pre-activation at their last BN)."""
        stages = []
        for index in range(5):
            group = getattr(self, f"block{index}")
            stages.append(Stage("stem" if index == 0 else f"layer{index}", f"block{index}", f"block{index}.{len(group) - 2}"))
        return stages


def _register(depth: int) -> None:
    @register_model(f"vgg{depth}", family="cifar", description=f"CIFAR VGG-{depth} with BatchNorm", aliases=(f"vgg{depth}_bn",))
    def builder(num_classes: int = 100, in_channels: int = 3) -> CifarVGG:
        return CifarVGG(depth, num_classes=num_classes, in_channels=in_channels)


for _depth in _LAYOUTS:
    _register(_depth)
