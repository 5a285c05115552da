"""``equimol eval MODEL DATA``: errors of a model on labelled data, as a table; JSON and a parity plot when asked.

MODEL is a model file (``equimol export``, or ``run_dir/model.pt`` of ``equimol train``) or a
training checkpoint (``*.ckpt``, exported on the fly with its EMA weights). DATA is any file
equimol reads (extxyz, ASE trajectory/db, OC20 raw pairs, LMDB). Energies compared are the stored
total energies. Metrics: energy RMSE/MAE per structure and per atom, force RMSE/MAE, stress
RMSE/MAE when the data have stress (:mod:`equimol.train.evaluate`); stress on some structures only is
refused (:mod:`equimol.datasets.loader`). One-atom frames of ``--isolated-atom-type`` (MACE's
``IsolatedAtom`` E0 frames) are skipped.

Files are written only when asked: ``--json FILE`` (metrics) and ``--plot FILE`` (parity plot). Both
are written atomically, never over MODEL or DATA, and over an existing file only with ``--overwrite``;
they are checked before the model is evaluated.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from equimol.cli.arguments import add_command, positive_int
from equimol.errors import EquimolInputError

HELP = "energy/force/stress errors of a model on labelled data"


def _load(model_path: str, device: str, dtype: str | None):
    from equimol.export import load_model
    from equimol.train.checkpoints import export_checkpoint

    if Path(model_path).suffix == ".ckpt":
        with tempfile.TemporaryDirectory() as folder:
            exported = export_checkpoint(model_path, Path(folder) / "model.pt")
            return load_model(exported, device=device, dtype=dtype)
    return load_model(model_path, device=device, dtype=dtype)


def run_eval(args: argparse.Namespace) -> int:
    from torch.utils.data import Subset

    from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings, split_isolated_atoms
    from equimol.datasets.loader import GraphLoader
    from equimol.datasets.readers import LabelKeys
    from equimol.train.evaluate import evaluate, write_report
    from equimol.utils.io import check_output

    if args.json and args.plot and Path(args.json).resolve() == Path(args.plot).resolve():
        raise EquimolInputError(f"--json and --plot are the same file {args.json!r}; give two names")
    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        if path:
            check_output(path, [args.model, *args.data], args.overwrite, flag)
    model = _load(args.model, args.device, args.dtype)
    forces = None if args.forces_key in ("", "none") else args.forces_key
    stress = None if args.stress_key in ("", "none") else args.stress_key
    isolated_type = None if args.isolated_atom_type in ("", "none") else args.isolated_atom_type
    keys = LabelKeys(
        args.energy_key,
        forces,
        stress,
        require_forces=forces is not None,
        isolated_atom_type=isolated_type,
        forces_hint="--forces-key none",
    )
    settings = LabelSettings(radial_cutoff=model.radial_cutoff, dtype=model.dtype, forces_on=args.forces_on)
    dataset = AtomsDataset(args.data, settings, keys)
    kept, _ = split_isolated_atoms(dataset, isolated_type)
    loader = GraphLoader(Subset(dataset, kept), batch_size=args.batch_size, shuffle=False)
    report = evaluate(model, loader, progress=not args.quiet)
    extra = {"model": str(args.model), "data": [str(p) for p in args.data]}
    write_report(report, args.json, args.plot, title=Path(args.data[0]).name, extra=extra)
    written = [str(path) for path in (args.json, args.plot) if path]
    if written:
        print(f"wrote {' and '.join(written)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``equimol`` parser."""
    parser = add_command(subparsers, "eval", run_eval, HELP)
    parser.add_argument("model", help="model file (equimol export) or training checkpoint (.ckpt)")
    parser.add_argument("data", nargs="+", help="labelled data file(s)")
    parser.add_argument("--json", help="write the metrics to this JSON file (default: none)")
    parser.add_argument("--plot", help="write a parity plot to this PNG file (default: none)")
    parser.add_argument("--batch-size", type=positive_int, default=10, help="structures per batch (default 10)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="cast the model (default: its own)")
    parser.add_argument("--energy-key", default="energy", help="energy label name (default energy)")
    parser.add_argument("--forces-key", default="forces", help="forces label name, or none (default forces)")
    parser.add_argument("--stress-key", default="stress", help="stress label name, or none (default stress)")
    parser.add_argument("--forces-on", choices=("all", "free"), default="all", help="atoms whose forces count")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --json/--plot files")
    parser.add_argument(
        "--isolated-atom-type",
        default="IsolatedAtom",
        help="skip one-atom frames whose config_type is this (MACE's E0 frames), or none (default IsolatedAtom)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
