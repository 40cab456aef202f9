"""The built-in dataset: symmetric random crystals from pyxtal, labelled by spglib.

Space groups follow a prior derived from the Materials Project sample (``spacegroup_prior.csv``:
the MP-20 test-split counts plus add-``alpha`` smoothing so all 230 groups can occur). Structure
``i`` of seed ``s`` depends only on ``(s, i)``, so any worker count and any ``n`` give the same
structures, and a larger ``n`` extends a smaller one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import warnings
from os import PathLike
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from alkernels._extras import missing_extra
from alkernels._paths import user_path

try:
    import pandas as pd
    import spglib
except ImportError as err:
    raise missing_extra("data", __name__, err) from err

from alkernels.data import _store
from alkernels.data.structures import StructureError, StructureSet, check_structure, make_atoms
from alkernels.data.symmetry import DEFAULT_SYMPREC, quiet_spglib

PRIOR_PATH = Path(__file__).with_name("spacegroup_prior.csv")
#: Pseudo-count added to every space group when deriving the prior.
PRIOR_ALPHA = 0.25
#: Bumped whenever the generator changes (invalidates cached synthetic sets).
GENERATOR_VERSION = 2
#: Elements compositions are drawn from (common in the Materials Project).
ELEMENTS = (
    "H",
    "Li",
    "B",
    "C",
    "N",
    "O",
    "F",
    "Na",
    "Mg",
    "Al",
    "Si",
    "P",
    "S",
    "Cl",
    "K",
    "Ca",
    "Ti",
    "V",
    "Cr",
    "Mn",
    "Fe",
    "Co",
    "Ni",
    "Cu",
    "Zn",
    "Ga",
    "Ge",
    "As",
    "Se",
    "Br",
    "Rb",
    "Sr",
    "Y",
    "Zr",
    "Nb",
    "Mo",
    "Ag",
    "Cd",
    "In",
    "Sn",
    "Sb",
    "Te",
    "I",
    "Cs",
    "Ba",
    "La",
    "Hf",
    "W",
    "Pt",
    "Au",
    "Bi",
)
#: Probability of 1, 2, 3, 4 distinct elements (MP-20 is mostly binary and ternary).
N_SPECIES_P = (0.1, 0.4, 0.4, 0.1)
#: Atoms per primitive cell, inclusive (MP-20: at most 20, mean about 10).
ATOMS_RANGE = (4, 20)
_CENTERING = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "F": 4, "R": 3}
_ATTEMPTS_PER_GROUP = 20
_MAX_ATTEMPTS = 100
_CHUNK = 32


def derive_spacegroup_prior(
    source: str | PathLike, *, column: str = "spacegroup.number", alpha: float = PRIOR_ALPHA
) -> pd.DataFrame:
    """The space-group prior from a CSV with a space-group column.

    Returns:
        DataFrame with 230 rows: ``spacegroup`` (1..230), ``count`` (occurrences in ``source``)
        and ``probability`` = (count + alpha) / (total + 230 alpha).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 so that every group can occur, got {alpha}")
    values = pd.read_csv(user_path(source), usecols=[column])[column].to_numpy()
    if values.size == 0 or values.min() < 1 or values.max() > 230:
        raise ValueError(f"{source}: column {column!r} must hold space-group numbers 1..230")
    counts = np.bincount(values.astype(np.int64), minlength=231)[1:]
    prob = (counts + alpha) / (counts.sum() + 230 * alpha)
    return pd.DataFrame({"spacegroup": np.arange(1, 231), "count": counts, "probability": prob})


def load_spacegroup_prior() -> np.ndarray:
    """The shipped prior: float64 [230], probability of space group k + 1, summing to 1."""
    table = pd.read_csv(PRIOR_PATH)
    prob = table.sort_values("spacegroup")["probability"].to_numpy(dtype=np.float64)
    return prob / prob.sum()


def synthetic_crystals(
    n: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    cache_dir: str | PathLike | None = None,
    symprec: float = DEFAULT_SYMPREC,
) -> StructureSet:
    """``n`` random symmetric crystals, labelled with their spglib space group.

    Args:
        n: number of structures.
        seed: the same seed always gives the same structures.
        workers: worker processes (None: ``os.cpu_count()``; 1: in-process).
        cache_dir: if set, the set is stored under ``cache_dir/synthetic-<key>`` and reloaded by
            later calls with the same ``n``, ``seed`` and ``symprec``.
        symprec: spglib tolerance in Angstrom for the labels.

    Returns:
        A StructureSet whose ``labels`` are spglib space-group numbers (1..230) of the generated
        cells (not the requested groups) and whose ``table`` has ``spacegroup_number``,
        ``requested_spacegroup``, ``formula`` and ``n_atoms``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    prior = load_spacegroup_prior()
    params = {"n": int(n), "seed": int(seed), "symprec": float(symprec), "version": GENERATOR_VERSION}
    arrays = _store.generated(
        "synthetic",
        n,
        digest=hashlib.sha256(prior.tobytes()),
        params=params,
        work=functools.partial(_generate_chunk, seed=int(seed), prior=prior, symprec=float(symprec)),
        append=_append_chunk,
        workers=workers,
        cache_dir=cache_dir,
        chunk=_CHUNK,
    )
    return _structure_set(arrays, seed)


def _append_chunk(writer: _store.ArrayWriter, crystals: list[tuple]) -> list[int]:
    """Store one chunk of generated crystals; returns their atom counts."""
    numbers, positions, cells, labels, requested = zip(*crystals)
    writer.append("numbers", np.concatenate(numbers).astype(np.uint8))
    writer.append("positions", np.concatenate(positions))
    writer.append("cell", np.stack(cells))
    writer.append("labels", np.array(labels, np.int64))
    writer.append("requested", np.array(requested, np.int64))
    return [len(z) for z in numbers]


def _structure_set(arrays: dict[str, np.ndarray], seed: int) -> StructureSet:
    ptr = np.asarray(arrays["node_ptr"])
    numbers = np.asarray(arrays["numbers"], dtype=np.int64)
    positions = np.asarray(arrays["positions"])
    atoms = [
        make_atoms(numbers[a:b], positions[a:b], arrays["cell"][k]) for k, (a, b) in enumerate(zip(ptr[:-1], ptr[1:]))
    ]
    labels = np.asarray(arrays["labels"], dtype=np.int64)
    table = pd.DataFrame(
        {
            "spacegroup_number": labels,
            "requested_spacegroup": np.asarray(arrays["requested"], dtype=np.int64),
            "formula": [a.get_chemical_formula() for a in atoms],
            "n_atoms": np.diff(ptr),
        }
    )
    ids = [f"synth-{seed}-{k}" for k in range(len(atoms))]
    return StructureSet(atoms=atoms, table=table, ids=ids, labels=labels)


def _generate_chunk(
    indices: Sequence[int], *, seed: int, prior: np.ndarray, symprec: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]]:
    with _quiet_generation() as tolerance:
        return [_generate_one(seed, int(i), prior, symprec, tolerance) for i in indices]


@contextlib.contextmanager
def _quiet_generation() -> Iterator[Any]:
    """pyxtal's default atomic ``Tol_matrix``, also used by its Wyckoff merge check meanwhile,
    with Python warnings and spglib's messages off; all restored on exit.

    pyxtal's ``Wyckoff_position.merge`` calls ``check_images`` without a tolerance matrix, which
    then rebuilds the default one (a 100x100 table, a few ms) on every call: more than half the
    generation time. Binding the same default matrix once gives identical structures, twice as
    fast.
    """
    try:
        import pyxtal.operations
        import pyxtal.symmetry
        from pyxtal.tolerance import Tol_matrix
    except ImportError as err:
        raise missing_extra("data", "synthetic_crystals", err) from err

    tolerance = Tol_matrix(prototype="atomic")
    original = pyxtal.symmetry.check_images
    pyxtal.symmetry.check_images = functools.partial(pyxtal.operations.check_images, tm=tolerance)
    try:
        with quiet_spglib(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield tolerance
    finally:
        pyxtal.symmetry.check_images = original


def _generate_one(
    seed: int, index: int, prior: np.ndarray, symprec: float, tolerance: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Crystal ``index`` of ``seed``: (numbers, positions, cell, spglib label, requested group).

    Attempt ``a`` draws its composition from ``(seed, index, a)``; the space group is drawn from
    ``(seed, index, a // 20)``, so a group pyxtal cannot fill is replaced after 20 attempts.
    """
    from pyxtal import pyxtal

    for attempt in range(_MAX_ATTEMPTS):
        group_rng = np.random.default_rng([seed, index, attempt // _ATTEMPTS_PER_GROUP, 0])
        sg = int(group_rng.choice(230, p=prior)) + 1
        rng = np.random.default_rng([seed, index, attempt, 1])
        counts = _draw_counts(rng, sg)
        if counts is None:
            continue
        species = [str(s) for s in rng.choice(ELEMENTS, size=len(counts), replace=False)]
        crystal = pyxtal()
        try:
            crystal.from_random(3, sg, species, counts, random_state=int(rng.integers(2**31)), tm=tolerance)
            atoms = crystal.to_ase(resort=False)
        except Exception:  # pyxtal raises various errors for unfillable (group, composition) pairs
            continue
        cell, frac, numbers = spglib.standardize_cell(
            (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers),
            to_primitive=True,
            no_idealize=True,
            symprec=symprec,
        )
        positions = frac @ cell
        if not ATOMS_RANGE[0] <= len(numbers) <= ATOMS_RANGE[1]:
            continue
        try:
            check_structure(numbers, positions, cell)
        except StructureError:
            continue
        data = spglib.get_symmetry_dataset((cell, frac, numbers), symprec=symprec)
        if data is None:
            continue
        return numbers.astype(np.int64), positions, cell, int(data.number), sg
    raise RuntimeError(f"synthetic_crystals: no valid crystal for seed {seed}, index {index}")


@functools.lru_cache(maxsize=None)
def _group_multiplicities(sg: int) -> tuple[np.ndarray, int]:
    """Distinct Wyckoff multiplicities (conventional cell) of group ``sg`` and its centering factor."""
    from pyxtal.symmetry import Group

    group = Group(sg)
    mults = np.unique([wp.multiplicity for wp in group.Wyckoff_positions])
    return mults, _CENTERING[group.symbol[0]]


def _draw_counts(rng: np.random.Generator, sg: int) -> list[int] | None:
    """Atoms per species in the conventional cell, each one Wyckoff multiplicity (a sum of two
    with probability 0.2), with the primitive cell inside ``ATOMS_RANGE``; None when 20 draws miss
    the range."""
    mults, centering = _group_multiplicities(sg)
    k = int(rng.choice(len(N_SPECIES_P), p=N_SPECIES_P)) + 1
    for _ in range(20):
        counts = [int(rng.choice(mults, size=1 + int(rng.random() < 0.2)).sum()) for _ in range(k)]
        if ATOMS_RANGE[0] <= sum(counts) // centering <= ATOMS_RANGE[1]:
            return counts
    return None
