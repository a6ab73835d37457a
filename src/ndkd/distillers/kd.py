"""``kd``: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller
from ndkd.losses import kd_loss
from ndkd.models.features import TapOutput


@dataclass
class KDOptions:
    temperature: float = 4.0  # softening temperature T (CIFAR recipes 4, ImageNet recipes 1)


@register_distiller("kd", options=KDOptions, description="Hinton KD: T^2 KL(softmax(z_t/T) || softmax(z_s/T))")
class KD(Distiller):
    """Total loss: ce_weight * CE + ramp * weight * KD_T (+ ND)."""

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"kd": kd_loss(student.logits, teacher.logits, self.options.temperature)}
