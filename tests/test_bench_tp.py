"""``equimol bench tp``: it runs end to end, writes its files, and rejects bad arguments clearly."""

import json

import pytest

from equimol.bench.tp import parse_series, scaling_exponents
from equimol.cli import main


def test_bench_tp_writes_json_and_plot(tmp_path, capsys):
    json_path, plot_path = tmp_path / "out.json", tmp_path / "out.png"
    code = main(
        ["bench", "tp", "--backends", "cg", "--lmax", "1,2", "--channels", "4", "--edges", "20", "--warmup", "1",
         "--repeats", "2", "--json", str(json_path), "--plot", str(plot_path)]
    )  # fmt: skip
    assert code == 0
    record = json.loads(json_path.read_text())
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


def test_scaling_exponent_of_a_power_law():
    from equimol.bench.tp import Measurement

    rows = [Measurement("x", "x", l, 1, 1, 2.0 * l**3, 5.0 * l**4, 0, 0.0, 1, [], []) for l in (1, 2, 4, 8)]
    fit = scaling_exponents(rows)[0]
    assert fit["forward_exponent"] == pytest.approx(3.0, abs=1e-12)
    assert fit["forward_backward_exponent"] == pytest.approx(4.0, abs=1e-12)
