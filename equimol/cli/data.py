"""``equimol data``: convert datasets to OC20-layout LMDBs and print their statistics.

- ``equimol data convert IN [IN ...] OUT``: any input equimol reads
  (:func:`~equimol.datasets.sources.open_source`: ASE-readable files, OC20 raw ``*.extxyz[.xz]`` with its
  ``*.txt[.xz]``, LMDBs) to one LMDB file in the OC20 layout, with a progress bar. Frames are streamed
  (memory holds one frame); an unreadable frame stops the conversion with an error naming the file and
  frame, and the partial output is removed. OUT must end in ``.lmdb`` (the name every reader recognises
  the format by), must not be an input, and is replaced only with ``--overwrite``.
- ``equimol data stats IN [IN ...]``: counts, species, energy/force statistics, average neighbors,
  from a seeded sample (``--sample``, default 2000 frames) with standard errors.
- ``equimol data index PATH [PATH ...]``: add the atom-count index to LMDBs written by other tools
  (fairchem), once, by streaming their frames; ``data convert`` writes it itself.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from equimol.cli.arguments import add_command, add_command_group, positive_float
from equimol.errors import EquimolInputError

_CONVERT_DESCRIPTION = (
    "Stream frames of ASE-readable files (or OC20 extxyz.xz + txt.xz pairs) into one LMDB "
    "in the OC20 layout (pickled torch-geometric Data, keys '0'..'n-1' and 'length')."
)
_INDEX_DESCRIPTION = (
    "Stream the frames of OC20-layout LMDBs (a file or a folder of *.lmdb) and store every "
    "frame's atom count under the key 'equimol_natoms', in one atomic LMDB transaction per file "
    "(and 'length' where it is missing). Size-bounded batching of sampled statistics needs it."
)


def _keys(args: argparse.Namespace):
    from equimol.datasets.readers import LabelKeys

    forces = None if args.forces_key in ("", "none") else args.forces_key
    stress = None if args.stress_key in ("", "none") else args.stress_key
    return LabelKeys(args.energy_key, forces, stress, require_forces=forces is not None)


def _add_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--energy-key", default="energy", help="energy label name (default: energy)")
    parser.add_argument("--forces-key", default="forces", help="forces label name, or 'none' (default: forces)")
    parser.add_argument("--stress-key", default="stress", help="stress label name, or 'none' (default: stress)")


def run_convert(args: argparse.Namespace) -> int:
    """Stream every input frame into one LMDB file."""
    from equimol.datasets.lmdb_dataset import write_lmdb
    from equimol.datasets.sources import open_source
    from equimol.utils.io import check_output

    if Path(args.output).suffix != ".lmdb":
        raise EquimolInputError(
            f"output {args.output!r}: name it *.lmdb; equimol reads an LMDB by that suffix, and could not read "
            "this file back"
        )
    check_output(args.output, args.inputs, args.overwrite, "output")
    keys = _keys(args)
    for path in args.inputs:
        if not Path(path).exists():
            raise FileNotFoundError(f"input {path!r} does not exist; check the path")
    sources = [open_source(path, keys) for path in args.inputs]
    count = write_lmdb(
        itertools.chain.from_iterable(source.records() for source in sources),
        args.output,
        legacy_names=args.legacy_names,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(f"wrote {count} frames to {args.output}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Print the statistics of the inputs (cached; recomputed when a file changes)."""
    from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
    from equimol.datasets.references import load_element_references
    from equimol.datasets.statistics import cached_statistics

    settings = LabelSettings(
        radial_cutoff=args.radial_cutoff,
        element_references=load_element_references(args.element_references, args.energy_key),
        forces_on=args.forces_on,
    )
    dataset = AtomsDataset(args.inputs, settings, _keys(args))
    sample = None if args.sample == "all" else int(args.sample)
    statistics = cached_statistics(dataset, progress=not args.quiet, sample_size=sample, seed=args.seed)
    print(f"cutoff                     {args.radial_cutoff} A")
    print(statistics.summary())
    return 0


def run_index(args: argparse.Namespace) -> int:
    """Add the atom-count index to every LMDB file behind each path (kept when present, unless ``--force``)."""
    from equimol.datasets.lmdb_dataset import LmdbFrames
    from equimol.datasets.lmdb_index import index_lmdb
    from equimol.datasets.sources import open_source
    from equimol.errors import EquimolInputError

    for path in args.paths:
        source = open_source(path)
        if source.name != LmdbFrames.name:
            raise EquimolInputError(
                f"{path} is read as {source.name!r} data, which needs no atom-count index (only LMDBs carry one); "
                "give .lmdb files or folders of them"
            )
        count = index_lmdb(path, force=args.force, progress=not args.quiet)
        print(f"indexed {count} frames in {path}")
    return 0


def _sample_size(text: str) -> str:
    if text != "all" and not (text.isdigit() and int(text) >= 2):
        raise argparse.ArgumentTypeError(f"expected a number of frames >= 2 or 'all', got {text!r}")
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data convert`` and ``data stats`` to the ``equimol`` parser."""
    commands = add_command_group(
        subparsers, "data", help="convert datasets and print their statistics", metavar="ACTION"
    )
    convert = add_command(
        commands, "convert", run_convert, "write ASE-readable files to an OC20-layout LMDB", _CONVERT_DESCRIPTION
    )
    convert.add_argument("inputs", nargs="+", help="input files, or folders of OC20 extxyz.xz + txt.xz pairs")
    convert.add_argument("output", help="output .lmdb file (must not exist unless --overwrite)")
    convert.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    _add_key_arguments(convert)
    convert.add_argument("--legacy-names", action="store_true", help="store energy/forces as y/force")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    stats = add_command(commands, "stats", run_stats, help="print counts, species, energy/force statistics, neighbors")
    stats.add_argument("inputs", nargs="+", help="input files (any format equimol reads, LMDB included)")
    stats.add_argument("--radial-cutoff", type=positive_float, default=5.0, help="graph cutoff in Å (default 5.0)")
    stats.add_argument("--element-references", help="E0s: .npz with coeff[Z] or an isolated-atoms file")
    stats.add_argument("--forces-on", choices=["all", "free"], default="all", help="atoms in force statistics")
    _add_key_arguments(stats)
    stats.add_argument(
        "--sample", type=_sample_size, default="2000", help="frames in the seeded sample, or 'all' (default 2000)"
    )
    stats.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    stats.add_argument("--quiet", action="store_true", help="no progress bar")
    index = add_command(
        commands, "index", run_index, "add the atom-count index to LMDBs written by other tools", _INDEX_DESCRIPTION
    )
    index.add_argument("paths", nargs="+", help=".lmdb files or folders of them")
    index.add_argument("--force", action="store_true", help="rebuild an existing index")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
