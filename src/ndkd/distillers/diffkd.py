"""``diffkd``: Huang et al., "Knowledge Diffusion for Distillation" (NeurIPS 2023).

Two branches, each a :class:`~ndkd.distillers.diffusion.DiffKDHead`:

* feature branch on the last backbone stage maps (before global pooling): teacher map -> linear
  autoencoder latent (the diffusion target), student map denoised in that latent space, MSE;
* logit branch on the logits seen as K x 1 x 1 maps (no autoencoder), KL with temperature 1.

All terms have weight 1 relative to each other (scaled together by ``distill.weight`` and the warm-up):
L = CE + [MSE_feat + L_diff_feat + L_ae] + [KL_logit + L_diff_logit].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ndkd.distillers.base import Distiller
from ndkd.distillers.diffusion import DiffKDHead, denoising_timesteps
from ndkd.distillers.registry import register_distiller
from ndkd.distillers.stages import as_map, backbone_stages, probe
from ndkd.errors import ConfigError
from ndkd.losses import kd_loss
from ndkd.models.features import TapOutput, find_classifier


@dataclass
class DiffKDOptions:
    inference_steps: int = 5  # DDIM steps (network evaluations) on the student feature
    start_step: Optional[int] = None  # first DDIM step; None: (S-1)*(T//2S), i.e. 400 for 5 steps of 1000
    train_steps: int = 1000  # T, length of the linear beta schedule (1e-4 .. 0.02)
    use_ae: bool = True  # linear autoencoder on the teacher map (feature branch)
    ae_channels: Optional[int] = None  # autoencoder latent width; None: the teacher's channels (ImageNet used 1024)
    feature_branch: bool = True  # diffusion on the last stage maps, MSE
    logit_branch: bool = True  # diffusion on the logits as K x 1 x 1 maps, KL with temperature 1


@register_distiller(
    "diffkd", options=DiffKDOptions, description="knowledge diffusion: DDIM-denoised student feature and logits vs teacher"
)
class DiffKD(Distiller):
    """Total loss: ce_weight * CE + ramp * weight * (every DiffKD term) (+ ND); official weights all 1."""

    def __init__(self, *args, **kwargs) -> None:  # Distiller's arguments
        super().__init__(*args, **kwargs)
        options = self.options
        if not (options.feature_branch or options.logit_branch):
            raise ConfigError("diffkd needs at least one branch: set distill.options.feature_branch or logit_branch to true")
        if options.ae_channels is not None and options.ae_channels < 1:
            raise ConfigError(f"distill.options.ae_channels must be at least 1, got {options.ae_channels}")
        try:
            denoising_timesteps(options.inference_steps, options.train_steps, options.start_step)
        except ValueError as error:
            raise ConfigError(f"distill.options (inference_steps, start_step, train_steps): {error}") from error
        schedule = {
            "inference_steps": options.inference_steps, "start_step": options.start_step, "num_train_steps": options.train_steps
        }  # fmt: skip
        self.feature_head = self.logit_head = None
        if options.feature_branch:
            student_channels, teacher_channels = (
                probe(tap, self.input_shape, self.method_name).features[tap.feature_paths[0]].shape[1]
                for tap in (self.student_tap, self.teacher_tap)
            )
            ae_channels = (options.ae_channels or teacher_channels) if options.use_ae else None
            self.feature_head = DiffKDHead(student_channels, teacher_channels, "map", ae_channels=ae_channels, **schedule)
        if options.logit_branch:
            classes = find_classifier(self.student)[1].out_features
            self.logit_head = DiffKDHead(classes, classes, "vector", **schedule)

    def student_feature_paths(self) -> tuple[str, ...]:
        return (backbone_stages(self.student, "student")[-1].path,) if self.options.feature_branch else ()

    def teacher_feature_paths(self) -> tuple[str, ...]:
        return (backbone_stages(self.teacher, "teacher")[-1].path,) if self.options.feature_branch else ()

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {}
        if self.feature_head is not None:
            path_s, path_t = self.student_tap.feature_paths[0], self.teacher_tap.feature_paths[0]
            out = self.feature_head(student.features[path_s], teacher.features[path_t])
            terms["diffkd_feat"] = F.mse_loss(out.refined.float(), out.target.float())
            terms["diffkd_feat_diffusion"] = out.diffusion_loss
            if out.ae_loss is not None:
                terms["diffkd_ae"] = out.ae_loss
        if self.logit_head is not None:
            out = self.logit_head(as_map(student.logits), as_map(teacher.logits))
            terms["diffkd_logit"] = kd_loss(out.refined.flatten(1), out.target.flatten(1), 1.0)
            terms["diffkd_logit_diffusion"] = out.diffusion_loss
        return terms
