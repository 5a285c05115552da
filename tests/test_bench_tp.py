"""``equimol bench tp``: it runs end to end, writes its files, and rejects bad arguments clearly."""

import pytest

from equimol.cli import main
from equimol.microbench.tp import best_per_backend, parse_series, scaling_exponents


def test_bench_tp_writes_json_and_plot(bench_record, tmp_path, capsys):
    plot_path = tmp_path / "out.png"
    record = bench_record(
        "tp", "--backends", "cg", "--lmax", "1,2", "--channels", "4", "--edges", "20", "--warmup", "1",
        "--repeats", "2", "--plot", str(plot_path)
    )  # fmt: skip
    assert [m["lmax"] for m in record["measurements"]] == [1, 2]
    assert all(m["forward_s"] > 0 and m["forward_backward_s"] > 0 for m in record["measurements"])
    assert record["machine"]["torch"] and record["machine"]["cpu"]
    assert record["exponents"][0]["label"] == "cg"
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scaling exponent" in capsys.readouterr().out


def test_unknown_backend_is_an_error(capsys):
    assert main(["bench", "tp", "--backends", "cg,nope", "--lmax", "1"]) == 2
    assert "unknown tensor-product backend 'nope'" in capsys.readouterr().err


def test_bad_lmax_list_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "tp", "--lmax", "1,two"])
    assert "comma-separated integers" in capsys.readouterr().err


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="no benchmark variant 'fast'"):
        parse_series("cg/fast")


def test_variants_expand_and_each_one_builds():
    """Every variant's options are options its backend accepts (a renamed option fails here, not in a long run)."""
    from equimol.microbench.variants import BENCHMARK_VARIANTS
    from equimol.tp import TensorProduct

    assert [s.label for s in parse_series("cg,gaunt/edge")] == ["cg", "gaunt/edge"]
    assert [s.label for s in parse_series("cp")] == ["cp/factors", "cp/edge"]
    for backend, variants in BENCHMARK_VARIANTS.items():
        for options in variants.values():
            TensorProduct("2x0e + 2x1o", "0e + 1o", "2x0e + 2x1o", backend=backend, **options)


def test_scaling_exponent_of_a_power_law():
    from equimol.microbench.tp import Measurement

    rows = [Measurement("x", "x", l, 1, 1, 2.0 * l**3, 5.0 * l**4, 0, 0.0, 1, [], []) for l in (1, 2, 4, 8)]
    fit = scaling_exponents(rows)[0]
    assert fit["forward_exponent"] == pytest.approx(3.0, abs=1e-12)
    assert fit["forward_backward_exponent"] == pytest.approx(4.0, abs=1e-12)


def test_json_names_threads_and_load_and_best_variant(bench_record):
    record = bench_record(
        "tp", "--backends", "cg,gaunt/grid,gaunt/edge", "--lmax", "1", "--channels", "2", "--edges", "8",
        "--warmup", "0", "--repeats", "1", "--threads", "1"
    )  # fmt: skip
    assert record["settings"]["threads"] == record["machine"]["torch_threads"] == 1
    assert set(record["load_average_1min"]) == {"before", "after"}
    (gaunt,) = [b for b in record["best"] if b["backend"] == "gaunt"]
    times = {m["label"]: m["forward_backward_s"] for m in record["measurements"]}
    assert gaunt["label"] == min(("gaunt/grid", "gaunt/edge"), key=times.get)
    assert gaunt["forward_backward_ratio"] == pytest.approx(times[gaunt["label"]] / times["cg"])
    cpu = {m["label"]: m["forward_backward_cpu_s"] for m in record["measurements"]}
    assert all(value > 0 for value in cpu.values())
    assert gaunt["forward_backward_cpu_ratio"] == pytest.approx(cpu[gaunt["label"]] / cpu["cg"])


def test_best_per_backend_picks_the_fastest_variant_at_each_point():
    def row(label, lmax, forward, both):
        return {"label": label, "backend": label.split("/")[0], "lmax": lmax, "channels": 4, "edges": 10,
                "forward_s": forward, "forward_backward_s": both}  # fmt: skip

    rows = [row("cg", 1, 1.0, 4.0), row("gaunt/a", 1, 0.5, 3.0), row("gaunt/b", 1, 0.4, 2.0),
            row("cg", 2, 2.0, 8.0), row("gaunt/a", 2, 1.0, 1.0), row("gaunt/b", 2, 0.1, 6.0)]  # fmt: skip
    best = {(b["backend"], b["lmax"]): b for b in best_per_backend(rows)}
    assert best[("gaunt", 1)]["label"] == "gaunt/b" and best[("gaunt", 1)]["forward_backward_ratio"] == 0.5
    assert best[("gaunt", 2)]["label"] == "gaunt/a" and best[("gaunt", 2)]["forward_ratio"] == 0.5
    assert best[("cg", 2)]["forward_backward_ratio"] == 1.0


def test_variant_beyond_its_limit_is_skipped_with_the_reason(bench_record, capsys):
    """gaunt/compiled cannot serve L = 4 (its entry limit): that point lists it as skipped, the rest runs."""
    record = bench_record(
        "tp", "--backends", "gaunt/edge,gaunt/compiled", "--lmax", "4", "--channels", "2", "--edges", "8",
        "--warmup", "0", "--repeats", "1"
    )  # fmt: skip
    assert [m["label"] for m in record["measurements"]] == ["gaunt/edge"]
    assert record["measurements"][0]["first_call_s"] > 0
    (skip,) = record["skipped"]
    assert skip["label"] == "gaunt/compiled" and skip["lmax"] == 4 and "nonzero entries" in skip["reason"]
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "not run" in line]
    assert line.split()[:4] == ["gaunt/compiled", "4", "not", "run:"] and "compile_edge_product=True unrolls" in line
