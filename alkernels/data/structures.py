"""Crystal structures: validation, space-group labels and the :class:`StructureSet` container."""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import ase
import numpy as np
import pandas as pd
import spglib
from vesin import NeighborList

#: Atoms closer than this (Angstrom, minimum image, periodic images included) overlap.
MIN_DISTANCE = 0.5
#: A cell whose volume is below this fraction of ``|a| |b| |c|`` is near-singular.
MIN_CELL_SINE = 1e-3
#: Atomic numbers accepted by the models (``Embedding(100, ...)`` with 0 as padding).
Z_RANGE = (1, 99)
#: spglib tolerance (Angstrom) used for space-group labels unless told otherwise.
DEFAULT_SYMPREC = 0.1

#: First space-group number of each crystal family (trigonal groups belong to the hexagonal family).
_FAMILY_STARTS = np.array([1, 3, 16, 75, 143, 195])
CRYSTAL_FAMILIES = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic")


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


@contextlib.contextmanager
def quiet_spglib() -> Iterator[None]:
    """Silence spglib meanwhile: its per-call DeprecationWarning about legacy error handling and
    the "ssm_get_exact_positions failed" lines its C search prints to stderr unless
    ``SPGLIB_WARNING=OFF`` (read at each call); the environment is restored on exit."""
    previous = os.environ.get("SPGLIB_WARNING")
    os.environ["SPGLIB_WARNING"] = "OFF"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if previous is None:
            del os.environ["SPGLIB_WARNING"]
        else:
            os.environ["SPGLIB_WARNING"] = previous


def spacegroup_number(atoms: ase.Atoms, symprec: float = DEFAULT_SYMPREC) -> int:
    """The spglib space-group number (1..230) of a crystal; ``StructureError`` if spglib finds none."""
    with quiet_spglib():
        data = spglib.get_symmetry_dataset(
            (atoms.cell[:], atoms.get_scaled_positions(wrap=True), atoms.numbers), symprec=symprec
        )
    if data is None:
        raise StructureError(f"spglib found no space group at symprec={symprec}")
    return int(data.number)


def crystal_family(spacegroups: Sequence[int] | np.ndarray) -> np.ndarray:
    """Crystal family index (0..5, see ``CRYSTAL_FAMILIES``) of each space-group number 1..230.

    Returns:
        int64 [len(spacegroups)].
    """
    sg = np.asarray(spacegroups, dtype=np.int64)
    if sg.size and (sg.min() < 1 or sg.max() > 230):
        raise ValueError(f"space-group numbers must be in 1..230, got range {sg.min()}..{sg.max()}")
    return np.searchsorted(_FAMILY_STARTS, sg, side="right") - 1


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
