"""The ``equimol`` command line.

Each subcommand lives in its own module under :mod:`equimol.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
namespace, returning an exit code). Adding a subcommand is one line in ``_COMMAND_MODULES``.

**Errors.** A user error, an :class:`~equimol.errors.EquimolInputError` (bad argument, config key,
file, frame or model), ends the command with exit status 2 and one line on stderr,
``equimol <command>: error: <what, where, what to do>``, and no traceback. So do the file-system
errors of :data:`USER_ERRORS` (a missing input file) and a failed write (a full disk, a read-only
folder: :class:`~equimol.utils.io.OutputError`, or an ``OSError`` with one of the
:data:`~equimol.utils.io.WRITE_ERRNOS` from a library's own writer). A library argument that the
message names is shown as the flag that sets it (:data:`FLAGS`, e.g. ``--no-mass-check``).
``--debug`` (or ``EQUIMOL_DEBUG=1`` in the environment) re-raises it, traceback included. Anything
else (a ``ValueError`` or ``RuntimeError`` from inside equimol or a library) is a bug: its traceback
is printed, then one line saying so and how to report it (:data:`BUG_REPORT`), exit status 1.
An old spelling of a key or flag prints one ``equimol <command>: deprecated: ...`` line and works.

**Start-up.** Command modules import torch, Lightning and the models inside their ``run`` functions,
so ``equimol --help`` and argument or missing-file errors answer without them
(``benchmarks/cli_startup.py``).

**Overrides.** A command that takes ``section.key=value`` overrides (``train``) sets ``overrides`` as
its last positional argument; overrides given after its flags (``--resume``) are collected as well.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import NoReturn

from equimol.errors import EquimolDeprecationWarning, EquimolInputError

_COMMAND_MODULES: tuple[str, ...] = (
    "equimol.cli.bench",
    "equimol.cli.data",
    "equimol.cli.train",
    "equimol.cli.eval",
    "equimol.cli.export",
    "equimol.cli.lammps",
    "equimol.cli.predict",
)
DEBUG_VARIABLE = "EQUIMOL_DEBUG"
USAGE_ERROR = 2

# library arguments that error messages may name, and the flag that sets each on the command line
FLAGS = {"check_masses=False": "--no-mass-check", "forces_key=None": "--forces-key none"}
BUG_EXIT = 1
BUG_REPORT = (
    "this is a bug in equimol, not in your input; please report it with the command line, the traceback above "
    "and `equimol --version` (see SECURITY.md for anything security-related)"
)
# Exceptions that mean "the input is wrong", not "equimol is wrong": equimol's own (every ConfigError,
# DataFormatError, ModelFileError, StructureError, RunFolderError, ... is an EquimolInputError) and the
# operating system's answer to a path that is missing or of the wrong kind.
USER_ERRORS: tuple[type[BaseException], ...] = (
    EquimolInputError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (argparse prints the usage block as well)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every registered subcommand."""
    from equimol import __version__

    parser = _Parser(
        prog="equimol",
        description="Equivariant interatomic potentials with swappable tensor-product backends.",
    )
    parser.add_argument("--version", action="version", version=f"equimol {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help=f"show the traceback of an input error (or set {DEBUG_VARIABLE}=1)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (a KeyError's message loses its quotes), library arguments as flags."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    for name, flag in FLAGS.items():
        text = str(text).replace(name, flag)
    return " ".join(str(text).split()) or type(error).__name__


def _command_name(args: argparse.Namespace) -> str:
    words = [args.command] + [
        getattr(args, key) for key in ("bench_command", "data_command") if getattr(args, key, None)
    ]
    return " ".join(["equimol", *words])


def _option_before_command(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The one-line error for a command's option given before the command (``equimol --resume train ...``)."""
    commands = parser._subparsers._group_actions[0].choices if parser._subparsers else {}
    top_level = {option for action in parser._actions for option in action.option_strings}
    for index, word in enumerate(argv):
        if word in commands:
            flags = [w for w in argv[:index] if w.startswith("-") and w.split("=")[0] not in top_level]
            if not flags:
                return None
            usage = " ".join(["equimol", word, *argv[index + 1 :], *flags])
            return (
                f"equimol {word}: error: {' '.join(flags)} is an option of `equimol {word}` and goes after the "
                f"command: {usage}\n"
            )
        if not word.startswith("-"):
            return None
    flags = [w for w in argv if w.split("=")[0] not in top_level]
    if flags:
        hint = f"equimol COMMAND ... {flags[0]}; see `equimol --help`"
        return f"equimol: error: {' '.join(flags)} goes after a command ({hint})\n"
    return None


def _debugging(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def _user_error(error: BaseException) -> bool:
    from equimol.utils.io import WRITE_ERRNOS, OutputError

    if isinstance(error, (*USER_ERRORS, OutputError)):
        return True
    return isinstance(error, OSError) and error.errno in WRITE_ERRNOS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``equimol`` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    parser = build_parser()
    misplaced = _option_before_command(parser, [word for word in argv if word != "--debug"])
    if misplaced is not None:
        sys.stderr.write(misplaced)
        return USAGE_ERROR
    args, unknown = parser.parse_known_args([word for word in argv if word != "--debug"])
    if unknown:
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in w and not w.startswith("-") for w in unknown
        ):
            args.overrides += unknown  # section.key=value after the command's flags
        else:
            name = _command_name(args) if getattr(args, "command", None) else parser.prog
            sys.stderr.write(f"{name}: error: unrecognized arguments: {' '.join(unknown)} (see `{name} --help`)\n")
            return USAGE_ERROR
    args.debug = debug
    if not hasattr(args, "func"):
        parser.print_help()
        return USAGE_ERROR
    name = _command_name(args)
    try:
        with _deprecations_as_lines(name):
            return int(args.func(args) or 0)
    except Exception as error:
        if _user_error(error):
            if _debugging(args):
                raise
            print(f"{name}: error: {one_line(error)}", file=sys.stderr)
            return USAGE_ERROR
        traceback.print_exc()
        print(f"{name}: {type(error).__name__}: {BUG_REPORT}", file=sys.stderr)
        return BUG_EXIT


@contextlib.contextmanager
def _deprecations_as_lines(name: str) -> Iterator[None]:
    """Print each :class:`~equimol.errors.EquimolDeprecationWarning` as one ``<command>: deprecated:`` line."""
    saved = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EquimolDeprecationWarning):
            print(f"{name}: deprecated: {message}", file=sys.stderr)
        else:
            saved(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


if __name__ == "__main__":
    sys.exit(main())
