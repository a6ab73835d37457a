"""``dkd``: Decoupled Knowledge Distillation (Zhao et al., CVPR 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller, require_positive
from ndkd.losses.logit import dkd_terms
from ndkd.models.features import TapOutput


@dataclass
class DKDOptions:
    alpha: float = 1.0  # weight of TCKD (target vs rest); official ImageNet DKD++ uses 0.5-1.0
    beta: float = 8.0  # weight of NCKD (among non-targets); per pair 2-8 on CIFAR-100
    temperature: float = 4.0  # T (CIFAR 4, ImageNet 1)

    def __post_init__(self) -> None:
        require_positive(self, "temperature")


@register_distiller("dkd", options=DKDOptions, description="Decoupled KD: alpha TCKD (target vs rest) + beta NCKD (non-targets)")
class DKD(Distiller):
    """Total loss: ce_weight * CE + ramp * weight * (alpha * TCKD + beta * NCKD) (+ ND).

    The two terms are returned (and logged) separately, each already multiplied by alpha or beta.
    """

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        tckd, nckd = dkd_terms(student.logits, teacher.logits, labels, self.options.temperature)
        return {"tckd": self.options.alpha * tckd, "nckd": self.options.beta * nckd}
