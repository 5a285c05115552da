"""How close do bonded atoms come, relative to their covalent radii? Chooses ZBL's default switch radii.

For every pair within 2.5 Å of every frame, the ratio ``r / (R_i + R_j)`` (ASE's covalent radii, the
radii ``equimol.nn.zbl`` scales): the smallest ratio per element pair, quantiles, and how many pairs
fall below a set of fractions. Data: 3BPA (train_300K, train_mixedT, test_300K, test_600K) and the
shipped OC20 DFT relaxation trajectories (all frames, and the relaxed last frame of each).

    python benchmarks/zbl_bond_ratios.py --data ../shared/data --out benchmarks/zbl_bond_ratios.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
from _common import SHARED_DATA, markdown_table, parse_json_out
from ase.data import chemical_symbols, covalent_radii

from equimol.graph import neighbor_list
from equimol.nn.zbl import INNER_FRACTION, OUTER_FRACTION

FRACTIONS = (0.5, 0.55, 0.6, 0.7, 0.75, 0.8, 0.85)


def pair_ratios(atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``r / (R_i + R_j)``, the pair's element codes and distances (Å) of every pair within 2.5 Å, once each."""
    sender, receiver, offsets = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 2.5)
    keep = sender < receiver
    sender, receiver, offsets = sender[keep], receiver[keep], offsets[keep]
    distance = np.linalg.norm(atoms.positions[receiver] - atoms.positions[sender] + offsets @ atoms.cell[:], axis=1)
    numbers = atoms.numbers
    pair = np.sort(np.stack([numbers[sender], numbers[receiver]], axis=1), axis=1)
    return distance / (covalent_radii[pair[:, 0]] + covalent_radii[pair[:, 1]]), pair, distance


def summarize(frames: list) -> dict:
    """Smallest ratio per element pair, quantiles and counts below :data:`FRACTIONS`."""
    ratios, closest = [], {}
    for atoms in frames:
        ratio, pair, distance = pair_ratios(atoms)
        ratios.append(ratio)
        for k in np.argsort(ratio):
            name = f"{chemical_symbols[pair[k, 0]]}-{chemical_symbols[pair[k, 1]]}"
            if name not in closest or ratio[k] < closest[name]["ratio"]:
                closest[name] = {"ratio": float(ratio[k]), "distance": float(distance[k])}
    ratios = np.concatenate(ratios)
    ordered = dict(sorted(closest.items(), key=lambda item: item[1]["ratio"]))
    return {
        "frames": len(frames), "pairs": int(ratios.size), "min_ratio": float(ratios.min()),
        "quantile_0.1%": float(np.quantile(ratios, 0.001)), "quantile_1%": float(np.quantile(ratios, 0.01)),
        "pairs_below": {str(f): int((ratios < f).sum()) for f in FRACTIONS},
        "closest_by_pair": dict(list(ordered.items())[:6]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    args = parse_json_out(parser, markdown=True)  # a Markdown table beside the JSON
    sets = {f"3BPA {name}": ase.io.read(args.data / "3bpa" / f"{name}.xyz", ":")
            for name in ("train_300K", "train_mixedT", "test_300K", "test_600K")}  # fmt: skip
    oc20 = sorted((args.data / "oc20" / "dft_relaxation_trajs_2020").glob("*.traj"))
    trajectories = [ase.io.read(path, ":") for path in oc20]
    sets["OC20 relaxations, all frames"] = [atoms for trajectory in trajectories for atoms in trajectory]
    sets["OC20 relaxations, relaxed (last) frames"] = [trajectory[-1] for trajectory in trajectories]
    results = {"default_fractions": [INNER_FRACTION, OUTER_FRACTION], "sets": {}}
    for name, frames in sets.items():
        results["sets"][name] = summarize(frames)
        print(name, json.dumps(results["sets"][name]["closest_by_pair"]), flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    header = ["data", "frames", "smallest ratio (pair, Å)", "0.1% quantile", "pairs below "]
    header[-1] += ", ".join(map(str, FRACTIONS))
    rows = []
    for name, summary in results["sets"].items():
        pair, closest = next(iter(summary["closest_by_pair"].items()))
        smallest = f"{summary['min_ratio']:.3f} ({pair}, {closest['distance']:.3f})"
        below = ", ".join(str(summary["pairs_below"][str(f)]) for f in FRACTIONS)
        rows.append([name, summary["frames"], smallest, f"{summary['quantile_0.1%']:.3f}", below])
    lines = [
        "# Closest pairs relative to the covalent-radius sum (ZBL switch radii)",
        "",
        f"Made by `benchmarks/zbl_bond_ratios.py`. Ratio `r / (R_i + R_j)` over every pair within 2.5 Å. ZBL's default "
        f"switch runs from {INNER_FRACTION} to {OUTER_FRACTION} of the sum (`equimol/nn/zbl.py`).",
        "",
        *markdown_table(header, rows),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
