"""``equimol export CHECKPOINT OUT``: a self-contained model file (:mod:`equimol.export`) from a training checkpoint.

``--format`` picks what is written: ``pt`` (the default) a model file; ``aotinductor`` or ``export``
(``equimol export MODEL_OR_CHECKPOINT OUT.pt2 --format aotinductor``) a compiled model file
(:mod:`equimol.pt2_model`): the energy-and-forces graph as an AOTInductor package or a ``torch.export``
program, which the calculator, TorchSim, LAMMPS and
``equimol predict`` load like a model file; ``--target lammps`` writes the AOTInductor package that
LAMMPS's ``pair_style equimol`` runs (:mod:`equimol.pt2_lammps`).

The file holds the EMA weights, every model hyperparameter, species, cutoff, dtype, the equimol
version and a format version; it loads with :func:`equimol.export.load_model` or
:class:`equimol.calculator.EquimolCalculator` without the training config.

Every flag is applied or refused: ``--dtype`` casts the exported model (its config records the new
dtype); ``--device``, ``--target``, ``--threads`` and ``--torch-kernel`` only mean something for a
compiled file and are refused with ``--format pt``. ``--compile [MODE]`` is the older spelling of
``--format MODE`` (``aotinductor`` when no MODE is given) and still works, with a one-line notice.
OUT must not be the input, and an existing OUT is replaced only with
``--overwrite`` (written atomically: a failed export leaves the old file as it was).
"""

from __future__ import annotations

import argparse

from equimol.cli.arguments import add_command, positive_int
from equimol.errors import EquimolInputError, warn_renamed

FORMATS = ("pt", "export", "aotinductor")


def run_compile(args: argparse.Namespace) -> int:
    """``--format aotinductor|export``: a checkpoint or model file to a compiled model file (``.pt2``)."""
    import tempfile
    from pathlib import Path

    import torch

    from equimol.export import load_model
    from equimol.pt2_model import compile_model
    from equimol.train.checkpoints import export_checkpoint

    device = args.device or "cpu"
    with tempfile.TemporaryDirectory() as folder:
        source = args.checkpoint
        if Path(source).suffix == ".ckpt":
            source = export_checkpoint(source, Path(folder) / "model.pt")
        model = load_model(source, device=device, dtype=args.dtype)
    if args.threads is not None:  # AOTInductor writes the thread count into the package's kernels
        torch.set_num_threads(args.threads)
    path = compile_model(model, args.output, mode=args.format, torch_kernel=args.torch_kernel, target=args.target)
    kernel = " (torch message-passing path)" if args.torch_kernel else ""
    target = ", target lammps (pair_style equimol)" if args.target == "lammps" else ""
    print(
        f"wrote {path}: {args.format} package, {str(model.dtype).removeprefix('torch.')}, {device}, "
        f"{torch.get_num_threads()} thread(s){kernel}{target}"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from equimol.export import read_model_file
    from equimol.train.checkpoints import export_checkpoint
    from equimol.utils.io import check_output

    check_output(args.output, [args.checkpoint], args.overwrite, "OUT")
    _format_from_compile(args)
    if args.format != "pt":
        return run_compile(args)
    for flag, given in (("--device", args.device is not None), ("--torch-kernel", args.torch_kernel)):
        if given:
            raise EquimolInputError(
                f"{flag} applies only with --format aotinductor|export: a model file is stored on the CPU and loads "
                "on any device (choose it when loading: equimol eval/predict --device, EquimolCalculator(device=...))"
            )
    for flag, given in (("--target", args.target != "model"), ("--threads", args.threads is not None)):
        if given:
            raise EquimolInputError(f"{flag} applies to compiled model files: add --format aotinductor")
    if Path(args.output).suffix == ".pt2":
        raise EquimolInputError(
            f"OUT {args.output!r} ends in .pt2, the compiled format: add --format aotinductor (or export), "
            "or name it *.pt"
        )
    path = export_checkpoint(args.checkpoint, args.output, dtype=args.dtype)
    payload = read_model_file(path)
    species = ", ".join(str(z) for z in payload["species"])
    print(
        f"wrote {path}: species [{species}], cutoff {payload['radial_cutoff']} A, {payload['dtype']}, "
        f"format {payload['format_version']}, EMA weights: {payload['metadata'].get('ema')}"
    )
    return 0


def _format_from_compile(args: argparse.Namespace) -> None:
    """``--compile [MODE]``, the older spelling of ``--format MODE``: one deprecation line, same meaning."""
    if args.compile is None:
        args.format = args.format or "pt"
        return
    warn_renamed(f"--compile {args.compile}", f"--format {args.compile}")
    if args.format is not None and args.format != args.compile:
        raise EquimolInputError(f"--compile {args.compile} contradicts --format {args.format}; give --format only")
    args.format = args.compile


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``equimol`` parser."""
    parser = add_command(
        subparsers, "export", run_export, help="write a self-contained model file from a training checkpoint"
    )
    parser.add_argument("checkpoint", help="a checkpoint of `equimol train` (run_dir/checkpoints/*.ckpt)")
    parser.add_argument("output", help="file to write (model.pt; model.pt2 with --format aotinductor|export)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="pt (default): a model file; aotinductor: the energy-and-forces graph compiled ahead of time to a "
        ".pt2 package; export: that graph as a torch.export program (.pt2). CHECKPOINT may be a model file "
        "for the .pt2 formats",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="aotinductor",
        choices=("aotinductor", "export"),
        help="older spelling of --format aotinductor|export (still works)",
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), help="cast the model first (default: its own)")
    parser.add_argument("--device", help="with a .pt2 --format: device to compile for (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument(
        "--target",
        choices=("model", "lammps"),
        default="model",
        help="with a .pt2 --format: 'model' (default) for Python (calculator, TorchSim, predict, fix external) or "
        "'lammps' for LAMMPS's pair_style equimol (AOTInductor)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="with --format aotinductor: threads the AOTInductor kernels use (default: torch's; 1 for one MPI rank "
        "per core)",
    )
    parser.add_argument(
        "--torch-kernel",
        action="store_true",
        help="with a .pt2 --format: a model with tp_options.kernel: triton cannot be traced; compile its torch "
        "message-passing path (same weights) instead",
    )
