r"""The weighted training loss: energy per atom, forces and stress, each a mean squared error.

.. math::

    \mathcal{L} = w_E \,\Big\langle \Big(\frac{\hat E_s - E_s}{n_s}\Big)^2 \Big\rangle_s
                + w_F \,\big\langle (\hat F_{ia} - F_{ia})^2 \big\rangle_{i \in \mathrm{mask},\, a}
                + w_\sigma \,\big\langle (\hat\sigma_{s,ab} - \sigma_{s,ab})^2 \big\rangle_{s \in \mathrm{stress},\, ab}

Energies in eV, forces in eV/Å, stress in eV/Å³. Forces only count on atoms in ``force_mask``
(OC20: free atoms); the stress term only on structures that carry a stress label.
"""

from __future__ import annotations

import torch

from .config import LossConfig


def structure_sizes(graph) -> torch.Tensor:
    """``[B]`` atoms per structure of a graph or batch (float, the energy dtype)."""
    batch = getattr(graph, "batch", None)
    if batch is None:
        return graph.pos.new_full((1,), float(graph.pos.shape[0]))
    num_graphs = graph.cell.view(-1, 3, 3).shape[0]
    return torch.bincount(batch, minlength=num_graphs).to(graph.pos.dtype)


def weighted_loss(
    prediction: dict[str, torch.Tensor], graph, target_energy: torch.Tensor, weights: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its terms.

    Args:
        prediction: the model's output (``energy`` ``[B]``, ``forces`` ``[n, 3]``, ``stress`` ``[B, 3, 3]``).
        graph: the labelled batch (``forces``, ``force_mask``, ``stress`` when present).
        target_energy: ``[B]`` reference energies in the model's convention (eV).
        weights: the ``loss:`` section.

    Returns:
        the scalar loss and ``{"energy": ..., "forces": ..., "stress": ...}`` (unweighted MSEs of present terms).
    """
    terms: dict[str, torch.Tensor] = {}
    total = prediction["energy"].new_zeros(())
    if weights.energy_weight > 0:
        per_atom = (prediction["energy"] - target_energy) / structure_sizes(graph)
        terms["energy"] = per_atom.pow(2).mean()
        total = total + weights.energy_weight * terms["energy"]
    if weights.forces_weight > 0 and getattr(graph, "forces", None) is not None:
        mask = getattr(graph, "force_mask", None)
        error = prediction["forces"] - graph.forces
        if mask is not None:
            error = error[mask]
        if error.numel():
            terms["forces"] = error.pow(2).mean()
            total = total + weights.forces_weight * terms["forces"]
    if weights.stress_weight > 0 and getattr(graph, "stress", None) is not None:
        labels = graph.stress.view(-1, 3, 3)
        if labels.shape[0] != prediction["stress"].shape[0]:
            raise ValueError(
                f"stress labels for {labels.shape[0]} of {prediction['stress'].shape[0]} structures in a batch; "
                "a stress loss needs a stress label on every training structure"
            )
        terms["stress"] = (prediction["stress"] - labels).pow(2).mean()
        total = total + weights.stress_weight * terms["stress"]
    return total, terms
