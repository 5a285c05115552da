"""ASE calculator for equimol potentials: energy, forces, stress and per-atom energies.

>>> from equimol.calculator import EquimolCalculator
>>> atoms.calc = EquimolCalculator(model="runs/3bpa_quick/model.pt")   # doctest: +SKIP
>>> atoms.get_forces()                                                   # doctest: +SKIP

Properties: ``energy`` and ``free_energy`` (eV; equal, the model has no electronic entropy),
``forces`` (eV/Å), ``energies`` (per atom, eV) and, for periodic structures, ``stress`` (ASE Voigt
order xx, yy, zz, yz, xz, xy; eV/Å³; positive is tensile: ``stress = (1/V) dE/d(strain)``) and
per-atom ``stresses`` ``[n, 6]`` (same order and unit): ASE's intensive convention,
``stresses.sum(axis=0) == stress``, from the model's per-atom virials ``W_i`` (each edge's
``-r_e (x) dE/dr_e`` split half to each end, :mod:`equimol.models.potential`) as
``stresses_i = -sym(W_i) / V`` with ``V`` the volume of the whole cell; LAMMPS's ``compute
stress/atom`` under ``pair_style equimol`` is the same split (``-W_i`` in bar·Å³).

**Dispersion.** ``dispersion="d3"`` (with ``xc``, ``damping``) adds D3(BJ) dispersion
(:mod:`equimol.nn.dispersion`, tad-dftd3) to every property, as MACE's ``mace_mp(dispersion=True)``
does, for a model trained without it; a model file that already holds a D3 term
(``model.dispersion``) is refused, since its energy includes D3.

**Neighbor list.** The list is built (vesin, :func:`equimol.graph.neighbor_list`) with
the cutoff plus a ``skin`` and reused while no atom has moved more than ``skin / 2`` since it was
built and the atomic numbers, cell and pbc are unchanged: no pair can then have come from beyond
``cutoff + skin`` to within ``cutoff``. At each call the pairs within the cutoff are selected from
it, so results equal those of a fresh list (up to the order of summation).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from torch import nn
from torch_geometric.data import Data

from equimol.committee import COMMITTEE_PROPERTIES, committee_results
from equimol.errors import EquimolInputError
from equimol.graph import graph_from_edges, neighbor_list
from equimol.structure_checks import StructureError
from equimol.utils.dtype import resolve_dtype


def _prepare_model(model, device, dtype) -> nn.Module:
    """One member: load a model file, or move (a copy of) a module to ``device`` and ``dtype``."""
    if isinstance(model, (str, Path)):
        from equimol.export import load_model

        model = load_model(model, device=device, dtype=dtype)
    elif isinstance(model, nn.Module):
        wanted = resolve_dtype(dtype) if dtype is not None else None
        if wanted is not None and wanted != next(model.parameters()).dtype:
            model = copy.deepcopy(model)  # cast a copy: the caller's module keeps its dtype
        model = model.to(device)
        if wanted is not None:
            model = model.to(wanted)
    else:
        raise TypeError(f"model must be a model file path or an nn.Module, got {type(model).__name__}")
    for attribute in ("radial_cutoff", "species"):
        if not hasattr(model, attribute):
            raise TypeError(f"model lacks .{attribute}; pass an equimol Potential (build_model) or a model file")
    return model.eval()


class EquimolCalculator(Calculator):
    """ASE calculator around an equimol potential.

    Args:
        model: a model file (:func:`equimol.export.export_model`, ``equimol export``) or an ``nn.Module``
            with the :class:`~equimol.models.potential.Potential` interface (e.g. from ``build_model``);
            or a list of several: a committee (same species and cutoff), whose results are the members'
            mean plus their spread under the keys of :mod:`equimol.committee` (``energy_std``, ``forces_std``,
            ``stress_std``, ``energy_members``, ...).
        device: torch device to run on.
        dtype: ``"float32"``/``"float64"`` (or a torch dtype) to cast the model to; ``None`` keeps its own.
        skin: neighbor-list skin in Å (see the module docstring); 0 rebuilds the list at every step.
        dispersion: ``None`` or ``"d3"``: add D3(BJ) dispersion (module docstring).
        xc, damping: the functional whose D3 parameters are used (tad-dftd3's names) and the damping.
        dispersion_cutoff, dispersion_cn_cutoff: D3's cutoffs in Å (default tad-dftd3's, 31.75 and 21.17 Å).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "stresses"]

    def __init__(
        self,
        model: str | Path | nn.Module | list[str | Path | nn.Module],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        skin: float = 0.5,
        dispersion: str | None = None,
        xc: str = "pbe",
        damping: str = "bj",
        dispersion_cutoff: float | None = None,
        dispersion_cn_cutoff: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        if not members:
            raise EquimolInputError("model: an empty list; give a model file, or several for a committee")
        self.models = [_prepare_model(member, device, dtype) for member in members]
        model = self.models[0]
        for index, member in enumerate(self.models[1:], start=1):
            if float(member.radial_cutoff) != float(model.radial_cutoff) or list(member.species) != list(model.species):
                raise EquimolInputError(
                    f"committee member {index} has cutoff {member.radial_cutoff} Å and species {list(member.species)}, "
                    f"member 0 has {model.radial_cutoff} Å and {list(model.species)}; members must agree"
                )
        dtypes = [next(member.parameters()).dtype for member in self.models]
        if len(set(dtypes)) > 1:
            raise EquimolInputError(
                f"committee members have dtypes {[str(d).removeprefix('torch.') for d in dtypes]}; members must "
                "agree (give dtype='float64' or 'float32' to cast them all)"
            )
        if len(self.models) > 1:
            self.implemented_properties = [*type(self).implemented_properties, *COMMITTEE_PROPERTIES]
        if not (np.isfinite(skin) and skin >= 0):
            raise EquimolInputError(f"skin must be a finite length >= 0 Å, got {skin}")
        self.model = model.eval()
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.radial_cutoff = float(model.radial_cutoff)
        self.skin = float(skin)
        self.species = {int(z) for z in model.species}
        self.neighbor_list_builds = 0  # how often the list was (re)built; for tests and diagnostics
        self._list: dict | None = None
        cutoffs = {"cutoff": dispersion_cutoff, "cn_cutoff": dispersion_cn_cutoff}
        self.dispersion = self._dispersion(dispersion, xc, damping, {k: v for k, v in cutoffs.items() if v is not None})

    def _dispersion(self, kind: str | None, xc: str, damping: str, cutoffs: dict):
        if kind is None:
            return None
        from equimol.nn.dispersion import D3Dispersion, check_options

        if any(getattr(getattr(m, "config", None), "dispersion", None) for m in self.models):
            raise EquimolInputError(
                "dispersion: the model already includes D3 (its model.dispersion); do not add it twice"
            )
        try:
            options = check_options({"kind": kind, "xc": xc, "damping": damping, **cutoffs})
        except ValueError as error:
            raise EquimolInputError(f"EquimolCalculator dispersion: {error}") from error
        return D3Dispersion(**options).to(self.device)

    def _dispersion_results(self, atoms, want_stress: bool) -> dict[str, np.ndarray | float]:
        """Energy, per-atom energies, forces and (``want_stress``) stress of the D3 term, in float64."""
        device = self.device
        numbers = torch.as_tensor(atoms.get_atomic_numbers(), device=device)
        positions = torch.tensor(atoms.get_positions(), dtype=torch.float64, device=device, requires_grad=True)
        cell = torch.tensor(atoms.get_cell()[:], dtype=torch.float64, device=device).view(1, 3, 3)
        pbc = torch.as_tensor(atoms.get_pbc(), device=device).view(1, 3)
        strain = torch.zeros(1, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
        symmetric = 0.5 * (strain + strain.transpose(1, 2))  # x -> x (I + e): stress = dE/de / V
        with torch.enable_grad():
            strained = (positions + positions @ symmetric[0], cell + cell @ symmetric)
            node_graph = torch.zeros(len(atoms), dtype=torch.long, device=device)
            energies = self.dispersion(numbers, *strained, pbc, node_graph)
            gradient, strain_gradient = torch.autograd.grad(energies.sum(), (positions, strain))
        results = {
            "energy": float(energies.sum()),
            "energies": energies.detach().cpu().numpy(),
            "forces": -gradient.cpu().numpy(),
        }
        if want_stress:
            full = (strain_gradient[0] / atoms.get_volume()).cpu().numpy()
            results["stress"] = full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        return results

    # ------------------------------------------------------------------------------------ neighbor list
    def _list_is_valid(self, numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
        cached = self._list
        if cached is None or self.skin == 0:
            return False
        if not (np.array_equal(cached["numbers"], numbers) and np.array_equal(cached["pbc"], pbc)):
            return False
        if not np.array_equal(cached["cell"], cell):
            return False
        displacement = np.linalg.norm(positions - cached["positions"], axis=1).max(initial=0.0)
        return bool(displacement <= 0.5 * self.skin)

    def _edges(self, numbers, positions, cell, pbc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._list_is_valid(numbers, positions, cell, pbc):
            sender, receiver, offsets = neighbor_list(positions, cell, pbc, self.radial_cutoff + self.skin)
            self._list = {
                "numbers": numbers.copy(),
                "positions": positions.copy(),
                "cell": cell.copy(),
                "pbc": pbc.copy(),
                "sender": sender,
                "receiver": receiver,
                "offsets": offsets,
            }
            self.neighbor_list_builds += 1
        cached = self._list
        sender, receiver, offsets = cached["sender"], cached["receiver"], cached["offsets"]
        vectors = positions[receiver] - positions[sender] + offsets @ (cell if pbc.any() else np.zeros((3, 3)))
        within = np.einsum("ij,ij->i", vectors, vectors) < self.radial_cutoff**2
        return sender[within], receiver[within], offsets[within]

    def _graph(self, atoms) -> Data:
        numbers = atoms.get_atomic_numbers()
        unknown = sorted(set(numbers.tolist()) - self.species)
        if unknown:
            names = [chemical_symbols[z] for z in unknown]
            known = [chemical_symbols[z] for z in sorted(self.species)]
            raise EquimolInputError(f"EquimolCalculator: element(s) {names} are not among the model's species {known}")
        positions = np.asarray(atoms.get_positions(), dtype=np.float64)
        cell = np.asarray(atoms.get_cell()[:], dtype=np.float64)
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        if len(numbers) == 0:
            raise StructureError("EquimolCalculator: the structure has no atoms")
        try:
            edges = self._edges(numbers, positions, cell, pbc)
        except StructureError as error:  # a cell or positions the neighbor list refuses: name the structure
            raise StructureError(
                f"EquimolCalculator: {atoms.get_chemical_formula()} ({len(atoms)} atoms): {error}"
            ) from error
        return graph_from_edges(positions, numbers, cell, pbc, edges, self.dtype, self.device)

    # ------------------------------------------------------------------------------------- calculation
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        want_stress, want_stresses = "stress" in properties, "stresses" in properties
        if (want_stress or want_stresses) and not self.atoms.pbc.any():
            name = "stresses" if want_stresses else "stress"
            raise PropertyNotImplementedError(
                f"EquimolCalculator: {name} needs a periodic structure (atoms.pbc is all False, no volume)"
            )
        if want_stresses and self.dispersion is not None:
            raise PropertyNotImplementedError(
                "EquimolCalculator: per-atom stresses are not available with dispersion='d3' (D3 has no per-atom "
                "virial split here); ask for stress, or drop the dispersion"
            )
        graph = self._graph(self.atoms)
        dispersion = self._dispersion_results(self.atoms, want_stress) if self.dispersion is not None else None
        virials = {"compute_virials": True} if want_stresses else {}  # models without the option still serve the rest
        members = []
        for model in self.models:
            output = model(graph, compute_forces=True, compute_stress=want_stress, **virials)
            energy = float(output["energy"].detach().sum().cpu())
            member = {
                "energy": energy,
                "free_energy": energy,
                "energies": output["node_energy"].detach().cpu().double().numpy(),
                "forces": output["forces"].detach().cpu().double().numpy(),
            }
            if want_stress:
                full = output["stress"].detach().cpu().double().numpy().reshape(3, 3)
                member["stress"] = full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            if dispersion is not None:
                for key, value in dispersion.items():
                    member[key] = member[key] + value
                member["free_energy"] = member["energy"]
            if want_stresses:
                member["stresses"] = per_atom_stresses(output["atom_virial"], self.atoms.get_volume())
            members.append(member)
        self.results.update(members[0] if len(members) == 1 else committee_results(members))
        if want_stresses and len(members) > 1:
            self.results["stresses"] = np.mean([member["stresses"] for member in members], axis=0)


def per_atom_stresses(atom_virial: torch.Tensor, volume: float) -> np.ndarray:
    """ASE's per-atom ``stresses`` ``[n, 6]`` (Voigt, eV/Å³) from ``[n, 3, 3]`` per-atom virials (eV)."""
    virial = atom_virial.detach().cpu().double().numpy()
    rows, columns = [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]
    symmetric = 0.5 * (virial[:, rows, columns] + virial[:, columns, rows])
    return -symmetric / volume
