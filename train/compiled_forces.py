r"""``trainer.compile_step: true``: the training step's energy and forces as one compiled graph.

Force training differentiates twice: forces ``F = -\partial E / \partial x`` (``create_graph``), then the
loss through ``F`` with respect to the weights. ``torch.compile`` cannot differentiate a compiled region
twice (AOTAutograd refuses double backward). So the first derivative is taken out of autograd's hands:

1. :func:`equimol.utils.tracing.trace_forces` (``make_fx``, symbolic sizes) runs the model's forward *and*
   its ``autograd.grad`` below autograd and records both as plain operators: one graph
   ``(weights, graph tensors) -> (E, E_i, F)``;
2. ``torch.compile`` compiles that graph; the loss then needs only its *first* derivative, which
   AOTAutograd and Inductor handle, fusing the many small elementwise operators of the double backward.

The weights are inputs of the graph (``torch.func.functional_call``), so the optimizer's updates are seen
and gradients reach the parameters (and DDP's hooks) as in eager mode.

**Fixed counts.** The number of edges is always a symbolic size (``dynamic=True``, no duck sizing). The
numbers of atoms and structures are fixed in the graph where batches repeat them: the first batch runs the
eager model; if the second has the same counts, the graph is compiled for those counts
(``torch._dynamo.mark_static``), else for any counts. A later batch with other counts gets the graph for any
counts (one more compilation), and the fixed-count graph keeps serving its own. Fixed counts let Inductor
resolve index arithmetic at build time: for the README's main job (3BPA, 5 x 27 atoms a batch) the step
takes 0.67x the CPU time and the cold compilation 0.83x (``benchmarks/compile_cost_3bpa.md``).
Value checks of the eager model (unknown elements, zero-volume cells, element-index bounds) are
skipped inside the trace (:func:`equimol.utils.tracing.tracing`): the data module has checked the
elements. Validation and testing run the eager model (no second compilation for the no-backward
graph). Where the compilation fails (no C++ compiler for Inductor, an operator it cannot compile), a
warning says why and the step runs the eager model (which raises any error that is not the compiler's).

**Cost.** Inductor compiles in this process (``compile_threads = 1``), so a CPU-time budget
(``trainer.max_cpu_time``) pays for the compilation, once per run; Inductor keeps its artifacts on
disk (``TORCHINDUCTOR_CACHE_DIR``), so a second run of the same model compiles faster. By default
Inductor builds its C++ for the CPU one kernel per compiler run, and each run parses Inductor's
vectorisation headers again, which is most of a small kernel's build. :data:`INDUCTOR_OPTIONS` builds
each graph (forward, backward) with its kernels as one unit (``cpp_wrapper``, which also calls the
kernels from C++ rather than Python) and takes the vector instruction set from the CPU's flags
(``cpp.vec_isa_ok``) rather than test-compiling a program per candidate set. Scalar loops
(``cpp.vec_isa_ok: false``) would cut the code generation further but make the step slower. The
compilation's phases and the step times are in docs/benchmarks/accuracy.md ("What makes a step cheaper").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from equimol.utils.tracing import GRAPH_FIELDS, graph_of, graph_tensors, no_duck_sizing, numel_as_sizes, trace_forces

# Inductor settings that cut the cold compilation's CPU time without slowing the step (module docstring, "Cost")
INDUCTOR_OPTIONS = {"cpp_wrapper": True, "cpp.vec_isa_ok": True}
# the graph tensors whose first dimension counts atoms (pos, atomic_numbers, batch) or structures (cell, pbc)
_COUNTED = tuple(GRAPH_FIELDS.index(name) for name in ("pos", "atomic_numbers", "cell", "pbc", "batch"))


def _compiler_errors() -> tuple[type[BaseException], ...]:
    """What a missing or failing compiler raises (no C++ compiler, an unsupported operator): not a bug of ours."""
    from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError, Unsupported

    return (BackendCompilerFailed, TorchRuntimeError, Unsupported, OSError, RuntimeError)


class CompiledForces:
    """Energy, per-atom energies, forces (and stress) of ``model`` through one traced, compiled graph.

    Args:
        model: a :class:`~equimol.models.potential.Potential` in training mode.
        compute_stress: also trace the stress (``dE/d(strain) / V``), as the loss needs it.
        backend: the ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` traces and differentiates
            the same way without generating code, which the tests use).
        fixed_counts: compile for the atom and structure counts of the batches where they repeat (module
            docstring); ``False``: one graph for any counts.

    Calling it with a batch returns the model's output dict: ``energy`` ``[B]`` eV, ``node_energy`` ``[n]``
    eV, ``forces`` ``[n, 3]`` eV/Å and, with ``compute_stress``, ``stress`` ``[B, 3, 3]`` eV/Å^3.
    The first batch runs the eager model; the second decides the graph (module docstring, "Fixed counts"):
    :attr:`graphs` maps ``(atoms, structures)`` to a graph compiled for those counts, ``None`` to the
    graph for any counts.
    """

    def __init__(
        self, model: nn.Module, compute_stress: bool = False, backend: str = "inductor", fixed_counts: bool = True
    ) -> None:
        self.model = model
        self.compute_stress = compute_stress
        self.backend = backend
        self.fixed_counts = fixed_counts
        self.graphs: dict[tuple[int, int] | None, Callable] = {}
        self._first_counts: tuple[int, int] | None = None
        self._failed = False

    def _outputs(self) -> tuple[str, ...]:
        return ("energy", "node_energy", "forces") + (("stress",) if self.compute_stress else ())

    def _function(self, state: dict[str, torch.Tensor], *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = torch.func.functional_call(
            self.model, state, (graph_of(*tensors),), {"compute_forces": True, "compute_stress": self.compute_stress}
        )
        return tuple(out[name] for name in self._outputs())

    def _state(self) -> dict[str, torch.Tensor]:
        # the buffers (coupling tensors, index maps) stay constants of the graph: as inputs with symbolic
        # sizes they would cost the compiled step its advantage over eager
        return dict(self.model.named_parameters())

    def _build(self, tensors: tuple[torch.Tensor, ...]) -> Callable:
        from torch._inductor import config as inductor_config

        # the compiler's CPU time is this process's: a CPU-time budget pays for it
        inductor_config.compile_threads = 1
        traced = numel_as_sizes(trace_forces(self._function, self._state(), *tensors))
        # dynamic=True: every size symbolic but the counts _run marks static. numel_as_sizes: an element count
        # of fixed sizes would otherwise break dynamo's graph in two
        options = INDUCTOR_OPTIONS if self.backend == "inductor" else None
        return torch.compile(traced, backend=self.backend, dynamic=True, options=options)

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        if getattr(batch, "batch", None) is None:
            raise ValueError("trainer.compile_step needs batched graphs (a 'batch' vector), as the data module makes")
        tensors = graph_tensors(batch)
        counts = (int(tensors[0].shape[0]), int(tensors[2].shape[0]))
        if self._failed:
            return self._run(self._function, tensors)
        if self._first_counts is None:  # the eager model, once: the next batch tells whether counts repeat
            self._first_counts = counts
            return self._run(self._function, tensors)
        repeated = counts in self.graphs or (not self.graphs and counts == self._first_counts)
        key = counts if self.fixed_counts and repeated else None
        if key not in self.graphs:
            try:
                self.graphs[key] = self._build(tensors)
                return self._run(self.graphs[key], tensors, key)  # torch.compile compiles at this first call
            except _compiler_errors() as error:
                warnings.warn(
                    "trainer.compile_step: the compilation failed "
                    f"({type(error).__name__}: {str(error).splitlines()[0]}); "
                    "training with the eager model instead",
                    stacklevel=2,
                )
                self._failed = True
                return self._run(self._function, tensors)
        return self._run(self.graphs[key], tensors, key)

    def _run(
        self, graph: Callable, tensors: tuple[torch.Tensor, ...], counts: tuple[int, int] | None = None
    ) -> dict[str, torch.Tensor]:
        if counts is not None:
            for index in _COUNTED:
                torch._dynamo.mark_static(tensors[index], 0)
        with no_duck_sizing():
            return dict(zip(self._outputs(), graph(self._state(), *tensors)))
