"""Crystal structures: validation and the :class:`StructureSet` container (the ``data`` extra)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence, overload

import numpy as np

from alkernels._extras import missing_extra

try:
    import ase
    import pandas as pd
    from vesin import NeighborList
except ImportError as err:
    raise missing_extra("data", __name__, err) from err

#: Atoms closer than this (Angstrom, minimum image, periodic images included) overlap.
MIN_DISTANCE = 0.5
#: A cell whose volume is below this fraction of ``|a| |b| |c|`` is near-singular.
MIN_CELL_SINE = 1e-3
#: Atomic numbers accepted by the models (``Embedding(100, ...)`` with 0 as padding).
Z_RANGE = (1, 99)
#: Longest lattice vector accepted, in Angstrom: far beyond any crystal or slab, and short enough
#: that the neighbour-list library's cell grid stays finite.
MAX_CELL_LENGTH = 1000.0
#: Default cap on a structure's estimated edges (``build_graphs(max_edges=...)``): about 0.2 GB
#: of neighbour-list output; dense structures with a long cutoff beyond it are rejected.
MAX_EDGES = 2_000_000


class StructureError(ValueError):
    """A structure that cannot be used; the message is the rejection reason."""


def check_structure(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> None:
    """Raise :class:`StructureError` when a crystal is unusable.

    Args:
        numbers: int [n], atomic numbers.
        positions: float [n, 3], Cartesian positions in Angstrom.
        cell: float [3, 3], lattice vectors as rows, treated as periodic in all three directions.

    The checks, in order: an empty structure, Z outside 1..99, a non-finite cell, a zero
    lattice vector, one longer than ``MAX_CELL_LENGTH``, a near-singular cell (volume below
    ``MIN_CELL_SINE * |a||b||c|``), non-finite positions, and two atoms (or an atom and its own
    periodic image) closer than ``MIN_DISTANCE``.
    """
    check_numbers_and_cell(numbers, cell)
    check_positions(positions, len(numbers))
    nl = NeighborList(cutoff=MIN_DISTANCE, full_list=False, n_threads=1)
    check_overlaps(
        *nl.compute(np.asarray(positions, dtype=np.float64), np.asarray(cell, np.float64), True, quantities="ijd")
    )


def check_numbers_and_cell(numbers: np.ndarray, cell: np.ndarray) -> None:
    """The checks of :func:`check_structure` that need no neighbour list."""
    numbers = np.asarray(numbers)
    if numbers.size == 0:
        raise StructureError("empty structure (no atoms)")
    bad_z = numbers[(numbers < Z_RANGE[0]) | (numbers > Z_RANGE[1])]
    if bad_z.size:
        raise StructureError(f"atomic number Z={int(bad_z[0])} outside {Z_RANGE[0]}..{Z_RANGE[1]}")
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3) or not np.isfinite(cell).all():
        raise StructureError(f"non-finite or malformed cell {cell.tolist()}")
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths < 1e-8):
        raise StructureError(f"zero cell: lattice vector lengths {np.round(lengths, 4).tolist()}")
    if np.any(lengths > MAX_CELL_LENGTH):
        raise StructureError(
            f"cell too large: lattice vector lengths {np.round(lengths, 1).tolist()} A (at most {MAX_CELL_LENGTH:g} A)"
        )
    sine = abs(np.linalg.det(cell)) / float(np.prod(lengths))
    if sine < MIN_CELL_SINE:
        raise StructureError(f"near-singular cell: volume / (|a||b||c|) = {sine:.2e}")


def check_positions(positions: np.ndarray, n: int) -> None:
    """Raise :class:`StructureError` unless ``positions`` is a finite float [n, 3] array."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (n, 3):
        raise StructureError(f"positions have shape {pos.shape}, expected ({n}, 3)")
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        raise StructureError(f"atom {int(bad[0])} has a non-finite position {pos[bad[0]].tolist()}")


def estimated_edges(n: int, cell: np.ndarray, cutoff: float, mode: str) -> float:
    """Expected directed edges of a structure of ``n`` atoms in ``cell`` with ``cutoff``: every atom
    sees the cell's density over a sphere of radius ``cutoff`` (periodic images included); in
    ``matsciml`` mode at most ``n (n - 1)`` (no images)."""
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    periodic = n * n / max(volume, 1e-12) * 4.0 / 3.0 * np.pi * cutoff**3
    return min(periodic, float(n) * (n - 1)) if mode == "matsciml" else periodic


def check_graph_size(numbers: np.ndarray, cell: np.ndarray, cutoff: float, mode: str, max_edges: int) -> None:
    """Raise :class:`StructureError` when a structure's graph would hold more than ``max_edges``
    edges by :func:`estimated_edges` (checked before any neighbour list is computed)."""
    estimate = estimated_edges(len(numbers), cell, cutoff, mode)
    if estimate > max_edges:
        raise StructureError(
            f"too dense for a {cutoff:g} A cutoff: about {estimate:,.0f} edges expected, more "
            f"than the cap of {max_edges:,} (raise max_edges / --max-edges to accept it)"
        )


def check_overlaps(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> None:
    """Raise :class:`StructureError` if a neighbour pair ``(i[k], j[k])`` is closer than
    ``MIN_DISTANCE``; the pairs must come from a periodic list with cutoff >= ``MIN_DISTANCE``."""
    if d.size and d.min() < MIN_DISTANCE:
        k = int(np.argmin(d))
        raise StructureError(f"overlapping atoms {int(i[k])} and {int(j[k])}: distance {d[k]:.3f} A < {MIN_DISTANCE} A")


def make_atoms(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> ase.Atoms:
    """A periodic ``ase.Atoms`` (pbc on all axes) from raw arrays."""
    return ase.Atoms(numbers=np.asarray(numbers), positions=positions, cell=cell, pbc=True)


@dataclass
class StructureSet:
    """Accepted crystals with their per-row properties.

    Attributes:
        atoms: the accepted structures, periodic ``ase.Atoms``.
        table: pandas DataFrame, one row per accepted structure (source columns or ``atoms.info``).
        ids: one string id per accepted structure.
        labels: int64 [len(atoms)] class labels (a named column or spglib space groups), or None.
        rejected: ``(row, reason)`` for each skipped input row; ``row`` is the row's position in the
            source (0-based), or its file name for directories.
    """

    atoms: list[ase.Atoms]
    table: pd.DataFrame
    ids: list[str]
    labels: np.ndarray | None = None
    rejected: list[tuple[int | str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.atoms)
        if len(self.table) != n or len(self.ids) != n:
            raise ValueError(f"StructureSet: {n} structures but {len(self.table)} table rows and {len(self.ids)} ids")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise ValueError(f"StructureSet: labels shape {self.labels.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.atoms)

    @overload
    def __getitem__(self, index: int) -> ase.Atoms: ...

    @overload
    def __getitem__(self, index: slice) -> StructureSet: ...

    def __getitem__(self, index: int | slice) -> ase.Atoms | StructureSet:
        """The structure at an integer ``index``; for a slice, a :class:`StructureSet` of those rows
        with their table rows, ids and labels (as :meth:`subset`; ``rejected`` is kept)."""
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        return self.atoms[index]

    def __iter__(self) -> Iterator[ase.Atoms]:
        return iter(self.atoms)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "StructureSet":
        """A new StructureSet with the rows at ``indices`` (in that order); ``rejected`` is kept."""
        idx = np.asarray(indices, dtype=np.int64)
        return StructureSet(
            atoms=[self.atoms[i] for i in idx],
            table=self.table.iloc[idx].reset_index(drop=True),
            ids=[self.ids[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            rejected=list(self.rejected),
        )

    def drop_dense(self, cutoff: float, mode: str = "periodic", max_edges: int = MAX_EDGES) -> "StructureSet":
        """The structures whose graph at ``cutoff`` stays within ``max_edges`` estimated edges
        (:func:`check_graph_size`); the others join ``rejected`` (under their id) with the reason,
        like every other bad row, so that one dense structure never sinks a dataset."""
        keep, dropped = [], []
        for k, atoms in enumerate(self.atoms):
            try:
                check_graph_size(atoms.numbers, atoms.cell[:], cutoff, mode, max_edges)
                keep.append(k)
            except StructureError as err:
                dropped.append((self.ids[k], str(err)))
        if not dropped:
            return self
        out = self.subset(keep)
        out.rejected += dropped
        return out
