"""MkDocs hook: the command-line reference is the ``--help`` of every ``equimol`` command, taken at build time.

Pages are generated from :func:`equimol.cli.build_parser` (which imports no torch), so a flag added to a
command appears on ``reference/cli.md`` without anyone editing it.
"""

from __future__ import annotations

import argparse
import os

from mkdocs.structure.files import File


def _commands(parser: argparse.ArgumentParser, prefix: str):
    """Yield ``(name, parser)`` for ``parser`` and, depth first, every subcommand under it."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def cli_page() -> str:
    from equimol.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help at $COLUMNS: the page must not depend on the terminal
    lines = [
        "# Command line",
        "",
        "Every `equimol` command and its `--help`, generated from the parser at build time. Every input error",
        "is one line, `equimol <command>: error: ...`, with exit status 2 ([Errors](../how-to/training.md#errors)).",
        "",
    ]
    for name, parser in _commands(build_parser(), "equimol"):
        lines += [f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_files(files, config):
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    return files
