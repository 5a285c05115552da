r"""SPE, stable positional encodings (Huang et al., ICLR 2024), made safe for forces.

Per structure (never across a batch: a batch Laplacian is block diagonal, and the modes below act on
each block alone), with the radius graph and the smooth envelope ``u`` of :mod:`equimol.nn.radial`:

.. math::

    W_{ij} = \sum_{e = (j \to i)} u(r_e), \qquad L = D - W, \quad D = \operatorname{diag}(W \mathbf{1})

(the combinatorial Laplacian: smooth in the positions, C^2 as an edge leaves the cutoff, unlike a
normalized one whose degree may vanish). ``m`` learnable filters ``phi_l`` (:mod:`equimol.nn.spe_filters`)
give ``W_l = phi_l(L)``. The permutation-equivariant ``rho`` is a GIN whose first aggregation uses the
rows of ``W_l`` as propagation kernels on invariant node signals ``H`` (one-hot element, scaled degree):

.. math::

    Y_{i,l,:} = \sum_j (W_l)_{ij} H_{j,:}, \qquad z_i = \mathrm{MLP}_1(Y_{i,:,:}), \qquad
    \mathrm{PE}_i = \mathrm{MLP}_2\Big(z_i + \frac{1}{\bar N} \sum_{e=(j \to i)} u(r_e)\, z_j\Big)

``PE`` ``[n, C]`` is invariant (``L`` depends on distances only) and permutation equivariant; it is added
to the species embedding.

**Modes** (same values up to rounding; test tolerance 1e-10 relative in float64):

* ``exact``: dense ``L`` per structure, float64 eigendecomposition, first and second derivatives
  exact and finite at degenerate spectra (:mod:`equimol.nn.spe_exact`). ``O(n^3)`` per structure
  (``O(m n^3)`` memory for second derivatives): small molecules.
* ``chebyshev``: ``T_k(2L/s - I) H`` by the three-term recurrence with sparse products
  ``(L H)_i = sum_{e=(j->i)} u(r_e) (H_i - H_j)``: ``O(E K)``, no eigenvectors, plain autograd (exact
  to all derivative orders). Large and periodic structures.

**Design notes.** ``rho`` sees ``W_l`` through products ``W_l H`` with node signals, not through every
entry of the ``n x n`` matrices as in the original SPE: that keeps the ``chebyshev`` mode at ``O(E K)``
and identical to ``exact``. Since ``L 1 = 0``, ``phi_l(L) 1 = phi_l(0) 1``: where every node signal is
the same (a perfect monatomic crystal) the filters add nothing beyond ``phi_l(0)``; the encoding
becomes informative as soon as species or (envelope-weighted) degrees differ between atoms.
"""

from __future__ import annotations

import torch
from torch import nn

from equimol.nn.spe_exact import filter_matrices
from equimol.nn.spe_filters import chebyshev_values

SPE_MODES = ("exact", "chebyshev")


def laplacian_apply(
    signals: torch.Tensor, edge_weight: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor
) -> torch.Tensor:
    """``L H`` for the combinatorial Laplacian of the weighted radius graph, ``[n, h] -> [n, h]``.

    Periodic self images (``sender == receiver``) contribute ``u (H_i - H_i) = 0``, as in ``D - W``.
    """
    difference = signals[receiver] - signals[sender]
    return signals.new_zeros(signals.shape).index_add(0, receiver, edge_weight.unsqueeze(-1) * difference)


def dense_laplacian(
    edge_weight: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor, num_nodes: int
) -> torch.Tensor:
    """Dense symmetric ``L = D - W`` ``[n, n]`` of one structure (local node indices)."""
    adjacency = edge_weight.new_zeros(num_nodes, num_nodes).index_put((receiver, sender), edge_weight, accumulate=True)
    laplacian = torch.diag(adjacency.sum(dim=1)) - adjacency
    # The full edge list is symmetric; averaging removes rounding asymmetry (eigh reads one triangle).
    return 0.5 * (laplacian + laplacian.T)


def chebyshev_filter_signals(
    signals: torch.Tensor,
    edge_weight: torch.Tensor,
    sender: torch.Tensor,
    receiver: torch.Tensor,
    coefficients: torch.Tensor,
    spectral_scale: float,
) -> torch.Tensor:
    """``phi_l(L) H`` for all filters by the Chebyshev recurrence, ``[n, h] -> [n, m, h]``."""
    degree = coefficients.shape[1] - 1

    def scaled(x: torch.Tensor) -> torch.Tensor:  # (2 L / s - I) x
        return (2.0 / spectral_scale) * laplacian_apply(x, edge_weight, sender, receiver) - x

    terms = [signals]
    if degree >= 1:
        terms.append(scaled(signals))
    for _ in range(2, degree + 1):
        terms.append(2.0 * scaled(terms[-1]) - terms[-2])
    return torch.einsum("lk,knh->nlh", coefficients, torch.stack(terms))


def exact_filter_signals(
    signals: torch.Tensor,
    edge_weight: torch.Tensor,
    sender: torch.Tensor,
    receiver: torch.Tensor,
    node_graph: torch.Tensor,
    num_graphs: int,
    coefficients: torch.Tensor,
    spectral_scale: float,
) -> torch.Tensor:
    """``phi_l(L) H`` through one float64 eigendecomposition per structure, ``[n, h] -> [n, m, h]``."""
    counts = torch.bincount(node_graph, minlength=num_graphs)
    starts = torch.cumsum(counts, 0) - counts
    if num_graphs > 1 and not bool((node_graph[1:] >= node_graph[:-1]).all()):
        raise ValueError("exact SPE needs the nodes of each structure to be contiguous (torch-geometric batches are)")
    edge_graph = node_graph[receiver]
    coefficients64 = coefficients.to(torch.float64)
    outputs = []
    for graph in range(num_graphs):
        start, count = int(starts[graph]), int(counts[graph])
        in_graph = edge_graph == graph
        laplacian = dense_laplacian(
            edge_weight[in_graph].to(torch.float64), sender[in_graph] - start, receiver[in_graph] - start, count
        )
        matrices = filter_matrices(laplacian, coefficients64, spectral_scale)  # [m, n_b, n_b]
        block = signals[start : start + count].to(torch.float64)
        outputs.append(torch.einsum("lij,jh->ilh", matrices, block))
    return torch.cat(outputs, dim=0).to(signals.dtype)


class StablePositionalEncoding(nn.Module):
    """SPE node features ``[n, C]`` from the smooth-weight Laplacian of each structure.

    Args:
        num_species: number of elements (size of the one-hot node signal).
        channels: ``C``, the output width (that of the species embedding).
        num_filters: ``m``.
        polynomial_degree: ``K``, the Chebyshev degree of each filter (and the number of hops it sees).
        spectral_scale: ``s``; eigenvalues in ``[0, s]`` map to ``t in [-1, 1]``. ``L``'s spectrum lies in
            ``[0, 2 max_i D_ii]``, so ``2 x`` the average neighbor count is a safe default.
        hidden: width of the rho MLPs.
        mode: ``"exact"`` or ``"chebyshev"``.
        avg_num_neighbors: normalizes the degree signal and the GIN sum.
    """

    def __init__(
        self,
        num_species: int,
        channels: int,
        num_filters: int = 4,
        polynomial_degree: int = 8,
        spectral_scale: float = 20.0,
        hidden: int = 16,
        mode: str = "chebyshev",
        avg_num_neighbors: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in SPE_MODES:
            raise ValueError(f"spe mode {mode!r} is not one of {SPE_MODES}")
        if num_filters < 1 or polynomial_degree < 0 or spectral_scale <= 0:
            raise ValueError(
                f"spe needs num_filters >= 1, polynomial_degree >= 0 and spectral_scale > 0; got {num_filters}, "
                f"{polynomial_degree}, {spectral_scale}"
            )
        self.mode = mode
        self.num_species = num_species
        self.spectral_scale = float(spectral_scale)
        self.avg_num_neighbors = float(avg_num_neighbors)
        # Decaying initial coefficients: smooth filters of unit order at initialisation.
        decay = 0.5 ** torch.arange(polynomial_degree + 1, dtype=torch.float64)
        self.coefficients = nn.Parameter(torch.randn(num_filters, polynomial_degree + 1, dtype=torch.float64) * decay)
        signal_size = num_species + 1
        self.rho_in = nn.Sequential(
            nn.Linear(num_filters * signal_size, hidden, dtype=torch.float64),
            nn.SiLU(),
            nn.Linear(hidden, hidden, dtype=torch.float64),
        )
        self.rho_out = nn.Sequential(
            nn.Linear(hidden, hidden, dtype=torch.float64), nn.SiLU(), nn.Linear(hidden, channels, dtype=torch.float64)
        )

    def forward(
        self,
        element_index: torch.Tensor,
        edge_weight: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        node_graph: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """SPE features.

        Args:
            element_index: ``[n]`` int64.
            edge_weight: ``[E]`` envelope ``u(r_e)`` (zero at the cutoff).
            sender, receiver: ``[E]`` int64.
            node_graph: ``[n]`` structure index of each node (``batch``).
            num_graphs: ``B``.

        Returns:
            ``[n, C]`` invariant features.
        """
        num_nodes = element_index.shape[0]
        one_hot = nn.functional.one_hot(element_index, self.num_species).to(edge_weight.dtype)
        degree = edge_weight.new_zeros(num_nodes).index_add(0, receiver, edge_weight)
        signals = torch.cat([one_hot, (degree / self.avg_num_neighbors).unsqueeze(-1)], dim=-1)
        coefficients = self.coefficients.to(edge_weight.dtype)
        if self.mode == "exact":
            filtered = exact_filter_signals(
                signals, edge_weight, sender, receiver, node_graph, num_graphs, self.coefficients, self.spectral_scale
            )
        else:
            filtered = chebyshev_filter_signals(
                signals, edge_weight, sender, receiver, coefficients, self.spectral_scale
            )
        node = self.rho_in(filtered.reshape(num_nodes, -1))
        neighbors = node.new_zeros(node.shape).index_add(0, receiver, edge_weight.unsqueeze(-1) * node[sender])
        return self.rho_out(node + neighbors / self.avg_num_neighbors)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, spectral_scale={self.spectral_scale}"


__all__ = [
    "SPE_MODES",
    "StablePositionalEncoding",
    "chebyshev_filter_signals",
    "chebyshev_values",
    "dense_laplacian",
    "exact_filter_signals",
    "laplacian_apply",
]
