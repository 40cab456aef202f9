"""A torch Dataset over a :class:`GraphSet`, ``collate`` to :class:`GraphBatch`, and ``split``."""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from alkernels.data.batch import GraphBatch
from alkernels.data.graphset import Graph, GraphSet
from alkernels.data.symmetry import DEFAULT_SYMPREC, crystal_family, spacegroup_number


class GraphItem(NamedTuple):
    """One dataset item: a :class:`Graph` (local indices), its target (None, a class or a row) and
    its per-atom forces (float32 [n, 3], or None)."""

    graph: Graph
    y: np.ndarray | None
    forces: np.ndarray | None = None


class GraphDataset(Dataset):
    """Graphs (optionally a subset of them, in a given order) with optional targets.

    Args:
        graphs: the GraphSet.
        y: targets for every structure of ``graphs``: integer [B] class labels (stored as given,
            int64) or float [B] / [B, P] properties (float32, [B] becomes [B, 1]); or None.
        indices: positions into ``graphs`` that this dataset exposes (default: all, in order).
        forces: per-atom force labels for every structure of ``graphs``: a sequence of float
            [n_i, 3] arrays (eV/Angstrom), or None. :func:`collate` stacks them into
            ``GraphBatch.forces``.

    ``dataset[i]`` is a :class:`GraphItem`; ``dataset[list_or_array]`` is a GraphDataset view of
    those items (like ``torch.utils.data.Subset``); ``.indices`` maps items back to ``graphs``.
    """

    def __init__(
        self,
        graphs: GraphSet,
        y: np.ndarray | torch.Tensor | Sequence | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        forces: Sequence[np.ndarray | torch.Tensor] | None = None,
    ) -> None:
        self.graphs = graphs
        self.y = _as_targets(y, len(graphs))
        self.forces = _as_forces(forces, graphs)
        idx = np.arange(len(graphs)) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(graphs)):
            raise ValueError(f"indices out of range 0..{len(graphs) - 1}")
        self.indices = idx

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> "GraphItem | GraphDataset":
        if isinstance(index, (int, np.integer)):
            k = int(self.indices[index])
            return GraphItem(
                self.graphs[k], None if self.y is None else self.y[k], None if self.forces is None else self.forces[k]
            )
        return self.subset(np.arange(len(self))[index] if isinstance(index, slice) else index)

    def subset(self, positions: Sequence[int] | np.ndarray) -> "GraphDataset":
        """The items at ``positions`` of this dataset, as a view sharing graphs and targets."""
        pos = np.asarray(positions, dtype=np.int64)
        view = GraphDataset.__new__(GraphDataset)
        view.graphs, view.y, view.forces, view.indices = self.graphs, self.y, self.forces, self.indices[pos]
        return view

    def fingerprint(self) -> str:
        """A content hash of what this dataset serves: the graphs' cache key (structures and
        build parameters), the selected items in order, and their targets."""
        h = hashlib.sha256(self.graphs.key.encode())
        h.update(np.ascontiguousarray(self.indices).tobytes())
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y[self.indices]).tobytes())
        if self.forces is not None:
            for k in self.indices:
                h.update(self.forces[k].tobytes())
        return h.hexdigest()[:24]

    def spacegroups(self, symprec: float = DEFAULT_SYMPREC) -> np.ndarray:
        """spglib space-group numbers (int64 [len(self)], 1..230) of the items."""
        return np.array([spacegroup_number(self.graphs.atoms(int(k)), symprec) for k in self.indices])


def _as_targets(y: np.ndarray | torch.Tensor | Sequence | None, n: int) -> np.ndarray | None:
    if y is None:
        return None
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.shape[:1] != (n,) or arr.ndim > 2:
        raise ValueError(f"y must have shape [{n}] or [{n}, P], got {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.ndim != 1:
            raise ValueError(f"integer class labels must be 1-D [{n}], got {arr.shape}")
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32).reshape(n, -1)
    raise ValueError(f"y must be integer class labels or float properties, got dtype {arr.dtype}")


def _as_forces(forces: Sequence[np.ndarray | torch.Tensor] | None, graphs: GraphSet) -> list[np.ndarray] | None:
    if forces is None:
        return None
    if len(forces) != len(graphs):
        raise ValueError(f"forces must hold one [n, 3] array per structure ({len(graphs)}), got {len(forces)}")
    out = []
    for k, f in enumerate(forces):
        arr = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
        n = len(graphs[k].z)
        if arr.shape != (n, 3) or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"forces of structure {k} must be a float [{n}, 3] array, got {arr.dtype} {arr.shape}")
        out.append(np.ascontiguousarray(arr, dtype=np.float32))
    return out


def collate(items: Sequence[GraphItem]) -> GraphBatch:
    """Stack items into one :class:`GraphBatch` (edges stay sorted by receiver).

    Node indices are offset per graph; ``edge_shift`` is the sender's integer image shift as
    float32; ``y`` is int64 [B] for class labels, float32 [B, P] for properties, or None;
    ``forces`` is float32 [n, 3] when the items carry forces, else None.
    """
    if not items:
        raise ValueError("collate: empty batch")
    graphs = [item.graph for item in items]
    sizes = np.array([len(g.z) for g in graphs], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    n_edges = np.array([len(g.edge_src) for g in graphs], dtype=np.int64)
    offsets = np.repeat(ptr[:-1], n_edges)
    ys = [item.y for item in items]
    if any(y is None for y in ys) and not all(y is None for y in ys):
        raise ValueError("collate: some items have targets and some do not")
    forces = [item.forces for item in items]
    if any(f is None for f in forces) and not all(f is None for f in forces):
        raise ValueError("collate: some items have forces and some do not")
    return GraphBatch(
        z=torch.from_numpy(np.concatenate([g.z for g in graphs]).astype(np.int64)),
        pos=torch.from_numpy(np.concatenate([g.pos for g in graphs]).astype(np.float32)),
        cell=torch.from_numpy(np.stack([g.cell for g in graphs]).astype(np.float32)),
        edge_src=torch.from_numpy(np.concatenate([g.edge_src for g in graphs]).astype(np.int64) + offsets),
        edge_dst=torch.from_numpy(np.concatenate([g.edge_dst for g in graphs]).astype(np.int64) + offsets),
        edge_shift=torch.from_numpy(np.concatenate([g.edge_shift for g in graphs]).astype(np.float32)),
        batch=torch.from_numpy(np.repeat(np.arange(len(graphs), dtype=np.int64), sizes)),
        ptr=torch.from_numpy(ptr),
        y=None if ys[0] is None else torch.from_numpy(np.stack(ys)),
        forces=None if forces[0] is None else torch.from_numpy(np.concatenate(forces)),
    )


def split(
    dataset: GraphDataset,
    fractions: Sequence[float],
    seed: int,
    stratify: str | None = None,
    *,
    spacegroups: Sequence[int] | np.ndarray | None = None,
) -> list[GraphDataset]:
    """Random disjoint parts of ``dataset`` with the given fractions (summing to 1).

    Args:
        dataset: the GraphDataset to split.
        fractions: one fraction per part, e.g. ``(0.8, 0.1, 0.1)``.
        seed: seed of the permutation; the same seed gives the same parts.
        stratify: None for a plain random split, or ``"crystal_family"`` to split every crystal
            family (triclinic ... cubic) separately with the same fractions, as the paper's
            Materials Project split was made.
        spacegroups: space-group numbers (1..230) of the items for ``"crystal_family"``; computed
            with spglib (symprec 0.1) when omitted.

    Returns:
        One GraphDataset view per fraction; ``part.indices`` are positions into ``dataset.graphs``.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.ndim != 1 or frac.size == 0 or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    if stratify is None:
        groups = np.zeros(len(dataset), dtype=np.int64)
    elif stratify == "crystal_family":
        sg = dataset.spacegroups() if spacegroups is None else np.asarray(spacegroups)
        if sg.shape != (len(dataset),):
            raise ValueError(f"spacegroups must have shape ({len(dataset)},), got {sg.shape}")
        groups = crystal_family(sg)
    else:
        raise ValueError(f"stratify must be None or 'crystal_family', got {stratify!r}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in frac]
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        bounds = np.round(np.cumsum(frac) * len(members)).astype(np.int64)
        for k, chunk in enumerate(np.split(members, bounds[:-1])):
            parts[k].append(chunk)
    return [dataset.subset(np.sort(np.concatenate(p))) for p in parts]
