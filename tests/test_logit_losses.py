"""KD, DKD and DIST against independent float64 references written from the formulas, plus identities."""

from __future__ import annotations

import pytest
import torch

from ndkd.losses import dist_loss, dkd_loss, kd_loss
from ndkd.losses.logit import dist_terms, dkd_terms


def _logits(batch=8, classes=6, seed=0, scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    student = (torch.randn(batch, classes, generator=generator, dtype=torch.float64) * scale).requires_grad_()
    teacher = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * scale * 1.5
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, labels


def _kl(p, q):
    """KL(p || q) of two probability vectors, from the definition."""
    return (p * (p / q).log()).sum()


def dkd_reference(student, teacher, labels, alpha, beta, temperature):
    """DKD as written in the paper: binary [p_t, 1 - p_t] and the renormalised non-target distribution."""
    tckd = nckd = 0.0
    for i in range(student.shape[0]):
        y = int(labels[i])
        p_s = torch.softmax(student[i] / temperature, dim=0)
        p_t = torch.softmax(teacher[i] / temperature, dim=0)
        binary_s = torch.stack([p_s[y], 1 - p_s[y]])
        binary_t = torch.stack([p_t[y], 1 - p_t[y]])
        keep = [k for k in range(student.shape[1]) if k != y]
        rest_s = p_s[keep] / (1 - p_s[y])
        rest_t = p_t[keep] / (1 - p_t[y])
        tckd = tckd + _kl(binary_t, binary_s)
        nckd = nckd + _kl(rest_t, rest_s)
    batch = student.shape[0]
    return temperature**2 * (alpha * tckd + beta * nckd) / batch


def _assert_value_and_gradient(ours, reference, student, rtol=1e-7):
    (grad_ours,) = torch.autograd.grad(ours, student, retain_graph=True)
    (grad_reference,) = torch.autograd.grad(reference, student, retain_graph=True)
    assert ours.dtype == torch.float64
    assert ours.item() == pytest.approx(reference.item(), rel=rtol, abs=1e-12)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-6, atol=1e-10)


# ------------------------------------------------------------------------------------------------ KD


def test_kd_with_temperature_one_equals_kl_divergence():
    student, teacher, _ = _logits()
    reference = sum(_kl(torch.softmax(teacher[i], 0), torch.softmax(student[i], 0)) for i in range(8)) / 8
    _assert_value_and_gradient(kd_loss(student, teacher, 1.0), reference, student)


def test_kd_under_autocast_dtypes_is_float32():
    student, teacher, _ = _logits()
    value = kd_loss(student.detach().bfloat16(), teacher.bfloat16(), 4.0)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(kd_loss(student.detach(), teacher, 4.0).item(), rel=5e-2)


# ----------------------------------------------------------------------------------------------- DKD


@pytest.mark.parametrize(("alpha", "beta", "temperature"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.5, 2.5)])
def test_dkd_matches_the_paper_formula(alpha, beta, temperature):
    student, teacher, labels = _logits(classes=7)
    ours = dkd_loss(student, teacher, labels, alpha, beta, temperature)
    _assert_value_and_gradient(ours, dkd_reference(student, teacher, labels, alpha, beta, temperature), student)


def test_dkd_terms_are_the_weighted_parts():
    student, teacher, labels = _logits()
    tckd, nckd = dkd_terms(student, teacher, labels, 4.0)
    torch.testing.assert_close(dkd_loss(student, teacher, labels, 1.0, 0.0, 4.0), tckd)
    torch.testing.assert_close(dkd_loss(student, teacher, labels, 0.0, 1.0, 4.0), nckd)
    torch.testing.assert_close(dkd_loss(student, teacher, labels, 3.0, 5.0, 4.0), 3.0 * tckd + 5.0 * nckd)


def test_dkd_with_two_classes_and_unit_weights_is_kd():
    """Two classes: the non-target distribution is a point mass (NCKD = 0), and [p_y, 1 - p_y] is the whole
    softmax in another order, so TCKD = KD and DKD(alpha = beta = 1) = KD exactly (values and gradients)."""
    student, teacher, labels = _logits(batch=10, classes=2, scale=3.0)
    tckd, nckd = dkd_terms(student, teacher, labels, 4.0)
    assert nckd.item() == 0.0
    (nckd_grad,) = torch.autograd.grad(nckd, student, retain_graph=True)
    assert torch.count_nonzero(nckd_grad) == 0
    _assert_value_and_gradient(dkd_loss(student, teacher, labels, 1.0, 1.0, 4.0), kd_loss(student, teacher, 4.0), student)


def test_kd_decomposes_into_tckd_plus_weighted_nckd():
    """DKD paper, eq. (5): KD = TCKD + (1 - p^t_y) NCKD, sample by sample."""
    student, teacher, labels = _logits(batch=5, classes=9)
    for i in range(5):
        s, t, y = student[i : i + 1], teacher[i : i + 1], labels[i : i + 1]
        tckd, nckd = dkd_terms(s, t, y, 2.0)
        p_target = torch.softmax(t / 2.0, dim=1)[0, y[0]]
        assert kd_loss(s, t, 2.0).item() == pytest.approx((tckd + (1 - p_target) * nckd).item(), rel=1e-10)


@pytest.mark.parametrize("classes", [2, 3, 100])
def test_dkd_is_finite_for_extreme_logits(classes):
    """Where log(softmax) underflows to log(0) = -inf in float32 (the mdistiller NaN/Inf reports)."""
    student = torch.full((4, classes), -1e4)
    student[:, 0] = 1e4  # student certain of class 0
    teacher = torch.full((4, classes), -5e3)
    teacher[:, -1] = 5e3  # teacher certain of the last class
    labels = torch.tensor([0, classes - 1, 1 % classes, 0])
    student.requires_grad_()
    value = dkd_loss(student, teacher, labels, 1.0, 8.0, 1.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    assert value.item() > 0


def test_dkd_in_float32_agrees_with_float64_where_softmax_underflows():
    student, teacher, labels = _logits(batch=6, classes=10, scale=60.0)  # exp differences of ~e^-300
    assert (torch.softmax(student.detach().float(), 1) == 0).any()  # a naive log(softmax) would be -inf
    ours = dkd_loss(student.detach().float(), teacher.float(), labels, 1.0, 8.0, 1.0)
    reference = dkd_loss(student.detach(), teacher, labels, 1.0, 8.0, 1.0)
    assert ours.dtype == torch.float32 and torch.isfinite(ours)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-4)


def test_dkd_rejects_a_single_class_and_mismatched_shapes():
    with pytest.raises(ValueError, match="K >= 2 classes"):
        dkd_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="differ"):
        dkd_loss(torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        dkd_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 1.0, 1.0, 0.0)


def test_dkd_teacher_gets_no_gradient():
    student, teacher, labels = _logits()
    teacher.requires_grad_()
    dkd_loss(student, teacher, labels, 1.0, 8.0, 4.0).backward()
    assert teacher.grad is None and student.grad is not None


# ---------------------------------------------------------------------------------------------- DIST


def _pearson(a, b):
    return torch.corrcoef(torch.stack([a, b]))[0, 1]


def dist_reference(student, teacher, beta, gamma, tau):
    y_s = torch.softmax(student / tau, dim=1)
    y_t = torch.softmax(teacher / tau, dim=1)
    inter = 1 - torch.stack([_pearson(y_s[i], y_t[i]) for i in range(y_s.shape[0])]).mean()
    intra = 1 - torch.stack([_pearson(y_s[:, c], y_t[:, c]) for c in range(y_s.shape[1])]).mean()
    return tau**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize(("beta", "gamma", "tau"), [(1.0, 1.0, 4.0), (2.0, 0.5, 1.0), (0.0, 3.0, 2.0)])
def test_dist_matches_pearson_reference(beta, gamma, tau):
    student, teacher, _ = _logits(batch=12, classes=5)
    ours = dist_loss(student, teacher, beta, gamma, tau)
    _assert_value_and_gradient(ours, dist_reference(student, teacher, beta, gamma, tau), student, rtol=1e-6)


def test_dist_terms_are_separate_and_scaled_by_tau_squared():
    student, teacher, _ = _logits()
    inter, intra = dist_terms(student, teacher, 2.0)
    torch.testing.assert_close(dist_loss(student, teacher, 1.0, 0.0, 2.0), inter)
    torch.testing.assert_close(dist_loss(student, teacher, 0.0, 1.0, 2.0), intra)
    assert 0.0 <= inter.item() <= 2 * 4.0 and 0.0 <= intra.item() <= 2 * 4.0  # 1 - pearson in [0, 2], times tau^2


def test_dist_of_identical_logits_is_zero_and_of_reversed_relation_is_large():
    student, _, _ = _logits(batch=6, classes=5)
    logits = student.detach()
    assert dist_loss(logits, logits, 1.0, 1.0, 4.0).item() == pytest.approx(0.0, abs=1e-10)
    # an affine shift of the logits keeps the softmax, hence the loss, at 0
    assert dist_loss(logits + 7.0, logits, 1.0, 1.0, 4.0).item() == pytest.approx(0.0, abs=1e-10)
    assert dist_loss(-logits, logits, 1.0, 1.0, 1.0).item() > 1.0


def test_dist_is_finite_for_constant_columns_and_extreme_logits():
    student = torch.zeros(4, 3, requires_grad=True)  # every row and column constant: correlation 0, not NaN
    teacher = torch.tensor([[1e4, -1e4, 0.0]] * 4)
    value = dist_loss(student, teacher, 1.0, 1.0, 1.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    assert value.item() == pytest.approx(2.0, abs=1e-6)  # 1 - 0 for both relations
