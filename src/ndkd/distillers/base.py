"""The Distiller contract: ``forward_train(images, labels, epoch) -> (student_logits, {term: loss})``.

A distiller holds the student, the frozen teacher (always in eval mode, run under ``no_grad``), any
extra trainable modules (projectors, adapters) and the optional ND regulariser. A method subclass only
implements :meth:`Distiller.distill_losses`, returning its unweighted terms; the base class applies
the method weight and the linear warm-up, adds cross-entropy and ND, and the trainer sums the dict.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ndkd.config import DistillConfig
from ndkd.distillers.nd import NDRegularizer
from ndkd.distillers.registry import get_method
from ndkd.errors import ClassMeansError, ConfigError
from ndkd.models.features import FeatureTap, TapOutput, embedding_dim


class Distiller(nn.Module):
    """Base class of every method (``distill.method``); see the module docstring for the contract."""

    method_name = "base"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        config: DistillConfig,
        class_means: torch.Tensor | None = None,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        entry = get_method(self.method_name)
        self.config = config
        # (C, H, W) of one input image: methods that size adapters from feature shapes probe with it
        self.input_shape = input_shape
        self.options = entry.options(**config.options)
        self.student = student
        self.student_tap = FeatureTap(student, self.student_feature_paths())
        nd_active = config.nd.weight > 0
        if (entry.needs_teacher or nd_active) and teacher is None:
            needed = "ND (distill.nd.weight > 0)" if nd_active else f"method {self.method_name!r}"
            raise ConfigError(f"{needed} needs a teacher: set teacher.arch and teacher.checkpoint")
        self.teacher = teacher
        self.teacher_tap = None
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
            self.teacher_tap = FeatureTap(teacher, self.teacher_feature_paths())
        self.nd: NDRegularizer | None = None
        if nd_active:
            if class_means is None:
                raise ClassMeansError("ND needs the teacher's class-means: run `ndkd centers CONFIG` or set distill.nd.class_means")
            self.nd = NDRegularizer(config.nd, class_means, embedding_dim(student), embedding_dim(teacher))

    # -- hooks for subclasses ------------------------------------------------------------------------

    def student_feature_paths(self) -> tuple[str, ...]:
        """Module paths of the student whose outputs the method reads (besides embedding and logits)."""
        return ()

    def teacher_feature_paths(self) -> tuple[str, ...]:
        """Module paths of the teacher whose outputs the method reads."""
        return ()

    def distill_losses(self, student: TapOutput, teacher: TapOutput | None, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The method's own loss terms, unweighted (the base class applies weight and warm-up)."""
        return {}

    # -- the contract ----------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the frozen teacher keeps its BatchNorm running statistics
        return self

    def warmup_factor(self, epoch: int) -> float:
        """Linear ramp ``min(1, epoch / warmup_epochs)`` with 0-based epochs (0 in the first epoch)."""
        warmup = self.config.warmup_epochs
        return 1.0 if warmup <= 0 else min(1.0, epoch / warmup)

    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training forward: student logits [B, K] and the weighted loss terms to be summed."""
        student = self.student_tap(images)
        teacher = None
        if self.teacher_tap is not None:
            with torch.no_grad():
                teacher = self.teacher_tap(images)
        losses = {"ce": self.config.ce_weight * F.cross_entropy(student.logits, labels)}
        ramp = self.warmup_factor(epoch)
        for name, value in self.distill_losses(student, teacher, labels).items():
            losses[name] = (ramp * self.config.weight) * value
        if self.nd is not None:
            nd_ramp = ramp if self.nd.warmup else 1.0
            losses["nd"] = nd_ramp * self.nd(student.embedding, teacher.embedding, labels)
        return student.logits, losses

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """With labels: :meth:`forward_train` (the trainer calls it this way, through DDP when
        distributed); without: inference, the student's logits."""
        if labels is None:
            return self.student(images)
        return self.forward_train(images, labels, epoch)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules besides the student (trained with it, saved in checkpoints, not exported)."""
        return {name: module for name, module in self.named_children() if name not in ("student", "teacher")}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student parameters plus those of the extra modules (what the optimiser updates)."""
        params = list(self.student.parameters())
        for module in self.extra_modules().values():
            params += [p for p in module.parameters() if p.requires_grad]
        return params

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything a checkpoint must hold: student and extra modules (not the frozen teacher)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ConfigError(f"checkpoint does not fit this distiller (missing {missing[:5]}, unexpected {unexpected[:5]})")
        self.load_state_dict({**self.state_dict(), **state}, strict=True)

    def describe(self) -> str:
        """One line: method, options and extra parameter count (printed when a run starts)."""
        extra = sum(p.numel() for m in self.extra_modules().values() for p in m.parameters())
        options = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.options).items())
        nd = f", nd weight {self.nd.weight}" + (" with projector" if self.nd.projector is not None else "") if self.nd else ""
        return f"method {self.method_name}({options}){nd}; {extra} extra trainable parameters"


def build_distiller(
    config: DistillConfig,
    student: nn.Module,
    teacher: nn.Module | None,
    class_means: torch.Tensor | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> Distiller:
    """Instantiate the method named by ``config.method`` (``input_shape``: (C, H, W) of one image)."""
    return get_method(config.method).cls(student, teacher, config, class_means, input_shape)
