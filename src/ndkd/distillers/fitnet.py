"""``fitnet``: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015), hint stage only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller
from ndkd.distillers.stages import backbone_stages, find_stage, probe
from ndkd.losses import fitnet_loss
from ndkd.models.features import Stage, TapOutput


@dataclass
class FitNetOptions:
    hint_stage: Optional[str] = None  # student stage read as the hint; None: the middle backbone stage (layer2)
    teacher_hint_stage: Optional[str] = None  # None: the teacher stage of the same name, else its middle stage


class ConvRegressor(nn.Sequential):
    """Maps the student's hint map [B, C_s, H_s, W_s] to the teacher's [B, C_t, H_t, W_t]: conv -> BN -> ReLU.

    The convolution is chosen from the two spatial sizes: stride-2 3x3 conv when the student map is
    twice as large, stride-2 4x4 transposed conv when it is half as large, a valid conv of kernel
    (1 + H_s - H_t, 1 + W_s - W_t) when it is larger, and bilinear resizing + 3x3 conv otherwise.
    The ReLU matches the teacher's post-activation hint.
    """

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size) -> None:
        (s_channels, s_h, s_w), (t_channels, t_h, t_w) = student_shape, teacher_shape
        if (s_h, s_w) == (2 * t_h, 2 * t_w):
            layers = [nn.Conv2d(s_channels, t_channels, 3, stride=2, padding=1)]
        elif (2 * s_h, 2 * s_w) == (t_h, t_w):
            layers = [nn.ConvTranspose2d(s_channels, t_channels, 4, stride=2, padding=1)]
        elif s_h >= t_h and s_w >= t_w:
            layers = [nn.Conv2d(s_channels, t_channels, (1 + s_h - t_h, 1 + s_w - t_w))]
        else:
            resize = nn.Upsample(size=(t_h, t_w), mode="bilinear", align_corners=False)
            layers = [resize, nn.Conv2d(s_channels, t_channels, 3, padding=1)]
        super().__init__(*layers, nn.BatchNorm2d(t_channels), nn.ReLU(inplace=True))


@register_distiller("fitnet", options=FitNetOptions, description="FitNet hint: MSE(regressor(student stage), teacher stage)")
class FitNet(Distiller):
    """Total loss: ce_weight * CE + ramp * weight * MSE(regressor(f_s), f_t) (+ ND).

    mdistiller's CIFAR recipe uses weight 100 and no warm-up; features are post-activation stage outputs.
    """

    def __init__(self, *args, **kwargs) -> None:  # Distiller's arguments
        super().__init__(*args, **kwargs)
        student_shape = probe(self.student_tap, self.input_shape, self.method_name).features[self.student_hint.path].shape[1:]
        teacher_shape = probe(self.teacher_tap, self.input_shape, self.method_name).features[self.teacher_hint.path].shape[1:]
        self.regressor = ConvRegressor(student_shape, teacher_shape)

    @property
    def student_hint(self) -> Stage:
        stages = backbone_stages(self.student, "student")
        if self.options.hint_stage is None:
            return stages[len(stages) // 2]
        return find_stage(stages, self.options.hint_stage, "student", "hint_stage")

    @property
    def teacher_hint(self) -> Stage:
        stages = backbone_stages(self.teacher, "teacher")
        if self.options.teacher_hint_stage is not None:
            return find_stage(stages, self.options.teacher_hint_stage, "teacher", "teacher_hint_stage")
        same_name = [stage for stage in stages if stage.name == self.student_hint.name]
        return same_name[0] if same_name else stages[len(stages) // 2]

    def student_feature_paths(self) -> tuple[str, ...]:
        return (self.student_hint.path,)

    def teacher_feature_paths(self) -> tuple[str, ...]:
        return (self.teacher_hint.path,)

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        regressed = self.regressor(student.features[self.student_hint.path])
        return {"fitnet": fitnet_loss(regressed, teacher.features[self.teacher_hint.path])}
