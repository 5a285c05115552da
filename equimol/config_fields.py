"""Config sections as dataclasses whose fields carry their meaning and limits, and the one validator.

A config section (``model``, ``model.spe``, ``data``, ``loss``, ...) is a dataclass. Each field is
declared with :func:`option`, which records in the field's metadata

* ``doc``: one line saying what the key means (units included);
* ``choices``: the allowed values, a tuple or a function returning one (a registry's names);
* ``bounds``: ``ge``/``gt``/``le``/``lt`` limits of a number (of each item of a list of numbers);
* ``schema``: the dataclass that a mapping-valued key follows (``loss.stage_two``, ``model.dispersion``);
* ``renamed_from``: older spellings of the key, still read (old ``config.yaml`` files resume) with a
  one-line :class:`~equimol.errors.EquimolDeprecationWarning`.

A key whose annotation includes :data:`Auto` (``float | Auto | None``) also accepts the literal
``"auto"``: a value filled in later from the training data (:func:`accepts_auto`).

:func:`check_section` is the one validator: it walks a mapping against such a class and rejects an
unknown key, a value of the wrong type (from the field's annotation), a value outside ``choices`` or
``bounds``, each time with a :class:`~equimol.errors.ConfigError` naming ``section.key``. Rules that
tie two keys together stay with their class (``ModelConfig.check_relations``). :func:`describe_class`
lists the keys with their type, default, limits and meaning; :func:`equimol.config_schema.describe`
does so for every section.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from equimol.errors import ConfigError, warn_renamed

AUTO = "auto"
Auto = Literal["auto"]  # in a field's annotation: the key may be "auto" (filled in from the training data)
_MISSING = dataclasses.MISSING
BOUND_SYMBOLS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def option(
    default: Any = _MISSING,
    doc: str = "",
    *,
    default_factory: Callable[[], Any] | None = None,
    choices: Sequence | Callable[[], Sequence] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    schema: type | None = None,
    renamed_from: tuple[str, ...] = (),
) -> Any:
    """A dataclass field whose metadata holds ``doc``, ``choices``, ``bounds``, ``schema`` and old names."""
    if not doc:
        raise TypeError("every config option needs a one-line doc")
    bounds = {name: value for name, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if value is not None}
    metadata = {
        "doc": doc,
        "choices": choices,
        "bounds": bounds,
        "schema": schema,
        "renamed_from": tuple(renamed_from),
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(field: dataclasses.Field) -> tuple | None:
    """The allowed values of ``field`` (a registry's names are looked up now), or None."""
    choices = field.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def type_name(annotation: Any) -> str:
    """A readable name of a type annotation (``int``, ``str | None``, ``float | 'auto'``) for messages and docs."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin in (Union, types.UnionType) and accepts_auto(annotation):  # typing prints Union[..., Literal[...]]
        return " | ".join("None" if arg is type(None) else type_name(arg) for arg in typing.get_args(annotation))
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def accepts_auto(annotation: Any) -> bool:
    """Whether a field annotated ``annotation`` may hold ``"auto"`` (its annotation includes :data:`Auto`)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return any(accepts_auto(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) is Literal and AUTO in typing.get_args(annotation)


def matches(value: Any, annotation: Any) -> bool:
    """``isinstance`` for the annotations used by the config classes (``bool`` is not an ``int`` here)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(value == allowed and type(value) is type(allowed) for allowed in typing.get_args(annotation))
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
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, (Mapping, annotation))
    if origin is not None and isinstance(origin, type):
        if issubclass(origin, Mapping):
            args = typing.get_args(annotation)
            return isinstance(value, Mapping) and (not args or all(matches(v, args[1]) for v in value.values()))
        if issubclass(origin, Sequence):
            return isinstance(value, (list, tuple)) and all(
                matches(item, typing.get_args(annotation)[0]) for item in value
            )
    if isinstance(annotation, type):
        if annotation.__module__ == "torch":  # torch.dtype: YAML gives its name
            return isinstance(value, str) or isinstance(value, annotation)
        return isinstance(value, annotation)
    return True


def _within(value: Any, bounds: Mapping[str, float]) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_within(item, bounds) for item in value)
    if isinstance(value, Mapping):
        return all(_within(item, bounds) for item in value.values())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True  # not a number: the type check speaks for it
    if isinstance(value, float) and math.isnan(value):
        return False
    tests = {"ge": value >= bounds.get("ge", -math.inf), "gt": value > bounds.get("gt", -math.inf)}
    tests.update({"le": value <= bounds.get("le", math.inf), "lt": value < bounds.get("lt", math.inf)})
    return all(tests[name] for name in bounds)


def bounds_text(bounds: Mapping[str, float]) -> str:
    """``{"ge": 0, "lt": 1}`` -> ``">= 0 and < 1"``."""
    return " and ".join(f"{BOUND_SYMBOLS[name]} {value}" for name, value in bounds.items())


def check_value(section: str, field: dataclasses.Field, annotation: Any, value: Any) -> None:
    """One value against its field's type, ``choices`` and ``bounds``; a ConfigError names ``section.key``."""
    key = f"{section}.{field.name}"
    if value == AUTO and accepts_auto(annotation):
        return
    if not matches(value, annotation):
        raise ConfigError(f"{key} must be {type_name(annotation)}, got {value!r} ({type(value).__name__})")
    allowed = choices_of(field)
    if allowed is not None and value is not None and value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    bounds = field.metadata.get("bounds") or {}
    if bounds and value is not None and not _within(value, bounds):
        raise ConfigError(f"{key} must be {bounds_text(bounds)}, got {value!r}")
    schema = field.metadata.get("schema")
    if schema is not None and isinstance(value, Mapping):
        build_section(schema, value, key)  # keys, values and the schema's own relations


def upgrade_keys(cls: type, values: Mapping, section: str, warn: bool = True) -> dict:
    """A copy of ``values`` with old key spellings renamed (one deprecation line each unless ``warn`` is False);
    both spellings is an error."""
    values = dict(values)
    for field in dataclasses.fields(cls):
        for old in field.metadata.get("renamed_from", ()):
            if old not in values:
                continue
            if field.name in values:
                raise ConfigError(
                    f"{section}.{old} and {section}.{field.name} are the same key: give only {field.name}"
                )
            if warn:
                warn_renamed(f"{section}.{old}", f"{section}.{field.name}", stacklevel=4)
            values[field.name] = values.pop(old)
    return values


def check_section(cls: type, values: Any, section: str) -> None:
    """Check the mapping ``values`` against the dataclass ``cls`` (keys, types, choices, bounds), recursively.

    Raises:
        ConfigError: naming ``section.key`` and what was expected.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"section {section!r} must be a mapping of keys to values, got {type(values).__name__}")
    values = upgrade_keys(cls, values, section)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in set(values) - set(fields))
    if unknown:
        names = ", ".join(f"{section}.{key}" for key in unknown)
        raise ConfigError(f"unknown key(s) {names}; valid keys in {section!r}: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        field = fields[key]
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            check_section(hints[key], value, f"{section}.{key}")
        else:
            check_value(section, field, hints[key], value)


def build_section(cls: type, values: Any, section: str) -> Any:
    """``cls(**values)`` after :func:`check_section`, then its ``check_relations()`` if it has one.

    A nested section is built as its own dataclass; old key spellings are renamed.
    """
    values = {} if values is None else values
    if isinstance(values, Mapping):
        values = upgrade_keys(cls, values, section)
    check_section(cls, values, section)
    values = dict(values)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]) and isinstance(values.get(field.name), Mapping | None):
            values[field.name] = build_section(hints[field.name], values.get(field.name), f"{section}.{field.name}")
    built = cls(**values)
    if hasattr(built, "check_relations"):
        built.check_relations()
    return built


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not _MISSING:
        value = field.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return None if field.default is _MISSING else field.default


def describe_class(cls: type, section: str) -> list[dict[str, Any]]:
    """One entry per key of ``cls`` and of its nested sections, in declaration order.

    Each entry: ``section``, ``key``, ``name`` (``section.key``), ``type``, ``default``, ``choices``
    (list or None), ``bounds`` (``{"ge": 1}``-style mapping), ``bounds_text``, ``auto`` and ``doc``.
    """
    entries = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        choices = choices_of(field)
        bounds = dict(field.metadata.get("bounds") or {})
        entries.append(
            {
                "section": section,
                "key": field.name,
                "name": f"{section}.{field.name}",
                "type": type_name(hints[field.name]),
                "default": _default(field),
                "choices": None if choices is None else list(choices),
                "bounds": bounds,
                "bounds_text": bounds_text(bounds),
                "auto": accepts_auto(hints[field.name]),
                "renamed_from": [f"{section}.{old}" for old in field.metadata.get("renamed_from", ())],
                "doc": field.metadata.get("doc", ""),
            }
        )
        nested = hints[field.name] if dataclasses.is_dataclass(hints[field.name]) else field.metadata.get("schema")
        if nested is not None:
            entries.extend(describe_class(nested, f"{section}.{field.name}"))
    return entries
