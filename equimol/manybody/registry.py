"""The registry of many-body kinds: ``model.many_body`` names one of them (or ``none``).

A kind is a builder ``(channels, lmax, correlation, num_elements) -> nn.Module`` of the self-product
``P: [n, irreps.dim] x [n] -> [n, irreps.dim]`` on the natural-parity irreps
``C x (0e + 1o + 2e + ...)`` up to ``lmax``, with per-element weights (the node's element index is the
second input). :class:`~equimol.nn.many_body.ManyBodyBlock` wraps it as ``h + W P(h)``. Kinds register
with :func:`register_many_body`, the way tensor-product backends register with
:func:`equimol.tp.register_backend`; a kind that needs an optional package is listed in
:data:`_OPTIONAL_KINDS` and imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from equimol.utils.optional import import_optional, importable

Builder = Callable[[int, int, int, int], nn.Module]

_KINDS: dict[str, Builder] = {}

# Kinds that need an optional package, imported on first use:
# name -> (module registering it, package it needs, pip extra that installs the package).
_OPTIONAL_KINDS: dict[str, tuple[str, str, str]] = {
    "cueq": ("equimol.manybody.cueq", "cuequivariance", "cueq"),
}


def register_many_body(name: str) -> Callable[[Builder], Builder]:
    """Function decorator that registers a builder ``(channels, lmax, correlation, num_elements) -> module``."""

    def decorator(builder: Builder) -> Builder:
        if name == "none" or (name in _KINDS and _KINDS[name] is not builder):
            raise ValueError(f"many-body kind {name!r} is already registered")
        _KINDS[name] = builder
        return builder

    return decorator


def kinds() -> list[str]:
    """Every kind ``model.many_body`` may name, optional ones included (their package may be missing), sorted."""
    return sorted(set(_KINDS) | set(_OPTIONAL_KINDS))


def available() -> list[str]:
    """The kinds that can be built here: registered ones and optional ones whose package is installed, sorted."""
    optional = {name for name, (_, package, _) in _OPTIONAL_KINDS.items() if importable(package)}
    return sorted(set(_KINDS) | optional)


def many_body_product(kind: str, channels: int, lmax: int, correlation: int, num_elements: int) -> nn.Module:
    """The self-product ``sum_nu P^(nu)`` of ``kind``, ``[n, irreps.dim] x [n] -> [n, irreps.dim]``.

    Raises:
        ValueError: an unknown kind (naming the known ones), or an optional kind without its package
            (naming the pip extra).
    """
    if kind in _OPTIONAL_KINDS and kind not in _KINDS:
        import_optional(*_OPTIONAL_KINDS[kind], f"many_body={kind!r}")
    if kind not in _KINDS:
        raise ValueError(f"unknown many-body kind {kind!r}; known kinds: {', '.join(kinds())}")
    return _KINDS[kind](channels, lmax, correlation, num_elements)
