"""Dataset statistics the model configuration takes from the training data."""

from __future__ import annotations

from collections.abc import Iterable

from equimol.errors import EquimolInputError


def average_num_neighbors(graphs: Iterable) -> float:
    """Mean number of incoming edges per atom, ``sum_graphs E / sum_graphs n`` (the ``avg_num_neighbors`` key).

    Args:
        graphs: graphs in the :mod:`equimol.graph` format, built with the model's cutoff.

    Raises:
        ValueError: no graphs, or no atoms in them.
    """
    edges = atoms = 0
    for graph in graphs:
        edges += int(graph.edge_index.shape[1])
        atoms += int(graph.num_nodes)
    if atoms == 0:
        raise EquimolInputError("average_num_neighbors needs at least one graph with atoms")
    return edges / atoms
