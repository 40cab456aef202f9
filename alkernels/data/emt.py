"""Generated structures with energies and forces from ASE's EMT calculator (the ``data`` extra).

Effective-medium theory (``ase.calculators.emt.EMT``) is a classical potential for the fcc metals
Al, Cu, Ag, Au, Ni, Pd and Pt that ships with ASE, so labels are computed locally in
milliseconds and nothing is downloaded. The structures are strained, rattled fcc supercells with
random substitutions, so energies and forces vary with composition and geometry: a small,
honest target for the force model (:class:`alkernels.models.EnergyForceModel`), its tests, its
example and its benchmark. It is not a materials dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from alkernels._extras import missing_extra

try:
    import ase
    from ase.build import bulk
    from ase.calculators.emt import EMT
except ImportError as err:
    raise missing_extra("data", __name__, err) from err

#: The metals EMT has parameters for.
EMT_METALS: tuple[str, ...] = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")


@dataclass(frozen=True)
class ForceData:
    """Structures with their labels.

    Attributes:
        structures: the crystals (``ase.Atoms``, periodic, without a calculator attached).
        energy: float64 [B] potential energies (eV).
        forces: one float64 [n_b, 3] array per structure (eV/Angstrom).
    """

    structures: list[ase.Atoms]
    energy: np.ndarray
    forces: list[np.ndarray]


def emt_structures(
    n: int,
    *,
    seed: int,
    metals: Sequence[str] = ("Cu", "Ag", "Au", "Ni"),
    repeat: int = 2,
    rattle: float = 0.1,
    strain: float = 0.03,
    substitution: float = 0.25,
) -> ForceData:
    """``n`` labelled structures: fcc cubic cells of a random metal repeated ``repeat`` times per
    axis (4 repeat^3 atoms), a random fraction up to ``substitution`` of the sites swapped for
    another metal, the cell strained by a random symmetric strain of up to ``strain`` per
    component, and every atom displaced by Gaussian noise of ``rattle`` Angstrom per axis.

    Raises:
        ValueError: bad sizes, or a metal EMT has no parameters for.
    """
    if n < 1 or repeat < 1:
        raise ValueError(f"n and repeat must be >= 1, got {n} and {repeat}")
    unknown = sorted(set(metals) - set(EMT_METALS))
    if unknown or not metals:
        raise ValueError(f"metals must be a non-empty subset of {EMT_METALS}, got {list(metals)}")
    if not (rattle >= 0 and 0 <= strain < 0.5 and 0 <= substitution <= 1):
        raise ValueError(
            f"need rattle >= 0, 0 <= strain < 0.5, 0 <= substitution <= 1; got {rattle}, {strain}, {substitution}"
        )
    rng = np.random.default_rng(seed)
    calc = EMT()
    structures, energies, forces = [], [], []
    for _ in range(n):
        host = str(rng.choice(list(metals)))
        atoms = bulk(host, "fcc", cubic=True).repeat(repeat)
        symbols = np.array(atoms.get_chemical_symbols())
        swap = rng.random(len(atoms)) < substitution * rng.random()
        symbols[swap] = rng.choice(list(metals), size=int(swap.sum()))
        atoms.set_chemical_symbols(symbols.tolist())
        eps = rng.uniform(-strain, strain, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + (eps + eps.T) / 2), scale_atoms=True)
        atoms.positions += rng.normal(0.0, rattle, size=atoms.positions.shape)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(np.array(atoms.get_forces(), dtype=np.float64))
        atoms.calc = None
        structures.append(atoms)
    return ForceData(structures, np.array(energies, dtype=np.float64), forces)
