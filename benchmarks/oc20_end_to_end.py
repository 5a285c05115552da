"""OC20 end to end: evaluate a model trained with configs/oc20_quick.yaml on the held-out trajectories, and relax.

For each held-out trajectory of the config (``data.val``, used for checkpoint selection and the
learning-rate schedule, and ``data.test``, never seen during training) this script

1. runs ``equimol eval MODEL TRAJ --forces-on free`` and keeps its metrics (energy MAE/RMSE per atom,
   force-component RMSE/MAE on the free atoms);
2. recomputes the same figures frame by frame through :class:`equimol.calculator.EquimolCalculator`
   (a check of the eval path: both must agree);
3. scores three trivial baselines on the same frames, all with zero forces: the linear reference alone
   (``sum coeff[Z]`` of ``data.element_references``); the linear reference plus one per-atom constant
   fitted on the training trajectories (the mean per-atom residual); and the model's own composition
   term, ``sum (e0s[Z] + energy_shift[Z])`` from the run's resolved ``config.yaml`` (what the model
   predicts before its interactions add anything);
4. relaxes the trajectory's first frame with the calculator (ASE BFGS, the trajectory's FixAtoms kept)
   and compares the relaxed energy with DFT's last frame, and the relaxed positions with DFT's last
   frame (RMSD over the free atoms, minimum image).

    python benchmarks/oc20_end_to_end.py RUN_DIR [--json benchmarks/oc20_end_to_end.json --overwrite] [--work DIR]

``RUN_DIR`` is the run folder of ``equimol train configs/oc20_quick.yaml``; ``--work`` keeps the eval
JSON and parity plots (default: a temporary folder, removed at the end).

Energies in eV, per-atom errors in meV/atom, forces in meV/Å, positions in Å. CPU time is this process's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
import yaml
from _common import ROOT, equimol_command, parse_json_out
from ase.constraints import FixAtoms
from ase.geometry import find_mic
from ase.optimize import BFGS
from equimol.datasets.references import load_element_references
from equimol.train.checkpoints import read_checkpoint

from equimol.calculator import EquimolCalculator
from equimol.utils.machine import describe_machine, machine_label


def _paths(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def free_mask(atoms: ase.Atoms) -> np.ndarray:
    """Boolean mask, shape (n_atoms,): True where no FixAtoms constraint holds the atom."""
    mask = np.ones(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.index] = False
    return mask


def frame_errors(predicted: list[tuple[float, np.ndarray]], frames: list[ase.Atoms]) -> dict[str, float]:
    """Energy-per-atom MAE/RMSE (meV/atom), free-atom force-component RMSE/MAE (meV/Å), offset-free energy RMSE.

    Every frame of one trajectory has the same composition, so the energy errors above are mostly one
    constant offset. ``energy_offset_free_rmse`` (meV per structure) is the RMSE of the energy error after
    its mean over the frames is taken off: how well the energy differences along the relaxation are
    predicted (a constant prediction scores the spread of the DFT energies).

    Args:
        predicted: per frame, (energy in eV, forces of shape (n_atoms, 3) in eV/Å).
        frames: the labelled frames, same order.
    """
    per_atom, components, total = [], [], []
    for (energy, forces), atoms in zip(predicted, frames, strict=True):
        total.append(energy - atoms.get_potential_energy())
        per_atom.append(total[-1] / len(atoms))
        reference = atoms.get_forces(apply_constraint=False)
        components.append((forces - reference)[free_mask(atoms)].ravel())
    per_atom, components = np.array(per_atom), np.concatenate(components)
    return {
        "energy_per_atom_mae": 1e3 * float(np.abs(per_atom).mean()),
        "energy_per_atom_rmse": 1e3 * float(np.sqrt((per_atom**2).mean())),
        "forces_rmse": 1e3 * float(np.sqrt((components**2).mean())),
        "forces_mae": 1e3 * float(np.abs(components).mean()),
        "energy_offset_free_rmse": 1e3 * float(np.std(total)),
    }


def run_eval(model: Path, trajectory: Path, work: Path) -> dict:
    """``equimol eval`` on one trajectory (free-atom forces); its metrics converted to meV units."""
    out = work / f"eval_{trajectory.stem}.json"
    command = [equimol_command(), "eval", str(model), str(trajectory), "--forces-on", "free", "--quiet"]
    command += ["--json", str(out), "--plot", str(work / f"eval_{trajectory.stem}_parity.png")]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    written = json.loads(out.read_text())
    keys = ("energy_per_atom_mae", "energy_per_atom_rmse", "forces_rmse", "forces_mae")
    return {"command": " ".join(["equimol", *command[1:]]), **{key: 1e3 * written["metrics"][key] for key in keys},
            "num_frames": written["num_structures"]}  # fmt: skip


def relax(calculator: EquimolCalculator, frames: list[ase.Atoms], fmax: float, steps: int) -> dict:
    """Relax ``frames[0]`` with BFGS under its FixAtoms; compare with DFT's last frame."""
    initial, final = frames[0], frames[-1]
    atoms = initial.copy()  # keeps the FixAtoms constraint
    atoms.calc = calculator
    free = free_mask(atoms)
    model_initial = atoms.get_potential_energy()
    start = time.process_time()
    optimizer = BFGS(atoms, logfile=None)
    converged = bool(optimizer.run(fmax=fmax, steps=steps))
    cpu = time.process_time() - start
    relaxed = atoms.get_potential_energy()

    def rmsd(positions: np.ndarray) -> float:
        displacement, _ = find_mic(positions - final.positions, final.cell, final.pbc)
        return float(np.sqrt((displacement[free] ** 2).sum(axis=1).mean()))

    model_at_dft_final = calculator.get_potential_energy(final)
    moved_fixed = np.linalg.norm(atoms.positions[~free] - initial.positions[~free], axis=1).max(initial=0.0)
    dft_initial, dft_final = initial.get_potential_energy(), final.get_potential_energy()
    return {
        "optimizer": f"ase.optimize.BFGS, fmax {fmax} eV/Å on free atoms, at most {steps} steps",
        "converged": converged, "steps": int(optimizer.nsteps), "cpu_s": cpu, "num_atoms": len(atoms),
        "num_free": int(free.sum()), "dft_initial_energy": dft_initial, "dft_final_energy": dft_final,
        "dft_relaxation_energy": dft_final - dft_initial,
        "model_initial_energy": model_initial, "model_relaxed_energy": relaxed,
        "model_relaxation_energy": relaxed - model_initial, "relaxed_minus_dft_final": relaxed - dft_final,
        "model_at_dft_final_minus_dft_final": model_at_dft_final - dft_final,
        "rmsd_relaxed_vs_dft_final": rmsd(atoms.positions), "rmsd_initial_vs_dft_final": rmsd(initial.positions),
        "max_fixed_atom_displacement": float(moved_fixed),
        "max_free_force_after": float(np.linalg.norm(atoms.get_forces()[free], axis=1).max()),
    }  # fmt: skip


def training_summary(run_dir: Path) -> dict:
    """Epochs and optimizer steps of the run (its last checkpoint) and its own test-split metrics if it wrote them."""
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    summary = {"run_dir": str(run_dir), "epochs_started": checkpoint["epoch"] + 1, "steps": checkpoint["global_step"]}
    test_metrics = run_dir / "test_metrics.json"
    if test_metrics.is_file():
        summary["test_metrics"] = json.loads(test_metrics.read_text())["metrics"]
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run every part on the run folder's model (see the module docstring); write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder of `equimol train configs/oc20_quick.yaml`")
    parser.add_argument("--model", type=Path, help="model file to test (default run_dir/model.pt)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "oc20_quick.yaml")
    parser.add_argument("--work", type=Path, help="folder for the eval JSON and plots (default: a temporary one)")
    parser.add_argument("--fmax", type=float, default=0.05, help="BFGS stop, eV/Å")
    parser.add_argument("--steps", type=int, default=1000, help="BFGS step limit")
    args = parse_json_out(parser, argv, flag="--json", default=ROOT / "benchmarks" / "oc20_end_to_end.json")
    with tempfile.TemporaryDirectory(prefix="oc20_end_to_end_") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        return evaluate(args, argv, work)


def evaluate(args: argparse.Namespace, argv: list[str] | None, work: Path) -> int:
    """The parts of the module docstring, with eval outputs in ``work``; writes ``args.json``."""
    torch.set_num_threads(1)
    config = yaml.safe_load(args.config.read_text())
    data = config["data"]
    data_dir = (args.config.parent / data["data_dir"]).resolve()
    model_path = args.model or args.run_dir / "model.pt"
    references = load_element_references(data_dir / data["element_references"])  # fairchem's linear reference
    load_before = os.getloadavg()
    start = time.process_time()

    residuals = []  # per-atom residual after the linear reference, every training frame
    for path in _paths(data["train"]):
        for atoms in ase.io.read(data_dir / path, ":"):
            residuals.append((atoms.get_potential_energy() - references.energy(atoms.numbers)) / len(atoms))
    shift = float(np.mean(residuals))

    resolved = yaml.safe_load((args.run_dir / "config.yaml").read_text())["model"]
    shifts = resolved["energy_shift"]  # a per-species mapping, or one number for every species
    composition = {
        int(z): e0 + (shifts[z] if isinstance(shifts, dict) else float(shifts)) for z, e0 in resolved["e0s"].items()
    }
    calculator = EquimolCalculator(model_path)
    held_out = {}
    for split in ("test", "val"):
        path = data_dir / _paths(data[split])[0]
        frames = ase.io.read(path, ":")
        record: dict = {"trajectory": str(Path(_paths(data[split])[0])), "num_frames": len(frames)}
        record["equimol_eval"] = run_eval(model_path, path, work)
        predicted = [(calculator.get_potential_energy(a), calculator.get_forces(a)) for a in frames]  # unconstrained
        record["calculator_check"] = frame_errors(predicted, frames)
        zero = [np.zeros((len(a), 3)) for a in frames]
        lin = [references.energy(a.numbers) for a in frames]
        record["baseline_linear_reference"] = frame_errors(list(zip(lin, zero, strict=True)), frames)
        shifted = [e + shift * len(a) for e, a in zip(lin, frames, strict=True)]
        record["baseline_linear_reference_plus_shift"] = frame_errors(list(zip(shifted, zero, strict=True)), frames)
        own = [sum(composition[z] for z in a.get_atomic_numbers().tolist()) for a in frames]
        record["baseline_model_composition"] = frame_errors(list(zip(own, zero, strict=True)), frames)
        record["relaxation"] = relax(calculator, frames, args.fmax, args.steps)
        held_out[split] = record
        print(json.dumps({split: record}, indent=2), flush=True)

    info = describe_machine("cpu")
    result = {
        "what": "configs/oc20_quick.yaml trained on 14 OC20 DFT relaxation trajectories, split by trajectory",
        "machine": machine_label(info), "machine_info": info,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "script_cpu_s": time.process_time() - start,
        "command": " ".join(["python", "benchmarks/oc20_end_to_end.py", *(argv or sys.argv[1:])]),
        "units": {"energy_per_atom": "meV/atom", "forces": "meV/Å", "energy": "eV", "rmsd": "Å"},
        "model": str(model_path), "training": training_summary(args.run_dir),
        "shift_per_atom_eV": shift, "num_training_frames": len(residuals), "held_out": held_out,
    }  # fmt: skip
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
