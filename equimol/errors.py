"""The one exception type for "the input is wrong", as opposed to "equimol is wrong".

Every error that a user can cause with a bad config key, file, frame, model or argument is an
:class:`EquimolInputError` (``ConfigError``, ``ModelFileError``, ``StructureError``,
``DataFormatError``, ``RunFolderError``, ``LammpsCouplingError``, ... subclass it). The command line
(:mod:`equimol.cli`) turns it into one line, ``equimol <command>: error: <message>``, and exit
status 2; any other exception is a bug and keeps its traceback. The message names the key, file or
argument at fault and, where it helps, what to do.

It subclasses :class:`ValueError` so that library callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class EquimolInputError(ValueError):
    """Bad input: a config key, a file, a frame, a model file or an argument; the message names it."""


class ConfigError(EquimolInputError):
    """A configuration error; the message names the offending ``section.key`` (and the file, when known)."""


class CompiledModelError(EquimolInputError):
    """A compiled model file that cannot be written or read; the message says which and why."""


class EquimolDeprecationWarning(FutureWarning):
    """An old spelling (a config key, a flag) that still works; the message names the new one.

    A ``FutureWarning`` so that Python shows it by default; the command line prints it as one line.
    """


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """One-line deprecation notice: ``old`` still works and means ``new``."""
    import warnings

    warnings.warn(f"{old} is deprecated, use {new} (same meaning)", EquimolDeprecationWarning, stacklevel=stacklevel)
