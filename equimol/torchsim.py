"""An equimol potential as a TorchSim model: batched relaxation and MD of many structures at once.

>>> import torch_sim as ts                                              # doctest: +SKIP
>>> from equimol.torchsim import EquimolModel
>>> model = EquimolModel("model.pt", dtype=torch.float64)
>>> state = ts.io.atoms_to_state(list_of_atoms, model.device, model.dtype)
>>> init, update = ts.nve(model, dt=torch.tensor(1.0 * ase.units.fs), kT=torch.tensor(0.0))
>>> state = init(state)
>>> for _ in range(100):
...     state = update(state)

Units are TorchSim's metal units, which are ASE's: Å, eV, amu, time in Å·sqrt(amu/eV)
(``ase.units.fs`` per fs), forces eV/Å, stress eV/Å³ with ASE's sign (positive = tensile), as
TorchSim's MACE wrapper returns it.

Version: ``torch-sim-atomistic`` 0.3.0, the newest release for Python 3.11 (0.6.x needs Python >=
3.12). Its ``SimState`` has one ``pbc`` flag for all systems; cells are column vectors
(``state.row_vector_cell`` gives equimol's rows).

Each call builds every system's neighbor list with vesin on the CPU
(:func:`equimol.graph.neighbor_list`), then evaluates all systems as one batched graph: one
model call per step for the whole batch, which is where the throughput over looping the ASE
calculator comes from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState

from equimol.errors import EquimolInputError
from equimol.graph import neighbor_list
from equimol.structure_checks import StructureError
from equimol.utils.dtype import resolve_dtype


class EquimolModel(ModelInterface):
    """TorchSim ``ModelInterface`` around an equimol potential.

    Args:
        model: a model file (``equimol export``) or an equimol ``Potential``.
        device: torch device.
        dtype: ``float32``/``float64`` to cast the model to; ``None`` keeps its own.
        compute_stress: return ``stress`` ``[n_systems, 3, 3]`` (needed by cell relaxations and NPT).
        compute_forces: return ``forces`` ``[n_atoms, 3]``.
        per_atom_energies: return ``energies`` ``[n_atoms]`` eV (TorchSim's per-atom slot, as its
            Lennard-Jones model names it).
        per_atom_stresses: return ``stresses`` ``[n_atoms, 3, 3]`` eV/Å³, symmetric, summing over each
            system's atoms to its ``stress``: ``-sym(W_i) / V`` from the model's per-atom virials ``W_i``
            (:mod:`equimol.models.potential`), the convention of the ASE calculator's ``stresses``.
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        compute_stress: bool = True,
        compute_forces: bool = True,
        per_atom_energies: bool = False,
        per_atom_stresses: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(model, (str, Path)):
            from equimol.export import load_model

            model = load_model(model, device=device, dtype=dtype)
        elif dtype is not None:
            model = model.to(resolve_dtype(dtype))
        self.model = model.to(device).eval()
        self._device = torch.device(device)
        self._dtype = next(self.model.parameters()).dtype
        self._compute_stress = compute_stress
        self._compute_forces = compute_forces
        self.per_atom_energies = per_atom_energies
        self.per_atom_stresses = per_atom_stresses
        self._memory_scales_with = "n_atoms_x_density"
        self.radial_cutoff = float(self.model.radial_cutoff)
        self.species = {int(z) for z in self.model.species}

    def _graph(self, state: SimState) -> Data:
        """One batched graph of every system of ``state`` (neighbor lists built per system on the CPU)."""
        positions = state.positions.detach().to("cpu", torch.float64).numpy()
        cells = state.row_vector_cell.detach().to("cpu", torch.float64).numpy()
        system_index = state.system_idx.detach().cpu().numpy()
        numbers = state.atomic_numbers.detach().cpu().long()
        unknown = sorted(set(numbers.tolist()) - self.species)
        if unknown:
            raise EquimolInputError(f"EquimolModel: atomic number(s) {unknown} are not among the model's species")
        if np.any(np.diff(system_index) < 0):
            raise ValueError("EquimolModel: state.system_idx must be sorted (atoms of each system contiguous)")
        pbc = np.array([bool(state.pbc)] * 3)
        senders, receivers, offsets = [], [], []
        starts = np.searchsorted(system_index, np.arange(len(cells) + 1))
        for system in range(len(cells)):
            start, stop = starts[system], starts[system + 1]
            try:
                sender, receiver, offset = neighbor_list(positions[start:stop], cells[system], pbc, self.radial_cutoff)
            except StructureError as error:  # name the system of the batch
                raise StructureError(f"EquimolModel: system {system} ({stop - start} atoms): {error}") from None
            senders.append(sender + start)
            receivers.append(receiver + start)
            offsets.append(offset)
        as_tensor = lambda array: torch.as_tensor(array, dtype=self._dtype, device=self._device)  # noqa: E731
        cell = as_tensor(cells) if pbc.any() else torch.zeros(len(cells), 3, 3, dtype=self._dtype, device=self._device)
        return Data(
            pos=state.positions.to(self._dtype),
            atomic_numbers=numbers.to(self._device),
            cell=cell,
            pbc=torch.as_tensor(pbc, device=self._device).expand(len(cells), 3),
            edge_index=torch.as_tensor(
                np.stack([np.concatenate(senders), np.concatenate(receivers)]), dtype=torch.long, device=self._device
            ),
            cell_offsets=as_tensor(np.concatenate(offsets)),
            batch=state.system_idx.to(self._device),
            num_nodes=len(positions),
        )

    def forward(self, state: SimState | dict, **_) -> dict[str, torch.Tensor]:
        """``energy`` ``[n_systems]`` eV, ``forces`` ``[n_atoms, 3]`` eV/Å, ``stress`` ``[n_systems, 3, 3]`` eV/Å³."""
        if isinstance(state, dict):
            state = SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        graph = self._graph(state)
        stress = self._compute_stress and bool(state.pbc)
        virials = {"compute_virials": True} if self.per_atom_stresses else {}
        out = self.model(graph, compute_forces=self._compute_forces, compute_stress=stress, **virials)
        results = {"energy": out["energy"].detach()}
        if self._compute_forces:
            results["forces"] = out["forces"].detach()
        if self._compute_stress:
            results["stress"] = out["stress"].detach() if stress else torch.zeros_like(graph.cell)
        if self.per_atom_energies:
            results["energies"] = out["node_energy"].detach()
        if self.per_atom_stresses:
            virial = out["atom_virial"].detach()
            if bool(state.pbc):
                volume = torch.linalg.det(graph.cell).abs()[graph.batch]
                results["stresses"] = -0.5 * (virial + virial.transpose(1, 2)) / volume.view(-1, 1, 1)
            else:  # no volume, no stress: zeros, as for the global stress above
                results["stresses"] = torch.zeros_like(virial)
        return results
