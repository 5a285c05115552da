r"""Compiled model files: a potential's energy, forces and stress as one ``torch.export`` graph (``.pt2``).

``equimol export --format aotinductor`` (:func:`compile_model`) writes either

* ``aotinductor`` (default): an AOTInductor package, the graph compiled ahead of time to C++ and
  loaded with ``torch._inductor.aoti_load_package``; no Python model code runs at inference; or
* ``export``: the serialized ``torch.export`` program (``torch.export.save``), run by torch's
  graph interpreter: no compiler needed to write it, quick to write, and portable.

Both hold the whole force computation: the model's ``autograd.grad`` (forces ``-dE/dx``, stress
``dE/d(strain) / V``, per-atom virials) is traced into plain operators with ``make_fx`` (symbolic shapes) before
``torch.export`` (which cannot trace ``autograd.grad`` itself), with dynamic numbers of atoms and
edges and structures: a batch (torch-geometric ``Batch``) is one call (:mod:`equimol.utils.tracing`).
A JSON entry ``<root>/equimol/metadata.json`` in the
archive keeps species, cutoff, dtype and the model config. :func:`load_compiled` returns a
:class:`CompiledPotential`, which has the :class:`~equimol.models.potential.Potential` call
interface, so the ASE calculator, TorchSim and LAMMPS couplings and ``equimol predict`` take a
``.pt2`` file wherever they take a model file.

Inside the traced graph the eager model's value checks are left out (they skip themselves under
tracing, :func:`equimol.utils.tracing.tracing`), because a traced graph cannot branch on values: the
unknown-element check (the callers check elements before calling) and the zero-volume-cell error
(:class:`CompiledPotential` checks it in Python).
A compiled file runs on the device type and dtype it was compiled for.

**Targets.** ``target="model"`` (the default) is the call interface above, for Python;
``target="lammps"`` (``equimol export --format aotinductor --target lammps``) is the per-layer programs
that LAMMPS's ``pair_style equimol`` runs for each rank's owned atoms (:mod:`equimol.pt2_lammps`),
an AOTInductor package only; :func:`load_compiled` refuses it.

**Fused kernels cannot be traced.** A model with ``tp_options: {kernel: triton}`` is refused
(:class:`CompiledModelError` naming that key): the Triton launcher checks index values and needs
real data pointers, and tracing runs on fake tensors (the trace stops at the launcher's index check
with ``GuardOnDataDependentSymNode``). ``torch_kernel=True``
(``equimol export --format aotinductor --torch-kernel``) traces the model's torch message-passing path
instead, with the same weights: the fused kernel only reorders the sums of that path.

**Tracing cost.** Tracing runs every operator of the forward and backward pass on fake tensors with
symbolic sizes, twice (``make_fx``, then ``torch.export``), and an AOTInductor package adds a C++
compilation; ``benchmarks/`` measures both.

**Backends.** ``cg`` and ``cp`` messages export, and so does the ``many_body: gaunt`` product (the main
job's architecture; its element-index bound check is skipped under tracing,
:func:`equimol.utils.tracing.tracing`). ``gaunt`` (grid) messages specialize the number of edges, so
those models cannot be exported.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from equimol.errors import CompiledModelError, EquimolInputError
from equimol.utils.tracing import example_batch, export_forces, graph_of

MODES = ("aotinductor", "export")
TARGETS = ("model", "lammps")
METADATA = "equimol/metadata.json"


class _Traceable(nn.Module):
    """Tensors in, ``(energy [B], node_energy [n], forces [n, 3], stress [B, 3, 3], atom_virial [n, 3, 3])`` out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *tensors):
        out = self.model(graph_of(*tensors), compute_forces=True, compute_stress=True, compute_virials=True)
        return out["energy"], out["node_energy"], out["forces"], out["stress"], out["atom_virial"]


def export_program(model: nn.Module) -> torch.export.ExportedProgram:
    """The ``torch.export`` program of ``model``'s energy, per-atom energies, forces, stress and per-atom virials."""
    atoms, edges = torch.export.Dim("atoms", min=1), torch.export.Dim("edges", min=0)
    structures = torch.export.Dim("structures", min=1)
    shapes = ({0: atoms}, {0: atoms}, {0: structures}, {0: structures}, {1: edges}, {0: edges}, {0: atoms})
    return export_forces(_Traceable, model, example_batch(model), shapes)


def with_torch_kernel(model: nn.Module) -> nn.Module:
    """``model`` rebuilt with ``tp_options.kernel: torch`` (the same weights, dtype and device), in eval mode."""
    from equimol.models import build_model

    config = model.config.to_dict()
    config["tp_options"] = {**config.get("tp_options", {}), "kernel": "torch"}
    config["tp_options"].pop("deterministic", None)  # an option of the fused kernels only
    parameter = next(model.parameters())
    rebuilt = build_model(config).to(device=parameter.device, dtype=parameter.dtype)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    return rebuilt.eval()


def compile_model(
    model: nn.Module, path: str | Path, mode: str = "aotinductor", torch_kernel: bool = False, target: str = "model"
) -> Path:
    """Write ``model`` (an equimol ``Potential``) as a compiled model file (``.pt2``) at ``path``.

    Args:
        model: the potential; its ``dtype`` and device are the compiled file's.
        path: output, ending in ``.pt2``.
        mode: ``"aotinductor"`` (an AOTInductor package) or ``"export"`` (a ``torch.export`` program).
        torch_kernel: trace the torch message-passing path of a model configured with a fused kernel
            (``tp_options.kernel: triton``), which cannot be traced (see the module docstring).
        target: ``"model"`` (the call interface of a potential, for Python) or ``"lammps"`` (the graph
            ``pair_style equimol`` runs, :mod:`equimol.pt2_lammps`; AOTInductor only).

    Raises:
        CompiledModelError: a wrong mode, target or suffix, a fused-kernel model without ``torch_kernel``,
            or (``lammps``) a model the plugin cannot serve.
    """
    from equimol.models import Potential

    if not isinstance(model, Potential):
        raise TypeError(f"compile_model needs an equimol Potential, got {type(model).__name__}")
    if mode not in MODES:
        raise CompiledModelError(f"compile mode {mode!r}: expected one of {MODES}")
    if target not in TARGETS:
        raise CompiledModelError(f"compile target {target!r}: expected one of {TARGETS}")
    path = Path(path)
    if path.suffix != ".pt2":
        raise CompiledModelError(f"{path}: a compiled model file must end in .pt2")
    if model.config.dispersion is not None:
        raise CompiledModelError(
            "model.dispersion: D3 sums over a neighbor list that the model builds in its forward pass, which "
            "cannot be traced into a compiled model file; use the model file itself, or a model without D3 "
            "and EquimolCalculator(..., dispersion='d3')"
        )
    kernel = model.config.tp_options.get("kernel", "torch")
    if kernel != "torch":
        if not torch_kernel:
            raise CompiledModelError(
                f"model.tp_options.kernel is {kernel!r}: a fused message kernel cannot be compiled (tracing runs on "
                "fake tensors, which the Triton launcher cannot take); compile the torch path of the same weights "
                "with `equimol export --format aotinductor --torch-kernel` (compile_model(..., torch_kernel=True))"
            )
        model = with_torch_kernel(model)
    metadata = {
        "format": "equimol-compiled",
        "mode": mode,
        "target": target,
        "species": list(model.species),
        "radial_cutoff": float(model.radial_cutoff),
        "dtype": str(model.dtype).removeprefix("torch."),
        "device_type": next(model.parameters()).device.type,
        "model_config": model.config.to_dict(),
    }
    if target == "lammps" and mode != "aotinductor":
        raise CompiledModelError(
            f"compile mode {mode!r} with target 'lammps': pair_style equimol runs AOTInductor packages only "
            "(`equimol export MODEL OUT.pt2 --format aotinductor --target lammps`)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.pt2")
    if target == "lammps":
        from equimol.pt2_lammps import compile_lammps_package, plugin_metadata

        compile_lammps_package(model, partial, plugin_metadata(model))
    elif mode == "export":
        torch.export.save(export_program(model), partial)
    else:
        torch._inductor.aoti_compile_and_package(export_program(model), package_path=str(partial))
    with zipfile.ZipFile(partial, "a") as archive:  # torch's reader wants every entry under the archive's root folder
        root = archive.namelist()[0].split("/", 1)[0]
        archive.writestr(f"{root}/{METADATA}", json.dumps(metadata))
    partial.replace(path)
    return path


class CompiledPotential(nn.Module):
    """A compiled model file with the call interface of :class:`~equimol.models.potential.Potential`.

    ``forward(graph, compute_forces=True, compute_stress=False, compute_virials=False)`` returns
    ``energy`` ``[B]`` eV, ``node_energy`` ``[n]`` eV, ``forces`` ``[n, 3]`` eV/Å and, when asked,
    ``stress`` ``[B, 3, 3]`` eV/Å³ and ``atom_virial`` ``[n, 3, 3]`` eV (the compiled graph always
    computes all of them; files compiled before per-atom virials existed have none). No gradients
    flow out of it.
    """

    def __init__(self, path: Path, runner, metadata: dict) -> None:
        super().__init__()
        self.path, self.metadata = path, metadata
        self.__dict__["runner"] = runner  # not a submodule: an exported program refuses .train()/.eval()
        self.species = list(metadata["species"])
        self.radial_cutoff = float(metadata["radial_cutoff"])
        # a zero-size parameter: callers read a model's dtype and device from its parameters
        self.marker = nn.Parameter(torch.zeros(0, dtype=getattr(torch, metadata["dtype"])), requires_grad=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.marker.dtype

    def forward(
        self, graph, compute_forces: bool = True, compute_stress: bool = False, compute_virials: bool = False
    ) -> dict[str, torch.Tensor]:
        cell = graph.cell.view(-1, 3, 3)
        pbc = graph.pbc.view(-1, 3)
        volume = torch.linalg.det(cell).abs()
        degenerate = pbc.any(dim=1) & (volume <= 1e-12 * cell.norm(dim=-1).prod(dim=-1))
        if compute_stress and bool(degenerate.any()):
            raise EquimolInputError(f"{self.path}: a periodic cell of zero volume has no stress (cell={cell.tolist()})")
        batch = getattr(graph, "batch", None)
        if batch is None:
            batch = torch.zeros(graph.pos.shape[0], dtype=torch.long, device=graph.pos.device)
        inputs = (graph.pos.detach(), graph.atomic_numbers, cell, pbc, graph.edge_index, graph.cell_offsets, batch)
        energy, node_energy, forces, stress, *atom_virial = self.runner(*inputs)
        out = {"energy": energy, "node_energy": node_energy}
        if compute_forces:
            out["forces"] = forces
        if compute_stress:
            out["stress"] = stress
        if compute_virials:
            if not atom_virial:
                raise CompiledModelError(f"{self.path}: compiled without per-atom virials; compile the model again")
            out["atom_virial"] = atom_virial[0]
        return out


def load_compiled(path: str | Path, device: str | torch.device = "cpu", dtype=None) -> CompiledPotential:
    """Load a compiled model file written by :func:`compile_model`.

    Raises:
        FileNotFoundError: no such file.
        UnsafeArchiveError: not an equimol compiled file, a damaged one, or one holding anything that could run
            code when opened (:mod:`equimol.safe_archive`).
        CompiledModelError: a cast to another dtype, or another device type.
    """
    from equimol.safe_archive import check_compiled_archive
    from equimol.utils.dtype import resolve_dtype

    path = Path(path)
    metadata = check_compiled_archive(path)  # before torch opens it: no entry of the file may run code
    if metadata.get("target", "model") != "model":
        raise CompiledModelError(
            f"{path}: compiled with --target {metadata['target']} for LAMMPS's pair_style equimol; Python loads "
            "`equimol export MODEL OUT.pt2 --format aotinductor` files (the default target)"
        )
    if dtype is not None and str(resolve_dtype(dtype)).removeprefix("torch.") != metadata["dtype"]:
        raise CompiledModelError(
            f"{path}: compiled for {metadata['dtype']}; a compiled model cannot be cast, compile it again in {dtype}"
        )
    if torch.device(device).type != metadata["device_type"]:
        raise CompiledModelError(f"{path}: compiled for {metadata['device_type']}, cannot run on {device}")
    if metadata["mode"] == "export":
        runner = torch.export.load(path).module()
    else:
        runner = torch._inductor.aoti_load_package(str(path))
    return CompiledPotential(path, runner, metadata).to(device)
