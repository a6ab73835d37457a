"""The ND loss of KD++ (feature Norm and Direction), vectorised.

For student embedding s_i, teacher embedding t_i of the same augmented image and the teacher's
class-mean c_y of the label y_i:

    l_i = 1 - <s_i, c_y / ||c_y||> / max(||s_i||, ||t_i||),       ND = mean_i l_i.

While ||s_i|| < ||t_i|| the gradient -e_y/||t_i|| pushes s_i along the class-mean direction (larger
norm and better direction); once ||s_i|| >= ||t_i|| the term is 1 - cos(s_i, c_y) and only the
direction is trained. The teacher embedding is a constant (detached). Ties pick the student norm,
as Python's ``max`` does in the official per-sample loop.
"""

from __future__ import annotations

import torch

_EPS = 1e-12


def class_mean_directions(class_means: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Unit class-mean direction e_{y_i} for each label: [K, D], [B] -> [B, D]."""
    centres = class_means.index_select(0, labels)
    return centres / centres.norm(dim=1, keepdim=True).clamp_min(_EPS)


def nd_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    class_means: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """ND loss, a scalar.

    Args:
        student_emb: [B, D] student embeddings (projected to the teacher's width if they differ).
        teacher_emb: [B, D] teacher embeddings of the same inputs; no gradient flows into them.
        class_means: [K, D] teacher class-means (only their direction is used).
        labels: [B] integer class indices.
    """
    if student_emb.shape != teacher_emb.shape:
        raise ValueError(
            f"student embedding {tuple(student_emb.shape)} and teacher embedding {tuple(teacher_emb.shape)} "
            "differ; project the student embedding to the teacher's width first"
        )
    if class_means.shape[1] != student_emb.shape[1]:
        raise ValueError(
            f"class-means have width {class_means.shape[1]} but embeddings have width {student_emb.shape[1]}"
        )
    student = student_emb.float()
    directions = class_mean_directions(class_means.float(), labels)
    projection = (student * directions).sum(dim=1)
    student_norm = student.norm(dim=1)
    teacher_norm = teacher_emb.detach().float().norm(dim=1)
    denominator = torch.where(student_norm >= teacher_norm, student_norm, teacher_norm).clamp_min(_EPS)
    return (1.0 - projection / denominator).mean()
