"""Stage selection and feature-shape probing shared by the feature distillers (ReviewKD, FitNet, DiffKD).

Stages come from :func:`ndkd.models.model_stages` (stem first); a feature distiller works on the
*backbone stages*, the stem excluded (ReviewKD and FitNet never read the stem). Adapter sizes are not
guessed from architecture names: they are read from one dummy forward of the actual models.
"""

from __future__ import annotations

import torch
from torch import nn

from ndkd.errors import ConfigError
from ndkd.models.features import FeatureTap, Stage, TapOutput, model_stages


def backbone_stages(model: nn.Module, role: str) -> list[Stage]:
    """The stages of ``model`` after the stem, shallow to deep; ``role`` ("student"/"teacher") names it in errors."""
    try:
        stages = model_stages(model)[1:]
    except ValueError as error:
        raise ConfigError(f"the {role} {error}") from error
    if not stages:
        raise ConfigError(f"the {role} {type(model).__name__} declares no stage after its stem; feature distillers need one")
    return stages


def find_stage(stages: list[Stage], name: str, role: str, option: str) -> Stage:
    """The stage called ``name``; an unknown name lists the valid ones and the option to change."""
    for stage in stages:
        if stage.name == name:
            return stage
    known = ", ".join(stage.name for stage in stages)
    raise ConfigError(f"the {role} has no stage {name!r} (distill.options.{option}); its stages are: {known}")


@torch.no_grad()
def probe(tap: FeatureTap, input_shape: tuple[int, int, int] | None, method: str) -> TapOutput:
    """Run one zero image of ``input_shape`` (C, H, W) through ``tap`` to read feature shapes.

    The model runs in eval mode (BatchNorm statistics untouched) and gets its mode back afterwards.
    """
    if input_shape is None:
        raise ConfigError(
            f"method {method!r} sizes its adapters from the models' feature shapes: build the distiller with "
            "input_shape=(C, H, W) of one image (ndkd's pipeline passes the dataset's)"
        )
    model = tap.model
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    try:
        return tap(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)


def as_map(vector: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, D, 1, 1]: an embedding or logits seen as a 1 x 1 feature map."""
    return vector[:, :, None, None]
