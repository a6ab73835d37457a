"""ND and KD losses against independent per-sample references (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from ndkd.losses import kd_loss, nd_loss


def nd_reference(student, teacher, class_means, labels):
    """Per-sample loop of the KD++ formula, written independently of the library."""
    total = 0.0
    for i in range(student.shape[0]):
        centre = class_means[int(labels[i])]
        direction = centre / torch.sqrt((centre * centre).sum())
        s_norm = torch.sqrt((student[i] * student[i]).sum())
        t_norm = torch.sqrt((teacher[i] * teacher[i]).sum()).detach()
        denominator = s_norm if s_norm >= t_norm else t_norm
        total = total + 1 - (student[i] * direction).sum() / denominator
    return total / student.shape[0]


def _inputs(scale_student: float, seed: int = 0, batch: int = 16, dim: int = 32, classes: int = 5):
    generator = torch.Generator().manual_seed(seed)
    student = (torch.randn(batch, dim, generator=generator, dtype=torch.float64) * scale_student).requires_grad_()
    teacher = torch.randn(batch, dim, generator=generator, dtype=torch.float64) * 3.0
    class_means = torch.randn(classes, dim, generator=generator, dtype=torch.float64).abs() * 4.0
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, class_means, labels


@pytest.mark.parametrize("scale", [0.1, 10.0, 3.0], ids=["student-smaller", "student-larger", "mixed"])
def test_nd_loss_matches_per_sample_loop(scale):
    student, teacher, class_means, labels = _inputs(scale)
    norms_s, norms_t = student.detach().norm(dim=1), teacher.norm(dim=1)
    if scale == 0.1:
        assert (norms_s < norms_t).all()
    elif scale == 10.0:
        assert (norms_s > norms_t).all()
    else:
        assert (norms_s < norms_t).any() and (norms_s > norms_t).any()

    ours = nd_loss(student, teacher, class_means, labels)
    (grad_ours,) = torch.autograd.grad(ours, student)
    reference = nd_reference(student, teacher, class_means, labels)
    (grad_reference,) = torch.autograd.grad(reference, student)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6, abs=1e-7)
    torch.testing.assert_close(grad_ours.double(), grad_reference, rtol=1e-5, atol=1e-7)


def test_nd_gradient_branches():
    """Small student: gradient is -e_y/(B ||t||) (pushes along the class-mean); large: orthogonal to s."""
    student, teacher, class_means, labels = _inputs(0.1, batch=4)
    (grad,) = torch.autograd.grad(nd_loss(student, teacher, class_means, labels), student)
    directions = class_means[labels] / class_means[labels].norm(dim=1, keepdim=True)
    expected = -directions / (teacher.norm(dim=1, keepdim=True) * 4)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-7)

    student, teacher, class_means, labels = _inputs(10.0, batch=4)
    (grad,) = torch.autograd.grad(nd_loss(student, teacher, class_means, labels), student)
    radial = (grad.double() * student.detach()).sum(dim=1)
    assert radial.abs().max().item() < 1e-6  # no norm pressure once ||s|| >= ||t||


def test_nd_tie_of_norms_takes_the_student_branch_with_its_full_gradient():
    """||s|| == ||t|| exactly: Python's max(s, t) returns s, so the gradient is that of 1 - <s, e>/||s||."""
    student = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[0.0, 5.0]], dtype=torch.float64)  # same norm, 5
    class_means = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    (grad,) = torch.autograd.grad(nd_loss(student, teacher, class_means, torch.tensor([0])), student)
    s = student.detach()
    expected = -(torch.tensor([[1.0, 0.0]], dtype=torch.float64) / 5.0 - s[0, 0] * s / 5.0**3)  # d/ds of -s_0/||s||
    torch.testing.assert_close(grad, expected)


def test_nd_loss_range_and_zero_when_aligned():
    class_means = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    teacher = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    aligned = class_means / class_means.norm(dim=1, keepdim=True) * 10.0  # longer than the teacher
    assert nd_loss(aligned, teacher, class_means, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert nd_loss(-aligned, teacher, class_means, labels).item() == pytest.approx(2.0, abs=1e-6)
    short = aligned / 20.0  # half the teacher's norm (||t|| = sqrt(2) and 2) -> 1 - 0.5/||t||
    expected = ((1 - 0.5 / math.sqrt(2)) + (1 - 0.5 / 2.0)) / 2
    assert nd_loss(short, teacher, class_means, labels).item() == pytest.approx(expected, rel=1e-6)


def test_nd_teacher_gets_no_gradient_and_shapes_are_checked():
    student, teacher, class_means, labels = _inputs(1.0)
    teacher.requires_grad_()
    nd_loss(student, teacher, class_means, labels).backward()
    assert teacher.grad is None
    with pytest.raises(ValueError, match="project the student embedding"):
        nd_loss(student[:, :8], teacher, class_means, labels)


def kd_reference(student_logits, teacher_logits, temperature):
    p_teacher = torch.softmax(teacher_logits / temperature, dim=1)
    log_p_teacher = torch.log(p_teacher)
    log_p_student = torch.log(torch.softmax(student_logits / temperature, dim=1))
    kl_per_sample = (p_teacher * (log_p_teacher - log_p_student)).sum(dim=1)
    return temperature**2 * kl_per_sample.mean()


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_equals_kl_formula(temperature):
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(8, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(8, 10, generator=generator, dtype=torch.float64) * 2
    ours = kd_loss(student, teacher, temperature)
    reference = kd_reference(student, teacher, temperature)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    (grad_ours,) = torch.autograd.grad(ours, student)
    (grad_reference,) = torch.autograd.grad(reference, student)
    torch.testing.assert_close(grad_ours.double(), grad_reference, rtol=1e-4, atol=1e-6)
    # gradient of T^2 KL w.r.t. student logits is T (p_s - p_t) / B
    expected = temperature * (torch.softmax(student / temperature, 1) - torch.softmax(teacher / temperature, 1)) / 8
    torch.testing.assert_close(grad_ours.double(), expected.detach(), rtol=1e-4, atol=1e-6)


def test_kd_loss_is_zero_for_identical_logits_and_safe_for_extreme_logits():
    logits = torch.randn(4, 6)
    assert kd_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    extreme = torch.tensor([[1e4, -1e4, 0.0]])
    value = kd_loss(extreme, -extreme, 1.0)
    assert torch.isfinite(value)
    with pytest.raises(ValueError, match="temperature must be positive"):
        kd_loss(logits, logits, 0.0)
