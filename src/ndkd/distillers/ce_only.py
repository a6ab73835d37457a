"""``none``: cross-entropy only. Trains teachers and the "student alone" baseline; with
``distill.nd.weight > 0`` it is CE + ND (the ND-only ablation)."""

from ndkd.distillers.base import Distiller
from ndkd.distillers.registry import register_distiller


@register_distiller(
    "none", needs_teacher=False, description="cross-entropy only (teacher training, student-alone baseline)"
)
class CrossEntropyOnly(Distiller):
    """No distillation term; the teacher is only loaded when ND is on."""
