"""Argument types and parser helpers shared by the subcommands.

Each argument type rejects a bad value with one line naming what was expected; :func:`add_command`
and :func:`add_command_group` are the one way a subcommand adds itself to the ``equimol`` parser.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def _checked(text: str, convert: Callable[[str], Number], accept: Callable[[Number], bool], unparsed: str, bad: str):
    """``convert(text)`` if ``accept`` holds; else an ArgumentTypeError from ``unparsed`` or ``bad``.

    Both messages are format strings over ``text`` and ``value``.
    """
    try:
        value = convert(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(unparsed.format(text=text)) from error
    if not accept(value):
        raise argparse.ArgumentTypeError(bad.format(text=text, value=value))
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (``--repeats``, ``--batch-size``, ...)."""
    return _checked(
        text,
        int,
        lambda v: v >= 1,
        "expected a positive integer, got {text!r}",
        "expected a positive integer (>= 1), got {value}",
    )


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--warmup``)."""
    return _checked(
        text, int, lambda v: v >= 0, "expected an integer >= 0, got {text!r}", "expected an integer >= 0, got {value}"
    )


def positive_float(text: str) -> float:
    """A finite number > 0 (cutoffs in Å)."""
    return _checked(
        text,
        float,
        lambda v: v > 0 and math.isfinite(v),
        "expected a positive number, got {text!r}",
        "expected a finite number > 0, got {text!r}",
    )


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` whose parsed arguments go to ``run`` (returning the exit code)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser


def add_command_group(
    subparsers: argparse._SubParsersAction, name: str, help: str, metavar: str
) -> argparse._SubParsersAction:
    """Add ``name`` as a command whose own subcommands (one of them required) go in the returned set."""
    group = subparsers.add_parser(name, help=help)
    return group.add_subparsers(dest=f"{name}_command", metavar=metavar, required=True)
