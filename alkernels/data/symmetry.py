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
    return np.searchsorted(_FAMILY_STARTS, _check_numbers(spacegroups), side="right") - 1


#: First space-group number of each crystal system (trigonal and hexagonal apart).
_SYSTEM_STARTS = np.array([1, 3, 16, 75, 143, 168, 195])
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
#: The 14 Bravais lattices (Pearson symbols; S = base-centred, C or A).
BRAVAIS_LATTICES = ("aP", "mP", "mS", "oP", "oS", "oI", "oF", "tP", "tI", "hR", "hP", "cP", "cI", "cF")
#: First letter of each space group's standard Hermann-Mauguin symbol, groups 1..230 (from spglib's
#: space-group table, first Hall setting of each number).
_CENTRING = (
    "PPPPCPPCCPPCPPCPPPPCCFIIPPPPPPPPPPCCCAAAAFFIIIPPPPPPPPPPPPPPPPCCCCCCFFIIIIPPPPIIPIPPPPIIPPPPPPPPIIPP"
    "PPPPPPIIIIPPPPPPPPIIIIPPPPPPPPPPPPPPPPIIIIPPPRPRPPPPPPRPPPPRRPPPPRRPPPPPPPPPPPPPPPPPPPPPPPPPPPPFIPIP"
    "PFFIPIPPFFIPPIPFIPFIPPPPFFFFII"
)
#: Label modes of the space-group study: the class each structure is trained to predict.
LABEL_MODES = {"spacegroup": 230, "crystal_system": len(CRYSTAL_SYSTEMS), "bravais": len(BRAVAIS_LATTICES)}


def _check_numbers(spacegroups: Sequence[int] | np.ndarray) -> np.ndarray:
    sg = np.asarray(spacegroups, dtype=np.int64)
    if sg.size and (sg.min() < 1 or sg.max() > 230):
        raise ValueError(f"space-group numbers must be in 1..230, got range {sg.min()}..{sg.max()}")
    return sg


def crystal_system(spacegroups: Sequence[int] | np.ndarray) -> np.ndarray:
    """Crystal system index (0..6, see ``CRYSTAL_SYSTEMS``) of each space-group number 1..230.

    Returns:
        int64 [len(spacegroups)].
    """
    return np.searchsorted(_SYSTEM_STARTS, _check_numbers(spacegroups), side="right") - 1


def bravais_lattice(spacegroups: Sequence[int] | np.ndarray) -> np.ndarray:
    """Bravais lattice index (0..13, see ``BRAVAIS_LATTICES``) of each space-group number 1..230:
    the crystal system's letter with the centring of the group's symbol (trigonal P groups have a
    hexagonal lattice, hP; R groups hR; C and A centring are both base-centred, S).

    Returns:
        int64 [len(spacegroups)].
    """
    sg = _check_numbers(spacegroups)
    letters = "amothhc"
    out = np.empty(sg.shape, dtype=np.int64)
    for k, (number, system) in enumerate(zip(sg.tolist(), crystal_system(sg).tolist())):
        centring = _CENTRING[number - 1]
        centring = "S" if centring in "CA" else centring
        symbol = "hR" if centring == "R" else "hP" if system in (4, 5) else letters[system] + centring
        out[k] = BRAVAIS_LATTICES.index(symbol)
    return out


def class_labels(spacegroups: Sequence[int] | np.ndarray, mode: str = "spacegroup") -> np.ndarray:
    """Class indices for a label mode (``LABEL_MODES``): space-group number - 1 (230 classes),
    the crystal system (7) or the Bravais lattice (14).

    Returns:
        int64 [len(spacegroups)].
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    if mode == "crystal_system":
        return crystal_system(spacegroups)
    if mode == "bravais":
        return bravais_lattice(spacegroups)
    return _check_numbers(spacegroups) - 1


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
