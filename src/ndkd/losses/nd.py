"""The ND loss of KD++ (feature Norm and Direction) and the ablation variants, vectorised.

For student embedding s_i, teacher embedding t_i of the same augmented image and the teacher's
class-mean c_y of the label y_i:

    nd       l_i = 1 - <s_i, c_y / ||c_y||> / max(||s_i||, ||t_i||)          [V] official code
    cosine   l_i = 1 - cos(s_i, c_y)                                        [R] direction only
    infonce  l_i = -log softmax_k(cos(s_i, c_k) / tau)[y_i]                 [R] direction vs all classes
    norm_l2  l_i = (||s_i|| - ||t_i||)^2                                    [R] norm only, teacher's norm
    sifn     l_i = (||s_i|| - sg(||s_i|| + delta_r))^2                      [R] stepwise norm increase

and each loss is mean_i l_i. [R] forms are reconstructions (the paper body was not available); see
docs/methods.md. The teacher embedding is a constant (detached) everywhere.

ND: while ||s_i|| < ||t_i|| the gradient -e_y/||t_i|| pushes s_i along the class-mean direction (larger
norm and better direction); once ||s_i|| >= ||t_i|| the term is 1 - cos(s_i, c_y) and only the direction
is trained. Ties pick the student norm, as Python's ``max`` does in the official per-sample loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ndkd.losses.common import at_least_float32

_EPS = 1e-12
_COSINE_EPS = 1e-8  # the gradient of a cosine grows as 1/||s||; this bounds it for an all-zero embedding


def class_mean_directions(class_means: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Unit class-mean direction e_{y_i} for each label: [K, D], [B] -> [B, D]."""
    centres = class_means.index_select(0, labels)
    return centres / centres.norm(dim=1, keepdim=True).clamp_min(_EPS)


def _check_widths(student_emb: torch.Tensor, class_means: torch.Tensor | None, teacher_emb: torch.Tensor | None = None) -> None:
    if teacher_emb is not None and student_emb.shape != teacher_emb.shape:
        raise ValueError(
            f"student embedding {tuple(student_emb.shape)} and teacher embedding {tuple(teacher_emb.shape)} "
            "differ; project the student embedding to the teacher's width first"
        )
    if class_means is not None and class_means.shape[1] != student_emb.shape[1]:
        raise ValueError(
            f"class-means have width {class_means.shape[1]} but embeddings have width {student_emb.shape[1]}"
        )


def nd_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    class_means: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """ND loss, a scalar.

    Args:
        student_emb: [B, D] student embeddings (projected to the teacher's width if they differ).
        teacher_emb: [B, D] teacher embeddings of the same inputs; no gradient flows into them.
        class_means: [K, D] teacher class-means (only their direction is used).
        labels: [B] integer class indices.
    """
    _check_widths(student_emb, class_means, teacher_emb)
    student = at_least_float32(student_emb)
    with torch.no_grad():  # constants of the loss: no autograd bookkeeping for them
        directions = class_mean_directions(class_means.to(student.dtype), labels)
        teacher_norm = torch.linalg.vector_norm(teacher_emb.to(student.dtype), dim=1).clamp_min_(_EPS)
    projection = torch.linalg.vecdot(student, directions)
    student_norm = torch.linalg.vector_norm(student, dim=1)
    # max(||s||, ||t||, eps); a tie picks ||s|| with its full gradient, as Python's max does (clamp would halve it)
    denominator = torch.where(student_norm >= teacher_norm, student_norm, teacher_norm)
    return 1.0 - (projection / denominator).mean()


def nd_cosine_loss(student_emb: torch.Tensor, class_means: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cosine feature-direction loss mean_i [1 - cos(s_i, c_{y_i})], a scalar in [0, 2].

    Invariant to the scale of each s_i (no norm pressure). Args as :func:`nd_loss` (no teacher needed).
    """
    _check_widths(student_emb, class_means)
    student = at_least_float32(student_emb)
    directions = class_mean_directions(class_means.to(student.dtype), labels)
    cosine = (student * directions).sum(dim=1) / student.norm(dim=1).clamp_min(_COSINE_EPS)
    return (1.0 - cosine).mean()


def nd_infonce_loss(
    student_emb: torch.Tensor, class_means: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE feature-direction loss: cross-entropy of the cosines to all K class-means over ``temperature``.

    mean_i -log [exp(cos(s_i, c_{y_i}) / tau) / sum_k exp(cos(s_i, c_k) / tau)], a scalar >= 0; 0 when K = 1.
    Args as :func:`nd_loss` (no teacher needed); ``temperature`` tau > 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    _check_widths(student_emb, class_means)
    student = at_least_float32(student_emb)
    student_dirs = student / student.norm(dim=1, keepdim=True).clamp_min(_COSINE_EPS)
    centres = class_means.to(student.dtype)
    centre_dirs = centres / centres.norm(dim=1, keepdim=True).clamp_min(_EPS)
    return F.cross_entropy(student_dirs @ centre_dirs.T / temperature, labels)


def norm_l2_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Norm-only loss mean_i (||s_i|| - ||t_i||)^2: pulls each student norm to the teacher's norm of that image.

    Args: student_emb, teacher_emb [B, D] (teacher detached). Direction is not trained.
    """
    _check_widths(student_emb, None, teacher_emb)
    student = at_least_float32(student_emb)
    teacher_norm = teacher_emb.detach().to(student.dtype).norm(dim=1)
    return (student.norm(dim=1) - teacher_norm).square().mean()


def sifn_loss(student_emb: torch.Tensor, delta_r: float) -> torch.Tensor:
    """Stepwise increasing feature norm: mean_i (||s_i|| - sg(||s_i|| + delta_r))^2.

    The value is always delta_r^2; only the gradient matters: -2 delta_r / B * s_i / ||s_i||, a push of
    every norm outwards by the same amount each step, whatever its current size (sg = stop-gradient).
    Args: student_emb [B, D]; delta_r > 0.
    """
    if delta_r <= 0:
        raise ValueError(f"delta_r must be positive, got {delta_r}")
    norm = at_least_float32(student_emb).norm(dim=1)
    target = (norm + delta_r).detach()
    return (norm - target).square().mean()
