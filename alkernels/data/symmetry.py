"""Space-group labels and crystal families.

``crystal_family`` needs only NumPy; ``spacegroup_number`` needs spglib (the ``data`` extra).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from alkernels._extras import missing_extra

if TYPE_CHECKING:
    import ase

#: spglib tolerance (Angstrom) used for space-group labels unless told otherwise.
DEFAULT_SYMPREC = 0.1

#: First space-group number of each crystal family (trigonal groups belong to the hexagonal family).
_FAMILY_STARTS = np.array([1, 3, 16, 75, 143, 195])
CRYSTAL_FAMILIES = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic")


def crystal_family(spacegroups: Sequence[int] | np.ndarray) -> np.ndarray:
    """Crystal family index (0..5, see ``CRYSTAL_FAMILIES``) of each space-group number 1..230.

    Returns:
        int64 [len(spacegroups)].
    """
    sg = np.asarray(spacegroups, dtype=np.int64)
    if sg.size and (sg.min() < 1 or sg.max() > 230):
        raise ValueError(f"space-group numbers must be in 1..230, got range {sg.min()}..{sg.max()}")
    return np.searchsorted(_FAMILY_STARTS, sg, side="right") - 1


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


def spacegroup_number(atoms: "ase.Atoms", symprec: float = DEFAULT_SYMPREC) -> int:
    """The spglib space-group number (1..230) of a crystal.

    Raises:
        StructureError: spglib finds no space group.
        ImportError: spglib (the ``data`` extra) is not installed.
    """
    try:
        import spglib
    except ImportError as err:
        raise missing_extra("data", "spacegroup_number", err) from err
    from alkernels.data.structures import StructureError

    with quiet_spglib():
        data = spglib.get_symmetry_dataset(
            (atoms.cell[:], atoms.get_scaled_positions(wrap=True), atoms.numbers), symprec=symprec
        )
    if data is None:
        raise StructureError(f"spglib found no space group at symprec={symprec}")
    return int(data.number)
