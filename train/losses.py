r"""The weighted training loss: energy per atom, forces and stress, each a mean squared error or a Huber loss.

.. math::

    \mathcal{L} = w_E \,\Big\langle c_s\, \rho\Big(\frac{\hat E_s - E_s}{n_s}\Big) \Big\rangle_s
                + w_F \,\big\langle c_{s(i)}\, \rho(\hat F_{ia} - F_{ia}) \big\rangle_{i \in \mathrm{mask},\, a}
                + w_\sigma \,\big\langle c_s\, \rho(\hat\sigma_{s,ab} - \sigma_{s,ab}) \big\rangle_{s,\, ab}

with :math:`\rho(x) = x^2` (``loss.kind: mse``) or the Huber function of ``loss.huber_delta``
:math:`\delta`, :math:`\rho(x) = x^2/2` for :math:`|x| \le \delta` and :math:`\delta (|x| - \delta/2)`
beyond (``huber``; ``torch.nn.functional.huber_loss``, as MACE's ``--loss huber --huber_delta``),
and :math:`c_s` the weight of structure :math:`s`'s ``config_type`` (``data.config_type_weights``;
1 without). Energies in eV, forces in eV/Å, stress in eV/Å³. Forces only count on atoms in
``force_mask`` (OC20: free atoms); the stress term over the structures that carry a stress label.
"""

from __future__ import annotations

import torch

from equimol.errors import EquimolInputError

from .config import LossConfig


def structure_sizes(graph) -> torch.Tensor:
    """``[B]`` atoms per structure of a graph or batch (float, the energy dtype)."""
    batch = getattr(graph, "batch", None)
    if batch is None:
        return graph.pos.new_full((1,), float(graph.pos.shape[0]))
    num_graphs = graph.cell.view(-1, 3, 3).shape[0]
    return torch.bincount(batch, minlength=num_graphs).to(graph.pos.dtype)


def penalty(error: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """:math:`\\rho` of the module docstring, element by element."""
    if kind == "huber":
        return torch.nn.functional.huber_loss(error, torch.zeros_like(error), reduction="none", delta=delta)
    return error.pow(2)


def weighted_loss(
    prediction: dict[str, torch.Tensor], graph, target_energy: torch.Tensor, weights: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its terms.

    Args:
        prediction: the model's output (``energy`` ``[B]``, ``forces`` ``[n, 3]``, ``stress`` ``[B, 3, 3]``).
        graph: the labelled batch (``forces``, ``force_mask``, ``stress``, ``weight`` ``[B]`` when present).
        target_energy: ``[B]`` reference energies in the model's convention (eV).
        weights: the ``loss:`` section (term weights, ``kind``, ``huber_delta``).

    Returns:
        the scalar loss and ``{"energy": ..., "forces": ..., "stress": ...}`` (present terms, before ``w``).
    """
    terms: dict[str, torch.Tensor] = {}
    total = prediction["energy"].new_zeros(())
    structure_weight = getattr(graph, "weight", None)
    if structure_weight is None:
        structure_weight = prediction["energy"].new_ones(prediction["energy"].shape[0])
    structure_weight = structure_weight.view(-1).to(prediction["energy"].dtype)

    def term(error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return (weight * penalty(error, weights.kind, weights.huber_delta)).mean()

    if weights.energy_weight > 0:
        per_atom = (prediction["energy"] - target_energy) / structure_sizes(graph)
        terms["energy"] = term(per_atom, structure_weight)
        total = total + weights.energy_weight * terms["energy"]
    if weights.forces_weight > 0 and getattr(graph, "forces", None) is not None:
        mask = getattr(graph, "force_mask", None)
        error = prediction["forces"] - graph.forces
        batch = getattr(graph, "batch", None)
        atom_weight = structure_weight[batch] if batch is not None else structure_weight.expand(error.shape[0])
        if mask is not None:
            error, atom_weight = error[mask], atom_weight[mask]
        if error.numel():
            terms["forces"] = term(error, atom_weight.unsqueeze(-1))
            total = total + weights.forces_weight * terms["forces"]
    if weights.stress_weight > 0 and getattr(graph, "stress", None) is not None:
        labels = graph.stress.view(-1, 3, 3)
        if labels.shape[0] != prediction["stress"].shape[0]:
            raise EquimolInputError(
                f"stress labels for {labels.shape[0]} of {prediction['stress'].shape[0]} structures in a batch; "
                "a stress loss needs a stress label on every training structure"
            )
        terms["stress"] = term(prediction["stress"] - labels, structure_weight.view(-1, 1, 1))
        total = total + weights.stress_weight * terms["stress"]
    return total, terms
