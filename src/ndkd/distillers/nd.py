"""The ND regulariser: the "++" that turns any base distiller X into X++.

It owns the teacher's class-means (a buffer) and, when the student's embedding width differs from
the teacher's, the projector that maps the student embedding to the teacher's width for this term
(the same rule for every variant). Its weight, warm-up and loss form come from ``distill.nd``; the
losses themselves are the pure functions of :mod:`ndkd.losses.nd`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ndkd.config import NDConfig
from ndkd.errors import ClassMeansError, ConfigError
from ndkd.losses import nd_cosine_loss, nd_infonce_loss, nd_loss, norm_l2_loss, sifn_loss
from ndkd.models.projector import make_projector, resolve_projector_init

# (student_emb [B, D], teacher_emb [B, D], class_means [K, D], labels [B], config) -> scalar
VariantLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, NDConfig], torch.Tensor]


@dataclass(frozen=True)
class NDVariantSpec:
    """One form of the regulariser: its loss, a one-line description and the ``distill.nd`` keys it reads."""

    name: str
    description: str
    options: tuple[str, ...]
    loss: VariantLoss


ND_VARIANTS: dict[str, NDVariantSpec] = {
    spec.name: spec
    for spec in (
        NDVariantSpec(
            "nd", "KD++ ND loss: 1 - <s, c_y/|c_y|> / max(|s|, |t|) (norm up to the teacher's, then direction)", (),
            lambda s, t, means, y, cfg: nd_loss(s, t, means, y),
        ),
        NDVariantSpec(
            "cosine", "ablation: 1 - cos(s, c_y), direction only (scale invariant)", (),
            lambda s, t, means, y, cfg: nd_cosine_loss(s, means, y),
        ),
        NDVariantSpec(
            "infonce", "ablation: cross-entropy of cos(s, c_k) / temperature over all class-means", ("temperature",),
            lambda s, t, means, y, cfg: nd_infonce_loss(s, means, y, cfg.temperature),
        ),
        NDVariantSpec(
            "norm_l2", "ablation: (|s| - |t|)^2, pull each norm to the teacher's (norm only)", (),
            lambda s, t, means, y, cfg: norm_l2_loss(s, t),
        ),
        NDVariantSpec(
            "sifn", "ablation: stepwise increasing feature norm, (|s| - sg(|s| + delta_r))^2", ("delta_r",),
            lambda s, t, means, y, cfg: sifn_loss(s, cfg.delta_r),
        ),
    )
}  # fmt: skip (one entry per form of config.NDVariant; tests check the two lists agree)


class NDRegularizer(nn.Module):
    """``forward(student_emb [B, Ds], teacher_emb [B, Dt], labels [B]) -> weighted ND loss`` (of ``config.variant``)."""

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
        if config.variant == "infonce" and (config.temperature is None or config.temperature <= 0):
            raise ConfigError(f"distill.nd.variant 'infonce' needs a positive distill.nd.temperature, got {config.temperature!r}")
        self.config = config
        self.weight = config.weight
        self.warmup = config.warmup
        self.variant = ND_VARIANTS[config.variant]
        self.register_buffer("class_means", class_means.detach().float().clone(), persistent=False)
        self.projector = None
        if student_dim != teacher_dim:  # decided by the actual widths, never by model names
            init = resolve_projector_init(config.projector_init, input_shape)  # input_shape: (C, H, W) of an image
            self.projector = make_projector(student_dim, teacher_dim, init=init)

    def forward(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.projector is not None:
            student_emb = self.projector(student_emb)
        return self.weight * self.variant.loss(student_emb, teacher_emb, self.class_means, labels, self.config)
