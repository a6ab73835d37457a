"""What ``ndkd methods`` shows: every registered method and ND variant with its options and defaults.

Built from the registry and the options dataclasses themselves, so a newly registered method (or a new
option) appears without anyone editing a list.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from ndkd.config import NDConfig
from ndkd.distillers.nd import ND_VARIANTS
from ndkd.distillers.registry import list_methods


def type_label(tp) -> str:
    """``float``, ``bool``, ``float or null``, ``list of int``, ``one of a, b`` for an option's type hint."""
    args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return type_label(args[0]) + " or null"
    if typing.get_origin(tp) is list and len(args) == 1:
        return "list of " + type_label(args[0])
    return getattr(tp, "__name__", str(tp))


def option_fields(cls, names: list[str] | None = None) -> list[dict]:
    """[{name, type, default}] of the fields of an options dataclass (all, or ``names`` in order)."""
    hints = typing.get_type_hints(cls)
    defaults = dataclasses.asdict(cls())
    names = [f.name for f in dataclasses.fields(cls)] if names is None else names
    return [{"name": name, "type": type_label(hints[name]), "default": defaults[name]} for name in names]


def method_listing() -> dict:
    """{"methods": [...], "nd_variants": [...]}: names, one-line descriptions and options (``--json``)."""
    return {
        "methods": [
            {"name": m.name, "description": m.description, "needs_teacher": m.needs_teacher, "options": option_fields(m.options)}
            for m in list_methods()
        ],
        "nd_variants": [
            {"name": v.name, "description": v.description, "options": option_fields(NDConfig, list(v.options))}
            for v in ND_VARIANTS.values()
        ],
    }


def format_method_listing(listing: dict) -> str:
    """The listing as text: one line per entry, its options (with where they go in a config) below it."""

    def section(title: str, entries: list[dict], prefix: str) -> list[str]:
        width = max(len(entry["name"]) for entry in entries)
        lines = [title]
        for entry in entries:
            lines.append(f"  {entry['name'].ljust(width)}  {entry['description']}")
            options = "   ".join(f"{prefix}{o['name']}: {o['type']} = {json.dumps(o['default'])}" for o in entry["options"])
            if options:
                lines.append(f"  {' ' * width}  {options}")
        return lines

    lines = section("methods (distill.method; options under distill.options):", listing["methods"], "")
    lines.append("")
    lines += section("ND variants (distill.nd.variant; on when distill.nd.weight > 0, with any method):", listing["nd_variants"], "distill.nd.")
    return "\n".join(lines)
