"""Registry of distillation methods: one decorator, one place.

``@register_distiller("kd", options=KDOptions, description=...)`` makes a :class:`~ndkd.distillers.base.Distiller`
subclass selectable as ``distill.method: kd``; ``options`` is a dataclass whose fields are the method's
options (``distill.options`` in a config), validated like the rest of the config.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from ndkd.errors import ConfigError


@dataclass
class NoOptions:
    """A method without options."""


@dataclass(frozen=True)
class MethodEntry:
    name: str
    cls: type
    options: type
    description: str
    needs_teacher: bool

    def option_defaults(self) -> dict:
        return dataclasses.asdict(self.options())


_METHODS: dict[str, MethodEntry] = {}


def require_positive(options: object, *names: str) -> None:
    """For an options dataclass's ``__post_init__``: each named option must be > 0 (checked when a config loads)."""
    for name in names:
        value = getattr(options, name)
        if not value > 0:
            raise ConfigError(f"distill.options.{name} must be positive, got {value!r}")


def register_distiller(name: str, *, description: str, options: type = NoOptions, needs_teacher: bool = True):
    """Class decorator registering a distiller under ``name``."""

    def decorator(cls: type) -> type:
        if name in _METHODS:
            raise ValueError(f"distiller {name!r} is registered twice")
        _METHODS[name] = MethodEntry(name, cls, options, description, needs_teacher)
        cls.method_name = name
        return cls

    return decorator


def _ensure_registered() -> None:
    import ndkd.distillers  # noqa: F401  (importing the package registers every method)


def get_method(name: str) -> MethodEntry:
    """The registered method ``name``; unknown names get the list of methods and a suggestion."""
    _ensure_registered()
    if name in _METHODS:
        return _METHODS[name]
    close = difflib.get_close_matches(name, list(_METHODS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown distillation method {name!r}.{hint} Registered methods: {', '.join(sorted(_METHODS))}")


def list_methods() -> list[MethodEntry]:
    """Every registered method, sorted by name."""
    _ensure_registered()
    return [_METHODS[name] for name in sorted(_METHODS)]
