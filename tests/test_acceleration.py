"""Speed switches keep the math: BN folding is exact up to rounding, bf16/channels_last runs stay close."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ndkd import pipeline
from ndkd.config import SpeedConfig
from ndkd.errors import ConfigError
from ndkd.models import FeatureTap, create_model, model_stages
from ndkd.models.fold import fold_batchnorm


def _trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4"])
def test_folding_batchnorm_keeps_outputs_and_hooks(name):
    torch.manual_seed(0)
    model = _trained_statistics(create_model(name, num_classes=10))
    images = torch.randn(4, 3, 32, 32)
    paths = tuple(s.preact_path for s in model_stages(model))
    before = FeatureTap(model, paths)(images)
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(model) == batchnorms  # every BN of a CIFAR ResNet follows a convolution
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    after = FeatureTap(model, paths)(images)
    torch.testing.assert_close(after.logits, before.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after.embedding, before.embedding, rtol=1e-4, atol=1e-4)
    for path in paths:  # the stem's pre-activation is read at the (now identity) bn1: still the same feature
        torch.testing.assert_close(after.features[path], before.features[path], rtol=1e-4, atol=1e-4)


def test_folding_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(create_model("resnet8", num_classes=10).train())


def _losses(config, speed: SpeedConfig, tmp_path, name: str) -> list[float]:
    config = dataclasses.replace(config, speed=speed, output_dir=str(tmp_path / name))
    pipeline.distill(config, progress=False)
    import json

    lines = (tmp_path / name / config.name / "student" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train"]["loss"] for line in lines]


def test_switches_change_the_loss_only_slightly(tiny_config, random_teacher, tmp_path):
    config = dataclasses.replace(tiny_config, teacher=dataclasses.replace(tiny_config.teacher, checkpoint=str(random_teacher)))
    reference = _losses(config, SpeedConfig(), tmp_path, "fp32")
    folded = _losses(config, SpeedConfig(fold_teacher_bn=True), tmp_path, "fold")
    nhwc = _losses(config, SpeedConfig(channels_last=True), tmp_path, "nhwc")
    bf16 = _losses(config, SpeedConfig(precision="bf16"), tmp_path, "bf16")
    assert folded == pytest.approx(reference, rel=1e-4)
    assert nhwc == pytest.approx(reference, rel=1e-4)
    assert bf16 == pytest.approx(reference, rel=5e-2)  # bf16 keeps 8 bits of mantissa
    assert bf16 != reference


def test_fp16_on_the_cpu_is_refused_with_advice(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, speed=SpeedConfig(precision="fp16"), distill=dataclasses.replace(tiny_config.distill, method="none", options={}))
    with pytest.raises(ConfigError, match="speed.precision=fp16 needs a GPU; on the CPU use speed.precision=bf16"):
        pipeline.distill(config, progress=False)
