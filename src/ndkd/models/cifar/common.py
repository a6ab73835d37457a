"""Pieces shared by the CIFAR zoo: weight initialisation and the channel shuffle of ShuffleNets."""

from __future__ import annotations

import torch
from torch import nn

from ndkd.models.features import Stage


def init_conv_bn(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions with zero biases, BatchNorm scale 1 and shift 0 (Linear: PyTorch's default).

    He initialisation suits these ReLU networks trained from scratch; loading a checkpoint replaces it.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: [B, g*c, H, W] -> channel order (c, g) instead of (g, c)."""
    batch, channels, height, width = x.shape
    return x.view(batch, groups, channels // groups, height, width).transpose(1, 2).reshape(batch, channels, height, width)


def residual_stages(model: nn.Module, layer_names: tuple[str, ...]) -> list[Stage]:
    """Stages of a net with a ``conv1 -> bn1 -> relu`` stem and Sequential layers of residual blocks.

    Stem: ``relu`` (pre-activation ``bn1``: the stem's ReLU must not work in place). Each layer: its
    output, and as pre-activation the ``residual_sum`` identity of its last block (the sum before the
    block's final ReLU).
    """
    stages = [Stage("stem", "relu", "bn1")]
    for name in layer_names:
        stages.append(Stage(name, name, f"{name}.{len(getattr(model, name)) - 1}.residual_sum"))
    return stages
