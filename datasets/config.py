"""The ``data:`` section of a training config and the one rule for where a relative data path lives.

:class:`DataConfig` (defined in :mod:`equimol.config_sections`, with every other section, so that the
configuration reference needs no dataset import) is the single definition of the data options: their
names, types, defaults and checks. ``AtomsDataModule(config)`` (or ``AtomsDataModule(**fields)``)
takes exactly these fields, and ``equimol train`` checks a YAML ``data:`` section against them, value
ranges included, before any data are read and without importing Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path

from equimol.config_sections import DataConfig, PathSpec

DATA_DIR_VARIABLE = "EQUIMOL_DATA_DIR"
__all__ = ["DATA_DIR_VARIABLE", "DataConfig", "PathSpec", "as_list", "resolve_data_path"]


def resolve_data_path(path: str | Path, data_dir: str | Path | None = None) -> Path:
    """Absolute paths stay; relative ones go under ``data_dir``, else ``$EQUIMOL_DATA_DIR``, else the working folder.

    Raises:
        FileNotFoundError: the resolved path does not exist (the message says where it was looked for).
    """
    path = Path(path).expanduser()
    if path.is_absolute():
        resolved = path
    else:
        root = data_dir if data_dir is not None else os.environ.get(DATA_DIR_VARIABLE)
        resolved = Path(root).expanduser() / path if root else path
    if not resolved.exists():
        hint = "" if path.is_absolute() else f" (relative paths resolve under data_dir or ${DATA_DIR_VARIABLE})"
        raise FileNotFoundError(f"data path {str(resolved)!r} does not exist{hint}")
    return resolved


def as_list(spec: PathSpec) -> list[str | Path]:
    """A path spec (one path, a list, or None) as a list."""
    if spec is None:
        return []
    return [spec] if isinstance(spec, str | Path) else list(spec)
