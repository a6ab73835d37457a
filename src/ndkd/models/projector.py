"""The embedding projector of KD++ (EmbTrans): BatchNorm1d -> Dropout(0.5) -> Linear.

Used only when the student's embedding width differs from the teacher's, and only for the ND term:
the student's classifier keeps reading the raw embedding, and the projector is not part of the
exported student. Whether one is needed is decided from the two models' actual embedding widths,
never from their names.

Two initialisations, as in the official code (METHOD_KDPP.md section 4):

* ``"cifar"``: BN scale 1, shift 0; Linear weight with PyTorch's default init, bias 0.
* ``"imagenet"``: BN scale 1, shift 0; Linear weight and bias drawn from N(0, 0.01^2).

``resolve_projector_init("auto", input_shape)`` picks ``"imagenet"`` for ImageNet-scale inputs (a side of
more than 64 pixels) and ``"cifar"`` otherwise: the official runs differ by dataset, not by model.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

ProjectorInit = Literal["cifar", "imagenet"]
IMAGENET_SCALE_MIN_SIDE = 65  # inputs at least this wide are treated as ImageNet-scale by "auto"


def resolve_projector_init(init: str, input_shape: tuple[int, ...] | None) -> ProjectorInit:
    """``"cifar"``/``"imagenet"`` as given; ``"auto"`` from the input's (C, H, W) (CIFAR when unknown)."""
    if init in ("cifar", "imagenet"):
        return init  # type: ignore[return-value]
    if init != "auto":
        raise ValueError(f"projector init must be 'auto', 'cifar' or 'imagenet', got {init!r}")
    if input_shape is not None and min(input_shape[-2:]) >= IMAGENET_SCALE_MIN_SIDE:
        return "imagenet"
    return "cifar"


def make_projector(student_dim: int, teacher_dim: int, dropout: float = 0.5, init: ProjectorInit = "cifar") -> nn.Sequential:
    """Projector [B, student_dim] -> [B, teacher_dim] with the ``init`` scheme described in the module docstring."""
    projector = nn.Sequential(
        nn.BatchNorm1d(student_dim),
        nn.Dropout(dropout),
        nn.Linear(student_dim, teacher_dim),
    )
    nn.init.ones_(projector[0].weight)
    nn.init.zeros_(projector[0].bias)
    if init == "imagenet":
        nn.init.normal_(projector[2].weight, mean=0.0, std=0.01)
        nn.init.normal_(projector[2].bias, mean=0.0, std=0.01)
    elif init == "cifar":
        nn.init.zeros_(projector[2].bias)
    else:
        raise ValueError(f"projector init must be 'cifar' or 'imagenet', got {init!r}")
    return projector
