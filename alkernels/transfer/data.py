"""Graphs with named scalar properties, where any structure may lack any property (core: NumPy).

A :class:`PropertyData` is what :func:`~alkernels.transfer.pretrain` and
:func:`~alkernels.transfer.finetune` train on. Several of them, even with no property in common,
pre-train one model together: each row carries only the labels it has (NaN elsewhere).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from alkernels.data.dataset import GraphDataset
from alkernels.data.graphset import GraphSet


@dataclass
class PropertyData:
    """A view of ``graphs`` with named float properties.

    Attributes:
        graphs: the :class:`~alkernels.data.GraphSet`.
        properties: property name -> float64 [len(graphs)] values for EVERY graph of ``graphs``
            (NaN where a structure has no value).
        indices: int64 positions into ``graphs`` that this view exposes, in order (default all).
        name: a label for messages and records (e.g. the file name).
    """

    graphs: GraphSet
    properties: Mapping[str, np.ndarray]
    indices: np.ndarray | None = None
    name: str = ""
    _keys: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.graphs)
        props: dict[str, np.ndarray] = {}
        for key, values in self.properties.items():
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"property {key!r} has shape {arr.shape}, expected ({n},) (one value per graph)")
            props[str(key)] = arr
        self.properties = props
        idx = np.arange(n, dtype=np.int64) if self.indices is None else np.asarray(self.indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise ValueError(f"indices must be 1-D positions in 0..{n - 1}")
        self.indices = idx

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def columns(self) -> list[str]:
        """The property names."""
        return list(self.properties)

    def subset(self, positions: Sequence[int] | np.ndarray) -> "PropertyData":
        """The rows at ``positions`` of this view (sharing graphs and properties)."""
        pos = np.asarray(positions, dtype=np.int64)
        view = PropertyData(self.graphs, self.properties, self.indices[pos], self.name)
        view._keys = self._keys
        return view

    def values(self, name: str) -> np.ndarray:
        """float64 [len(self)] values of property ``name`` for this view's rows (NaN = missing)."""
        if name not in self.properties:
            raise ValueError(
                f"{self.name or 'data'} has no property {name!r}; it has: {', '.join(self.columns) or 'none'}"
            )
        return self.properties[name][self.indices]

    def labels(self, targets: Sequence[str]) -> np.ndarray:
        """float32 [len(self), P] labels in the order of ``targets``; a column this data does not
        have is all NaN."""
        out = np.full((len(self), len(targets)), np.nan, dtype=np.float32)
        for k, name in enumerate(targets):
            if name in self.properties:
                out[:, k] = self.properties[name][self.indices]
        return out

    def dataset(self, targets: Sequence[str]) -> GraphDataset:
        """A :class:`~alkernels.data.GraphDataset` of this view whose items carry ``y`` float32
        [P] in the order of ``targets`` (NaN where missing)."""
        y = np.full((len(self.graphs), len(targets)), np.nan, dtype=np.float32)
        for k, name in enumerate(targets):
            if name in self.properties:
                y[:, k] = self.properties[name]
        return GraphDataset(self.graphs, y=y, indices=self.indices)

    def structure_keys(self) -> list[str]:
        """One sha256 hex key per row of this view over its atomic numbers, positions and cell:
        equal structures (bit for bit) have equal keys, wherever they were read from."""
        if self._keys is None:
            g = self.graphs
            keys = []
            for k in range(len(g)):
                n0, n1 = int(g.node_ptr[k]), int(g.node_ptr[k + 1])
                h = hashlib.sha256(np.ascontiguousarray(g.z[n0:n1], dtype=np.int64).tobytes())
                h.update(np.ascontiguousarray(g.pos[n0:n1], dtype=np.float64).tobytes())
                h.update(np.ascontiguousarray(g.cell[k], dtype=np.float64).tobytes())
                keys.append(h.hexdigest())
            self._keys = keys
        return [self._keys[int(i)] for i in self.indices]


def content_hash(datasets: Sequence[PropertyData], targets: Sequence[str]) -> str:
    """sha256 hex of the training data: every row's structure key and its ``targets`` labels,
    dataset by dataset in order, plus the graph construction (cutoff, mode, neighbour cap).

    Two calls agree exactly when the same structures with the same labels are built into the
    same graphs, in the same order."""
    h = hashlib.sha256(repr(list(targets)).encode())
    for data in datasets:
        g = data.graphs
        h.update(f"{g.cutoff}|{g.mode}|{g.max_neighbors}|{len(data)}".encode())
        for key in data.structure_keys():
            h.update(bytes.fromhex(key))
        h.update(np.ascontiguousarray(data.labels(targets), dtype=np.float32).tobytes())
    return h.hexdigest()
