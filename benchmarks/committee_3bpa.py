"""Committee uncertainty on 3BPA: spread of 3 members (seeds) on test_300K (in-domain) and test_600K (hotter).

Train first (one thread, nice, short budget per member)::

    nice -n 5 equimol train configs/3bpa_quick.yaml 'trainer.committee_seeds=[0,1,2]' \\
        trainer.max_steps=400 trainer.max_time=1500 trainer.early_stopping_patience=null \\
        trainer.run_dir=runs/committee_3bpa_s400 trainer.test_after_fit=false trainer.progress_bar=false

then ``nice -n 5 python benchmarks/committee_3bpa.py runs/committee_3bpa_s400`` evaluates every member
on every 4th frame of both test sets (batched, float64) and writes ``--json`` (default
``benchmarks/committee_3bpa.json``, replaced only with ``--overwrite``; and
prints the table of ``committee_3bpa.md``): per set the committee mean's errors, each member's errors, and the
spread (population standard deviation across members, :mod:`equimol.committee`) of energies and force components.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from _common import SHARED_DATA, markdown_table, parse_json_out, strided_loader
from equimol.train.checkpoints import read_checkpoint
from equimol.train.evaluate import evaluate
from scipy.stats import spearmanr

from equimol.committee import spread
from equimol.export import load_model
from equimol.utils.machine import describe_machine, machine_label

DATA = SHARED_DATA / "3bpa"
SETS = ("test_300K", "test_600K")
STRIDE = 4  # every 4th frame of each test set: CPU time on the shared 2-core machine (frames are MD snapshots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/committee_3bpa_s400", help="the committee's run folder")
    args = parse_json_out(parser, flag="--json", default=Path(__file__).with_suffix(".json"))
    torch.set_num_threads(1)
    members = sorted(Path(args.run_dir).glob("member_*"), key=lambda path: int(path.name.split("_")[1]))
    models = [load_model(member / "model.pt") for member in members]
    results: dict = {
        "machine": machine_label(describe_machine()), "members": [member.name for member in members],
        "training_steps": [int(read_checkpoint(m / "checkpoints" / "last.ckpt")["global_step"]) for m in members],
        "test_stride": STRIDE, "sets": {},
    }  # fmt: skip
    for name in SETS:
        loader = strided_loader(DATA / f"{name}.xyz", models[0], STRIDE)
        reports = [evaluate(model, loader) for model in models]
        energies = np.stack([r.arrays["energy_pred"] for r in reports])  # [M, N] eV
        forces = np.stack([r.arrays["forces_pred"] for r in reports])  # [M, 3 n_total] eV/Å
        natoms = reports[0].arrays["natoms"]
        energy_ref, forces_ref = reports[0].arrays["energy_ref"], reports[0].arrays["forces_ref"]
        mean_energy, mean_forces = energies.mean(axis=0), forces.mean(axis=0)
        energy_spread, force_spread = spread(energies), spread(forces)
        energy_error = np.abs(mean_energy - energy_ref)
        force_error = np.abs(mean_forces - forces_ref)
        results["sets"][name] = {
            "num_structures": int(len(energy_ref)),
            "committee_energy_rmse_meV_per_atom": float(np.sqrt(np.mean(((mean_energy - energy_ref) / natoms) ** 2)))
            * 1e3,
            "committee_forces_rmse_meV_per_A": float(np.sqrt(np.mean((mean_forces - forces_ref) ** 2))) * 1e3,
            "member_energy_rmse_meV_per_atom": [r.metrics["energy_per_atom_rmse"] * 1e3 for r in reports],
            "member_forces_rmse_meV_per_A": [r.metrics["forces_rmse"] * 1e3 for r in reports],
            "energy_spread_mean_meV": float(energy_spread.mean()) * 1e3,
            "energy_spread_median_meV": float(np.median(energy_spread)) * 1e3,
            "forces_spread_rms_meV_per_A": float(np.sqrt(np.mean(force_spread**2))) * 1e3,
            "spearman_energy_spread_vs_error": float(spearmanr(energy_spread, energy_error).statistic),
            "spearman_force_spread_vs_error": float(spearmanr(force_spread, force_error).statistic),
        }
        print(name, json.dumps(results["sets"][name], indent=1), flush=True)
    low, high = (results["sets"][name] for name in SETS)
    results["spread_larger_on_600K"] = {
        "energy": high["energy_spread_mean_meV"] > low["energy_spread_mean_meV"],
        "forces": high["forces_spread_rms_meV_per_A"] > low["forces_spread_rms_meV_per_A"],
    }
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out = args.json
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    header = ["set", "structures", "committee E RMSE (meV/atom)", "committee F RMSE (meV/Å)", "member F RMSE (meV/Å)"]
    header += ["mean E spread (meV)", "RMS F spread (meV/Å)", "rank corr. F spread vs error"]
    rows = []
    for name, r in results["sets"].items():
        rows.append([name, r["num_structures"], f"{r['committee_energy_rmse_meV_per_atom']:.2f}"])
        rows[-1] += [f"{r['committee_forces_rmse_meV_per_A']:.1f}"]
        rows[-1] += [", ".join(f"{x:.1f}" for x in r["member_forces_rmse_meV_per_A"])]
        rows[-1] += [f"{r[key]:.1f}" for key in ("energy_spread_mean_meV", "forces_spread_rms_meV_per_A")]
        rows[-1] += [f"{r['spearman_force_spread_vs_error']:.2f}"]
    print("\n".join(markdown_table(header, rows)))


if __name__ == "__main__":
    main()
