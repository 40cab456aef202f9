"""Graph construction: periodic mode against ASE, matsciml mode on hand-made cells, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from alkernels.data import GraphDataset, build_graphs, collate


def _random_triclinic(rng: np.random.Generator, n_atoms: int, scale: float) -> Atoms:
    """A random triclinic cell (|det| well away from 0) with atoms at least 0.8 A apart."""
    while True:
        cell = scale * (np.eye(3) + 0.35 * rng.uniform(-1, 1, (3, 3)))
        frac = rng.uniform(0, 1, (n_atoms, 3))
        atoms = Atoms(numbers=rng.integers(1, 90, n_atoms), scaled_positions=frac, cell=cell, pbc=True)
        if neighbor_list("d", atoms, 0.8).size == 0:
            return atoms


def _edge_keys(src, dst, shift) -> list[tuple]:
    return sorted(zip(dst.tolist(), src.tolist(), map(tuple, np.asarray(shift).tolist())))


@pytest.mark.parametrize("scale,n_atoms", [(2.2, 1), (2.5, 3), (4.0, 6), (7.0, 12)])
def test_periodic_matches_ase_neighbor_list(scale: float, n_atoms: int) -> None:
    """Every edge, shift and vector agrees with ASE, including cells much smaller than the cutoff."""
    rng = np.random.default_rng(n_atoms)
    structures = [_random_triclinic(rng, n_atoms, scale) for _ in range(4)]
    cutoff = 5.0
    graphs = build_graphs(structures, cutoff=cutoff, workers=1)
    for k, atoms in enumerate(structures):
        g = graphs[k]
        i, j, shift, vec = neighbor_list("ijSD", atoms, cutoff)
        assert len(g.edge_src) == len(i) > 0
        assert np.array_equal(np.bincount(g.edge_dst, minlength=n_atoms), np.bincount(i, minlength=n_atoms))
        assert _edge_keys(g.edge_src, g.edge_dst, g.edge_shift) == _edge_keys(j, i, shift)
        order_ours = np.lexsort((*g.edge_shift.T[::-1], g.edge_src, g.edge_dst))
        order_ase = np.lexsort((*shift.T[::-1], j, i))
        np.testing.assert_allclose(g.edge_vec[order_ours], vec[order_ase], atol=1e-4)
        recomputed = g.pos[g.edge_src] + g.edge_shift @ g.cell - g.pos[g.edge_dst]
        np.testing.assert_allclose(g.edge_vec, recomputed, atol=1e-4)
        assert np.all(np.diff(g.edge_dst) >= 0)


def test_periodic_self_images_in_small_cell() -> None:
    """A one-atom cell has edges only to its own periodic images, in both directions."""
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * 2.5, pbc=True)
    g = build_graphs([atoms], cutoff=2.6, workers=1)[0]
    assert len(g.edge_src) == 6
    assert np.all(g.edge_src == 0) and np.all(g.edge_dst == 0)
    assert sorted(map(tuple, g.edge_shift.tolist())) == sorted(
        map(tuple, np.vstack([np.eye(3), -np.eye(3)]).astype(int).tolist())
    )


def test_max_neighbors_keeps_nearest() -> None:
    rng = np.random.default_rng(7)
    atoms = _random_triclinic(rng, 8, 5.0)
    full = build_graphs([atoms], cutoff=6.0, workers=1)[0]
    capped = build_graphs([atoms], cutoff=6.0, max_neighbors=5, workers=1)[0]
    assert np.array_equal(np.bincount(capped.edge_dst, minlength=8), np.full(8, 5))
    for i in range(8):
        d_full = np.sort(np.linalg.norm(full.edge_vec[full.edge_dst == i], axis=1))
        d_cap = np.sort(np.linalg.norm(capped.edge_vec[capped.edge_dst == i], axis=1))
        np.testing.assert_allclose(d_cap, d_full[:5], atol=1e-5)


def test_matsciml_one_atom_cell_has_no_edges() -> None:
    atoms = Atoms("Na", positions=[[0.1, 0.2, 0.3]], cell=np.eye(3) * 3.0, pbc=True)
    graphs = build_graphs([atoms], cutoff=20.0, mode="matsciml", workers=1)
    assert graphs.num_edges == 0
    batch = collate([GraphDataset(graphs)[0]])
    assert batch.num_edges == 0 and batch.num_nodes == 1


def test_matsciml_documented_graph() -> None:
    """Pairs within the minimum-image cutoff, both directions, no images, raw in-cell vectors."""
    cell = np.diag([10.0, 10.0, 10.0])
    # 0-1 are 1.5 A apart in the cell; 0-2 are 9 A apart in the cell but 1 A by minimum image;
    # 1-2 are 7.5 A in the cell, 2.5 A by minimum image; atom 3 is 5 A from everything.
    pos = np.array([[0.5, 0, 0], [2.0, 0, 0], [9.5, 0, 0], [5.0, 5.0, 0]])
    atoms = Atoms("H4", positions=pos, cell=cell, pbc=True)
    g = build_graphs([atoms], cutoff=3.0, mode="matsciml", workers=1)[0]
    expected = {(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)}
    assert set(zip(g.edge_src.tolist(), g.edge_dst.tolist())) == expected
    assert len(g.edge_src) == len(expected)
    assert not np.any(g.edge_shift)
    np.testing.assert_allclose(g.edge_vec, pos[g.edge_src] - pos[g.edge_dst], atol=1e-6)
    assert np.all(np.diff(g.edge_dst) >= 0)


def test_matsciml_large_cutoff_is_bidirected_and_complete() -> None:
    rng = np.random.default_rng(3)
    atoms = _random_triclinic(rng, 9, 5.0)
    g = build_graphs([atoms], cutoff=20.0, mode="matsciml", workers=1)[0]
    pairs = set(zip(g.edge_src.tolist(), g.edge_dst.tolist()))
    assert pairs == {(a, b) for a in range(9) for b in range(9) if a != b}
    with pytest.raises(ValueError, match="max_neighbors"):
        build_graphs([atoms], cutoff=20.0, mode="matsciml", max_neighbors=4)


def test_parallel_build_equals_serial() -> None:
    rng = np.random.default_rng(11)
    structures = [_random_triclinic(rng, int(rng.integers(1, 9)), 4.5) for _ in range(1100)]
    serial = build_graphs(structures, cutoff=5.0, workers=1)
    parallel = build_graphs(structures, cutoff=5.0, workers=2)
    for name in ("z", "pos", "cell", "node_ptr", "edge_src", "edge_dst", "edge_shift", "edge_vec", "edge_ptr"):
        assert np.array_equal(getattr(serial, name), getattr(parallel, name)), name
    assert serial.key == parallel.key


def test_cache_round_trip_and_invalidation(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    structures = [_random_triclinic(rng, 4, 4.0) for _ in range(6)]
    first = build_graphs(structures, cutoff=4.0, workers=1, cache_dir=tmp_path)
    assert first.path is not None and isinstance(first.edge_vec, np.memmap)
    header = json.loads((first.path / "header.json").read_text())
    assert header["attrs"]["cutoff"] == 4.0
    mtime = (first.path / "edge_src.bin").stat().st_mtime_ns
    second = build_graphs(structures, cutoff=4.0, workers=1, cache_dir=tmp_path)
    assert second.path == first.path and (first.path / "edge_src.bin").stat().st_mtime_ns == mtime
    fresh = build_graphs(structures, cutoff=4.0, workers=1)
    for name in ("edge_src", "edge_dst", "edge_shift", "edge_vec", "edge_ptr", "pos", "cell", "z"):
        assert np.array_equal(np.asarray(getattr(second, name)), getattr(fresh, name)), name
    other_cutoff = build_graphs(structures, cutoff=4.5, workers=1, cache_dir=tmp_path)
    moved = [a.copy() for a in structures]
    moved[2].positions[0, 0] += 0.01
    other_input = build_graphs(moved, cutoff=4.0, workers=1, cache_dir=tmp_path)
    other_mode = build_graphs(structures, cutoff=4.0, mode="matsciml", workers=1, cache_dir=tmp_path)
    paths = {first.path, other_cutoff.path, other_input.path, other_mode.path}
    assert len(paths) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_invalid_inputs_raise() -> None:
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.1, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    good = Atoms("H", cell=np.eye(3) * 5, pbc=True)
    with pytest.raises(ValueError, match="structure 1 is invalid: overlapping"):
        build_graphs([good, atoms], cutoff=3.0, workers=1)
    with pytest.raises(ValueError, match="mode"):
        build_graphs([good], cutoff=3.0, mode="radius")
    with pytest.raises(ValueError, match="cutoff"):
        build_graphs([good], cutoff=0.0)
    with pytest.raises(ValueError, match="no structures"):
        build_graphs([], cutoff=3.0)
