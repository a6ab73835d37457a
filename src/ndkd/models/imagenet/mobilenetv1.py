"""MobileNetV1 (width 1, 1024-d embedding): the ImageNet student of the KD/KD++ papers (name ``mobilenetv1``).

A stride-2 3x3 stem of 32 channels and 13 depthwise-separable layers (3x3 depthwise conv-BN-ReLU, then
1x1 conv-BN-ReLU) of 64/128/128/256/256/512x6/1024/1024 channels, stride 2 at the 2nd, 4th, 6th and 12th,
all in one Sequential ``model`` (``model.0`` the stem, ``model.1..13`` the layers); global average pooling
and one Linear ``fc``. This is the layout of the MobileNetV1 checkpoints shared with the ImageNet
distillation benchmarks.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.models.cifar.common import init_conv_bn
from ndkd.models.features import Stage
from ndkd.models.registry import register_model

# (output channels, stride) of the depthwise-separable layers
_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _stem(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


def _separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """dw 3x3 -> BN -> ReLU -> pw 1x1 -> BN -> ReLU; the last ReLU is not in place (hooks on index 4 read its input)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers = [_stem(in_channels, 32)]
        channels = 32
        for out_channels, stride in _LAYERS:
            layers.append(_separable(channels, out_channels, stride))
            channels = out_channels
        self.model = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.model(x)), 1))

    def feature_stages(self) -> list[Stage]:
        """Stem and the last layer at each resolution (after ReLU; pre-activation at its last BN)."""
        ends = [index for index in range(1, len(_LAYERS)) if _LAYERS[index][1] == 2] + [len(_LAYERS)]
        return [Stage("stem", "model.0")] + [
            Stage(f"layer{i + 1}", f"model.{end}", f"model.{end}.4") for i, end in enumerate(ends)
        ]


@register_model("mobilenetv1", family="imagenet", input_size=224, description="MobileNetV1 (width 1, 1024-d), the papers' ImageNet student", aliases=("MobileNetV1", "mobilenet_v1"))
def mobilenetv1(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes, in_channels=in_channels)
