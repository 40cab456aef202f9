"""GraphDataset, collate to the GraphBatch contract, DataLoader use and splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from torch.utils.data import DataLoader, Subset

from alkernels.data import (
    GraphBatch,
    GraphDataset,
    build_graphs,
    collate,
    crystal_family,
    split,
)


def _crystals() -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(12):
        a = 3.5 + 0.2 * k
        n = 1 + k % 4
        frac = (np.arange(n)[:, None] / n + np.array([0.0, 0.1, 0.2])) % 1
        cell = a * (np.eye(3) + 0.1 * rng.uniform(-1, 1, (3, 3)))
        out.append(Atoms(numbers=rng.integers(1, 60, n), scaled_positions=frac, cell=cell, pbc=True))
    return out


@pytest.fixture(scope="module")
def graphs():
    return build_graphs(_crystals(), cutoff=4.0, workers=1)


def test_collate_matches_the_graph_batch_contract(graphs) -> None:
    labels = np.arange(len(graphs)) % 5
    dataset = GraphDataset(graphs, y=labels)
    items = [dataset[k] for k in (3, 0, 7)]
    batch = collate(items)
    assert isinstance(batch, GraphBatch) and batch.num_graphs == 3
    for name in ("z", "edge_src", "edge_dst", "batch", "ptr", "y"):
        assert getattr(batch, name).dtype == torch.int64, name
    for name in ("pos", "cell", "edge_shift"):
        assert getattr(batch, name).dtype == torch.float32, name
    assert batch.cell.shape == (3, 3, 3) and batch.edge_shift.shape == (batch.num_edges, 3)
    assert torch.all(batch.edge_dst[1:] >= batch.edge_dst[:-1])
    assert batch.y.tolist() == [3, 0, 2]
    sizes = [len(graphs[k].z) for k in (3, 0, 7)]
    assert batch.ptr.tolist() == [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    assert torch.equal(batch.batch, torch.repeat_interleave(torch.arange(3), torch.tensor(sizes)))
    same_graph = batch.batch[batch.edge_src] == batch.batch[batch.edge_dst]
    assert bool(same_graph.all())
    disp = (
        batch.pos[batch.edge_src]
        + torch.einsum("ek,ekj->ej", batch.edge_shift, batch.cell[batch.batch[batch.edge_src]])
        - batch.pos[batch.edge_dst]
    )
    expected = np.concatenate([graphs[k].edge_vec for k in (3, 0, 7)])
    np.testing.assert_allclose(disp.numpy(), expected, atol=1e-4)
    assert float(disp.norm(dim=1).max()) < 4.0


def test_property_targets_are_float_rows(graphs) -> None:
    y = np.linspace(0, 1, len(graphs))
    batch = collate([GraphDataset(graphs, y=y)[k] for k in range(4)])
    assert batch.y.dtype == torch.float32 and batch.y.shape == (4, 1)
    y2 = np.stack([y, 2 * y], axis=1)
    batch2 = collate([GraphDataset(graphs, y=torch.tensor(y2))[k] for k in range(4)])
    assert batch2.y.shape == (4, 2)
    assert collate([GraphDataset(graphs)[0]]).y is None
    with pytest.raises(ValueError, match="shape"):
        GraphDataset(graphs, y=np.zeros(3))


def test_dataloader_subset_and_index_lists(graphs) -> None:
    labels = np.arange(len(graphs))
    dataset = GraphDataset(graphs, y=labels)
    pool = dataset[[9, 2, 5, 11]]
    assert isinstance(pool, GraphDataset) and len(pool) == 4
    assert pool.indices.tolist() == [9, 2, 5, 11] and pool[1].y == 2
    assert pool[[3, 0]].indices.tolist() == [11, 9] and dataset[2:4].indices.tolist() == [2, 3]
    loader = DataLoader(pool, batch_size=3, shuffle=False, collate_fn=collate)
    ys = [b.y.tolist() for b in loader]
    assert ys == [[9, 2, 5], [11]]
    torch_subset = Subset(dataset, [4, 1])
    batch = next(iter(DataLoader(torch_subset, batch_size=2, collate_fn=collate)))
    assert batch.y.tolist() == [4, 1]


def test_split_is_disjoint_complete_and_seeded(graphs) -> None:
    dataset = GraphDataset(graphs)
    parts = split(dataset, (0.5, 0.25, 0.25), seed=1)
    all_idx = np.concatenate([p.indices for p in parts])
    assert sorted(all_idx.tolist()) == list(range(len(graphs)))
    assert [len(p) for p in parts] == [6, 3, 3]
    again = split(dataset, (0.5, 0.25, 0.25), seed=1)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(parts, again))
    other = split(dataset, (0.5, 0.25, 0.25), seed=2)
    assert not all(np.array_equal(a.indices, b.indices) for a, b in zip(parts, other))
    with pytest.raises(ValueError, match="sum to 1"):
        split(dataset, (0.5, 0.4), seed=0)


def test_split_per_crystal_family(graphs) -> None:
    dataset = GraphDataset(graphs)
    groups = np.array([1, 2, 14, 14, 62, 62, 139, 166, 194, 225, 225, 229])
    families = crystal_family(groups)
    assert families.tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 5]
    train, test = split(dataset, (0.5, 0.5), seed=0, stratify="crystal_family", spacegroups=groups)
    for family in range(6):
        members = np.flatnonzero(families == family)
        in_train = np.isin(members, train.indices).sum()
        assert abs(in_train - len(members) / 2) <= 0.5
    computed = dataset.spacegroups()
    assert computed.shape == (12,) and computed.min() >= 1 and computed.max() <= 230
    by_spglib = split(dataset, (0.5, 0.5), seed=0, stratify="crystal_family")
    assert sorted(np.concatenate([p.indices for p in by_spglib]).tolist()) == list(range(12))
    with pytest.raises(ValueError, match="stratify"):
        split(dataset, (0.5, 0.5), seed=0, stratify="space_group")
