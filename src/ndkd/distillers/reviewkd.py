"""``reviewkd``: Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021).

The student's backbone stages (stem dropped) plus its embedding seen as a 1 x 1 map are fused from the
deepest to the shallowest by attention-based fusion (ABF) modules: each stage's map, reduced to
``mid`` channels, is mixed with the fused map of the next deeper stage by two per-pixel attention
weights, and a 3x3 conv maps the result to the teacher's channels. The hierarchical context loss
(:func:`ndkd.losses.hcl_loss`) compares every fused map with the teacher's map of the same level:
its pre-activation stage features (before the stage's final ReLU) and its embedding as a 1 x 1 map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller
from ndkd.distillers.stages import as_map, backbone_stages, probe
from ndkd.errors import ConfigError
from ndkd.losses import hcl_loss
from ndkd.losses.feature import HCL_LEVELS
from ndkd.models.features import Stage, TapOutput


@dataclass
class ReviewKDOptions:
    max_mid_channels: int = 512  # ABF width: min(this, student embedding width) (mdistiller's MAX_MID_CHANNEL)
    levels: list[int] = field(default_factory=lambda: list(HCL_LEVELS))  # HCL pooling levels
    teacher_preact: bool = True  # teacher stage maps before their final ReLU (official)
    student_preact: bool = False  # student stage maps before their final ReLU (official: after)


class AttentionBasedFusion(nn.Module):
    """One ABF module: ``forward(x [B, C_in, H, W], residual [B, mid, h, w] | None) -> (out, fused)``.

    x -> 1x1 conv + BN -> [B, mid, H, W]. With a residual (the deeper stage's fused map, resized to
    H x W by nearest neighbour), a 1x1 conv + sigmoid on their concatenation gives two maps a, b
    [B, 1, H, W] and fused = x * a + residual * b. The fused map is resized to the teacher's size,
    then 3x3 conv + BN gives ``out`` [B, C_out, H_t, W_t]; the resized fused map is passed on to the
    next shallower stage.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.output = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.output[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.reduce(x)
        if self.attention is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            weights = self.attention(torch.cat([x, residual], dim=1))
            x = x * weights[:, 0:1] + residual * weights[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.output(x), x


@register_distiller(
    "reviewkd", options=ReviewKDOptions, description="knowledge review: ABF-fused student stages, HCL to teacher pre-activations"
)
class ReviewKD(Distiller):
    """Total loss: ce_weight * CE + ramp * weight * HCL(ABF(student stages), teacher stages) (+ ND).

    When the two backbones have a different number of stages, the deepest ``min(n_s, n_t)`` of each
    are paired. The ABF modules are sized from one dummy forward of ``input_shape``.
    """

    def __init__(self, *args, **kwargs) -> None:  # Distiller's arguments
        super().__init__(*args, **kwargs)
        if self.options.max_mid_channels < 1:
            raise ConfigError(f"distill.options.max_mid_channels must be at least 1, got {self.options.max_mid_channels}")
        if any(level < 1 for level in self.options.levels):
            raise ConfigError(f"distill.options.levels must be positive pooling sizes, got {self.options.levels}")
        student_shapes = [f.shape[1:] for f in self.student_maps(probe(self.student_tap, self.input_shape, self.method_name))]
        teacher_shapes = [f.shape[1:] for f in self.teacher_maps(probe(self.teacher_tap, self.input_shape, self.method_name))]
        mid = min(self.options.max_mid_channels, student_shapes[-1][0])
        deepest = len(student_shapes) - 1
        self.abfs = nn.ModuleList(
            AttentionBasedFusion(s_shape[0], mid, t_shape[0], fuse=index < deepest)
            for index, (s_shape, t_shape) in enumerate(zip(student_shapes, teacher_shapes))
        )
        self.out_sizes = [tuple(shape[1:]) for shape in teacher_shapes]

    def student_feature_paths(self) -> tuple[str, ...]:
        stages = backbone_stages(self.student, "student")
        if not self.options.student_preact:
            return tuple(stage.path for stage in stages)
        return tuple(_preact_path(stage, "student", "student_preact") for stage in stages)

    def teacher_feature_paths(self) -> tuple[str, ...]:
        stages = backbone_stages(self.teacher, "teacher")
        if not self.options.teacher_preact:
            return tuple(stage.path for stage in stages)
        return tuple(_preact_path(stage, "teacher", "teacher_preact") for stage in stages)

    def _deepest(self, tap_paths: tuple[str, ...]) -> tuple[str, ...]:
        paired = min(len(self.student_tap.feature_paths), len(self.teacher_tap.feature_paths))
        return tap_paths[len(tap_paths) - paired :]

    def student_maps(self, student: TapOutput) -> list[torch.Tensor]:
        """The student maps ABF reads, shallow to deep: paired stage outputs, then the embedding as 1 x 1."""
        return [student.features[path] for path in self._deepest(self.student_tap.feature_paths)] + [as_map(student.embedding)]

    def teacher_maps(self, teacher: TapOutput) -> list[torch.Tensor]:
        """The teacher targets, shallow to deep: paired (pre-activation) stage maps, then the embedding as 1 x 1."""
        return [teacher.features[path] for path in self._deepest(self.teacher_tap.feature_paths)] + [as_map(teacher.embedding)]

    def fuse(self, student_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """ABF outputs, shallow to deep, each of the teacher's shape at that level."""
        outputs: list[torch.Tensor] = []
        residual = None
        for x, abf, out_size in zip(reversed(student_maps), reversed(self.abfs), reversed(self.out_sizes)):
            out, residual = abf(x, residual, out_size)
            outputs.append(out)
        return outputs[::-1]

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        fused = self.fuse(self.student_maps(student))
        return {"reviewkd": hcl_loss(fused, self.teacher_maps(teacher), self.options.levels)}


def _preact_path(stage: Stage, role: str, option: str) -> str:
    if stage.preact_path is None:
        raise ConfigError(
            f"the {role}'s stage {stage.name!r} declares no pre-activation point; set distill.options.{option}=false"
        )
    return stage.preact_path
