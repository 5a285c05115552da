"""Statistics from a seeded sample: the estimates, their standard errors, the cache, and edge estimates for batching.

The standard-error formulas are checked against Monte Carlo: the spread of the estimate over many
independent samples of one synthetic population must match the mean reported error to within
15 % (400 repetitions: the relative sampling error of a standard deviation is about
``1/sqrt(2*400) = 3.5 %``, so 15 % is more than four of those).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
from equimol.datasets.datamodule import AtomsDataModule
from equimol.datasets.references import load_element_references
from equimol.datasets.statistics import (
    cached_statistics,
    compute_statistics,
    least_squares_standard_errors,
    ratio_standard_error,
    sample_positions,
)

REPEATS = 400


def test_ratio_standard_error_matches_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    population = 5000
    atoms = rng.integers(20, 200, size=population).astype(float)
    edges = atoms * rng.uniform(20, 60, size=population)  # per-structure density varies
    estimates, errors = [], []
    for seed in range(REPEATS):
        chosen = sample_positions(population, 200, seed)
        estimates.append(edges[chosen].sum() / atoms[chosen].sum())
        errors.append(ratio_standard_error(edges[chosen], atoms[chosen], population))
    assert np.std(estimates) == pytest.approx(np.mean(errors), rel=0.15)
    assert ratio_standard_error(edges, atoms, population) == 0.0  # the whole population: no sampling error


def test_least_squares_standard_errors_match_monte_carlo() -> None:
    rng = np.random.default_rng(2)
    population = 4000
    design = rng.integers(0, 30, size=(population, 3)).astype(float)
    energies = design @ np.array([-3.0, -7.5, -1.2]) + rng.normal(0.0, 2.0, size=population)
    coefficients, errors = [], []
    for seed in range(REPEATS):
        chosen = sample_positions(population, 120, seed)
        solution, *_ = np.linalg.lstsq(design[chosen], energies[chosen], rcond=None)
        residual = energies[chosen] - design[chosen] @ solution
        coefficients.append(solution)
        errors.append(least_squares_standard_errors(design[chosen], residual, population))
    np.testing.assert_allclose(np.std(coefficients, axis=0), np.mean(errors, axis=0), rtol=0.15)
    same_composition = np.tile([[12.0, 12.0, 2.0]], (50, 1))  # 3BPA-like: shifts not identifiable one by one
    assert np.isnan(least_squares_standard_errors(same_composition, rng.normal(size=50), population)).all()


def test_sample_draw_is_seeded_and_bounded() -> None:
    first = sample_positions(10**9, 2000, seed=3)  # cost grows with the sample, not the population
    np.testing.assert_array_equal(first, sample_positions(10**9, 2000, seed=3))
    assert len(np.unique(first)) == 2000 and first.max() < 10**9 and (np.diff(first) > 0).all()
    assert not np.array_equal(first, sample_positions(10**9, 2000, seed=4))
    np.testing.assert_array_equal(sample_positions(30, 2000, seed=3), np.arange(30))


@pytest.fixture(scope="module")
def three_bpa(shared_data: Path) -> AtomsDataset:
    references = load_element_references(shared_data / "3bpa" / "iso_atoms.xyz")
    settings = LabelSettings(radial_cutoff=5.0, element_references=references)
    return AtomsDataset([shared_data / "3bpa" / "train_300K.xyz"], settings)


def test_sampled_statistics_are_those_of_the_sampled_frames(three_bpa: AtomsDataset) -> None:
    split = np.arange(10, 410)  # a 400-frame split of the 500 frames
    sampled = compute_statistics(three_bpa, split, sample_size=60, seed=5)
    assert (sampled.num_structures, sampled.sample_size, sampled.sample_seed) == (400, 60, 5)
    assert not sampled.is_complete
    frames = split[np.asarray(sampled.sample_positions)]
    direct = compute_statistics(three_bpa, frames)  # the same frames as a complete split
    assert sampled.avg_num_neighbors == direct.avg_num_neighbors
    assert sampled.force_rms == direct.force_rms
    assert sampled.edge_counts == direct.edge_counts
    assert direct.avg_num_neighbors_se == direct.force_rms_se == 0.0
    complete = compute_statistics(three_bpa, split)
    # the sample's error bars cover the whole split's value (4 standard errors: a 6e-5 chance each to fail)
    assert abs(sampled.avg_num_neighbors - complete.avg_num_neighbors) < 4 * sampled.avg_num_neighbors_se
    assert abs(sampled.force_rms - complete.force_rms) < 4 * sampled.force_rms_se
    assert 0 < sampled.avg_num_neighbors_se < 0.05 * sampled.avg_num_neighbors
    # one molecule: every frame has the same composition, so per-species shifts have no standard error
    assert all(np.isnan(list(sampled.per_species_energy_shift_se.values())))
    report = sampled.sampling_report()
    assert report["sample_size"] == 60 and report["avg_num_neighbors_se"] == sampled.avg_num_neighbors_se


def test_cache_is_keyed_by_the_sample(three_bpa: AtomsDataset, tmp_path: Path) -> None:
    split = np.arange(0, 200)
    small = cached_statistics(three_bpa, split, tmp_path, sample_size=40)
    assert cached_statistics(three_bpa, split, tmp_path, sample_size=40) == small
    other = cached_statistics(three_bpa, split, tmp_path, sample_size=40, seed=1)
    assert other.sample_positions != small.sample_positions
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_edge_budget_from_atom_counts_when_sampled(shared_data: Path) -> None:
    module = AtomsDataModule(
        train=str(shared_data / "3bpa" / "train_300K.xyz"),
        element_references=str(shared_data / "3bpa" / "iso_atoms.xyz"),
        max_edges=3000,
        statistics_sample=50,
    )
    statistics = module.statistics()
    assert statistics.sample_size == 50 and statistics.num_structures == 500
    estimate = int(np.ceil(statistics.avg_num_neighbors * 27))
    np.testing.assert_array_equal(module.edge_counts("train"), np.full(500, estimate))
    loader = module.train_dataloader()
    sizes = [len(batch) for batch in loader.batch_sampler]
    assert sum(sizes) == 500 and max(sizes) == 3000 // estimate


def test_statistics_sample_must_be_a_sample() -> None:
    with pytest.raises(ValueError, match=r"statistics_sample must be >= 2"):
        AtomsDataModule(train="x.xyz", statistics_sample=1)
