"""MACE energy+forces time on the water boxes of ``gpu_kernels.py`` (run by it in a subprocess).

    python gpu_mace.py BOXES.extxyz [--device cuda] [--channels 32] [--lmax 2] [--dtype float32]

mace-torch pins e3nn 0.4.4 and equimol needs e3nn >= 0.5, so this script runs under its own Python
path and imports nothing of equimol; the boxes come as one extended-XYZ file written by the parent.

Series: ``mace[e3nn]`` (plain e3nn) and ``mace[cueq]`` (the same weights converted by MACE's
``convert_e3nn_cueq``, ``ir_mul`` layout, when cuequivariance-torch imports); both energies are
recorded, so a cuEquivariance energy that departs from e3nn's (mace #1298) shows. The model is a seeded random
ScaleShiftMACE, 2 interactions, hidden ``C x (0e + 1o + ... + L)``, spherical harmonics up to
``L``, correlation 3, cutoff 5 Å, elements H and O. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit

import ase.io
import numpy as np
import torch


def build_mace(channels: int, lmax: int):
    from e3nn import o3
    from mace import modules

    hidden = " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=lmax, interaction_cls=interaction,
        interaction_cls_first=interaction, num_interactions=2, num_elements=2, hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(2), avg_num_neighbors=20.0, atomic_numbers=[1, 8],
        correlation=3, gate=torch.nn.functional.silu, atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )  # fmt: skip


def batch_of(atoms, device, dtype):
    from mace import data, tools
    from mace.tools import torch_geometric

    table = tools.AtomicNumberTable([1, 8])
    graph = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=table, cutoff=5.0)
    batch = torch_geometric.batch.Batch.from_data_list([graph]).to(device)
    return {k: (v.to(dtype) if torch.is_floating_point(v) else v) for k, v in batch.to_dict().items()}


def energy_forces_seconds(model, batch, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds of ``repeats`` energy+forces calls after one untimed call, and the energy."""

    def call():  # the device is idle when a call starts: the previous one synchronized at its end
        out = model(batch, training=False, compute_force=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    energy = float(call()["energy"].detach().sum())
    return statistics.median(timeit.repeat(call, number=1, repeat=repeats)), energy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("boxes", help="extended-XYZ file of the water boxes")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--lmax", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_default_dtype(dtype)  # MACE builds its constants in the default dtype; this process is ours
    torch.manual_seed(0)  # the same random weights in every run
    import mace

    models = {"mace[e3nn]": build_mace(args.channels, args.lmax).to(device)}
    try:
        import cuequivariance_torch  # noqa: F401

        cueq_note = "cuequivariance-torch importable"
        # The same weights through cuEquivariance (MACE's own converter), so the energies must agree.
        from mace.cli.convert_e3nn_cueq import run as e3nn_to_cueq

        models["mace[cueq]"] = e3nn_to_cueq(models["mace[e3nn]"], device=str(device), return_model=True).to(device)
    except ImportError as error:
        cueq_note = f"mace[cueq] skipped: {error}"
    rows = []
    for atoms in ase.io.read(args.boxes, index=":"):
        try:
            batch = batch_of(atoms, device, dtype)
        except Exception as error:  # noqa: BLE001
            rows.append({"atoms": len(atoms), "error": repr(error)[:300]})
            continue
        for label, model in models.items():
            row = {"label": label, "atoms": len(atoms)}
            try:
                seconds, energy = energy_forces_seconds(model, batch, device, args.repeats)
                row |= {"edges": int(batch["edge_index"].shape[1]), "energy_forces_s": seconds, "energy": energy}
            except Exception as error:  # noqa: BLE001 - out of memory at 100k atoms, say
                row["error"] = repr(error)[:300]
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps({"mace_version": mace.__version__, "cueq": cueq_note, "dtype": args.dtype, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
