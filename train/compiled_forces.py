r"""``trainer.compile: true``: the training step's energy and forces as one compiled graph.

Force training differentiates twice: forces ``F = -\partial E / \partial x`` (``create_graph``), then the
loss through ``F`` with respect to the weights. ``torch.compile`` cannot differentiate a compiled region
twice (AOTAutograd refuses double backward). So the first derivative is taken out of autograd's hands:

1. ``make_fx`` (symbolic sizes) runs the model's forward *and* its ``autograd.grad`` below autograd and
   records both as plain operators: one graph ``(weights, graph tensors) -> (E, E_i, F)``;
2. ``torch.compile`` compiles that graph; the loss then needs only its *first* derivative, which
   AOTAutograd and Inductor handle, fusing the many small elementwise operators of the double backward.

The weights are inputs of the graph (``torch.func.functional_call``), so the optimizer's updates are seen
and gradients reach the parameters (and DDP's hooks) as in eager mode. The numbers of atoms, edges and
structures are dynamic (``dynamic=True``, no duck sizing), so one compilation serves every batch.
Value checks of the eager model (unknown elements, zero-volume cells, element-index bounds) are
skipped inside the trace (:func:`equimol.utils.tracing.tracing`): the data module has checked the
elements. Validation and testing run the eager model (no second compilation for the no-backward
graph). Where the compilation fails (no C++ compiler for Inductor, an operator it cannot compile), a
warning says why and the step runs the eager model (which raises any error that is not the compiler's).

**Cost.** Inductor compiles in this process (``compile_threads = 1``), so a CPU-time budget
(``trainer.max_cpu_time``) pays for the compilation: on the 2-core Xeon the 3BPA main job traced in
5 CPU-s and compiled in about 100 CPU-s, then made a step in 0.12 s against 0.18-0.20 s eager
(one thread, float32; README, "Accuracy on 3BPA"). Inductor keeps its artifacts on disk
(``TORCHINDUCTOR_CACHE_DIR``), so a second run of the same model compiles in a fraction of that.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn
from torch.fx.experimental import _config as fx_config


def _compiler_errors() -> tuple[type[BaseException], ...]:
    """What a missing or failing compiler raises (no C++ compiler, an unsupported operator): not a bug of ours."""
    from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError, Unsupported

    return (BackendCompilerFailed, TorchRuntimeError, Unsupported, OSError, RuntimeError)


_GRAPH_FIELDS = ("pos", "atomic_numbers", "cell", "pbc", "edge_index", "cell_offsets", "batch")


class CompiledForces:
    """Energy, per-atom energies, forces (and stress) of ``model`` through one traced, compiled graph.

    Args:
        model: a :class:`~equimol.models.potential.Potential` in training mode.
        compute_stress: also trace the stress (``dE/d(strain) / V``), as the loss needs it.
        backend: the ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` traces and differentiates
            the same way without generating code, which the tests use).

    Calling it with a batch returns the model's output dict: ``energy`` ``[B]`` eV, ``node_energy`` ``[n]``
    eV, ``forces`` ``[n, 3]`` eV/Å and, with ``compute_stress``, ``stress`` ``[B, 3, 3]`` eV/Å^3.
    The graph is traced and compiled at the first call.
    """

    def __init__(self, model: nn.Module, compute_stress: bool = False, backend: str = "inductor") -> None:
        self.model = model
        self.compute_stress = compute_stress
        self.backend = backend
        self._compiled: Callable | None = None

    def _outputs(self) -> tuple[str, ...]:
        return ("energy", "node_energy", "forces") + (("stress",) if self.compute_stress else ())

    def _function(self, state: dict[str, torch.Tensor], *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        graph = SimpleNamespace(**dict(zip(_GRAPH_FIELDS, tensors)))
        out = torch.func.functional_call(
            self.model, state, (graph,), {"compute_forces": True, "compute_stress": self.compute_stress}
        )
        return tuple(out[name] for name in self._outputs())

    def _state(self) -> dict[str, torch.Tensor]:
        # the buffers (coupling tensors, index maps) stay constants of the graph: as inputs with symbolic
        # sizes they made the compiled step slower than eager (0.22 against 0.12 s, measured)
        return dict(self.model.named_parameters())

    def _build(self, tensors: tuple[torch.Tensor, ...]) -> Callable:
        from torch._inductor import config as inductor_config
        from torch.fx.experimental.proxy_tensor import make_fx

        # the compiler's CPU time is this process's: a CPU-time budget pays for it
        inductor_config.compile_threads = 1
        # no duck sizing: sizes that happen to be equal in the first batch (2 structures and the 2 rows of
        # edge_index) would share one symbol, and the graph would hold the structure count fixed
        with fx_config.patch(use_duck_shape=False):
            traced = make_fx(self._function, tracing_mode="symbolic", _allow_non_fake_inputs=True)(
                self._state(), *tensors
            )
        # dynamic=True: every size symbolic. Dynamo breaks the traced graph in two, and with only the
        # inputs' batch dimensions marked dynamic the second part specialized on the edge count of each
        # batch (a recompilation per batch, measured)
        return torch.compile(traced, backend=self.backend, dynamic=True)

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        if getattr(batch, "batch", None) is None:
            raise ValueError("trainer.compile needs batched graphs (a 'batch' vector), as the data module makes")
        tensors = tuple(getattr(batch, name) for name in _GRAPH_FIELDS)
        if self._compiled is None:
            try:
                self._compiled = self._build(tensors)
                return self._run(tensors)  # torch.compile compiles at this first call
            except _compiler_errors() as error:
                warnings.warn(
                    f"trainer.compile: the compilation failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                    "training with the eager model instead",
                    stacklevel=2,
                )
                self._compiled = self._function  # run eagerly, it is the model itself
        return self._run(tensors)

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        with fx_config.patch(use_duck_shape=False):
            return dict(zip(self._outputs(), self._compiled(self._state(), *tensors)))
