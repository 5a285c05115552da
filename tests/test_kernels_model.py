"""The potential with ``tp_options: {kernel: triton}`` against the torch path, float64, Triton interpreter.

Both models come from the same config and seed, so their parameters are identical; only the
message passing differs (fused kernel vs gather/product/index_add). Tolerance ``1e-10`` (the
issue's): energy in eV, forces in eV/Å, max abs. The kernels only reorder sums (measured ~1e-14).
Training mode (forces with ``create_graph=True``) goes through the kernels' torch fallback for the
double backward; the gradient of a force loss with respect to the parameters is compared too
(relative to its largest entry, same 1e-10).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before equimol.kernels is imported

import ase.build  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from equimol.graph import atoms_to_graph  # noqa: E402
from equimol.models import build_model  # noqa: E402

TOL = 1e-10
RADIAL_CUTOFF = 3.0


def config(backend: str, kernel: str, deterministic: bool = False) -> dict:
    options = {"cp": {"cp_rank": "exact"}, "gaunt": {"strategy": "grid"}}[backend]
    return {
        "species": ["H", "C", "O"],
        "channels": 4,
        "lmax": 2,
        "num_layers": 2,
        "num_radial_basis": 4,
        "radial_cutoff": RADIAL_CUTOFF,
        "radial_mlp_hidden": [8],
        "readout_hidden": 4,
        "avg_num_neighbors": 4.0,
        "energy_scale": 100.0,  # eV: forces of order 1e-2 eV/Å at initialisation, so 1e-10 is a tight check
        "tp_backend": backend,
        "tp_options": {**options, "kernel": kernel, "deterministic": deterministic},
        "dtype": "float64",
        "seed": 1,
    }


def molecule_graph():
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms_to_graph(atoms, RADIAL_CUTOFF, torch.float64)


@pytest.mark.parametrize("backend, deterministic", [("gaunt", False), ("cp", True)])
def test_energy_and_forces_equal_torch_path(backend, deterministic):
    graph = molecule_graph()
    fused = build_model(config(backend, "triton", deterministic)).eval()
    plain = build_model(config(backend, "torch")).eval()
    assert all(m.tensor_product.kernel == "triton" for m in fused.interactions)
    got, expected = fused(graph), plain(graph)
    assert (got["energy"] - expected["energy"]).abs().max().item() <= TOL
    assert (got["forces"] - expected["forces"]).abs().max().item() <= TOL
    assert expected["forces"].abs().max().item() > 1e-3  # a rattled molecule: the check is not vacuous


def test_force_training_gradients_equal_torch_path():
    graph = molecule_graph()
    results = []
    for kernel in ("triton", "torch"):
        model = build_model(config("gaunt", kernel)).train()
        out = model(graph)
        loss = out["energy"].pow(2).sum() + out["forces"].pow(2).sum()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        results.append([torch.zeros(()) if g is None else g for g in grads])
    scale = max(1.0, max(g.abs().max().item() for g in results[1]))
    for a, b in zip(*results):
        assert (a - b).abs().max().item() <= TOL * scale
