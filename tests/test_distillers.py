"""The Distiller contract: frozen eval-mode teacher, weighted terms, warm-up, ND composition and projector."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ndkd.config import DistillConfig, NDConfig
from ndkd.distillers import build_distiller, list_methods
from ndkd.errors import ClassMeansError, ConfigError
from ndkd.losses import kd_loss, nd_loss
from ndkd.models import FeatureTap, create_model


def _pair(student="resnet8", teacher="resnet8x4", classes=4):
    torch.manual_seed(0)
    return create_model(student, classes), create_model(teacher, classes)


def _batch(classes=4, size=8):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, size, size, generator=generator), torch.arange(6) % classes


def test_registry_lists_the_foundation_methods():
    entries = {entry.name: entry for entry in list_methods()}
    assert {"none", "kd"} <= set(entries)
    assert entries["kd"].option_defaults() == {"temperature": 4.0, "logit_projector": False}
    assert not entries["none"].needs_teacher and entries["kd"].needs_teacher


def test_teacher_is_frozen_and_stays_in_eval_mode():
    student, teacher = _pair()
    distiller = build_distiller(DistillConfig(method="kd"), student, teacher)
    distiller.train()
    assert distiller.student.training and not distiller.teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert {id(p) for p in distiller.trainable_parameters()} == {id(p) for p in student.parameters()}
    running_mean = teacher.bn1.running_mean.clone()
    images, labels = _batch()
    _, losses = distiller.forward_train(images, labels, epoch=3)
    sum(losses.values()).backward()
    assert torch.equal(teacher.bn1.running_mean, running_mean)  # eval-mode BN: statistics untouched
    assert all(p.grad is None for p in teacher.parameters())


def test_kd_terms_are_weighted_and_warmed_up_linearly():
    student, teacher = _pair()
    config = DistillConfig(method="kd", ce_weight=0.5, weight=3.0, warmup_epochs=4, options={"temperature": 2.0})
    distiller = build_distiller(config, student, teacher).train()
    images, labels = _batch()
    teacher_logits = teacher(images)
    for epoch, ramp in ((0, 0.0), (1, 0.25), (3, 0.75), (4, 1.0), (9, 1.0)):
        torch.manual_seed(0)
        logits, losses = distiller.forward_train(images, labels, epoch)
        assert set(losses) == {"ce", "kd"}
        torch.testing.assert_close(losses["ce"], 0.5 * F.cross_entropy(logits, labels))
        torch.testing.assert_close(losses["kd"], ramp * 3.0 * kd_loss(logits, teacher_logits, 2.0))


def test_nd_without_projector_when_dims_match():
    student, teacher = _pair("resnet8", "resnet14")  # both 64-d embeddings
    class_means = torch.rand(4, 64) + 0.1
    config = DistillConfig(method="kd", nd=NDConfig(weight=2.0))
    distiller = build_distiller(config, student, teacher, class_means).train()
    assert distiller.nd.projector is None
    images, labels = _batch()
    _, losses = distiller.forward_train(images, labels, epoch=0)  # ND is not warmed up by default
    s = FeatureTap(student)(images).embedding
    t = FeatureTap(teacher)(images).embedding
    torch.testing.assert_close(losses["nd"], 2.0 * nd_loss(s, t, class_means, labels))


def test_nd_with_projector_when_dims_differ_and_projector_is_trained():
    student, teacher = _pair("resnet8", "resnet8x4")  # 64-d vs 256-d
    class_means = torch.rand(4, 256)
    distiller = build_distiller(DistillConfig(method="none", nd=NDConfig(weight=1.0)), student, teacher, class_means)
    projector = distiller.nd.projector
    assert [type(m).__name__ for m in projector] == ["BatchNorm1d", "Dropout", "Linear"]
    assert projector[2].in_features == 64 and projector[2].out_features == 256
    assert torch.count_nonzero(projector[2].bias) == 0
    trainable = {id(p) for p in distiller.trainable_parameters()}
    assert all(id(p) in trainable for p in projector.parameters())
    assert any(k.startswith("nd.projector.") for k in distiller.trainable_state_dict())
    assert not any(k.startswith("teacher.") for k in distiller.trainable_state_dict())
    images, labels = _batch()
    _, losses = distiller.train().forward_train(images, labels, epoch=0)
    assert set(losses) == {"ce", "nd"}
    losses["nd"].backward()
    assert projector[2].weight.grad is not None and student.conv1.weight.grad is not None


def test_nd_warmup_switch():
    student, teacher = _pair("resnet8", "resnet14")
    config = DistillConfig(method="kd", warmup_epochs=2, nd=NDConfig(weight=1.0, warmup=True))
    distiller = build_distiller(config, student, teacher, torch.rand(4, 64)).train()
    images, labels = _batch()
    _, losses = distiller.forward_train(images, labels, epoch=0)
    assert losses["nd"].item() == 0.0 and losses["kd"].item() == 0.0
    _, losses = distiller.forward_train(images, labels, epoch=1)
    assert losses["nd"].item() > 0.0


def test_missing_teacher_or_class_means_are_explained():
    student, teacher = _pair()
    with pytest.raises(ConfigError, match="method 'kd' needs a teacher"):
        build_distiller(DistillConfig(method="kd"), student, None)
    with pytest.raises(ConfigError, match=r"ND \(distill.nd.weight > 0\) needs a teacher"):
        build_distiller(DistillConfig(method="none", nd=NDConfig(weight=1.0)), student, None)
    with pytest.raises(ClassMeansError, match="ND needs the teacher's class-means"):
        build_distiller(DistillConfig(method="kd", nd=NDConfig(weight=1.0)), student, teacher)
    with pytest.raises(ClassMeansError, match=r"class-means of shape \(4, 64\) do not fit a teacher embedding of width 256"):
        build_distiller(DistillConfig(method="kd", nd=NDConfig(weight=1.0)), student, teacher, torch.rand(4, 64))
