"""The ND family (nd, cosine, infonce, norm_l2, sifn): references, identities, config, regulariser dispatch."""

from __future__ import annotations

import math
import typing

import pytest
import torch

from ndkd.config import DistillConfig, NDConfig, NDVariant, config_from_dict
from ndkd.distillers import build_distiller
from ndkd.distillers.nd import ND_VARIANTS
from ndkd.errors import ConfigError
from ndkd.losses import nd_cosine_loss, nd_infonce_loss, nd_loss, norm_l2_loss, sifn_loss
from ndkd.models import FeatureTap, create_model


def _inputs(batch=10, dim=16, classes=4, seed=0, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    student = (torch.randn(batch, dim, generator=generator, dtype=torch.float64) * scale).requires_grad_()
    teacher = torch.randn(batch, dim, generator=generator, dtype=torch.float64) * 3.0
    class_means = torch.randn(classes, dim, generator=generator, dtype=torch.float64).abs() + 0.1
    labels = torch.arange(batch) % classes
    return student, teacher, class_means, labels


def _cos(a, b):
    return (a * b).sum() / math.sqrt((a * a).sum().item()) / torch.sqrt((b * b).sum())


def _check(ours, reference, student):
    (grad_ours,) = torch.autograd.grad(ours, student, retain_graph=True)
    (grad_reference,) = torch.autograd.grad(reference, student, retain_graph=True)
    assert ours.dtype == torch.float64
    assert ours.item() == pytest.approx(reference.item(), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-7, atol=1e-12)


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------- cosine


def test_cosine_matches_per_sample_reference():
    student, _, class_means, labels = _inputs()
    reference = sum(
        1 - (student[i] * class_means[labels[i]]).sum() / (student[i].norm() * class_means[labels[i]].norm())
        for i in range(10)
    ) / 10  # fmt: skip
    _check(nd_cosine_loss(student, class_means, labels), reference, student)


def test_cosine_is_invariant_to_the_scale_of_each_student_feature_and_has_no_radial_gradient():
    student, _, class_means, labels = _inputs()
    scales = torch.linspace(0.01, 100.0, 10, dtype=torch.float64)[:, None]
    base = nd_cosine_loss(student, class_means, labels)
    assert nd_cosine_loss(student * scales, class_means, labels).item() == pytest.approx(base.item(), rel=1e-12)
    (grad,) = torch.autograd.grad(base, student)
    assert (grad * student).sum(dim=1).abs().max().item() < 1e-12  # orthogonal to s: direction only


def test_cosine_range_and_class_mean_norm_does_not_matter():
    student, _, class_means, labels = _inputs()
    aligned = class_means[labels] * 3.0
    assert nd_cosine_loss(aligned, class_means, labels).item() == pytest.approx(0.0, abs=1e-12)
    assert nd_cosine_loss(-aligned, class_means, labels).item() == pytest.approx(2.0, abs=1e-12)
    assert nd_cosine_loss(student, class_means * 7.0, labels).item() == pytest.approx(
        nd_cosine_loss(student, class_means, labels).item(), rel=1e-12
    )


# -------------------------------------------------------------------------------------------- infonce


@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_infonce_matches_log_softmax_reference(temperature):
    student, _, class_means, labels = _inputs()
    total = 0.0
    for i in range(10):
        cosines = torch.stack([_cos(class_means[k], student[i]) for k in range(4)]) / temperature
        total = total - (cosines[labels[i]] - torch.log(torch.exp(cosines).sum()))
    _check(nd_infonce_loss(student, class_means, labels, temperature), total / 10, student)


def test_infonce_with_one_class_mean_is_zero():
    student, _, class_means, _ = _inputs()
    value = nd_infonce_loss(student, class_means[:1], torch.zeros(10, dtype=torch.long), 0.1)
    assert value.item() == 0.0


def test_infonce_is_scale_invariant_and_small_when_aligned_with_separated_means():
    class_means = torch.eye(4, dtype=torch.float64) * 5.0
    labels = torch.arange(4)
    aligned = nd_infonce_loss(class_means * 0.3, class_means, labels, 0.1)
    assert aligned.item() == pytest.approx(math.log(1 + 3 * math.exp(-10.0)), rel=1e-9)  # cos 1 vs 0, tau 0.1
    with pytest.raises(ValueError, match="temperature must be positive"):
        nd_infonce_loss(class_means, class_means, labels, 0.0)


# -------------------------------------------------------------------------------------------- norm_l2


def test_norm_l2_matches_reference_and_gradient_is_radial():
    student, teacher, _, _ = _inputs()
    reference = sum((student[i].norm() - teacher[i].norm()) ** 2 for i in range(10)) / 10
    ours = norm_l2_loss(student, teacher)
    _check(ours, reference, student)
    (grad,) = torch.autograd.grad(ours, student)
    s_norm = student.detach().norm(dim=1, keepdim=True)
    expected = 2 * (s_norm - teacher.norm(dim=1, keepdim=True)) * student.detach() / s_norm / 10
    torch.testing.assert_close(grad, expected)
    assert norm_l2_loss(_unit(teacher) * teacher.norm(dim=1, keepdim=True).flip(0), teacher.flip(0)).item() == pytest.approx(0.0, abs=1e-12)


def test_norm_l2_teacher_gets_no_gradient():
    student, teacher, _, _ = _inputs()
    teacher.requires_grad_()
    norm_l2_loss(student, teacher).backward()
    assert teacher.grad is None


# ----------------------------------------------------------------------------------------------- sifn


@pytest.mark.parametrize("delta_r", [0.3, 1.0])
def test_sifn_value_is_constant_and_gradient_pushes_every_norm_by_delta_r(delta_r):
    student, _, _, _ = _inputs(scale=1.0)
    student = student * torch.logspace(-2, 2, 10, dtype=torch.float64)[:, None]  # norms from tiny to large
    student = student.detach().requires_grad_()
    value = sifn_loss(student, delta_r)
    assert value.item() == pytest.approx(delta_r**2, rel=1e-9)
    (grad,) = torch.autograd.grad(value, student)
    torch.testing.assert_close(grad, -2 * delta_r * _unit(student.detach()) / 10)  # same push whatever the norm
    # one SGD step of size lr grows each norm by lr * 2 delta_r / B (to first order), directions unchanged
    lr = 1e-4
    stepped = student.detach() - lr * grad
    growth = stepped.norm(dim=1) - student.detach().norm(dim=1)
    torch.testing.assert_close(growth, torch.full((10,), lr * 2 * delta_r / 10, dtype=torch.float64), rtol=1e-4, atol=0)
    torch.testing.assert_close(_unit(stepped), _unit(student.detach()))


def test_sifn_rejects_non_positive_delta():
    with pytest.raises(ValueError, match="delta_r must be positive"):
        sifn_loss(torch.ones(2, 3), 0.0)


# ------------------------------------------------------------------------------------ half precision


@pytest.mark.parametrize("variant", sorted(ND_VARIANTS))
def test_every_variant_computes_in_float32_for_bfloat16_inputs(variant):
    student, teacher, class_means, labels = _inputs()
    config = NDConfig(weight=1.0, variant=variant, temperature=0.1)
    loss = ND_VARIANTS[variant].loss
    low = loss(student.detach().bfloat16(), teacher.bfloat16(), class_means.float(), labels, config)
    high = loss(student.detach(), teacher, class_means, labels, config)
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(high.item(), rel=3e-2, abs=1e-2)


# ----------------------------------------------------------------------------------------- config


def test_variant_table_and_config_literal_agree():
    assert set(ND_VARIANTS) == set(typing.get_args(NDVariant))
    assert ND_VARIANTS["infonce"].options == ("temperature",) and ND_VARIANTS["sifn"].options == ("delta_r",)


def test_unknown_variant_is_rejected_with_a_suggestion(tiny_dict):
    tiny_dict["distill"]["nd"] = {"weight": 1.0, "variant": "cosin"}
    with pytest.raises(ConfigError, match=r"'distill.nd.variant' must be one of nd, cosine, infonce, norm_l2, sifn; got 'cosin'. Did you mean 'cosine'\?"):
        config_from_dict(tiny_dict)


def test_infonce_needs_a_temperature_and_options_must_be_positive(tiny_dict):
    tiny_dict["distill"]["nd"] = {"weight": 1.0, "variant": "infonce"}
    with pytest.raises(ConfigError, match=r"'distill.nd.temperature' must be set for distill.nd.variant 'infonce'"):
        config_from_dict(tiny_dict)
    tiny_dict["distill"]["nd"]["temperature"] = -1.0
    with pytest.raises(ConfigError, match=r"'distill.nd.temperature' must be positive \(or null\), got -1.0"):
        config_from_dict(tiny_dict)
    tiny_dict["distill"]["nd"] = {"weight": 1.0, "variant": "sifn", "delta_r": 0}
    with pytest.raises(ConfigError, match=r"'distill.nd.delta_r' must be positive, got 0.0"):
        config_from_dict(tiny_dict)
    tiny_dict["distill"]["nd"] = {"weight": 1.0, "variant": "infonce", "temperature": 0.2}
    assert config_from_dict(tiny_dict).distill.nd.temperature == 0.2


# ------------------------------------------------------------------------------ regulariser dispatch


def _expected(variant, s, t, means, labels, config):
    return {
        "nd": lambda: nd_loss(s, t, means, labels),
        "cosine": lambda: nd_cosine_loss(s, means, labels),
        "infonce": lambda: nd_infonce_loss(s, means, labels, config.temperature),
        "norm_l2": lambda: norm_l2_loss(s, t),
        "sifn": lambda: sifn_loss(s, config.delta_r),
    }[variant]()


@pytest.mark.parametrize("teacher_arch", ["resnet8x4", "resnet14"], ids=["projector", "no-projector"])
@pytest.mark.parametrize("variant", sorted(ND_VARIANTS))
def test_regulariser_dispatches_on_the_variant_with_the_same_projector_rule(variant, teacher_arch):
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 4), create_model(teacher_arch, 4)
    width = 256 if teacher_arch == "resnet8x4" else 64
    class_means = torch.rand(4, width) + 0.1
    nd = NDConfig(weight=1.5, variant=variant, temperature=0.2, delta_r=0.5)
    distiller = build_distiller(DistillConfig(method="kd", nd=nd), student, teacher, class_means)
    assert (distiller.nd.projector is not None) == (teacher_arch == "resnet8x4")
    distiller.eval()  # dropout of the projector off, so the expected value is deterministic
    images, labels = torch.randn(6, 3, 8, 8), torch.arange(6) % 4
    _, losses = distiller.forward_train(images, labels, epoch=0)
    s = FeatureTap(student)(images).embedding
    if distiller.nd.projector is not None:
        s = distiller.nd.projector(s)
    t = FeatureTap(teacher)(images).embedding
    torch.testing.assert_close(losses["nd"], 1.5 * _expected(variant, s, t, class_means, labels, nd))
    distiller.train()
    _, losses = distiller.forward_train(images, labels, epoch=0)
    losses["nd"].backward()
    assert student.conv1.weight.grad is not None and torch.isfinite(student.conv1.weight.grad).all()


def test_regulariser_built_from_python_refuses_infonce_without_temperature():
    student, teacher = create_model("resnet8", 4), create_model("resnet14", 4)
    with pytest.raises(ConfigError, match="'infonce' needs a positive distill.nd.temperature, got None"):
        build_distiller(DistillConfig(method="kd", nd=NDConfig(weight=1.0, variant="infonce")), student, teacher, torch.rand(4, 64))
