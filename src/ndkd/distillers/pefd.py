"""``pefd``: Chen et al., "Improved Feature Distillation via Projector Ensemble" (NeurIPS 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller
from ndkd.errors import ConfigError
from ndkd.losses import pefd_loss
from ndkd.models.features import TapOutput, embedding_dim


@dataclass
class PEFDOptions:
    num_projectors: int = 3  # q, the size of the projector ensemble (official 3)


class ProjectorEnsemble(nn.Module):
    """g(s) = (1/q) sum_k ReLU(W_k s + b_k): [B, D_s] -> [B, D_t].

    Each projector is a Linear with bias and PyTorch's default initialisation (their different random
    initialisations are the only source of diversity); the ReLU is applied per projector, before the
    mean, which matches the non-negative range of the teacher's post-ReLU embedding.
    """

    def __init__(self, student_dim: int, teacher_dim: int, num_projectors: int) -> None:
        super().__init__()
        self.projectors = nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in range(num_projectors))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.relu(projector(embedding)) for projector in self.projectors]).mean(dim=0)


@register_distiller(
    "pefd", options=PEFDOptions, description="projector ensemble feature distillation: 1 - cos(mean_k ReLU(W_k s), t)"
)
class PEFD(Distiller):
    """Total loss: ce_weight * CE + ramp * weight * L_PE (+ ND); the official recipe is CE + 25 * L_PE.

    Reads the penultimate embeddings (the same tap as ND). The ensemble is trained with the student
    and is not part of the exported student.
    """

    def __init__(self, *args, **kwargs) -> None:  # Distiller's arguments
        super().__init__(*args, **kwargs)
        if self.options.num_projectors < 1:
            raise ConfigError(f"distill.options.num_projectors must be at least 1, got {self.options.num_projectors}")
        self.projector_ensemble = ProjectorEnsemble(
            embedding_dim(self.student), embedding_dim(self.teacher), self.options.num_projectors
        )

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pefd": pefd_loss(self.projector_ensemble(student.embedding), teacher.embedding)}
