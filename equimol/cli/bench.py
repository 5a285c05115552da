"""``equimol bench``: microbenchmarks (``bench tp``: the tensor-product backends; ``bench model``: the potential)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from equimol.cli.arguments import add_command, add_command_group, non_negative_int, positive_float, positive_int
from equimol.errors import EquimolInputError

# e3nn's spherical harmonics stop at l = 12 (NotImplementedError above): no model can use a higher degree
MAX_LMAX = 12

_TP_DESCRIPTION = (
    "Time forward and forward+backward of each backend over a grid of L, channels and edges, "
    "interleaved in one process. Prints medians, peak memory and the scaling exponent in L."
)
_MODEL_DESCRIPTION = (
    "Time model(graph, compute_forces=True) per structure for 3BPA, periodic Cu and water boxes "
    "of growing size, for each backend and message-passing kernel, interleaved in one process."
)


def _lmax_list(text: str) -> list[int]:
    values = _int_list(text)
    if max(values) > MAX_LMAX:
        raise argparse.ArgumentTypeError(f"degrees above {MAX_LMAX} are not supported by e3nn, got {text!r}")
    return values


def _lmax(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_LMAX:
        raise argparse.ArgumentTypeError(f"degrees above {MAX_LMAX} are not supported by e3nn, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like '1,2,3', got {text!r}") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _kernel_list(text: str, allowed: tuple[str, ...] = ("torch", "triton")) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(values) - set(allowed))
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"expected kernels from {','.join(allowed)!r}, got {text!r}")
    return values


def _model_kernel_list(text: str) -> list[str]:
    return _kernel_list(text, ("torch", "triton", "export", "aotinductor"))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its subcommands to the ``equimol`` parser."""
    bench_commands = add_command_group(subparsers, "bench", help="microbenchmarks", metavar="BENCHMARK")
    tp = add_command(bench_commands, "tp", run_tp, "time tensor-product backends against each other", _TP_DESCRIPTION)
    tp.add_argument(
        "--backends",
        default=None,
        help="comma-separated backends or backend/variant (default: every registered backend, `equimol.tp."
        "available_backends()`; with --kernel triton, those with a fused kernel)",
    )
    tp.add_argument("--lmax", type=_lmax_list, default=[1, 2, 3, 4], help="maximum degrees, e.g. 1,2,3")
    tp.add_argument("--channels", type=_int_list, default=[16], help="channel counts, e.g. 16,32")
    tp.add_argument("--edges", type=_int_list, default=[1000], help="samples (edges), e.g. 500,2000")
    tp.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    tp.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    tp.add_argument("--warmup", type=non_negative_int, default=2, help="untimed repeats before timing")
    tp.add_argument("--repeats", type=positive_int, default=5, help="timed repeats (the median is reported)")
    tp.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's; the JSON records it)"
    )
    tp.add_argument(
        "--kernel",
        type=_kernel_list,
        default=None,
        help="message-passing kernels to time, e.g. 'triton' or 'torch,triton': times the whole convolution "
        "(gather, product, scatter) per kernel instead of the bare product",
    )
    tp.add_argument("--json", dest="json_path", help="write the raw results to this JSON file")
    tp.add_argument("--plot", dest="plot_path", help="write a log-log PNG of time against L")
    tp.add_argument("--overwrite", action="store_true", help="replace existing --json/--plot files")
    _register_model(bench_commands)


def _register_model(bench_commands: argparse._SubParsersAction) -> None:
    model = add_command(
        bench_commands,
        "model",
        run_model,
        "time the potential's energy and forces against system size",
        _MODEL_DESCRIPTION,
    )
    model.add_argument("--backends", default="cg,cp,gaunt/grid", help="comma-separated backends or backend/variant")
    model.add_argument(
        "--kernel",
        type=_model_kernel_list,
        default=["torch"],
        help="kernels, e.g. 'torch' or 'torch,triton'; 'export' and 'aotinductor' time the torch-kernel model "
        "as a compiled model file (equimol export --format aotinductor; aotinductor takes minutes to build on a CPU)",
    )
    model.add_argument("--systems", default="3bpa,cu,water", help="comma-separated systems from 3bpa, cu, water")
    model.add_argument("--3bpa-file", dest="molecule_file", help="file with a 3BPA molecule (first frame is timed)")
    model.add_argument("--max-atoms", type=positive_int, default=2200, help="largest box to time (atoms)")
    model.add_argument("--channels", type=positive_int, default=32, help="channels per irrep")
    model.add_argument("--lmax", type=_lmax, default=2, help="maximum degree of the node features")
    model.add_argument("--radial-cutoff", type=positive_float, default=5.0, help="radial cutoff in Å")
    model.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    model.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    model.add_argument("--warmup", type=non_negative_int, default=1, help="untimed repeats before timing")
    model.add_argument("--repeats", type=positive_int, default=3, help="timed repeats (the median is reported)")
    model.add_argument("--json", dest="json_path", help="write the raw results to this JSON file")
    model.add_argument("--plot", dest="plot_path", help="write a log-log PNG of time against atoms")
    model.add_argument("--overwrite", action="store_true", help="replace existing --json/--plot files")


def _print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, *names: str) -> dict:
    """The parsed options ``names`` as keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}


def _measure_and_report(args: argparse.Namespace, measure: Callable[[], dict], table, plot) -> int:
    """Run ``measure()``, print ``table(record)``, write ``--json`` and ``--plot`` if asked; exit code 0."""
    from equimol.microbench.report import write_json
    from equimol.utils.io import check_output

    for path, flag in ((args.json_path, "--json"), (args.plot_path, "--plot")):
        if path:  # before the measurement: a result file is never replaced unasked
            check_output(path, overwrite=args.overwrite, flag=flag)
    try:
        record = measure()
    except RuntimeError as error:  # no such device, or kernel="triton" without a GPU or interpreter: an input error
        raise EquimolInputError(str(error)) from error
    print(table(record))
    for path, write in ((args.json_path, write_json), (args.plot_path, plot)):
        if path:
            write(record, path)
            print(f"wrote {path}")
    return 0


def run_model(args: argparse.Namespace) -> int:
    """Run ``equimol bench model`` with parsed arguments; returns the exit code."""
    from equimol.microbench.model import format_model_table, plot_model, run_model_benchmark

    def measure() -> dict:
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        sizes = _settings(args, "max_atoms", "molecule_file", "channels", "lmax", "radial_cutoff")
        timing = _settings(args, "device", "dtype", "warmup", "repeats")
        return run_model_benchmark(args.backends, args.kernel, systems, progress=_print_progress, **sizes, **timing)

    return _measure_and_report(args, measure, format_model_table, plot_model)


def run_tp(args: argparse.Namespace) -> int:
    """Run ``equimol bench tp`` with parsed arguments; returns the exit code."""
    from equimol.microbench.report import format_tp_table, plot_tp
    from equimol.microbench.tp import run_benchmark

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    def measure() -> dict:
        backends = args.backends
        if backends is None:
            from equimol.tp import available_backends

            backends = available_backends()
            if args.kernel and "triton" in args.kernel:
                import equimol.kernels  # noqa: F401  (raises if Triton cannot run here)
                from equimol.tp import factored_backends

                backends = [name for name in backends if name in factored_backends()]
        timing = _settings(args, "device", "dtype", "warmup", "repeats")
        grid = (args.lmax, args.channels, args.edges)
        return run_benchmark(backends, *grid, kernels=args.kernel, progress=_print_progress, **timing)

    return _measure_and_report(args, measure, format_tp_table, plot_tp)
