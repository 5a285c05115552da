"""``equimol lammps MODEL INPUT --elements E1 E2 ...``: run a LAMMPS input script with an equimol potential.

The script (``units metal``) defines ``fix equimol all external pf/callback 1 1`` (and
``fix_modify equimol energy yes virial yes``); equimol serves that fix (:mod:`equimol.lammps`).
Under ``mpirun -np K`` every rank runs LAMMPS and rank 0 evaluates the model for all atoms: MPI
splits LAMMPS's own work, not the model's. LAMMPS and model errors end with one line, exit 2.

``equimol lammps build-plugin [--rebuild]`` compiles ``pair_style equimol`` (domain-decomposed,
:mod:`equimol.lammps_plugin`) once per torch/LAMMPS version and prints the ``plugin load`` path.
"""

from __future__ import annotations

import argparse
import sys

from equimol.cli.arguments import add_command
from equimol.errors import EquimolInputError

HELP = "run a LAMMPS input script with an equimol potential (fix external), or build-plugin (pair_style equimol)"
DESCRIPTION = (
    "Run a LAMMPS input script (units metal) whose 'fix equimol all external pf/callback 1 1' "
    "is served by the model: energy, forces and virial. Under mpirun, rank 0 evaluates the model."
)


def build_plugin(args: argparse.Namespace) -> int:
    """``equimol lammps build-plugin``: build (or find) the cached plugin and say how to use it."""
    from equimol.lammps_plugin import build_plugin as build

    if args.input is not None:
        raise EquimolInputError(f"build-plugin takes no input script (got {args.input!r})")
    path = build(rebuild=args.rebuild)
    print(path)
    print(
        f"in a LAMMPS input (units metal, newton on):\n  plugin load {path}\n  pair_style equimol MODEL.pt2\n"
        "  pair_coeff * * El1 El2 ...\nwith MODEL.pt2 from "
        "`equimol export MODEL MODEL.pt2 --format aotinductor --target lammps`",
        file=sys.stderr,
    )
    return 0


def run_lammps(args: argparse.Namespace) -> int:
    from equimol.lammps import LammpsCouplingError, load_lammps
    from equimol.lammps_input import run_input

    if args.model == "build-plugin":
        return build_plugin(args)
    if args.input is None or not args.elements:
        raise EquimolInputError("expected MODEL INPUT --elements E1 E2 ... (or `equimol lammps build-plugin`)")

    lammps = load_lammps()
    try:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    except ImportError:  # a serial LAMMPS needs no mpi4py
        comm = None
    cmdargs = ["-log", args.log or "none", "-nocite"] + (["-screen", "none"] if args.quiet else [])
    lmp = lammps(cmdargs=cmdargs, comm=comm) if comm is not None else lammps(cmdargs=cmdargs)
    options = {"check_masses": not args.no_mass_check, "device": args.device, "dtype": args.dtype}
    options["per_atom"] = args.per_atom
    try:
        coupling = run_input(lmp, args.input, args.model, args.elements, fix_id=args.fix_id, comm=comm, **options)
    except Exception as error:
        if str(error).startswith("ERROR"):  # LAMMPS's own input errors: a user error, one line
            raise LammpsCouplingError(f"{args.input}: LAMMPS {str(error).splitlines()[0]}") from error
        raise
    finally:
        lmp.close()
    if comm is None or comm.Get_rank() == 0:
        print(f"equimol lammps: {coupling.evaluations} force evaluations")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lammps`` to the ``equimol`` parser."""
    parser = add_command(subparsers, "lammps", run_lammps, HELP, DESCRIPTION)
    parser.add_argument("model", help="model file (equimol export), or build-plugin: build pair_style equimol")
    parser.add_argument("input", nargs="?", help="LAMMPS input script")
    parser.add_argument("--elements", nargs="+", help="element of each LAMMPS type, type 1 first (required to run)")
    parser.add_argument("--fix-id", default="equimol", help="ID of the fix external in the script (default equimol)")
    parser.add_argument("--no-mass-check", action="store_true", help="allow masses unlike the elements' (isotopes)")
    parser.add_argument(
        "--per-atom", action="store_true", help="per-atom energies and virials for compute pe/atom and stress/atom"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="cast the model (default: its own)")
    parser.add_argument("--log", help="LAMMPS log file (default: none)")
    parser.add_argument("--quiet", action="store_true", help="no LAMMPS screen output")
    parser.add_argument("--rebuild", action="store_true", help="with build-plugin: build again even if cached")
