"""Logit distillation losses (functional; weights and warm-up live in the distillers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch.

    Args:
        student_logits: [B, K]; teacher_logits: [B, K] (no gradient flows into them).
        temperature: T > 0.
    Computed in float32 from log-probabilities (no log of a softmax), so it is safe under autocast.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)
