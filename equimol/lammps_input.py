"""Run a LAMMPS input script whose ``fix external pf/callback`` is served by :class:`~equimol.lammps.EquimolFix`.

``equimol lammps MODEL INPUT --elements Cu`` calls :func:`run_input`: the script runs up to its ``fix ...
external pf/callback 1 1`` line, the coupling is attached to that fix, and the rest of the script runs.
Relative paths in the script (``read_data``, ``include``) resolve beside it, as with ``lmp -in``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from equimol.lammps import EquimolFix, LammpsCouplingError


def run_input(
    lmp,
    input_path: str | Path,
    model: str | Path | nn.Module,
    elements: Sequence[str | int],
    fix_id: str = "equimol",
    comm=None,
    **options,
) -> EquimolFix:
    """Run a LAMMPS input script whose ``fix <fix_id> ... external pf/callback`` is served by equimol.

    The script runs up to and including the line defining the fix, the coupling is attached, then
    the rest runs. Commands that re-read the file (``jump SELF``, loops) are not supported.
    """
    path = Path(input_path)
    if not path.is_file():
        raise FileNotFoundError(f"LAMMPS input {str(path)!r} does not exist")
    lines = path.read_text().splitlines()
    split = None
    for index, line in enumerate(lines):
        words = line.split("#", 1)[0].split()
        if len(words) >= 5 and words[0] == "fix" and words[1] == fix_id and words[3] == "external":
            split = index + 1
            break
    if split is None:
        raise LammpsCouplingError(f"{path}: no 'fix {fix_id} all external pf/callback 1 1' line")
    words = lines[split - 1].split("#", 1)[0].split()
    if words[4:6] != ["pf/callback", "1"]:
        raise LammpsCouplingError(
            f"{path}, line {split}: '{' '.join(words)}': equimol needs 'external pf/callback 1 1', a callback at "
            "every step (with pf/callback N, LAMMPS integrates N - 1 of every N steps with stale forces)"
        )
    if isinstance(model, (str, Path)):
        model = Path(model).resolve()  # before the working folder changes
    cwd = os.getcwd()
    os.chdir(path.parent)  # relative read_data/include paths resolve beside the script, as with lmp -in
    try:
        lmp.commands_string("\n".join(lines[:split]))
        coupling = EquimolFix(lmp, model, elements, fix_id=fix_id, comm=comm, **options)
        try:
            lmp.commands_string("\n".join(lines[split:]))
        except Exception:
            coupling.raise_if_failed()  # the model's error, not "fix halt condition met"
            raise
        coupling.raise_if_failed()
    finally:
        os.chdir(cwd)
    return coupling
