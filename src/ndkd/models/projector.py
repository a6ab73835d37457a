"""The embedding projector of KD++ (EmbTrans): BatchNorm1d -> Dropout(0.5) -> Linear.

Used only when the student's embedding width differs from the teacher's, and only for the ND term:
the student's classifier keeps reading the raw embedding, and the projector is not part of the
exported student. The choice is made from the two models' actual embedding widths, never from names.
"""

from __future__ import annotations

from torch import nn


def make_projector(student_dim: int, teacher_dim: int, dropout: float = 0.5) -> nn.Sequential:
    """Projector [B, student_dim] -> [B, teacher_dim]; BN weight 1, bias 0; Linear default init, bias 0."""
    projector = nn.Sequential(
        nn.BatchNorm1d(student_dim),
        nn.Dropout(dropout),
        nn.Linear(student_dim, teacher_dim),
    )
    nn.init.ones_(projector[0].weight)
    nn.init.zeros_(projector[0].bias)
    nn.init.zeros_(projector[2].bias)
    return projector
