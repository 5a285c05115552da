"""Cells and positions that used to kill the process inside vesin (SIGFPE, no message) are refused with one error
naming the structure, in every entry point that builds a neighbor list (issue 31, "no input crashes the process").

Each case runs in a child process forked from one that has imported equimol (``run_cases``), so that a crash fails
its own test instead of the test session; the child reports the refusal's message through a file. The command-line
entry points (``predict``, ``train``) have their cases in ``tests/test_cli_errors.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from equimol.structure_checks import StructureError, check_before_neighbor_list, vesin_bins

# name -> (how to build and evaluate it, in the child; words its message must contain)
CASES = {
    "calculator_nan_cell": ("calculator(cell=[[3.6, 0, 0], [0, np.nan, 0], [0, 0, 3.6]])", ["Cu2", "non-finite"]),
    "calculator_long_cell": ("calculator(cell=np.diag([3.6, 1e6, 3.6]))", ["Cu2", "lopsided"]),
    "calculator_1e300_vector": ("calculator(cell=[[1e300, 0, 0], [0, 3.6, 0], [0, 0, 3.6]])", ["Cu2"]),
    "calculator_far_molecule": ("calculator(positions=[[0, 0, 0], [0, 0, 1e6]], pbc=False)", ["Cu2", "lopsided"]),
    "calculator_slab_far_atom": (
        "calculator(positions=[[0, 0, 0], [0, 0, 5e4]], cell=np.diag([20, 20, 10]), pbc=[True, True, False])",
        ["Cu2", "grid bins"],
    ),
    "calculator_skewed_cell": ("calculator(cell=[[3.6, 0, 0], [1e7, 3.6, 0], [0, 0, 3.6]])", ["grid bins"]),
    "calculator_no_atoms": ("calculator(positions=np.zeros((0, 3)), numbers=[])", ["no atoms"]),
    "torchsim_long_cell": ("torchsim(np.diag([3.6, 1e6, 3.6]))", ["EquimolModel: system 1", "lopsided"]),
    "lammps_long_box": ("lammps(np.diag([3.6, 1e6, 3.6]))", ["LAMMPS box", "lopsided"]),
}

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import torch
    from ase import Atoms
    from equimol.calculator import EquimolCalculator
    from test_calculator import small_model

    torch.set_num_threads(1)
    MODEL = small_model([29, 79])

    def calculator(positions=((0, 0, 0), (1.8, 1.8, 0)), numbers=(29, 29), cell=np.eye(3) * 3.6, pbc=True):
        atoms = Atoms(numbers=list(numbers), positions=np.asarray(positions, float), cell=np.asarray(cell), pbc=pbc)
        atoms.calc = EquimolCalculator(MODEL)
        atoms.get_potential_energy()

    def torchsim(cell):
        import torch_sim as ts
        from equimol.torchsim import EquimolModel

        good = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=np.eye(3) * 3.6, pbc=True)
        bad = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=cell, pbc=True)
        model = EquimolModel(MODEL, dtype=torch.float64)
        model(ts.io.atoms_to_state([good, bad], model.device, model.dtype))

    def lammps(cell):
        from lammps_case import open_lammps
        from equimol.lammps import EquimolFix

        atoms = Atoms("CuAu", positions=[[0, 0, 0], [1.8, 1.8, 1.0]], cell=cell, pbc=True)
        lmp = open_lammps(atoms)
        coupling = EquimolFix(lmp, MODEL, ["Cu", "Au"])
        try:
            lmp.command("run 0")
        except Exception:
            pass
        coupling.raise_if_failed()

    cases, report = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for name, code in cases.items():
        pid = os.fork()
        if pid == 0:
            try:
                eval(code)
                message = "no error"
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
            with open(f"{report}.{name}", "w") as handle:
                handle.write(message)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        results[name] = os.waitstatus_to_exitcode(status)
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str]]:
    folder = tmp_path_factory.mktemp("cells")
    report = folder / "message"
    tests = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({name: code for name, (code, _) in CASES.items()}), str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tests,
        env={**__import__("os").environ, "PYTHONPATH": str(tests), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        name: (statuses[name], Path(f"{report}.{name}").read_text() if Path(f"{report}.{name}").exists() else "")
        for name in CASES
    }


@pytest.mark.parametrize("name", list(CASES))
def test_the_structure_is_refused_without_a_crash(name: str, outcomes) -> None:
    status, message = outcomes[name]
    assert status == 0, f"{name}: the process died with status {status} (a negative status is the signal)"
    assert "\n" not in message.strip(), message
    for word in CASES[name][1]:
        assert word in message, (word, message)
    assert message.startswith(("StructureError", "LammpsCouplingError")), message


def test_ordinary_structures_pass_every_check() -> None:
    """Bulk, slab, molecule, a big box and a thin periodic cell with a long cutoff are all accepted."""
    import ase.build

    structures = [
        ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3),
        ase.build.fcc111("Cu", size=(3, 3, 4), vacuum=15.0),
        ase.build.molecule("C6H6"),
        ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(70),  # 1.4 million atoms' cell, 252 Å
        ase.build.bulk("Si", "diamond", a=5.43),  # primitive, skewed, smaller than the cutoff
    ]
    for atoms in structures:
        check_before_neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 6.0)


def test_the_bin_count_follows_vesins_rule() -> None:
    """vesin's bins: floor(d / r_c) per direction, scaled to 1e5 in all; a direction rounded to 0 is refused."""
    distance, bins, _ = vesin_bins(np.zeros((1, 3)), np.diag([11.0, 22.0, 33.0]), np.ones(3, bool), 5.5)
    np.testing.assert_allclose(distance, [11, 22, 33])
    np.testing.assert_array_equal(bins, [2, 4, 6])
    _, bins, _ = vesin_bins(np.zeros((1, 3)), np.diag([3.6, 1e6, 3.6]), np.ones(3, bool), 5.5)
    assert bins.min() == 0
    _, bins, _ = vesin_bins(np.zeros((1, 3)), np.diag([3.6, 1e5, 3.6]), np.ones(3, bool), 5.5)
    assert bins.min() == 1  # 18181 bins in all: no rescaling, no crash (measured)
    with pytest.raises(StructureError, match=r"pbc=\[True, True, True\]"):
        check_before_neighbor_list(np.zeros((1, 3)), np.diag([3.6, 1e6, 3.6]), np.ones(3, bool), 5.5)
