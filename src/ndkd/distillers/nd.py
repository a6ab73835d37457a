"""The ND regulariser: the "++" that turns any base distiller X into X++.

It owns the teacher's class-means (a buffer) and, when the student's embedding width differs from
the teacher's, the projector that maps the student embedding to the teacher's width for this term.
Its weight and warm-up come from ``distill.nd``; the loss itself is :func:`ndkd.losses.nd_loss`.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.config import NDConfig
from ndkd.errors import ClassMeansError
from ndkd.losses import nd_loss
from ndkd.models.projector import make_projector, resolve_projector_init


class NDRegularizer(nn.Module):
    """``forward(student_emb [B, Ds], teacher_emb [B, Dt], labels [B]) -> weighted ND loss``."""

    def __init__(
        self, config: NDConfig, class_means: torch.Tensor, student_dim: int, teacher_dim: int,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if class_means.dim() != 2 or class_means.shape[1] != teacher_dim:
            raise ClassMeansError(
                f"class-means of shape {tuple(class_means.shape)} do not fit a teacher embedding of width "
                f"{teacher_dim}; compute them from this teacher (ndkd centers)"
            )
        self.weight = config.weight
        self.warmup = config.warmup
        self.register_buffer("class_means", class_means.detach().float().clone(), persistent=False)
        self.projector = None
        if student_dim != teacher_dim:  # decided by the actual widths, never by model names
            init = resolve_projector_init(config.projector_init, input_shape)  # input_shape: (C, H, W) of an image
            self.projector = make_projector(student_dim, teacher_dim, init=init)

    def forward(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.projector is not None:
            student_emb = self.projector(student_emb)
        return self.weight * nd_loss(student_emb, teacher_emb, self.class_means, labels)
