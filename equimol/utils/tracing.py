"""Tracing a potential's energy, forces and stress into one graph of plain operators, and telling that code runs
under a tracer.

Forces and stress are derivatives taken with ``autograd.grad`` inside the model's forward pass.
``torch.export`` cannot trace ``autograd.grad``, and ``torch.compile`` cannot differentiate a compiled
region twice (force training needs the loss's gradient through the forces). :func:`trace_forces` is the
one way around both: ``make_fx`` with symbolic sizes runs below autograd, so the backward pass is
recorded as ordinary operators, one graph ``tensors -> (E, E_i, F, ...)``. Its users: compiled model
files (:mod:`equimol.pt2_model`, then ``torch.export``) and the compiled training step
(``equimol.train.compiled_forces``, then ``torch.compile``).

The model is called on :data:`GRAPH_FIELDS` tensors (:func:`graph_of`), so the numbers of atoms, edges and
structures are the only sizes. **No duck sizing** (:func:`no_duck_sizing`): otherwise two sizes that are
equal in the example (2 structures and the 2 rows of ``edge_index``) share one symbol, and the graph
holds the structure count fixed at its example value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch

# the graph tensors a potential reads, in the order traced graphs take them
GRAPH_FIELDS = ("pos", "atomic_numbers", "cell", "pbc", "edge_index", "cell_offsets", "batch")


def tracing() -> bool:
    """True under ``torch.compile``/``torch.export`` (dynamo) or ``make_fx`` (a proxy dispatch mode).

    A traced graph cannot branch on tensor values (``GuardOnDataDependentSymNode``), so value checks
    (index bounds, unknown elements) are skipped there; the callers of a traced graph check those inputs
    before the call (:mod:`equimol.pt2_model`).
    """
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return torch.compiler.is_compiling() or get_proxy_mode() is not None


def graph_of(*tensors: torch.Tensor) -> SimpleNamespace:
    """A graph object with the :data:`GRAPH_FIELDS` attributes, from those tensors in that order."""
    if len(tensors) != len(GRAPH_FIELDS):
        raise TypeError(f"graph_of takes the {len(GRAPH_FIELDS)} tensors {GRAPH_FIELDS}, got {len(tensors)}")
    return SimpleNamespace(**dict(zip(GRAPH_FIELDS, tensors)))


def graph_tensors(graph) -> tuple[torch.Tensor, ...]:
    """The :data:`GRAPH_FIELDS` tensors of a (batched) graph, in that order."""
    return tuple(getattr(graph, name) for name in GRAPH_FIELDS)


@contextlib.contextmanager
def no_duck_sizing() -> Iterator[None]:
    """Symbolic sizes that are equal in the example stay distinct symbols (module docstring)."""
    from torch.fx.experimental import _config as fx_config

    with fx_config.patch(use_duck_shape=False):
        yield


def trace_forces(function: Callable, *example) -> torch.fx.GraphModule:
    """``function`` (energy and its ``autograd.grad`` derivatives) traced on ``example`` into plain operators.

    Args:
        function: takes the example's arguments (tensors, or a dict of parameters then tensors) and returns
            tensors; the derivatives it takes inside are recorded as operators.
        example: the trace inputs; every size is symbolic, values are not specialised on.

    Returns:
        the traced graph, callable on inputs of any sizes (inside :func:`no_duck_sizing` where it is
        run through ``torch.compile``).
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    with no_duck_sizing():
        return make_fx(function, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)


def example_batch(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """Two periodic structures (5 and 3 atoms) of the model's species, as :data:`GRAPH_FIELDS` tensors on the
    model's device: the trace input (sizes dynamic, values free)."""
    import numpy as np
    from torch_geometric.data import Batch

    from equimol.graph import structure_to_graph

    species = list(model.species)
    positions = np.array([[0.0, 0.0, 0.0], [1.4, 0.3, 0.0], [2.6, -0.4, 0.5], [1.0, 1.5, -0.6], [-0.8, 1.2, 1.0]])
    cell = np.eye(3) * max(4.0, 0.75 * float(model.radial_cutoff))
    graphs = []
    for count in (5, 3):
        numbers = [species[i % len(species)] for i in range(count)]
        graphs.append(
            structure_to_graph(positions[:count], numbers, cell, [True] * 3, float(model.radial_cutoff), model.dtype)
        )
    return graph_tensors(Batch.from_data_list(graphs).to(next(model.parameters()).device))


def export_forces(wrapper: type[torch.nn.Module], model: torch.nn.Module, example: tuple, shapes: tuple):
    """``torch.export`` program of ``wrapper(copy of model)`` on ``example`` with ``shapes`` dynamic sizes.

    The copy is in eval mode with frozen parameters (constants of the graph); its derivatives are traced into
    operators first (:func:`trace_forces`), since ``torch.export`` cannot trace ``autograd.grad``.
    """
    import copy

    traced_model = copy.deepcopy(model).eval()
    for parameter in traced_model.parameters():
        parameter.requires_grad_(False)
    graph = trace_forces(wrapper(traced_model), *example)
    return torch.export.export(graph, example, dynamic_shapes=shapes)
