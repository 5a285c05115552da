"""The ``equimol`` command line.

Each subcommand lives in its own module under :mod:`equimol.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
namespace, returning an exit code). Adding a subcommand is one line in ``_COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES: tuple[str, ...] = (
    "equimol.cli.bench",
    "equimol.cli.data",
    "equimol.cli.train",
    "equimol.cli.eval",
    "equimol.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every registered subcommand."""
    from equimol import __version__

    parser = argparse.ArgumentParser(
        prog="equimol",
        description="Equivariant interatomic potentials with swappable tensor-product backends.",
    )
    parser.add_argument("--version", action="version", version=f"equimol {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``equimol`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
