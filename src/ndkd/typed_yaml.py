"""Typed mappings from YAML: dataclass validation with suggestions, dotted overrides, safe reading.

The machinery under :mod:`ndkd.config` (which holds the schema): a raw mapping is checked against a
dataclass, key by key and type by type; an unknown key gets a close-match suggestion and the allowed
keys of its section, and every error names where the value came from (the file, or the command-line
override that set it). Only ``yaml.safe_load`` is used: nothing in a config is ever executed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ndkd.errors import ConfigError

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class Sources:
    """Remembers which dotted keys came from command-line overrides, to name the source of an error."""

    def __init__(self, file: str, overrides: dict[str, str] | None = None) -> None:
        self.file = file
        self.overrides = overrides or {}

    def error(self, path: str, message: str) -> ConfigError:
        for key, text in self.overrides.items():
            if path == key or path.startswith(key + ".") or key.startswith(path + "."):
                return ConfigError(f"override {text!r}: {message}")
        return ConfigError(f"{self.file}: {message}")


def join_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp: Any, value: Any, path: str, sources: Sources) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(inner, value, path, sources)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise sources.error(path, f"{path!r} must be one of {', '.join(map(str, choices))}; got {value!r}.{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise sources.error(path, f"{path!r} must be a list, got {value!r} ({type(value).__name__})")
        (inner,) = typing.get_args(tp)
        return [_coerce(inner, item, f"{path}[{i}]", sources) for i, item in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path, sources)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise sources.error(path, f"{path!r} must be a mapping, got {value!r} ({type(value).__name__})")
        return copy.deepcopy(value)
    if tp is float and isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)  # PyYAML reads 5e-4 (no dot) as a string
    valid = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }
    if not valid.get(tp, False):
        raise sources.error(path, f"{path!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return float(value) if tp is float else value


def build_dataclass(cls: type, data: Any, path: str, sources: Sources):
    if not isinstance(data, dict):
        where = f"{path!r}" if path else "the config"
        raise sources.error(path, f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            section = f"in {path!r}" if path else "at the top level"
            raise sources.error(
                join_path(path, key),
                f"unknown key {join_path(path, key)!r}.{hint} Allowed keys {section}: {', '.join(allowed)}",
            )
    values = {name: _coerce(hints[name], data[name], join_path(path, name), sources) for name in allowed if name in data}
    return cls(**values)


def build_options(options_class: type, options: dict, path: str, sources: Sources | None = None):
    """Validate a method's ``options`` mapping into its options dataclass."""
    return build_dataclass(options_class, options, path, sources or Sources("config"))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` -> (["train", "epochs"], 5); the value is parsed as YAML (safe)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value (for example train.epochs=5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error.problem})") from error
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict[str, str]:
    """Set each dotted override in the raw mapping ``data``; return {dotted key: override text}."""
    applied = {}
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: depth + 1])!r} is not a section")
            node = child
        node[keys[-1]] = value
        applied[".".join(keys)] = text
    return applied


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the safe loader."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def merge_mappings(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
