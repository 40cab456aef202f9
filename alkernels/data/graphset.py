"""Crystal graphs as arrays: :class:`Graph` (one structure) and :class:`GraphSet` (many,
concatenated, possibly memory-mapped from the cache). NumPy only; ``GraphSet.atoms`` needs ase."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from alkernels._extras import missing_extra

if TYPE_CHECKING:
    import ase


class Graph(NamedTuple):
    """One crystal graph with local (0-based within the structure) node indices.

    ``z`` uint8 [n]; ``pos`` float64 [n, 3]; ``cell`` float64 [3, 3]; ``edge_src``/``edge_dst`` int
    [e], sorted by ``edge_dst``; ``edge_shift`` int16 [e, 3]; ``edge_vec`` float32 [e, 3].
    """

    z: np.ndarray
    pos: np.ndarray
    cell: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_shift: np.ndarray
    edge_vec: np.ndarray


@dataclass
class GraphSet:
    """B crystal graphs as concatenated arrays with global node indices (CSR-sorted by receiver).

    Edges are j -> i: ``edge_src`` = j sends, ``edge_dst`` = i receives. Within each structure the
    edges are sorted by receiver, then distance (ties in vesin's order). Arrays may be read-only
    memory maps of the on-disk cache. (matsciml mode: sorted by receiver, then sender.)

    Attributes:
        z: uint8 [N], atomic numbers.
        pos: float64 [N, 3], Cartesian positions in Angstrom.
        cell: float64 [B, 3, 3], lattice vectors as rows.
        node_ptr: int64 [B + 1], node offsets of the structures.
        edge_src: int32 (int64 when N >= 2**31) [E], global sender index.
        edge_dst: same dtype [E], global receiver index, non-decreasing.
        edge_shift: int16 [E, 3], periodic-image shift of the sender in cell units (zeros in
            matsciml mode).
        edge_vec: float32 [E, 3], ``pos[src] + edge_shift @ cell - pos[dst]`` (the raw in-cell
            ``pos[src] - pos[dst]`` in matsciml mode).
        edge_ptr: int64 [B + 1], edge offsets of the structures.
        cutoff, mode, max_neighbors: the build parameters.
        key: the sha256 cache key of inputs and parameters.
        path: the cache directory the arrays are mapped from, or None.
    """

    z: np.ndarray
    pos: np.ndarray
    cell: np.ndarray
    node_ptr: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_shift: np.ndarray
    edge_vec: np.ndarray
    edge_ptr: np.ndarray
    cutoff: float
    mode: str
    max_neighbors: int | None
    key: str
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.node_ptr) - 1

    @property
    def num_nodes(self) -> int:
        """N, atoms over all structures."""
        return int(self.node_ptr[-1])

    @property
    def num_edges(self) -> int:
        """E, directed edges over all structures."""
        return int(self.edge_ptr[-1])

    def __getitem__(self, index: int) -> Graph:
        """Structure ``index`` with local node indices."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"graph index {index} out of range for {len(self)} graphs")
        index %= len(self)
        n0, n1 = int(self.node_ptr[index]), int(self.node_ptr[index + 1])
        e0, e1 = int(self.edge_ptr[index]), int(self.edge_ptr[index + 1])
        return Graph(
            z=np.asarray(self.z[n0:n1]),
            pos=np.asarray(self.pos[n0:n1]),
            cell=np.asarray(self.cell[index]),
            edge_src=np.asarray(self.edge_src[e0:e1]) - n0,
            edge_dst=np.asarray(self.edge_dst[e0:e1]) - n0,
            edge_shift=np.asarray(self.edge_shift[e0:e1]),
            edge_vec=np.asarray(self.edge_vec[e0:e1]),
        )

    def atoms(self, index: int) -> "ase.Atoms":
        """Structure ``index`` as a periodic ``ase.Atoms`` (needs the ``data`` extra)."""
        try:
            import ase
        except ImportError as err:
            raise missing_extra("data", "GraphSet.atoms", err) from err
        g = self[index]
        return ase.Atoms(numbers=g.z.astype(np.int64), positions=g.pos, cell=g.cell, pbc=True)
