"""``equimol bench tp --kernel`` and ``equimol bench model`` run end to end (Triton interpreter, tiny sizes).

Timings are not asserted (shared CI machines); only that every series ran and the files were written.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before equimol.kernels is imported

import json  # noqa: E402

import pytest  # noqa: E402

from equimol.cli import main  # noqa: E402
from equimol.microbench.model import copper_box, structures, water_box  # noqa: E402


def test_bench_tp_times_each_kernel_on_the_convolution(bench_record):
    record = bench_record(
        "tp", "--backends", "gaunt/grid", "--lmax", "1", "--channels", "4", "--edges", "32",
        "--warmup", "0", "--repeats", "1", "--kernel", "torch,triton"
    )  # fmt: skip
    assert [m["label"] for m in record["measurements"]] == ["gaunt/grid[torch]", "gaunt/grid[triton]"]
    assert record["settings"]["operation"].startswith("message_passing")
    assert all(m["forward_backward_s"] > 0 for m in record["measurements"])


def test_bench_tp_rejects_an_unknown_kernel(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "tp", "--kernel", "cuda"])
    assert "expected kernels from 'torch,triton'" in capsys.readouterr().err


def test_bench_model_writes_json_and_plot(bench_record, tmp_path, shared_data):
    plot_path = tmp_path / "out.png"
    record = bench_record(
        "model", "--backends", "gaunt/grid", "--kernel", "torch,triton", "--systems", "3bpa,cu",
        "--3bpa-file", str(shared_data / "3bpa" / "train_300K.xyz"), "--max-atoms", "40", "--channels", "4",
        "--lmax", "1", "--radial-cutoff", "2.6", "--warmup", "0", "--repeats", "1",
        "--plot", str(plot_path)
    )  # fmt: skip
    rows = [(m["label"], m["system"], m["atoms"]) for m in record["measurements"]]
    assert rows == [
        ("gaunt/grid[torch]", "3bpa", 27),
        ("gaunt/grid[triton]", "3bpa", 27),
        ("gaunt/grid[torch]", "cu", 32),
        ("gaunt/grid[triton]", "cu", 32),
    ]
    assert all(m["energy_forces_s"] > 0 and m["edges"] > 0 for m in record["measurements"])
    assert all(m["first_call_s"] > 0 for m in record["measurements"])
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_model_needs_the_3bpa_file(capsys):
    assert main(["bench", "model", "--systems", "3bpa"]) == 2
    assert "system '3bpa' needs --3bpa-file PATH" in capsys.readouterr().err


def test_bench_model_rejects_unknown_systems():
    with pytest.raises(ValueError, match=r"unknown system\(s\) \['argon'\]"):
        structures(["cu", "argon"], 100, None)


def test_benchmark_boxes_have_the_stated_sizes_and_density():
    assert len(copper_box(3)) == 108
    water = water_box(3)
    assert len(water) == 81 and water.get_chemical_formula() == "H54O27"
    grams_per_cm3 = water.get_masses().sum() / 6.02214076e23 / (water.get_volume() * 1e-24)
    assert grams_per_cm3 == pytest.approx(1.0, abs=0.01)
    oxygen, hydrogen = water.positions[0], water.positions[1]
    assert ((oxygen - hydrogen) ** 2).sum() ** 0.5 == pytest.approx(0.9572, abs=1e-12)


def test_gpu_benchmark_script_dry_run_on_the_interpreter(tmp_path):
    """``benchmarks/gpu_kernels.py --dry-run`` runs its correctness checks and the convolution timing on the
    interpreter (the slower NVE, training and model-size sections are skipped here; they ran in the committed
    ``benchmarks/gpu_kernels_dryrun_cpu.json``), so the one prepared GPU command is known to work."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_kernels.py"
    out = tmp_path / "gpu.json"
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(script), "--dry-run", "--skip", "nve,training,model_scaling,mace", "--out", str(out)]
    sys.path.insert(0, str(script.parent))  # as `python benchmarks/gpu_kernels.py` has it (for _common)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_info:
        assert exit_info.code in (0, None)
    finally:
        sys.argv, sys.path[:] = argv, path
    record = json.loads(out.read_text())
    assert record["checks_passed"] == {"fused_vs_torch": True, "cueq_vs_cg": True, "fd_forces": True, "nve": None}
    assert (tmp_path / "gpu_convolution.png").is_file()  # no model plot: its sections were skipped
    assert not (tmp_path / "gpu_model.png").exists()
    rows = record["sections"]["convolution"]["result"]
    assert [row["lmax"] for row in rows][:2] == [1, 2]
    for row in rows:
        assert {"e3nn", "cg[torch]", "cp[torch]", "cp[triton]", "gaunt[torch]", "gaunt[triton]"} <= set(row["series"])
        assert row["series"]["cg[torch]"]["max_relative_difference_vs_e3nn"] < 1e-5


def test_bench_tp_kernel_triton_defaults_to_the_fused_backends(bench_record):
    from equimol.tp import factored_backends

    assert factored_backends() == ["cp", "gaunt"]
    record = bench_record(
        "tp", "--lmax", "1", "--channels", "2", "--edges", "16", "--warmup", "0", "--repeats", "1",
        "--kernel", "triton"
    )  # fmt: skip
    labels = {m["label"] for m in record["measurements"]}
    assert {label.split("/")[0].split("[")[0] for label in labels} == set(factored_backends())


def test_bench_model_times_a_compiled_file_built_once_for_all_sizes(bench_record, shared_data, monkeypatch):
    import equimol.microbench.model as bench_model

    built = []
    original = bench_model._compiled
    monkeypatch.setattr(bench_model, "_compiled", lambda *args: built.append(args[1]) or original(*args))
    record = bench_record(
        "model", "--backends", "cg", "--kernel", "torch,export", "--systems", "3bpa,cu",
        "--3bpa-file", str(shared_data / "3bpa" / "train_300K.xyz"), "--max-atoms", "40", "--channels", "4",
        "--lmax", "1", "--radial-cutoff", "2.6", "--warmup", "0", "--repeats", "1"
    )  # fmt: skip
    assert built == ["export"]  # one compiled file, reused for the second structure
    rows = [(m["label"], m["atoms"]) for m in record["measurements"]]
    assert rows == [("cg[torch]", 27), ("cg[export]", 27), ("cg[torch]", 32), ("cg[export]", 32)]


def test_bench_model_refuses_an_unknown_kernel(capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's own exit, exit code 2
        main(["bench", "model", "--kernel", "torch,inductor"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "expected kernels from 'torch,triton,export,aotinductor'" in error and error.strip().count("\n") == 0
