"""``dist``: DIST, "Knowledge Distillation from A Stronger Teacher" (Huang et al., NeurIPS 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller, require_positive
from ndkd.losses.logit import dist_terms
from ndkd.models.features import TapOutput


@dataclass
class DISTOptions:
    beta: float = 1.0  # weight of the inter-class relation (per sample, across classes)
    gamma: float = 1.0  # weight of the intra-class relation (per class, across the batch)
    tau: float = 4.0  # softmax temperature

    def __post_init__(self) -> None:
        require_positive(self, "tau")


@register_distiller("dist", options=DISTOptions, description="DIST: Pearson inter-class (beta) and intra-class (gamma) relations of softmax(z/tau)")
class DIST(Distiller):
    """Total loss: ce_weight * CE + ramp * weight * tau^2 (beta * inter + gamma * intra) (+ ND).

    The two relation terms are returned (and logged) separately, each already multiplied by beta or gamma.
    """

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        inter, intra = dist_terms(student.logits, teacher.logits, self.options.tau)
        return {"dist_inter": self.options.beta * inter, "dist_intra": self.options.gamma * intra}
