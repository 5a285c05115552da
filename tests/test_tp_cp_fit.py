"""CP fitting and its cache: the coupling tensor, determinism, the error target, corrupt and stale files."""

import warnings

import pytest
import torch
from e3nn import o3

from equimol.tp import TensorProduct, cp_cache, cp_fit
from equimol.tp.cp_cache import default_cache_dir
from equimol.tp.cp_coupling import component_parities, coupling_tensor, parity_mask, reconstruct
from equimol.tp.cp_fit import fit_factors, resolve_rank

IRREPS = ("2x0e + 2x1o + 2x2e", "0e + 1o + 2e", "2x0e + 2x1o + 2x2e")


def parities(*irreps):
    return tuple(component_parities(o3.Irreps(i)) for i in irreps)


def build(cache_dir, **options):
    return TensorProduct(*IRREPS, backend="cp", dtype=torch.float64, cache_dir=cache_dir, **options)


def cache_files(cache_dir):
    return sorted((cache_dir / "cp_factors").glob("*.pt"))


def test_coupling_tensor_is_zero_where_parity_forbids():
    irreps = [o3.Irreps(i) for i in ("0e + 1o + 1e", "0e + 1o", "0e + 1o + 1e + 2e")]
    M = coupling_tensor(*irreps)
    assert M.shape == (7, 4, 12)
    mask = parity_mask(*parities(*irreps))
    assert torch.equal(M * (1 - mask), torch.zeros_like(M))
    # 1o x 1o -> 1e (the cross product) is present: parity-allowed with odd l1 + l2 + l3
    assert M[1:4, 1:4, 4:7].abs().max() > 0.1


def test_resolve_rank():
    assert resolve_rank("7L2", 3) == 63 and resolve_rank("7l2", 0) == 1
    assert resolve_rank(17, 3) == 17 and resolve_rank("exact", 3) is None


@pytest.mark.filterwarnings("ignore:cp backend:RuntimeWarning")  # per path, rank 64 of 73 misses 1e-3
@pytest.mark.parametrize("weight_sharing", [True, False])
def test_fit_is_deterministic_for_a_seed(tmp_path, weight_sharing):
    rank = 28 if weight_sharing else 64
    first = build(tmp_path / "a", cp_rank=rank, weight_sharing=weight_sharing, fit_tolerance=1e-3)
    second = build(tmp_path / "b", cp_rank=rank, weight_sharing=weight_sharing, fit_tolerance=1e-3)
    for name in ("A", "B", "C", "term_path"):
        assert torch.equal(getattr(first, name), getattr(second, name))


def test_fit_stops_at_the_error_target_and_reports_it():
    irreps = [o3.Irreps(i) for i in ("0e + 1o + 2e + 3o",) * 3]
    M, par = coupling_tensor(*irreps), parities(*irreps)
    loose = fit_factors(M, par, 63, tolerance=1e-2, seed=0)
    tight = fit_factors(M, par, 63, tolerance=1e-6, seed=0)
    assert loose.relative_error <= 1e-2 and tight.relative_error <= 1e-6
    assert loose.iterations < tight.iterations
    measured = (reconstruct(tight.A, tight.B, tight.C, parity_mask(*par)) - M).norm() / M.norm()
    assert abs(measured.item() - tight.relative_error) < 1e-15


def test_second_build_loads_the_cache_without_fitting(tmp_path, monkeypatch):
    first = build(tmp_path)
    assert len(cache_files(tmp_path)) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("fitted again although the cache holds the factors")

    monkeypatch.setattr(cp_fit, "_fit_factors", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = build(tmp_path)
    assert torch.equal(first.A, second.A) and second.relative_error == first.relative_error


def test_cache_key_separates_rank_tolerance_and_weight_mode(tmp_path):
    build(tmp_path)
    build(tmp_path, cp_rank=20, fit_tolerance=1e-3)
    build(tmp_path, cp_rank="exact", weight_sharing=False)
    assert len(cache_files(tmp_path)) == 3


def _refit_after(tmp_path, damage, message):
    reference = build(tmp_path)
    (path,) = cache_files(tmp_path)
    damage(path)
    with pytest.warns(RuntimeWarning, match=message):
        refitted = build(tmp_path)
    assert torch.equal(refitted.A, reference.A)  # refitted deterministically, not read from the bad file
    with warnings.catch_warnings():  # and the file was replaced by a good one
        warnings.simplefilter("error")
        build(tmp_path)


def test_corrupt_file_is_refitted(tmp_path):
    _refit_after(tmp_path, lambda path: path.write_bytes(b"not a torch file"), r"refitting CP factors: cannot read")


def _edited(edit):
    """A file change that loads the cached payload, applies ``edit(payload)`` and saves it back."""

    def change(path):
        payload = torch.load(path, weights_only=True)
        edit(payload)
        torch.save(payload, path)

    return change


def test_truncated_file_is_refitted(tmp_path):
    _refit_after(tmp_path, lambda path: path.write_bytes(path.read_bytes()[:200]), r"cannot read")


def test_stale_file_is_refitted(tmp_path):
    def from_another_version(payload):
        payload["key"]["equimol"] = "0.0.1"

    _refit_after(tmp_path, _edited(from_another_version), r"is stale: its key .*0\.0\.1")


def test_tampered_factors_fail_the_checksum(tmp_path):
    def tamper(payload):
        payload["A"][0, 0] += 1.0

    _refit_after(tmp_path, _edited(tamper), r"fails its checksum")


def test_factors_that_do_not_reproduce_the_tensor_are_refitted(tmp_path):
    def tamper_consistently(payload):
        payload["A"][0, 0] += 1.0
        tensors = [payload[name] for name in ("A", "B", "C", "term_path")]
        payload["checksum"] = cp_cache._checksum(payload["key"], tensors)

    _refit_after(tmp_path, _edited(tamper_consistently), r"reproduce M to .* not the stored")


def test_wrong_shapes_are_refitted(tmp_path):
    def reshape(payload):
        payload["A"] = payload["A"][:-1]

    _refit_after(tmp_path, _edited(reshape), r"wrong shape or dtype")


def test_malformed_fit_report_is_refitted(tmp_path):
    def drop_report(payload):
        del payload["iterations"]

    _refit_after(tmp_path, _edited(drop_report), r"malformed fit report")


def test_cache_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    build(tmp_path)
    assert [p.suffix for p in (tmp_path / "cp_factors").iterdir()] == [".pt"]


def test_unwritable_cache_warns_and_still_builds(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="could not write the CP-factor cache"):
        tp = build(blocker)
    assert tp.relative_error <= 1e-6


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("EQUIMOL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "equimol"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "equimol"


def test_module_without_cache_dir_uses_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(tmp_path))
    TensorProduct(*IRREPS, backend="cp", dtype=torch.float64)
    assert len(cache_files(tmp_path)) == 1
