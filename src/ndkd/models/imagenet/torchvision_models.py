"""torchvision's ImageNet classifiers by name: ``torchvision/resnet18`` ... ``resnet152``, ``torchvision/mobilenet_v2``.

Built with random weights (``weights=None``: nothing is downloaded); trained weights come from a file on
disk through ``teacher.checkpoint`` / ``load_weights`` (torchvision's own ``.pth`` files are plain
state_dicts and load as they are). Stages are declared here, by model class, so torchvision's forward
is used unchanged; ResNet pre-activations are read at the input of each stage's last in-place ReLU.
"""

from __future__ import annotations

from torch import nn

from ndkd.models.features import INPUT_SUFFIX, Stage, register_stage_rule
from ndkd.models.registry import register_model

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _with_input_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` itself for 3 channels, else a fresh conv of the same geometry reading ``in_channels``."""
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )


def _resnet_builder(arch: str):
    def builder(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        model.conv1 = _with_input_channels(model.conv1, in_channels)
        return model

    return builder


def _mobilenet_v2(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    model.features[0][0] = _with_input_channels(model.features[0][0], in_channels)
    return model


def resnet_stages(model: nn.Module) -> list[Stage]:
    """Stem (after the first ReLU, before max pooling) and ``layer1..layer4``; pre-activations at ReLU inputs."""
    stages = [Stage("stem", "relu", "relu" + INPUT_SUFFIX)]
    for name in ("layer1", "layer2", "layer3", "layer4"):
        last = f"{name}.{len(getattr(model, name)) - 1}"
        stages.append(Stage(name, name, f"{last}.relu{INPUT_SUFFIX}"))
    return stages


def mobilenet_v2_stages(model: nn.Module) -> list[Stage]:
    """Stem ``features.0``, then the last block at each resolution and the final 1x1 conv (no pre-activations:
    inverted residual blocks end in a linear projection)."""
    features = model.features
    last = len(features) - 1
    ends = [index - 1 for index in range(2, last) if getattr(features[index], "stride", 1) == 2] + [last]
    return [Stage("stem", "features.0")] + [Stage(f"layer{i + 1}", f"features.{end}") for i, end in enumerate(ends)]


register_stage_rule("torchvision.models.resnet.ResNet", resnet_stages)
register_stage_rule("torchvision.models.mobilenetv2.MobileNetV2", mobilenet_v2_stages)

for _arch in RESNETS:
    register_model(
        f"torchvision/{_arch}", family="imagenet", input_size=224,
        description=f"torchvision ImageNet ResNet-{_arch[6:]}",
    )(_resnet_builder(_arch))  # fmt: skip

register_model("torchvision/mobilenet_v2", family="imagenet", input_size=224, description="torchvision ImageNet MobileNetV2 (width 1)")(_mobilenet_v2)
