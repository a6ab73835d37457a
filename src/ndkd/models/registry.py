"""Registry of named model constructors (in the spirit of timm's ``register_model``).

A constructor takes ``num_classes`` and ``in_channels`` and returns an ``nn.Module`` whose final
classifier is an ``nn.Linear`` (the embedding is that Linear's input, see :mod:`ndkd.models.features`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ndkd.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: ModelBuilder
    family: str
    description: str


_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str, family: str, description: str = "", aliases: tuple[str, ...] = ()):
    """Decorator registering ``builder(num_classes, in_channels) -> nn.Module`` under ``name``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS or name in _ALIASES:
            raise ValueError(f"model name {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, builder, family, description or (builder.__doc__ or "").strip())
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return decorator


def canonical_name(name: str) -> str:
    """Resolve an alias to its registered name; raise a ConfigError with a suggestion if unknown."""
    if name in _MODELS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = sorted(_MODELS) + sorted(_ALIASES)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_MODELS))}.")


def list_models() -> list[ModelEntry]:
    """All registered models, sorted by name."""
    return [_MODELS[name] for name in sorted(_MODELS)]


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs for ``in_channels``-channel images."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    return _MODELS[canonical_name(name)].builder(num_classes=num_classes, in_channels=in_channels)
