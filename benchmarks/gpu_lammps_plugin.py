"""pair_style equimol on a GPU: the plugin against the calculator, then its throughput (one rank, one GPU).

    python3 benchmarks/gpu_lammps_plugin.py [--device cuda] [--sizes 4000 32000] [--out DIR] [--model main|tiny]

Run by ``bash benchmarks/gpu_run.sh plugin`` on the GPU machine (see benchmarks/GPU_RUN.md); on a
CPU (``--device cpu``) it is a dry run of the same steps. Sections, each recorded with its seconds (or
its error) in ``DIR/gpu_lammps_plugin_<device name>.json`` as soon as it ends (a run cut short keeps
what it did):

1. ``build``: ``equimol lammps build-plugin`` against this machine's torch (the plugin's path);
2. ``compile``: one random float32 model (benchmarks/lammps_scaling.py's ``main`` architecture, Cu
   and Au) compiled for the device with ``--target lammps`` (the package's path);
3. ``check``: one force evaluation of a rattled, sheared 108-atom Cu/Au box through the plugin (in
   this process, one rank) against the calculator with the eager model on the same device: energy,
   forces and pressure, float32 tolerance 1e-4 of each quantity's largest magnitude (``passed``);
4. ``throughput_<atoms>``: NVE atom-steps per second of the plugin and of ASE's VelocityVerlet with
   the calculator, per box size (``--atom-steps`` atoms x steps per run, after 2 warm-up steps).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import SectionRecord, check_outputs, device_tag
from equimol.lammps_plugin import build_plugin
from lammps_scaling import ELEMENTS, MAIN, TINY, box

from equimol.microbench.systems import cu_au_box, open_lammps
from equimol.microbench.tp import timed
from equimol.models import build_model
from equimol.pt2_model import compile_model
from equimol.utils.machine import describe_machine

TOLERANCE = 1e-4


def open_plugin(atoms, plugin: Path, package: Path):
    """LAMMPS holding ``atoms`` with ``pair_style equimol`` (``package`` through the ``plugin`` library)."""
    from equimol.lammps import plugin_commands

    return open_lammps(atoms, elements=ELEMENTS, pair_style=plugin_commands(package, ELEMENTS, plugin=plugin))


def check(plugin: Path, package: Path, model, device: str) -> dict:
    from ase import units

    from equimol.calculator import EquimolCalculator

    atoms = cu_au_box(tilt=0.1, temperature_k=0.0, repeat=3)
    lmp = open_plugin(atoms, plugin, package)
    lmp.command("run 0")
    count = len(atoms)
    plugin_values = {
        "energy": np.array(lmp.get_thermo("pe")),
        "forces": np.asarray(lmp.gather_atoms("f", 1, 3)).reshape(count, 3),
        "pressure": np.array([lmp.get_thermo(name) for name in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")]),
    }
    lmp.close()
    atoms.calc = EquimolCalculator(model, device=device)
    pressure = -atoms.get_stress(voigt=False)[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]] / units.bar  # LAMMPS order
    eager = {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces(), "pressure": pressure}
    rows = {}
    for key, reference in eager.items():
        difference = float(np.abs(plugin_values[key] - reference).max())
        magnitude = float(np.abs(reference).max())
        rows[key] = {"difference": difference, "magnitude": magnitude, "passed": difference <= TOLERANCE * magnitude}
    return {"atoms": count, "tolerance_relative": TOLERANCE, "quantities": rows,
            "passed": all(row["passed"] for row in rows.values())}  # fmt: skip


def throughput(plugin: Path, package: Path, model, device: str, wanted: int, atom_steps: int) -> dict:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from equimol.calculator import EquimolCalculator

    atoms = box(wanted)
    steps = max(3, round(atom_steps / len(atoms)))
    lmp = open_plugin(atoms, plugin, package)
    lmp.command("run 2")
    plugin_seconds = timed(lambda: lmp.command(f"run {steps} pre no post no"), torch.device(device))
    lmp.close()
    atoms.calc = EquimolCalculator(model, device=device)
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.run(2)
    ase_seconds = timed(lambda: dynamics.run(steps), torch.device(device))
    return {"atoms": len(atoms), "steps": steps, "plugin_atom_steps_per_s": len(atoms) * steps / plugin_seconds,
            "ase_calculator_atom_steps_per_s": len(atoms) * steps / ase_seconds}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the run) or cpu (a dry run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 32000], help="atoms per box (about)")
    parser.add_argument("--atom-steps", type=int, default=400000, help="atoms x timed steps per run")
    parser.add_argument("--model", choices=("main", "tiny"), default="main", help="model architecture")
    parser.add_argument("--out", default="benchmarks", help="folder of the JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace the JSON if it exists")
    args = parser.parse_args()
    record = {"machine": describe_machine(args.device), "model": args.model, "dtype": "float32"}
    path = Path(args.out) / f"gpu_lammps_plugin_{device_tag(record['machine'])}.json"
    check_outputs([path], args.overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = SectionRecord(record, path)
    config = {**(MAIN if args.model == "main" else TINY), "species": ELEMENTS, "seed": 0, "dtype": "float32"}
    model = build_model(config).to(args.device).eval()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        plugin = run.section("build", lambda: str(build_plugin(cache=folder / "cache")))
        compiled = lambda: str(compile_model(model, folder / "plugin.pt2", target="lammps"))  # noqa: E731
        package = plugin and run.section("compile", compiled)
        if package is None:
            print(f"no plugin or no package: see {path}")
            return 1
        files = (Path(plugin), Path(package), model, args.device)
        run.section("check", check, *files)
        for wanted in args.sizes:
            print(run.section(f"throughput_{wanted}", throughput, *files, wanted, args.atom_steps), flush=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
