"""Checking a YAML config section against the field types of the dataclass it maps onto.

``equimol train`` checks every section before anything runs: each key must be a field of the
section's class (:mod:`equimol.train.config`, :class:`~equimol.datasets.config.DataConfig`), and each
value must match that field's type annotation; an error names ``section.key`` and what was expected.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union


class ConfigError(ValueError):
    """A configuration error; the message names the offending key."""


def type_name(annotation: Any) -> str:
    """A readable name of a type annotation (``int``, ``str | None``) for error messages."""
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def matches(value: Any, annotation: Any) -> bool:
    """``isinstance`` for the annotations used by the config classes and ``DataConfig``."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is Path:
        return isinstance(value, (str, Path))
    if origin is not None and isinstance(origin, type):
        if issubclass(origin, Mapping):
            return isinstance(value, Mapping)
        if issubclass(origin, Sequence):
            return isinstance(value, (list, tuple)) and all(
                matches(item, typing.get_args(annotation)[0]) for item in value
            )
    if isinstance(annotation, type):
        if annotation.__module__ == "torch":  # torch.dtype: YAML gives its name
            return isinstance(value, str)
        return isinstance(value, annotation)
    return True


def check_section(name: str, values: Any, hints: dict[str, Any], choices: Mapping[str, tuple] | None = None) -> None:
    """Check a config section against the field types ``hints``; every error names ``section.key``."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"section {name!r} must be a mapping of keys to values, got {type(values).__name__}")
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown key {name}.{key}; valid keys in {name!r}: {sorted(hints)}")
        if not matches(value, hints[key]):
            raise ConfigError(f"{name}.{key} must be {type_name(hints[key])}, got {value!r} ({type(value).__name__})")
        allowed = (choices or {}).get(f"{name}.{key}")
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{name}.{key} must be one of {list(allowed)}, got {value!r}")
