"""``kd``: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015), optionally with a
logit projector (Chen et al., "Understanding the Effects of Projectors in Knowledge Distillation", 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller, require_positive
from ndkd.losses import kd_loss
from ndkd.models.features import TapOutput, find_classifier


@dataclass
class KDOptions:
    temperature: float = 4.0  # softening temperature T (CIFAR recipes 4, ImageNet recipes 1)
    logit_projector: bool = False  # a Linear K -> K on the student logits, used only inside the KD term

    def __post_init__(self) -> None:
        require_positive(self, "temperature")


@register_distiller(
    "kd", options=KDOptions,
    description="Hinton KD: T^2 KL(softmax(z_t/T) || softmax(z_s/T)); logit_projector: KD on Linear(z_s)",
)  # fmt: skip
class KD(Distiller):
    """Total loss: ce_weight * CE(z_s) + ramp * weight * KD_T(P(z_s) or z_s) (+ ND).

    With ``logit_projector`` the KD term reads P(z_s), P = Linear(K, K) with bias and PyTorch's default
    initialisation, trained with the student; cross-entropy and inference use the raw logits and P is
    not part of the exported student.
    """

    def __init__(self, student: nn.Module, *args, **kwargs) -> None:
        super().__init__(student, *args, **kwargs)
        self.logit_projector = None
        if self.options.logit_projector:
            classes = find_classifier(student)[1].out_features
            self.logit_projector = nn.Linear(classes, classes)

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = student.logits if self.logit_projector is None else self.logit_projector(student.logits)
        return {"kd": kd_loss(logits, teacher.logits, self.options.temperature)}
