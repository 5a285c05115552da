"""``equimol export CHECKPOINT OUT``: a self-contained model file (:mod:`equimol.export`) from a training checkpoint.

The file holds the EMA weights, every model hyperparameter, species, cutoff, dtype, the equimol
version and a format version; it loads with :func:`equimol.export.load_model` or
:class:`equimol.calculator.EquimolCalculator` without the training config.
"""

from __future__ import annotations

import argparse


def run_export(args: argparse.Namespace) -> int:
    from equimol.export import read_model_file
    from equimol.train.checkpoints import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.output)
    payload = read_model_file(path)
    species = ", ".join(str(z) for z in payload["species"])
    print(
        f"wrote {path}: species [{species}], cutoff {payload['radial_cutoff']} A, {payload['dtype']}, "
        f"format {payload['format_version']}, EMA weights: {payload['metadata'].get('ema')}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``equimol`` parser."""
    parser = subparsers.add_parser("export", help="write a self-contained model file from a training checkpoint")
    parser.add_argument("checkpoint", help="a checkpoint of `equimol train` (run_dir/checkpoints/*.ckpt)")
    parser.add_argument("output", help="model file to write (e.g. model.pt)")
    parser.set_defaults(func=run_export)
