"""ndkd: knowledge distillation with the ND loss of KD++, composable with every distiller."""

__version__ = "0.1.0"
