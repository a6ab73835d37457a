"""Feature losses against references written here from the formulas: values, gradients, identities."""

from __future__ import annotations

import math

import pytest
import torch

from ndkd.losses import fitnet_loss, hcl_loss, pefd_loss


def reference_adaptive_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling from its definition: bin i covers [floor(i*H/l), ceil((i+1)*H/l))."""
    height, width = x.shape[-2:]
    rows = []
    for i in range(size):
        r0, r1 = (i * height) // size, -((-(i + 1) * height) // size)
        cols = []
        for j in range(size):
            c0, c1 = (j * width) // size, -((-(j + 1) * width) // size)
            cols.append(x[..., r0:r1, c0:c1].mean(dim=(-2, -1)))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def reference_hcl(student_feats, teacher_feats, levels=(4, 2, 1)):
    """ReviewKD's HCL as stated in METHOD_KDPP.md 3.1: weights 0.5, 0.25, 0.125 for the levels used."""
    total = 0.0
    for fs, ft in zip(student_feats, teacher_feats):
        mse = lambda a, b: ((a - b) ** 2).sum() / a.numel()  # noqa: E731
        value, weights = mse(fs, ft), [1.0]
        for level in levels:
            if level < fs.shape[-1]:
                weights.append(weights[-1] / 2 if len(weights) > 1 else 0.5)
                value = value + weights[-1] * mse(reference_adaptive_pool(fs, level), reference_adaptive_pool(ft, level))
        total = total + value / sum(weights)
    return total


def test_hcl_on_a_hand_computed_map():
    student = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])  # [1, 1, 2, 2]
    teacher = torch.zeros(1, 1, 2, 2)
    # MSE = (1 + 9 + 25 + 49) / 4 = 21; only level 1 < 2: pooled mean 4 -> 16 with weight 0.5
    torch.testing.assert_close(hcl_loss([student], [teacher]), torch.tensor((21.0 + 0.5 * 16.0) / 1.5))
    one_by_one = torch.full((1, 2, 1, 1), 3.0)  # a 1 x 1 map uses no pooling level: plain MSE
    torch.testing.assert_close(hcl_loss([one_by_one], [torch.zeros(1, 2, 1, 1)]), torch.tensor(9.0))


def test_hcl_matches_reference_values_and_gradients_over_stages():
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 8, 8), (3, 5, 5, 5), (3, 6, 3, 3), (3, 7, 1, 1)]  # levels used: 4,2,1 / 4,2,1 / 2,1 / none
    student = [torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True) for shape in shapes]
    teacher = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    value = hcl_loss(student, teacher)
    expected = reference_hcl(student, teacher)
    torch.testing.assert_close(value, expected)
    grads = torch.autograd.grad(value, student)
    expected_grads = torch.autograd.grad(expected, student)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
    small = [torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True) for shape in ((1, 2, 5, 5), (1, 1, 1, 1))]
    small_teacher = [torch.randn_like(s) for s in small]
    assert torch.autograd.gradcheck(lambda *s: hcl_loss(list(s), small_teacher), tuple(small))  # numerical gradient


def test_hcl_custom_levels_and_teacher_gets_no_gradient():
    student = torch.randn(2, 3, 6, 6, requires_grad=True)
    teacher = torch.randn(2, 3, 6, 6, requires_grad=True)
    torch.testing.assert_close(hcl_loss([student], [teacher], levels=(2,)), reference_hcl([student], [teacher], levels=(2,)))
    torch.testing.assert_close(hcl_loss([student], [teacher], levels=()), ((student - teacher) ** 2).mean())
    hcl_loss([student], [teacher]).backward()
    assert teacher.grad is None and student.grad is not None


def test_hcl_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"stage 0: student map \(1, 2, 4, 4\) and teacher map \(1, 3, 4, 4\) differ"):
        hcl_loss([torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 3, 4, 4)])
    with pytest.raises(ValueError, match="hcl_loss got 2 student and 1 teacher feature maps"):
        hcl_loss([torch.zeros(1, 2, 4, 4)] * 2, [torch.zeros(1, 2, 4, 4)])


def test_fitnet_loss_is_mse_with_its_gradient():
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 4, 4, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, generator=generator, requires_grad=True)
    value = fitnet_loss(student, teacher)
    torch.testing.assert_close(value, ((student - teacher) ** 2).sum() / 96)
    value.backward()
    torch.testing.assert_close(student.grad, 2 * (student - teacher).detach() / 96)
    assert teacher.grad is None
    with pytest.raises(ValueError, match=r"regressed student map \(2, 3, 4, 4\) and teacher hint \(2, 3, 2, 2\) differ"):
        fitnet_loss(student, torch.zeros(2, 3, 2, 2))


def reference_pefd(projected: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(1/B) sum_i [1 - <g_i, t_i> / (||g_i|| ||t_i||)], written out per sample."""
    terms = []
    for g, t in zip(projected, teacher):
        terms.append(1 - (g * t).sum() / (torch.sqrt((g * g).sum()) * torch.sqrt((t * t).sum())))
    return torch.stack(terms).mean()


def test_pefd_loss_matches_reference_values_and_gradients():
    generator = torch.Generator().manual_seed(2)
    projected = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    value = pefd_loss(projected, teacher)
    expected = reference_pefd(projected, teacher)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(torch.autograd.grad(value, projected)[0], torch.autograd.grad(expected, projected)[0])
    assert torch.autograd.gradcheck(lambda g: pefd_loss(g, teacher), (projected,))


def test_pefd_loss_range_alignment_and_zero_vectors():
    generator = torch.Generator().manual_seed(3)
    teacher = torch.rand(6, 9, generator=generator) + 0.1
    assert pefd_loss(3.5 * teacher, teacher).abs().item() < 1e-6  # aligned (any positive scale): 0
    torch.testing.assert_close(pefd_loss(-teacher, teacher), torch.tensor(2.0))  # opposite: the maximum 2
    for _ in range(20):
        value = pefd_loss(torch.randn(6, 9, generator=generator), torch.randn(6, 9, generator=generator)).item()
        assert 0.0 <= value <= 2.0
    zeros = torch.zeros(6, 9, requires_grad=True)  # every ReLU of the ensemble off: cosine 0, not NaN
    value = pefd_loss(zeros, teacher)
    value.backward()
    assert value.item() == 1.0 and torch.isfinite(zeros.grad).all()


def test_pefd_loss_half_precision_is_computed_in_float32():
    projected = torch.randn(4, 8).to(torch.bfloat16)
    teacher = torch.rand(4, 8).to(torch.bfloat16)
    value = pefd_loss(projected, teacher)
    assert value.dtype == torch.float32
    assert math.isclose(value.item(), reference_pefd(projected.float(), teacher.float()).item(), rel_tol=1e-5)
