"""Numerics shared by the loss functions."""

from __future__ import annotations

import torch


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Promote half/bfloat16 (autocast) inputs to float32; keep float32 and float64 as they are.

    Losses are computed in float32 under autocast; float64 stays float64 so tests can check values
    and gradients against float64 references tightly.
    """
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
