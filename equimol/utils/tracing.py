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
from typing import NamedTuple

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


def numel_as_sizes(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``graph`` with each ``aten.sym_numel(x)`` replaced by the product of ``x``'s sizes, in place.

    A symbolic trace records a tensor's element count as one operator. Where ``torch.compile`` then holds
    some sizes fixed (``torch._dynamo.mark_static``), that operator returns a plain ``int``, which dynamo
    cannot put in a graph: it would break the graph there. A product of ``aten.sym_size`` is the same
    number and traces either way.
    """
    import operator

    nodes = graph.graph
    for node in list(nodes.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.sym_numel.default:
            continue
        tensor, product = node.args[0], None
        with nodes.inserting_before(node):
            for axis in range(len(tensor.meta["val"].shape)):
                size = nodes.call_function(torch.ops.aten.sym_size.int, (tensor, axis))
                product = size if product is None else nodes.call_function(operator.mul, (product, size))
        node.replace_all_uses_with(1 if product is None else product)
        nodes.erase_node(node)
    graph.recompile()
    return graph


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
    return export_graph(trace_forces(wrapper(frozen_copy(model)), *example), example, shapes)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode with frozen parameters: what a traced graph holds as constants."""
    import copy

    copied = copy.deepcopy(model).eval()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


def export_graph(graph: torch.fx.GraphModule, example: tuple, shapes: tuple) -> torch.export.ExportedProgram:
    """``torch.export`` of a traced graph on ``example``, with ``shapes`` its dynamic sizes (one dict per input)."""
    return torch.export.export(graph, tuple(example), dynamic_shapes=tuple(shapes))


class JointSplit(NamedTuple):
    """The two halves of a traced joint graph (:func:`split_at_cotangent`).

    ``forward``: the joint graph's inputs but the cotangent -> its ``forward_outputs`` first outputs, then the
    ``saved`` tensors. ``backward``: the same inputs, the saved tensors, the cotangent -> the other outputs.
    ``backward_example``: example inputs of ``backward`` (the saved tensors computed on the joint's example).
    """

    forward: torch.fx.GraphModule
    backward: torch.fx.GraphModule
    saved: list[torch.fx.Node]
    backward_example: tuple

    def backward_shapes(self, shapes: tuple) -> tuple:
        """Dynamic sizes of ``backward``'s inputs from ``shapes``, those of the joint graph's inputs: each saved
        tensor's sizes are the inputs' symbols (or fixed numbers) they were traced as."""
        symbols = {}  # each traced input size: its Dim, or None where the size is fixed
        placeholders = [node for node in self.forward.graph.nodes if node.op == "placeholder"]
        for node, spec in zip(placeholders, shapes[:-1], strict=True):
            for axis, size in enumerate(node.meta["val"].shape):
                expression = _symbol(size)
                if not isinstance(expression, int):
                    symbols.setdefault(expression, (spec or {}).get(axis))
        saved_shapes = []
        for node in self.saved:
            spec = {}
            for axis, size in enumerate(node.meta["val"].shape):
                expression = _symbol(size)
                if isinstance(expression, int) or all(symbols.get(free, 0) is None for free in expression.free_symbols):
                    continue  # a fixed size
                spec[axis] = _derived_dim(expression, symbols, node.name)
            saved_shapes.append(spec)
        return (*shapes[:-1], *saved_shapes, shapes[-1])


def _derived_dim(expression, symbols: dict, name: str):
    """The export ``Dim`` of a saved tensor's size ``a * s + b`` with ``s`` a dynamic input size."""
    free = list(expression.free_symbols)
    if len(free) == 1 and symbols.get(free[0]) is not None:
        slope = expression.diff(free[0])
        offset = expression.subs(free[0], 0)
        if slope.is_Integer and offset.is_Integer and slope > 0:
            dim = symbols[free[0]]
            dim = dim if slope == 1 else int(slope) * dim
            return dim if offset == 0 else dim + int(offset)
    raise ValueError(f"saved tensor {name}: size {expression} is not a linear function of one input's size")


def _symbol(size):
    """A traced size as an int, or as the simplified sympy expression of its symbol."""
    if isinstance(size, int):
        return size
    expression = size.node.expr
    expression = size.node.shape_env.simplify(expression) if size.node.shape_env is not None else expression
    return int(expression) if expression.is_number else expression


def split_at_cotangent(joint: torch.fx.GraphModule, forward_outputs: int, example: tuple) -> JointSplit:
    """Split a traced ``(*inputs, cotangent) -> (*outputs, *derivatives)`` graph where the cotangent enters.

    The forward half computes every node that does not depend on the cotangent (its last input) and returns
    the first ``forward_outputs`` outputs and the tensors that the backward half reads; the backward half
    computes the rest from the inputs, those saved tensors and the cotangent. Sizes the backward half reads
    are recomputed there from its tensors, since a program passes tensors only. Nothing is computed twice.
    """
    graph = joint.graph
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    output = next(node for node in graph.nodes if node.op == "output")
    cotangent = placeholders[-1]
    late = {cotangent}
    for node in graph.nodes:
        if node.op not in ("placeholder", "output") and any(arg in late for arg in node.all_input_nodes):
            late.add(node)
    results = list(output.args[0])
    if any(result in late for result in results[:forward_outputs]):
        raise ValueError("a forward output depends on the cotangent")
    is_tensor = lambda node: isinstance(node.meta.get("val"), torch.Tensor)  # noqa: E731
    order = {node: position for position, node in enumerate(graph.nodes)}
    saved = set()

    def needed(node):  # a tensor of the forward half that the backward half reads; sizes through their tensors
        if node in late or node in saved or node.op == "placeholder":
            return
        if is_tensor(node):
            saved.add(node)
        else:
            for arg in node.all_input_nodes:
                needed(arg)

    for node in list(late) + results[forward_outputs:]:
        for arg in node.all_input_nodes if node in late else [node]:
            needed(arg)
    saved = sorted(saved, key=order.__getitem__)

    forward = torch.fx.Graph()
    env = {}
    for node in graph.nodes:
        if node is cotangent or node in late or node.op == "output":
            continue
        env[node] = forward.node_copy(node, lambda arg: env[arg])
    forward.output(tuple(env[node] for node in results[:forward_outputs]) + tuple(env[node] for node in saved))

    backward = torch.fx.Graph()
    back = {}
    for node in placeholders[:-1] + saved + [cotangent]:
        if node.op == "placeholder":
            back[node] = backward.node_copy(node)
        else:
            back[node] = backward.placeholder(f"saved_{node.name}")
            back[node].meta = dict(node.meta)

    def early(arg):  # a value the forward half computed: saved, or a size recomputed here
        if arg not in back:
            back[arg] = backward.node_copy(arg, early)
        return back[arg]

    for node in graph.nodes:
        if node in late and node is not cotangent:
            back[node] = backward.node_copy(node, lambda arg: back[arg] if arg in late else early(arg))
    backward.output(tuple(back[node] if node in late else early(node) for node in results[forward_outputs:]))

    forward_module = torch.fx.GraphModule(joint, forward)
    backward_module = torch.fx.GraphModule(joint, backward)
    with torch.no_grad():
        values = forward_module(*example[:-1])
    backward_example = (*example[:-1], *values[forward_outputs:], example[-1])
    return JointSplit(forward_module, backward_module, saved, backward_example)
