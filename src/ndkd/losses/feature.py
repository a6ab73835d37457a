"""Feature distillation losses (functional; weights, warm-up and adapters live in the distillers).

* :func:`hcl_loss` — ReviewKD's hierarchical context loss over a list of stage feature maps.
* :func:`fitnet_loss` — FitNet's hint loss: MSE between the regressed student map and the teacher's.
* :func:`pefd_loss` — PEFD's direction loss: 1 - cosine between projected student and teacher embeddings.

All are computed in float32 or wider (safe under autocast) and return a scalar tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

HCL_LEVELS = (4, 2, 1)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16/float32 inputs (safe under autocast); float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def hcl_loss(
    student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor], levels: Sequence[int] = HCL_LEVELS
) -> torch.Tensor:
    """ReviewKD's hierarchical context loss, summed over stages.

    For each pair (f_s, f_t) of maps [B, C, H, W] (same shape), with the pooling levels ``l`` of
    ``levels`` that are smaller than the map (``l < min(H, W)``), taken in the given order, the k-th
    level used getting weight w_k = 2^-k (0.5, 0.25, 0.125 for the official levels 4, 2, 1):

        L_stage = [MSE(f_s, f_t) + sum_k w_k * MSE(pool_l(f_s), pool_l(f_t))] / (1 + sum_k w_k)

    where ``pool_l`` is adaptive average pooling to l x l and MSE is the mean over all elements.
    The teacher maps receive no gradient.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"hcl_loss got {len(student_feats)} student and {len(teacher_feats)} teacher feature maps")
    if not student_feats:
        raise ValueError("hcl_loss needs at least one pair of feature maps")
    total = None
    for index, (student, teacher) in enumerate(zip(student_feats, teacher_feats)):
        if student.shape != teacher.shape:
            raise ValueError(
                f"stage {index}: student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} differ; "
                "adapt the student map to the teacher's shape first"
            )
        student, teacher = _wide(student), _wide(teacher.detach())
        stage = F.mse_loss(student, teacher)
        weight, weight_sum = 1.0, 1.0
        for level in levels:
            if level >= min(student.shape[-2:]):
                continue
            weight /= 2.0
            pooled = F.mse_loss(F.adaptive_avg_pool2d(student, level), F.adaptive_avg_pool2d(teacher, level))
            stage = stage + weight * pooled
            weight_sum += weight
        stage = stage / weight_sum
        total = stage if total is None else total + stage
    return total


def fitnet_loss(regressed_student: torch.Tensor, teacher_hint: torch.Tensor) -> torch.Tensor:
    """FitNet's hint loss: mean squared error between the regressed student map and the teacher's hint.

    Args:
        regressed_student: [B, C_t, H_t, W_t], the student's hint passed through the regressor.
        teacher_hint: [B, C_t, H_t, W_t], the teacher's hint feature (no gradient flows into it).
    """
    if regressed_student.shape != teacher_hint.shape:
        raise ValueError(
            f"regressed student map {tuple(regressed_student.shape)} and teacher hint {tuple(teacher_hint.shape)} differ"
        )
    return F.mse_loss(_wide(regressed_student), _wide(teacher_hint.detach()))


def pefd_loss(projected_student: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """PEFD's loss: mean_i [1 - cos(g(s_i), t_i)], each term in [0, 2].

    Args:
        projected_student: [B, D], the student embedding after the projector ensemble g.
        teacher_emb: [B, D], the teacher embedding (no gradient flows into it).
        eps: lower bound of each norm, so a zero vector (all ReLU outputs off) gives cosine 0 and a
            finite gradient instead of the official code's NaN.
    """
    if projected_student.shape != teacher_emb.shape:
        raise ValueError(
            f"projected student {tuple(projected_student.shape)} and teacher embedding {tuple(teacher_emb.shape)} differ"
        )
    student = _wide(projected_student)
    teacher = _wide(teacher_emb.detach())
    student_unit = student / student.norm(dim=1, keepdim=True).clamp_min(eps)
    teacher_unit = teacher / teacher.norm(dim=1, keepdim=True).clamp_min(eps)
    return (1.0 - (student_unit * teacher_unit).sum(dim=1)).mean()
