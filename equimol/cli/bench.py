"""``equimol bench``: microbenchmarks (``bench tp`` times the tensor-product backends)."""

from __future__ import annotations

import argparse
import sys

from equimol.tp import available_backends


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like '1,2,3', got {text!r}") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _kernel_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(values) - {"torch", "triton"})
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"expected kernels from 'torch,triton', got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its subcommands to the ``equimol`` parser."""
    bench = subparsers.add_parser("bench", help="microbenchmarks")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    tp = bench_commands.add_parser(
        "tp",
        help="time tensor-product backends against each other",
        description="Time forward and forward+backward of each backend over a grid of L, channels and edges, "
        "interleaved in one process. Prints medians, peak memory and the scaling exponent in L.",
    )
    tp.add_argument(
        "--backends",
        default=",".join(available_backends()),
        help=f"comma-separated backends or backend/variant (default: all registered: {','.join(available_backends())})",
    )
    tp.add_argument("--lmax", type=_int_list, default=[1, 2, 3, 4], help="maximum degrees, e.g. 1,2,3")
    tp.add_argument("--channels", type=_int_list, default=[16], help="channel counts, e.g. 16,32")
    tp.add_argument("--edges", type=_int_list, default=[1000], help="samples (edges), e.g. 500,2000")
    tp.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    tp.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    tp.add_argument("--warmup", type=int, default=2, help="untimed repeats before timing")
    tp.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    tp.add_argument(
        "--kernel",
        type=_kernel_list,
        default=None,
        help="message-passing kernels to time, e.g. 'triton' or 'torch,triton': times the whole convolution "
        "(gather, product, scatter) per kernel instead of the bare product",
    )
    tp.add_argument("--json", dest="json_path", help="write the raw results to this JSON file")
    tp.add_argument("--plot", dest="plot_path", help="write a log-log PNG of time against L")
    tp.set_defaults(func=run_tp)


def run_tp(args: argparse.Namespace) -> int:
    """Run ``equimol bench tp`` with parsed arguments; returns the exit code."""
    from equimol.bench.report import format_tp_table, plot_tp, write_json
    from equimol.bench.tp import run_benchmark

    try:
        record = run_benchmark(
            args.backends,
            args.lmax,
            args.channels,
            args.edges,
            device=args.device,
            dtype=args.dtype,
            warmup=args.warmup,
            repeats=args.repeats,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            kernels=args.kernel,
        )
    except (ValueError, RuntimeError) as error:  # RuntimeError: kernel='triton' without a GPU or interpreter
        print(f"equimol bench tp: error: {error}", file=sys.stderr)
        return 2
    print(format_tp_table(record))
    if args.json_path:
        write_json(record, args.json_path)
        print(f"wrote {args.json_path}")
    if args.plot_path:
        plot_tp(record, args.plot_path)
        print(f"wrote {args.plot_path}")
    return 0
