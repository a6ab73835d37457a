"""Registry of named model constructors (in the spirit of timm's ``register_model``).

A constructor takes ``num_classes`` and ``in_channels`` and returns an ``nn.Module`` whose final
classifier is an ``nn.Linear`` (the embedding is that Linear's input, see :mod:`ndkd.models.features`).
Names are case-sensitive and unambiguous: the CIFAR zoo keeps the benchmark's names (``resnet56``,
``wrn_40_2``, ``ResNet18``, ``MobileNetV2``...), torchvision's ImageNet models are ``torchvision/<name>``
and any timm model is ``timm/<name>`` (resolved by :mod:`ndkd.models.imagenet.timm_models`, not listed).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ndkd.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]
TIMM_PREFIX = "timm/"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: ModelBuilder
    family: str  # "cifar" or "imagenet" (timm models: "timm")
    description: str
    input_size: int = 32  # native resolution: what `ndkd models` measures FLOPs and stage shapes at
    aliases: tuple[str, ...] = ()


_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str, family: str, description: str = "", aliases: tuple[str, ...] = (), input_size: int = 32):
    """Decorator registering ``builder(num_classes, in_channels) -> nn.Module`` under ``name`` (and ``aliases``)."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        for taken in (name, *aliases):
            if taken in _MODELS or taken in _ALIASES:
                raise ValueError(f"model name {taken!r} is registered twice")
        description_text = description or (builder.__doc__ or "").strip()
        _MODELS[name] = ModelEntry(name, builder, family, description_text, input_size, tuple(aliases))
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return decorator


def _unknown(name: str) -> ConfigError:
    known = sorted(_MODELS) + sorted(_ALIASES)
    lowered = name.lower()
    # "resnet18" is both the CIFAR ResNet18 and torchvision/resnet18: name every candidate, pick none
    candidates = sorted({canonical for canonical in known if canonical.lower() == lowered or canonical.split("/")[-1].lower() == lowered})
    if candidates:
        options = "; ".join(f"{c!r} ({_MODELS[_ALIASES.get(c, c)].description})" for c in candidates)
        return ConfigError(f"unknown model {name!r}. Names are case-sensitive; did you mean one of: {options}?")
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_MODELS))}; "
        f"any timm model as '{TIMM_PREFIX}<name>' (`ndkd models` lists them all)."
    )


def canonical_name(name: str) -> str:
    """Resolve an alias to its registered name (``timm/<name>`` as is); raise a ConfigError with suggestions."""
    if name in _MODELS or name.startswith(TIMM_PREFIX):
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise _unknown(name)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (alias or ``timm/<name>``, which is checked against timm's list)."""
    name = canonical_name(name)
    if name.startswith(TIMM_PREFIX):
        from ndkd.models.imagenet.timm_models import timm_entry

        return timm_entry(name[len(TIMM_PREFIX) :])
    return _MODELS[name]


def list_models() -> list[ModelEntry]:
    """All registered models (not the timm catalogue), sorted by name."""
    return [_MODELS[name] for name in sorted(_MODELS)]


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs for ``in_channels``-channel images."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be at least 1, got {in_channels}")
    return get_model_entry(name).builder(num_classes=num_classes, in_channels=in_channels)
