"""Logit distillation losses: KD, DKD, DIST (functional; weights and warm-up live in the distillers).

KD and DKD work from log-probabilities obtained with ``log_softmax`` / ``logsumexp`` (never the log of a
softmax, which underflows to -inf); DIST uses probabilities only. All compute in at least float32, so
they are safe under autocast and for extreme logits. The teacher's logits are always detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ndkd.losses.common import at_least_float32

_EPS = 1e-8


def _check_temperature(temperature: float, name: str = "temperature") -> None:
    if temperature <= 0:
        raise ValueError(f"{name} must be positive, got {temperature}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch.

    Args:
        student_logits: [B, K]; teacher_logits: [B, K] (no gradient flows into them).
        temperature: T > 0.
    """
    _check_temperature(temperature)
    log_p_student = F.log_softmax(at_least_float32(student_logits) / temperature, dim=1)
    log_p_teacher = F.log_softmax(at_least_float32(teacher_logits.detach()) / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)


# ------------------------------------------------------------------------------------------------ DKD


def _non_target_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The K-1 logits of each row other than the label's, in class order: [B, K], [B] -> [B, K-1].

    Column j of the result is class j + (j >= y): a gather with computed indices, so there is no
    data-dependent shape (no host sync) and no masking constant.
    """
    batch, classes = logits.shape
    columns = torch.arange(classes - 1, device=logits.device).expand(batch, classes - 1)
    index = columns + (columns >= labels[:, None]).long()
    return logits.gather(1, index)


def _decoupled_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary log-probabilities [log p_y, log(1 - p_y)] [B, 2] and non-target log-probabilities [B, K-1].

    log p_y = z_y - logsumexp(z) and log(1 - p_y) = logsumexp(z_non-target) - logsumexp(z), so neither
    is the log of a probability that may have underflowed to 0.
    """
    log_normaliser = torch.logsumexp(logits, dim=1)
    non_target = _non_target_logits(logits, labels)
    log_target = logits.gather(1, labels[:, None]).squeeze(1) - log_normaliser
    log_rest = torch.logsumexp(non_target, dim=1) - log_normaliser
    binary = torch.stack([log_target, log_rest], dim=1)
    return binary, F.log_softmax(non_target, dim=1)


def dkd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted (TCKD, NCKD) of Decoupled KD (Zhao et al., CVPR 2022), each a scalar.

    With p = softmax(z / T) and b = [p_y, 1 - p_y]:
    TCKD = T^2 * mean_i KL(b^t_i || b^s_i); NCKD = T^2 * mean_i KL(p^t_i,\\y || p^s_i,\\y), where p_\\y is the
    softmax over the K-1 non-target logits. With two classes the non-target distribution has one
    point mass and NCKD is exactly 0.

    Args:
        student_logits: [B, K]; teacher_logits: [B, K] (detached); labels: [B] int64; temperature: T > 0.
    """
    _check_temperature(temperature)
    if student_logits.dim() != 2 or student_logits.shape[1] < 2:
        raise ValueError(f"DKD needs logits of shape [B, K] with K >= 2 classes, got {tuple(student_logits.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ")
    binary_s, rest_s = _decoupled_log_probs(at_least_float32(student_logits) / temperature, labels)
    binary_t, rest_t = _decoupled_log_probs(at_least_float32(teacher_logits.detach()) / temperature, labels)
    scale = temperature * temperature
    tckd = F.kl_div(binary_s, binary_t, reduction="batchmean", log_target=True) * scale
    nckd = F.kl_div(rest_s, rest_t, reduction="batchmean", log_target=True) * scale
    return tckd, nckd


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """Decoupled KD: alpha * TCKD + beta * NCKD (see :func:`dkd_terms`), a scalar."""
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature)
    return alpha * tckd + beta * nckd


# ----------------------------------------------------------------------------------------------- DIST


def _mean_pearson(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over the other axis of the Pearson correlation of ``a`` and ``b`` along ``dim`` ([B, K] each).

    eps-safe: a constant vector (zero variance) has correlation 0 with anything instead of NaN.
    """
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    covariance = (a * b).sum(dim=dim)
    scale = (a.norm(dim=dim) * b.norm(dim=dim)).clamp_min(_EPS)
    return (covariance / scale).mean()


def dist_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted (inter, intra) relation losses of DIST (Huang et al., NeurIPS 2022), each a scalar.

    With y = softmax(z / tau): inter = tau^2 * (1 - mean_i pearson(y^s_i., y^t_i.)) (each sample's
    class distribution), intra = tau^2 * (1 - mean_c pearson(y^s_.c, y^t_.c)) (each class across the
    batch). The intra term needs a batch of at least 2 to be informative.
    """
    _check_temperature(tau, "tau")
    p_student = F.softmax(at_least_float32(student_logits) / tau, dim=1)
    p_teacher = F.softmax(at_least_float32(teacher_logits.detach()) / tau, dim=1)
    scale = tau * tau
    inter = scale * (1.0 - _mean_pearson(p_student, p_teacher, dim=1))
    intra = scale * (1.0 - _mean_pearson(p_student, p_teacher, dim=0))
    return inter, intra


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, gamma: float, tau: float) -> torch.Tensor:
    """DIST: beta * inter + gamma * intra (see :func:`dist_terms`), a scalar."""
    inter, intra = dist_terms(student_logits, teacher_logits, tau)
    return beta * inter + gamma * intra
