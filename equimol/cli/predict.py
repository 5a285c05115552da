"""``equimol predict MODEL INPUTS... --out FILE``: energies, forces and stress of many structures, on N processes.

INPUTS are any files equimol reads (extxyz and everything else :mod:`ase.io` reads, ASE db, OC20
raw pairs, LMDB files or folders), opened by :func:`~equimol.datasets.sources.open_source`. Frames are
streamed (:meth:`~equimol.datasets.frame_source.FrameSource.frames`): ASE files frame by frame, LMDBs by
index, so memory holds one batch, not the data set.

**Output** (extended XYZ, one frame per input frame, in input order): each frame as it was read,
its labels included (an ASE frame keeps its ``info``, ``arrays`` and calculator results; an LMDB or
OC20 frame its ``energy``/``forces``/``stress``), positions in float64 as read, cell and pbc also for
non-periodic frames; the predictions under ``--prefix`` (default ``equimol_``): ``equimol_energy``
(eV) in the header, ``equimol_forces`` (eV/Å) per atom, ``equimol_stress`` (eV/Å³, ASE Voigt order,
positive = tensile) in the header for periodic frames only; and ``equimol_index`` (frame number over
all inputs, from 0) and ``equimol_source`` (``file:frame``). ASE reads it back with
``ase.io.read(FILE, ":")`` (``atoms.info["equimol_energy"]``, ``atoms.arrays["equimol_forces"]``; the
reference labels through ``atoms.get_potential_energy()`` as before). Numbers are written with
ASE's extxyz precision (8 decimals for positions and forces: an extxyz input's positions come back
unchanged).

``--quiet`` turns off the progress bar (tqdm, through Lightning) and Lightning's informational log.

**Processes.** ``--num-processes N`` runs Lightning's predict loop with DDP (gloo on CPU): frame
``i`` goes to process ``i mod N``, each process writes its predictions to a part file in input
order, and process 0 merges the parts by ``equimol_index`` (a streaming merge) into FILE. Any N
gives the same file. Lightning starts processes 1..N-1 by re-running this command line.

**Nothing lost or mixed.** ``--out`` must not be one of the inputs, and an existing file is
replaced only with ``--overwrite``. The job holds a lock beside it (``.<out>.lock``,
:func:`equimol.utils.locks.exclusive_lock`) while it runs, so a second job with the same ``--out``
is refused, naming the first; its part files go to a folder of its own. The processes tell each other
whether they succeeded before anything is written: if any failed (a bad frame on any process, a
full disk), process 0 reports the first failure in one line and FILE is left as it was. FILE is
written atomically (:func:`equimol.utils.io.atomic_write`).

**Slabs and wires** (periodic in one or two directions): energy and forces are predicted; a stress
needs a cell periodic in all three directions, so theirs is skipped, and the command says for how
many frames.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from equimol.errors import EquimolInputError

HELP = "energies, forces and stress of many structures (extxyz out)"
PARTS_VARIABLE = "EQUIMOL_PREDICT_PARTS"  # the part folder, for the processes Lightning starts
DESCRIPTION = (
    "Stream the frames of INPUTS (extxyz, ASE db, ..., LMDB) through a model and write energy, "
    "forces and stress (periodic frames) to an extended XYZ file, in input order. --num-processes N runs "
    "Lightning's predict loop on N processes."
)


def _frames(inputs: list[str]) -> Iterator[tuple[str, object, object]]:
    """Yield ``(where, frame_record, atoms)`` for every frame of every input, streaming; ``atoms`` is the frame
    as read (ASE inputs) or rebuilt from the record (LMDB, OC20 raw), labels included."""
    from equimol.datasets.readers import LabelKeys
    from equimol.datasets.sources import open_source

    # labels are read where present (an LMDB or OC20 frame keeps them through its record), never required
    keys = LabelKeys("energy", "forces", "stress", require_energy=False, require_forces=False)
    for path in inputs:
        for index, (atoms, record) in enumerate(open_source(path, keys).frames()):
            yield f"{path}:{index}", record, atoms


def prediction_frames(inputs: list[str], radial_cutoff: float, dtype, species: list[int]):
    """Graphs of this process's share of the frames (``index % world_size == rank``), streamed in order
    (a ``torch`` ``IterableDataset``; each graph carries its frame as read, ``source_atoms``)."""
    import torch

    class PredictionFrames(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from _graphs(inputs, radial_cutoff, dtype, set(species))

    return PredictionFrames()


def _graphs(inputs: list[str], radial_cutoff: float, dtype, species: set[int]):
    import numpy as np
    import torch
    from ase.data import chemical_symbols

    from equimol.datasets.readers import DataFormatError
    from equimol.graph import structure_to_graph
    from equimol.structure_checks import StructureError

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    for index, (where, record, atoms) in enumerate(_frames(inputs)):
        if index % world != rank:
            continue
        numbers = record.atomic_numbers.numpy()
        unknown = sorted(set(numbers.tolist()) - species)
        if unknown:
            raise DataFormatError(
                f"{where}: element(s) {[chemical_symbols[z] for z in unknown]} are not among the model's "
                f"species {[chemical_symbols[z] for z in sorted(species)]}"
            )
        pbc = record.pbc.reshape(3).numpy() if "pbc" in record else np.ones(3, dtype=bool)
        cell = record.cell.reshape(3, 3).double().numpy()
        try:
            graph = structure_to_graph(record.pos.double().numpy(), numbers, cell, pbc, radial_cutoff, dtype)
        except StructureError as error:  # refused before the neighbor list: a cell or positions it cannot take
            raise DataFormatError(f"{where}: {error}") from error
        except RuntimeError as error:  # vesin: e.g. a periodic frame with a singular cell
            raise DataFormatError(f"{where}: no neighbor list ({error})") from error
        graph.frame_number = torch.tensor([index])
        graph.where = where
        graph.source_atoms = atoms
        yield graph


def _lightning_module(model):
    import lightning as L
    import torch

    class Predictor(L.LightningModule):
        """Energy, forces and stress of a batch; stress only for periodic structures."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def predict_step(self, batch, batch_idx: int) -> list:
            with torch.enable_grad():
                out = self.model(_stress_input(batch), compute_forces=True, compute_stress=bool(batch.pbc.all(1).any()))
            results = []
            for graph_index in range(batch.num_graphs):
                atoms = batch.ptr[graph_index].item(), batch.ptr[graph_index + 1].item()
                periodic = bool(batch.pbc[graph_index].all())  # a stress needs three periodic directions
                stress = out["stress"][graph_index].detach().double().cpu().numpy() if periodic else None
                results.append(
                    {
                        "index": int(batch.frame_number[graph_index]),
                        "where": batch.where[graph_index],
                        "atoms": batch.source_atoms[graph_index],
                        "energy": float(out["energy"][graph_index]),
                        "forces": out["forces"][atoms[0] : atoms[1]].detach().double().cpu().numpy(),
                        "stress": stress,
                    }
                )
            return results

    return Predictor()


def _stress_input(batch):
    """``batch`` with the pbc of structures not periodic in all three directions set to False: the model then
    asks no stress of them (a slab's cell may have no third vector, hence no volume)."""
    import copy

    masked = copy.copy(batch)
    masked.pbc = batch.pbc & batch.pbc.all(dim=1, keepdim=True)
    return masked


def _to_atoms(result: dict, prefix: str):
    """The frame as read, with the predictions under ``prefix`` and ``equimol_index``/``equimol_source``."""
    atoms = result["atoms"]
    atoms.info["equimol_index"] = result["index"]
    atoms.info["equimol_source"] = result["where"]
    atoms.info[f"{prefix}energy"] = result["energy"]
    atoms.arrays[f"{prefix}forces"] = result["forces"]
    if result["stress"] is not None:
        full = result["stress"]
        atoms.info[f"{prefix}stress"] = full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return atoms


def _part_writer(folder: Path, output: Path, prefix: str):
    import ase.io
    from lightning.pytorch.callbacks import BasePredictionWriter

    from equimol.utils.io import output_error

    class PartWriter(BasePredictionWriter):
        """Append each batch's predictions to this process's part file (input order within the process)."""

        def __init__(self) -> None:
            super().__init__(write_interval="batch")

        def write_on_batch_end(self, trainer, module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
            part = folder / f"part{trainer.global_rank}.extxyz"
            try:
                with open(part, "a", encoding="utf-8") as handle:
                    for result in prediction:
                        ase.io.write(handle, _to_atoms(result, prefix), format="extxyz")
            except OSError as error:  # a full disk: name the output, not the hidden part file
                raise output_error(output, error) from error

    return PartWriter()


def merge_parts(folder: Path, output: Path, processes: int) -> tuple[int, int]:
    """Merge the part files by ``equimol_index`` into ``output`` (written atomically); returns the frame count
    and the count of frames periodic in one or two directions (stress skipped)."""
    import ase.io

    from equimol.utils.io import atomic_write

    parts = [folder / f"part{rank}.extxyz" for rank in range(processes)]
    streams = [ase.io.iread(str(part), index=":", format="extxyz") for part in parts if part.is_file()]
    merged = heapq.merge(*streams, key=lambda atoms: atoms.info["equimol_index"])
    count = partial_pbc = 0
    with atomic_write(output, "w") as handle:
        for atoms in merged:
            ase.io.write(handle, atoms, format="extxyz")
            count += 1
            partial_pbc += bool(atoms.pbc.any() and not atoms.pbc.all())
    return count, partial_pbc


def _failures(failure: BaseException | None) -> list[str | None]:
    """Every process's failure message (``None``: it succeeded), exchanged once all have finished predicting."""
    import torch

    message = None if failure is None else " ".join(f"{failure}".split()) or type(failure).__name__
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [message]
    messages: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(messages, message)
    return messages


def run_predict(args: argparse.Namespace) -> int:
    import secrets

    from equimol.utils.io import check_output, output_error
    from equimol.utils.locks import exclusive_lock

    output = Path(args.out)
    if output.suffix not in (".xyz", ".extxyz"):
        raise EquimolInputError(f"--out {args.out}: write predictions to an extended XYZ file (.xyz or .extxyz)")
    for path in args.inputs:
        if not Path(path).exists():
            raise FileNotFoundError(f"input {path!r} does not exist")
    if os.environ.get(PARTS_VARIABLE):  # a process Lightning started: the first one holds the lock
        return _predict(args, output, Path(os.environ[PARTS_VARIABLE]))
    check_output(output, args.inputs, args.overwrite, "--out")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(output, error) from error
    with exclusive_lock(output.with_name(f".{output.name}.lock"), f"--out {str(output)!r}"):
        check_output(output, args.inputs, args.overwrite, "--out")  # again: a job may have finished meanwhile
        for stale in output.parent.glob(f".{output.name}.parts-*"):  # of killed jobs: no one holds the lock
            shutil.rmtree(stale, ignore_errors=True)
        folder = output.with_name(f".{output.name}.parts-{secrets.token_hex(4)}")
        os.environ[PARTS_VARIABLE] = str(folder)  # inherited by the processes Lightning starts
        try:
            return _predict(args, output, folder)
        finally:
            os.environ.pop(PARTS_VARIABLE, None)
            shutil.rmtree(folder, ignore_errors=True)


def _predict(args: argparse.Namespace, output: Path, folder: Path) -> int:
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar  # tqdm, also where rich is installed
    from torch_geometric.loader import DataLoader

    from equimol.datasets.readers import DataFormatError
    from equimol.export import load_model

    model = load_model(args.model, device="cpu", dtype=args.dtype)
    frames = prediction_frames(args.inputs, model.radial_cutoff, model.dtype, model.species)
    loader = DataLoader(frames, batch_size=args.batch_size)
    # the writer takes frame numbers from the batches, not from Lightning's batch indices
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")  # Lightning's own use of torch's pytree
    if args.quiet:  # no progress bar and no Lightning banner (GPU available, ...)
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    strategy = "auto"
    if args.num_processes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo" if args.accelerator == "cpu" else None)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.num_processes,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not args.quiet,
        enable_model_summary=False,
        inference_mode=False,  # forces and stress need autograd
        callbacks=[_part_writer(folder, output, args.prefix)] + ([] if args.quiet else [TQDMProgressBar()]),
    )
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
    failure = None
    try:
        trainer.predict(_lightning_module(model), dataloaders=loader, return_predictions=False)
    except Exception as error:  # noqa: BLE001 - every process learns of it before anything is written
        failure = error
    failures = _failures(failure)
    if not trainer.is_global_zero:
        return 0  # process 0 reports a failure of any process, once, and exits with status 2
    if failure is not None:
        raise failure
    for rank, message in enumerate(failures):
        if message is not None:
            raise DataFormatError(f"process {rank} of {len(failures)} failed, so {output} was not written: {message}")
    count, partial_pbc = merge_parts(folder, output, args.num_processes)
    print(f"wrote {count} predictions to {output}")
    if partial_pbc:
        print(f"stress skipped for {partial_pbc} frame(s) periodic in only one or two directions (slabs, wires)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``equimol`` parser."""
    from equimol.cli.arguments import add_command, positive_int

    parser = add_command(subparsers, "predict", run_predict, HELP, DESCRIPTION)
    parser.add_argument("model", help="model file (equimol export)")
    parser.add_argument("inputs", nargs="+", help="structure files: anything ase.io reads, ASE db, LMDB")
    parser.add_argument("--out", required=True, help="extended XYZ file to write (.xyz or .extxyz)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="structures per batch (default 8)")
    parser.add_argument("--num-processes", type=positive_int, default=1, help="processes (DDP; default 1)")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu or gpu (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="cast the model (default: its own)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--prefix",
        type=_prefix,
        default="equimol_",
        help="name prefix of the predicted keys: <prefix>energy, <prefix>forces, <prefix>stress (default equimol_)",
    )


def _prefix(text: str) -> str:
    """A non-empty key prefix of letters, digits and underscores (the reference labels keep the plain names)."""
    if not text or not text.replace("_", "a").isalnum() or not text.isascii():
        raise argparse.ArgumentTypeError(f"expected letters, digits and underscores, not empty, got {text!r}")
    return text
