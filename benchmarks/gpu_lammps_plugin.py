"""pair_style equimol on a GPU: the plugin against the calculator, then its throughput (one rank, one GPU).

    python3 benchmarks/gpu_lammps_plugin.py [--device cuda] [--sizes 4000 32000] [--out DIR] [--model main|tiny]

Run by ``bash benchmarks/gpu_run.sh plugin`` on the GPU machine (see benchmarks/GPU_RUN.md); on a
CPU (``--device cpu``) it is a dry run of the same steps. Steps, each recorded in
``DIR/gpu_lammps_plugin_<device name>.json`` as soon as it ends (a run cut short keeps what it did):

1. ``build``: ``equimol lammps build-plugin`` against this machine's torch (seconds);
2. ``compile``: one random float32 model (benchmarks/lammps_scaling.py's ``main`` architecture, Cu
   and Au) compiled for the device with ``--target lammps`` (seconds);
3. ``check``: one force evaluation of a rattled, sheared 108-atom Cu/Au box through the plugin (in
   this process, one rank) against the calculator with the eager model on the same device: energy,
   forces and pressure, float32 tolerance 1e-4 of each quantity's largest magnitude (``passed``);
4. ``throughput``: NVE atom-steps per second of the plugin and of ASE's VelocityVerlet with the
   calculator, per box size (``--atom-steps`` atoms x steps per run, after 2 warm-up steps).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import check_outputs
from lammps_scaling import ELEMENTS, MAIN, TINY, box

TOLERANCE = 1e-4


def result_path(record: dict, out: Path) -> Path:
    name = record["machine"].get("gpu", record["machine"]["device"]).replace(" ", "_")
    return out / f"gpu_lammps_plugin_{name}.json"


def write(record: dict, out: Path) -> None:
    path = result_path(record, out)
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}", flush=True)


def open_plugin(atoms, plugin: Path, model: Path):
    from equimol.lammps import create_box_from_atoms, load_lammps, plugin_commands

    lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string("units metal\natom_style atomic\natom_modify map yes\nnewton on")
    create_box_from_atoms(lmp, atoms, ELEMENTS)
    lmp.commands_string(plugin_commands(model, ELEMENTS, plugin=plugin))
    lmp.commands_string(
        "timestep 0.001\nneighbor 1.0 bin\nfix nve all nve\nthermo_style custom step pe pxx pyy pzz pxy pxz pyz"
    )
    lmp.commands_string("thermo_modify norm no\nthermo 1000")
    return lmp


def check(plugin: Path, package: Path, model, device: str) -> dict:
    from ase import units
    from ase.build import bulk

    from equimol.calculator import EquimolCalculator

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((3, 3, 3))
    atoms.numbers[::4] = 79
    cell = atoms.get_cell()[:]
    cell[1, 0] += 0.1 * cell[1, 1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=1)
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
    xx, yy, zz, yz, xz, xy = -atoms.get_stress() / units.bar
    eager = {
        "energy": np.array(atoms.get_potential_energy()),
        "forces": atoms.get_forces(),
        "pressure": np.array([xx, yy, zz, xy, xz, yz]),
    }
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
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    synchronize()
    start = time.perf_counter()
    lmp.command(f"run {steps} pre no post no")
    synchronize()
    plugin_seconds = time.perf_counter() - start
    lmp.close()
    atoms.calc = EquimolCalculator(model, device=device)
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.run(2)
    synchronize()
    start = time.perf_counter()
    dynamics.run(steps)
    synchronize()
    ase_seconds = time.perf_counter() - start
    return {
        "atoms": len(atoms),
        "steps": steps,
        "plugin_atom_steps_per_s": len(atoms) * steps / plugin_seconds,
        "ase_calculator_atom_steps_per_s": len(atoms) * steps / ase_seconds,
    }


def main() -> None:
    from equimol.lammps_plugin import build_plugin

    from equimol.models import build_model
    from equimol.pt2_model import compile_model
    from equimol.utils.machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the run) or cpu (a dry run)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 32000], help="atoms per box (about)")
    parser.add_argument("--atom-steps", type=int, default=400000, help="atoms x timed steps per run")
    parser.add_argument("--model", choices=("main", "tiny"), default="main", help="model architecture")
    parser.add_argument("--out", default="benchmarks", help="folder of the JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace the JSON if it exists")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"machine": describe_machine(args.device), "model": args.model, "dtype": "float32", "sections": {}}
    check_outputs([result_path(record, out)], args.overwrite)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        plugin = build_plugin(cache=Path(folder) / "cache")
        record["sections"]["build"] = {"seconds": time.perf_counter() - start}
        write(record, out)
        config = {**(MAIN if args.model == "main" else TINY), "species": ELEMENTS, "seed": 0, "dtype": "float32"}
        model = build_model(config).to(args.device).eval()
        start = time.perf_counter()
        package = compile_model(model, Path(folder) / "plugin.pt2", target="lammps")
        record["sections"]["compile"] = {"seconds": time.perf_counter() - start}
        write(record, out)
        record["sections"]["check"] = check(plugin, package, model, args.device)
        write(record, out)
        record["sections"]["throughput"] = []
        for wanted in args.sizes:
            row = throughput(plugin, package, model, args.device, wanted, args.atom_steps)
            record["sections"]["throughput"].append(row)
            print(row, flush=True)
            write(record, out)


if __name__ == "__main__":
    main()
