"""The generated perovskite dataset: textbook tilt groups, determinism, labels, the cache, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from alkernels.data import perovskite_crystals, spacegroup_number
from alkernels.data.perovskite import (
    ATOMS_RANGE,
    MODES,
    TILT_SYSTEMS,
    build_perovskite,
    mode_probabilities,
    tolerance_factor,
)
from alkernels.data.structures import check_structure, make_atoms

#: One valid angle set (degrees about x, y, z) per tilt system: equal letters equal, distinct apart.
ANGLES = {
    "a0a0a0": (0.0, 0.0, 0.0),
    "a0a0c+": (0.0, 0.0, 10.0),
    "a0a0c-": (0.0, 0.0, 10.0),
    "a0b-b-": (0.0, 8.0, 8.0),
    "a-a-a-": (9.0, 9.0, 9.0),
    "a+b-b-": (7.0, 12.0, 12.0),
    "a+a+a+": (10.0, 10.0, 10.0),
    "a0b+b+": (0.0, 9.0, 9.0),
    "a-b-b-": (6.0, 11.0, 11.0),
    "a0b-c-": (0.0, 6.0, 12.0),
    "a0b+c-": (0.0, 8.0, 12.0),
}


@pytest.fixture(scope="module")
def crystals():
    return perovskite_crystals(20, seed=5, workers=1)


def _assert_same(a, b) -> None:
    assert a.ids == b.ids and np.array_equal(a.labels, b.labels)
    for x, y in zip(a.atoms, b.atoms):
        assert np.array_equal(x.numbers, y.numbers)
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell[:], y.cell[:])


@pytest.mark.parametrize("mode", MODES, ids=[f"{m.tilt}/{m.polar}" for m in MODES])
def test_each_distortion_has_its_textbook_space_group(mode) -> None:
    numbers, positions, cell = build_perovskite("Sr", "Ti", "O", mode.tilt, mode.polar, ANGLES[mode.tilt])
    assert numbers.shape == (40,) and positions.shape == (40, 3) and cell.shape == (3, 3)
    assert sorted(np.unique(numbers, return_counts=True)[1].tolist()) == [8, 8, 24]
    assert spacegroup_number(make_atoms(numbers, positions, cell)) == mode.spacegroup


def test_the_tilt_table_covers_the_modes() -> None:
    assert set(ANGLES) == set(TILT_SYSTEMS)
    assert {m.tilt for m in MODES} == set(TILT_SYSTEMS)
    assert TILT_SYSTEMS["a+b-b-"] == 62 and TILT_SYSTEMS["a0a0a0"] == 221


def test_mode_probabilities_follow_the_tolerance_factor() -> None:
    index = {(m.tilt, m.polar): k for k, m in enumerate(MODES)}
    for t in (0.8, 0.9, 0.95, 1.0, 1.1):
        p = mode_probabilities(t)
        assert p.shape == (len(MODES),) and np.all(p > 0) and np.isclose(p.sum(), 1.0)
    assert int(np.argmax(mode_probabilities(0.85))) == index["a+b-b-", "none"]
    assert int(np.argmax(mode_probabilities(0.95))) == index["a0a0a0", "none"]
    assert int(np.argmax(mode_probabilities(1.06))) == index["a0a0a0", "[001]"]
    assert tolerance_factor("Ba", "Ti", "O") > 1.0 > tolerance_factor("Ca", "Ti", "O")


def test_deterministic_for_a_seed_whatever_the_workers_or_n(crystals) -> None:
    _assert_same(crystals, perovskite_crystals(20, seed=5, workers=2))
    prefix = perovskite_crystals(10, seed=5, workers=1)
    _assert_same(prefix, crystals.subset(range(10)))
    other = perovskite_crystals(10, seed=6, workers=1)
    assert not all(np.array_equal(a.positions, b.positions) for a, b in zip(other.atoms, prefix.atoms))


def test_labels_are_spglib_answers_on_valid_cells(crystals) -> None:
    assert crystals.labels.dtype == np.int64
    assert np.all((crystals.labels >= 1) & (crystals.labels <= 230))
    for atoms, label in zip(crystals.atoms, crystals.labels):
        check_structure(atoms.numbers, atoms.positions, atoms.cell[:])
        assert ATOMS_RANGE[0] <= len(atoms) <= ATOMS_RANGE[1]
        assert spacegroup_number(atoms) == label
    table = crystals.table
    assert table["spacegroup_number"].tolist() == crystals.labels.tolist()
    assert table["n_atoms"].tolist() == [len(a) for a in crystals.atoms]
    assert set(table["tilt_system"]) <= set(TILT_SYSTEMS)
    assert set(table["polar"]) <= {"none", "[001]", "[110]", "[111]"}
    assert table["tolerance_factor"].between(0.8, 1.1).all()
    assert (table["intended_spacegroup"] == table["spacegroup_number"]).mean() >= 0.9
    for formula, a, b, x in table[["formula", "a_site", "b_site", "x_site"]].itertuples(index=False):
        assert a in formula and b in formula and x in formula


def test_noise_follows_symprec_so_tight_tolerances_keep_the_symmetry() -> None:
    tight = perovskite_crystals(8, seed=5, workers=1, symprec=0.01)
    assert tight.labels.tolist() == tight.table["intended_spacegroup"].tolist()
    assert all(spacegroup_number(atoms, 0.01) == label for atoms, label in zip(tight.atoms, tight.labels))


def test_cache_reloads_the_same_set(tmp_path: Path, crystals) -> None:
    first = perovskite_crystals(20, seed=5, workers=1, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    second = perovskite_crystals(20, seed=5, workers=1, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]
    _assert_same(first, crystals)
    _assert_same(second, crystals)
    assert second.table.equals(crystals.table)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="n must be"):
        perovskite_crystals(0)
    with pytest.raises(ValueError, match="symprec must be > 0"):
        perovskite_crystals(3, symprec=0.0)
    with pytest.raises(ValueError, match=re.escape("unknown tilt system 'a+a+c-'")):
        build_perovskite("Sr", "Ti", "O", "a+a+c-", angles=(10.0, 10.0, 5.0))
    with pytest.raises(ValueError, match="unknown polar direction"):
        build_perovskite("Sr", "Ti", "O", polar="[100]")
    with pytest.raises(ValueError, match="must be non-zero"):
        build_perovskite("Sr", "Ti", "O", "a0a0c+", angles=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="equal angles"):
        build_perovskite("Sr", "Ti", "O", "a-a-a-", angles=(8.0, 9.0, 9.0))
    with pytest.raises(ValueError, match="no B-site radius"):
        build_perovskite("Sr", "Ba", "O")
    with pytest.raises(ValueError, match="unknown element"):
        build_perovskite("Sr", "Ti", "Xx", lattice=4.0)
