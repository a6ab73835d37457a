"""Speed switches (``speed`` section of a config), applied in one place.

* ``precision``: ``fp32`` (default), ``bf16`` (autocast; CPU or GPU) or ``fp16`` (autocast with a
  GradScaler; GPU only). Losses compute in float32 inside autocast.
* ``channels_last``: student, teacher and input batches in NHWC memory format.
* ``fold_teacher_bn``: the frozen teacher's BatchNorm folded into its convolutions (exact up to rounding).
* ``compile``: ``torch.compile`` of student and teacher (hooks included).

Their measured effect on step time and on the loss value is in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ndkd.config import SpeedConfig
from ndkd.errors import ConfigError
from ndkd.models.fold import fold_batchnorm

logger = logging.getLogger("ndkd")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (gradients of fp16 activations underflow without loss scaling)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("speed.precision=fp16 needs a GPU; on the CPU use speed.precision=bf16")


def apply_speed_switches(distiller: torch.nn.Module, speed: SpeedConfig, device: torch.device) -> None:
    """Apply the model-side switches of ``speed`` to a distiller already on ``device``."""
    check_precision(device, speed.precision)
    teacher = getattr(distiller, "teacher", None)
    if speed.fold_teacher_bn and teacher is not None:
        folded = fold_batchnorm(teacher)
        logger.info("folded %d BatchNorm layers of the teacher into its convolutions", folded)
    if speed.channels_last:
        distiller.to(memory_format=torch.channels_last)
    if speed.compile:
        distiller.student.compile()
        if teacher is not None:
            teacher.compile()
