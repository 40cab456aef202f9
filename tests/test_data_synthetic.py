"""The built-in synthetic dataset: determinism, spglib labels, the shipped prior, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alkernels.data import (
    derive_spacegroup_prior,
    spacegroup_number,
    synthetic_crystals,
)
from alkernels.data.synthetic import ATOMS_RANGE, PRIOR_PATH, load_spacegroup_prior

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def crystals():
    return synthetic_crystals(12, seed=3, workers=1)


def test_deterministic_for_a_seed_and_worker_count(crystals) -> None:
    again = synthetic_crystals(12, seed=3, workers=2)
    assert again.ids == crystals.ids and np.array_equal(again.labels, crystals.labels)
    for a, b in zip(crystals.atoms, again.atoms):
        assert np.array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell[:], b.cell[:])
    prefix = synthetic_crystals(5, seed=3, workers=1)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(prefix.atoms, crystals.atoms))
    other = synthetic_crystals(5, seed=4, workers=1)
    assert any(not np.array_equal(a.numbers, b.numbers) for a, b in zip(other.atoms, prefix.atoms))


def test_labels_are_spglib_answers(crystals) -> None:
    assert crystals.labels.dtype == np.int64
    for atoms, label in zip(crystals.atoms, crystals.labels):
        assert spacegroup_number(atoms) == label
        assert ATOMS_RANGE[0] <= len(atoms) <= ATOMS_RANGE[1]
    table = crystals.table
    assert table["spacegroup_number"].tolist() == crystals.labels.tolist()
    assert table["requested_spacegroup"].between(1, 230).all()
    assert table["n_atoms"].tolist() == [len(a) for a in crystals.atoms]


def test_shipped_prior_covers_all_groups_and_matches_the_sample() -> None:
    prior = load_spacegroup_prior()
    assert prior.shape == (230,) and np.all(prior > 0) and np.isclose(prior.sum(), 1.0)
    sample = DATA / "mp20_sample.csv.gz"
    if not sample.is_file():
        pytest.skip(f"shared data file {sample} is absent")
    derived = derive_spacegroup_prior(sample)
    shipped = pd.read_csv(PRIOR_PATH)
    assert derived["count"].tolist() == shipped["count"].tolist()
    assert derived["count"].sum() == 1130
    np.testing.assert_allclose(derived["probability"], shipped["probability"], rtol=1e-6)
    assert int(np.argmax(prior)) + 1 == 225


def test_cache_reloads_the_same_set(tmp_path: Path, crystals) -> None:
    first = synthetic_crystals(12, seed=3, workers=1, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    second = synthetic_crystals(12, seed=3, workers=1, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]
    for a, b, c in zip(first.atoms, second.atoms, crystals.atoms):
        np.testing.assert_array_equal(b.positions, c.positions)
        np.testing.assert_array_equal(a.numbers, b.numbers)
    assert second.labels.tolist() == crystals.labels.tolist()
    with pytest.raises(ValueError, match="n must be"):
        synthetic_crystals(0)
