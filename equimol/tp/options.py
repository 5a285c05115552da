"""``model.tp_options``: the keyword options of a backend's constructor, read from its signature.

A backend's options are the keyword-only arguments of its ``__init__`` plus those of
:class:`~equimol.tp.interface.TensorProductBackend` that it passes on through ``**base_options``;
their types come from the annotations, their defaults from the signature and their meaning from the
``Args:`` section of the class docstring. So a config is checked against exactly what the backend
accepts (a misspelt option fails when the config is loaded, before any data are read), and adding
an option to a backend adds it to the configuration reference without another edit.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Mapping
from typing import Any

from equimol.config_fields import matches, type_name
from equimol.errors import ConfigError, warn_renamed

# set by the model on every product, never by a config
MODEL_SET = ("internal_weights", "dtype", "device")
_ARGUMENT = re.compile(r"^(\s*)(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


def _docstring_arguments(cls: type) -> dict[str, str]:
    """``{name: first sentence}`` from the ``Args:`` section of the docstring of ``cls`` (or its ``__init__``)."""
    docs: dict[str, str] = {}
    for text in (inspect.getdoc(cls) or "", inspect.getdoc(cls.__init__) or ""):
        lines = text.splitlines()
        stripped = [line.strip() for line in lines]
        if "Args:" not in stripped:
            continue
        indent, current = None, None
        for line in lines[stripped.index("Args:") + 1 :]:
            depth = len(line) - len(line.lstrip())
            indent = depth if indent is None else indent
            if not line.strip() or depth < indent:
                break
            match = _ARGUMENT.match(line)
            if depth == indent and match:
                current = match.group(2) if match.group(2) not in docs else None
                if current is not None:
                    docs[current] = match.group(3).strip()
            elif current is not None:
                docs[current] = f"{docs[current]} {line.strip()}"
    return {name: _first_sentence(text) for name, text in docs.items()}


def _first_sentence(text: str) -> str:
    """Up to the first full stop outside parentheses, with reST roles and literals made plain."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth <= 0 and (index + 1 == len(text) or text[index + 1] == " "):
            return text[:index].strip()
    return text.strip()


def backend_options(cls: type) -> dict[str, dict[str, Any]]:
    """Every option of backend class ``cls`` a config may set: ``{name: {"type", "default", "doc"}}``."""
    options: dict[str, dict[str, Any]] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints = typing.get_type_hints(init)
        except (NameError, TypeError):
            hints = {}
        docs = _docstring_arguments(klass)
        parameters = inspect.signature(init).parameters.values()
        for parameter in parameters:
            if parameter.kind is not inspect.Parameter.KEYWORD_ONLY or parameter.name in MODEL_SET:
                continue
            options.setdefault(
                parameter.name,
                {
                    "type": hints.get(parameter.name, Any),
                    "default": parameter.default,
                    "doc": docs.get(parameter.name, ""),
                },
            )
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break  # the options stop where **base_options is no longer passed on
    return options


def renamed_options(cls: type) -> dict[str, str]:
    """``{old name: new name}`` of the options backend ``cls`` (or a base class) renamed (``RENAMED_OPTIONS``)."""
    renamed: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        renamed.update(klass.__dict__.get("RENAMED_OPTIONS", {}))
    return renamed


def rename_options(cls: type, options: Mapping, where: str = "tp_options", warn: bool = True) -> dict:
    """A copy of ``options`` with the backend's old option names renamed (one deprecation line each unless
    ``warn`` is False); both names is an error."""
    options = dict(options)
    for old, new in renamed_options(cls).items():
        if old in options:
            if new in options:
                raise ConfigError(f"{where}.{old} and {where}.{new} are the same option: give only {new}")
            if warn:
                warn_renamed(f"{where}.{old}", f"{where}.{new}", stacklevel=5)
            options[new] = options.pop(old)
    return options


def check_backend_options(cls: type, options: Any, where: str = "tp_options") -> dict:
    """``options`` against the constructor of backend ``cls``: names and types; a ConfigError names the key.

    Returns:
        the options with old names renamed (one deprecation line each), so that old configs and model
        files still build.
    """
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where} must be a mapping of {cls.name!r} backend options, got {options!r}")
    options = rename_options(cls, options, where)
    known = backend_options(cls)
    unknown = sorted(str(key) for key in set(options) - set(known))
    if unknown:
        names = ", ".join(f"{where}.{key}" for key in unknown)
        raise ConfigError(
            f"unknown key(s) {names}: backend {cls.name!r} does not accept option(s) {unknown}; "
            f"its options: {sorted(known)}"
        )
    for key, value in options.items():
        annotation = known[key]["type"]
        if not matches(value, annotation):
            raise ConfigError(f"{where}.{key} must be {type_name(annotation)} (backend {cls.name!r}), got {value!r}")
    return options


def describe_backend_options(name: str, cls: type, section: str = "model.tp_options") -> list[dict[str, Any]]:
    """Reference entries (as :func:`equimol.config_fields.describe_class`) for the options of backend ``name``."""
    return [
        {
            "section": section,
            "key": key,
            "name": f"{section}.{key}",
            "type": type_name(spec["type"]),
            "default": spec["default"],
            "choices": None,
            "bounds": {},
            "bounds_text": "",
            "auto": False,
            "doc": spec["doc"],
            "backend": name,
        }
        for key, spec in backend_options(cls).items()
    ]
