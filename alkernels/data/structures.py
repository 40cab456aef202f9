"""Crystal structures: validation and the :class:`StructureSet` container (the ``data`` extra)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

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


class StructureError(ValueError):
    """A structure that cannot be used; the message is the rejection reason."""


def check_structure(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> None:
    """Raise :class:`StructureError` when a crystal is unusable.

    Args:
        numbers: int [n], atomic numbers.
        positions: float [n, 3], Cartesian positions in Angstrom.
        cell: float [3, 3], lattice vectors as rows, treated as periodic in all three directions.

    The checks, in order: an empty structure, Z outside 1..99, a zero lattice vector, a
    near-singular cell (volume below ``MIN_CELL_SINE * |a||b||c|``), and two atoms (or an atom and
    its own periodic image) closer than ``MIN_DISTANCE``.
    """
    check_numbers_and_cell(numbers, cell)
    nl = NeighborList(cutoff=MIN_DISTANCE, full_list=False, n_threads=1)
    check_overlaps(*nl.compute(np.asarray(positions, dtype=np.float64), np.asarray(cell, np.float64),
                               True, quantities="ijd"))


def check_numbers_and_cell(numbers: np.ndarray, cell: np.ndarray) -> None:
    """The checks of :func:`check_structure` that need no neighbour list."""
    numbers = np.asarray(numbers)
    if numbers.size == 0:
        raise StructureError("empty structure (no atoms)")
    bad_z = numbers[(numbers < Z_RANGE[0]) | (numbers > Z_RANGE[1])]
    if bad_z.size:
        raise StructureError(f"atomic number Z={int(bad_z[0])} outside {Z_RANGE[0]}..{Z_RANGE[1]}")
    cell = np.asarray(cell, dtype=np.float64)
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths < 1e-8):
        raise StructureError(f"zero cell: lattice vector lengths {np.round(lengths, 4).tolist()}")
    sine = abs(np.linalg.det(cell)) / float(np.prod(lengths))
    if sine < MIN_CELL_SINE:
        raise StructureError(f"near-singular cell: volume / (|a||b||c|) = {sine:.2e}")


def check_overlaps(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> None:
    """Raise :class:`StructureError` if a neighbour pair ``(i[k], j[k])`` is closer than
    ``MIN_DISTANCE``; the pairs must come from a periodic list with cutoff >= ``MIN_DISTANCE``."""
    if d.size and d.min() < MIN_DISTANCE:
        k = int(np.argmin(d))
        raise StructureError(
            f"overlapping atoms {int(i[k])} and {int(j[k])}: distance {d[k]:.3f} A < {MIN_DISTANCE} A"
        )


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
            raise ValueError(
                f"StructureSet: {n} structures but {len(self.table)} table rows and {len(self.ids)} ids"
            )
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise ValueError(f"StructureSet: labels shape {self.labels.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.atoms)

    def __getitem__(self, index: int) -> ase.Atoms:
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
