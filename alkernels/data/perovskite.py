"""A generated dataset of ABX3 perovskite-derived crystals whose symmetry follows from their chemistry.

Physics in short
----------------
An ABX3 perovskite is a cubic lattice of corner-sharing BX6 octahedra with the large A cation in
the cages between them. The aristotype (Pm-3m, 5 atoms) has B at the cube corner, A at the body
centre and X at the midpoints of the cube edges, with a pseudo-cubic lattice parameter close to
``2 (r_B + r_X)``. How well A fits its cage is measured by the Goldschmidt tolerance factor

    t = (r_A + r_X) / (sqrt(2) (r_B + r_X)).

When A is too small (t well below 1) the octahedra rotate to shrink the cages; when A is too large
(t above 1) the B cation has room to move off-centre and the crystal turns polar. This module
draws a composition, computes ``t`` from the ionic radii written below, draws a distortion with
probabilities that depend on ``t`` (every distortion keeps a non-zero probability, so the geometry
and not the chemistry alone decides the label), builds the crystal and labels it with spglib.

Octahedral tilts (Glazer notation). A tilt system such as ``a+b-b-`` gives, for each cubic axis
x, y, z, a letter (equal letters: equal rotation angles) and a phase: ``0`` no rotation about that
axis, ``+`` neighbouring octahedra along that axis rotate the same way, ``-`` they rotate the
opposite way. Perpendicular to the axis the rotation always alternates, because corner-sharing
octahedra act like meshed gears. The 2x2x2 supercell of the cubic cell (40 atoms) holds every
pattern. The rotation of the octahedron centred on B site n = (n1, n2, n3) about axis beta is
``theta_beta(n) = phi_beta s_beta(n)`` with sign ``s_beta(n) = (-1)^(sum of n_gamma over the two
axes gamma != beta)`` for ``+`` and ``(-1)^(n1 + n2 + n3)`` for ``-``. The anion at
``n + e_alpha / 2`` is a corner of the two octahedra at n and n + e_alpha; rotations to first
order in the angle move it by

    sum over beta != alpha of theta_beta(n) (e_beta x e_alpha) a / 2,

(the rotation about alpha itself leaves it in place), and both octahedra agree on this because
theta_beta changes sign along alpha. The displacement is perpendicular to the B-X-B bond, so to
keep the B-X bond length (rigid octahedra) the cell edge along alpha is shortened by the factor
``prod over beta != alpha of cos(phi_beta)``. All 15 tilt systems of the rigid-octahedron
analysis come out of this construction with their textbook space groups; eleven are used here
(:data:`TILT_SYSTEMS`), leaving out the three that need three distinct angles and ``a+a+c-``,
whose primitive cell has 40 atoms.

Polar displacements. B (and, by a smaller amount, A) moves off-centre by 0.15-0.3 A along
[001], [110] or [111]: P4mm, Amm2 and R3m on the untilted cell, as in BaTiO3's tetragonal,
orthorhombic and rhombohedral phases. Combined with a tilt the symmetry drops further; three
common combinations are used: a0a0c+ with [001] (P4bm), a0a0c- with [001] (I4cm) and a-a-a- with
[111] (R3c, the BiFeO3 structure).

Chemistry. A, B and X come from the small tables below (Shannon-like radii in Angstrom:
12-coordinate for A, where a 12-coordinate value is not tabulated a 9-coordinate one raised by
about 0.1 A, 6-coordinate for B and X; each element has one charge per site). Compositions are
charge balanced, ``q_A + q_B = 3 |q_X|``: oxides are A+B5+, A2+B4+ or A3+B3+, sulfides A2+B4+,
halides A+B2+. A composition is kept only when ``TOLERANCE_RANGE[0] <= t <= TOLERANCE_RANGE[1]``
and the octahedral factor ``r_B / r_X`` is at least ``MIN_OCTAHEDRAL_FACTOR`` (B large enough for
six X around it), the usual empirical bounds of perovskite formability.

Distortion given chemistry (:func:`mode_probabilities`). Three regimes blend smoothly around
``t = 0.9`` and ``t = 1.0`` (:data:`REGIME_BOUNDS`): above 1 the cell is mostly polar (P4mm and
R3m ahead) or cubic; between 0.9 and 1 mostly cubic or a single tilt (a0a0c-, a-a-a-, ...);
below 0.9 mostly a+b-b- (Pnma), with the other tilt systems behind it. A floor of
``MODE_FLOOR`` spread over all modes keeps every distortion possible at every ``t``.

Each structure: the pseudo-cubic parameter ``2 (r_B + r_X)`` with 1% Gaussian noise, tilt angles
uniform in ``TILT_ANGLE_RANGE`` degrees (systems with two different letters keep the angles at
least ``MIN_ANGLE_GAP`` apart so they do not pass for the higher-symmetry equal-angle system),
Gaussian noise of ``POSITION_NOISE * symprec`` on every Cartesian coordinate (0.01 A at the
default spglib tolerance of 0.1 A: no two structures are identical but the symmetry survives), then
spglib's primitive cell (5, 10 or 20 atoms) and spglib's space group at ``symprec``. The label
is whatever spglib finds; ``intended_spacegroup`` in the table is the group of the noise-free
construction.

Structure ``i`` of seed ``s`` depends only on ``(s, i)``: any worker count and any ``n`` give the
same structures, and a larger ``n`` extends a smaller one.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from os import PathLike
from typing import NamedTuple, Sequence

import numpy as np

from alkernels._extras import missing_extra

try:
    import ase.data
    import pandas as pd
    import spglib
except ImportError as err:
    raise missing_extra("data", __name__, err) from err

from alkernels.data import _store
from alkernels.data.structures import StructureError, StructureSet, check_structure, make_atoms
from alkernels.data.symmetry import DEFAULT_SYMPREC, quiet_spglib, spacegroup_number

#: Bumped whenever the generator changes (invalidates cached perovskite sets).
GENERATOR_VERSION = 1
#: Atoms per primitive cell, inclusive (5: untilted, 10 or 20: tilted).
ATOMS_RANGE = (5, 20)

#: A-site cations: element -> (charge, radius in A).
A_SITE: dict[str, tuple[int, float]] = {
    "Na": (1, 1.39),
    "K": (1, 1.64),
    "Rb": (1, 1.72),
    "Cs": (1, 1.88),
    "Ca": (2, 1.34),
    "Sr": (2, 1.44),
    "Ba": (2, 1.61),
    "Pb": (2, 1.49),
    "La": (3, 1.36),
    "Pr": (3, 1.30),
    "Nd": (3, 1.27),
    "Sm": (3, 1.24),
    "Gd": (3, 1.21),
    "Y": (3, 1.19),
}
#: B-site (octahedral) cations: element -> (charge, radius in A).
B_SITE: dict[str, tuple[int, float]] = {
    "Mg": (2, 0.72),
    "Ni": (2, 0.69),
    "Zn": (2, 0.74),
    "Co": (2, 0.745),
    "Cd": (2, 0.95),
    "Ca": (2, 1.00),
    "Ge": (2, 0.73),
    "Pb": (2, 1.19),
    "Al": (3, 0.535),
    "Ga": (3, 0.62),
    "Fe": (3, 0.645),
    "Cr": (3, 0.615),
    "Sc": (3, 0.745),
    "In": (3, 0.80),
    "Ti": (4, 0.605),
    "Zr": (4, 0.72),
    "Hf": (4, 0.71),
    "Sn": (4, 0.69),
    "Mn": (4, 0.53),
    "Ce": (4, 0.87),
    "Ru": (4, 0.62),
    "Nb": (5, 0.64),
    "Ta": (5, 0.64),
    "V": (5, 0.54),
    "Sb": (5, 0.60),
}
#: Anions: element -> (|charge|, radius in A, probability of being drawn).
X_SITE: dict[str, tuple[int, float, float]] = {
    "O": (2, 1.40, 0.55),
    "S": (2, 1.84, 0.06),
    "F": (1, 1.33, 0.15),
    "Cl": (1, 1.81, 0.08),
    "Br": (1, 1.96, 0.08),
    "I": (1, 2.20, 0.08),
}
#: Charge splits (q_A, q_B, relative weight) allowed for each anion.
CHARGE_SPLITS: dict[str, tuple[tuple[int, int, float], ...]] = {
    "O": ((1, 5, 0.2), (2, 4, 0.45), (3, 3, 0.35)),
    "S": ((2, 4, 1.0),),
    "F": ((1, 2, 1.0),),
    "Cl": ((1, 2, 1.0),),
    "Br": ((1, 2, 1.0),),
    "I": ((1, 2, 1.0),),
}
#: Compositions are kept when the tolerance factor lies in this range (inclusive).
TOLERANCE_RANGE = (0.8, 1.1)
#: Compositions are kept when r_B / r_X is at least this.
MIN_OCTAHEDRAL_FACTOR = 0.41

#: Tilt systems (Glazer symbol, axes x y z) -> space group of the non-polar construction.
TILT_SYSTEMS: dict[str, int] = {
    "a0a0a0": 221,  # Pm-3m, the cubic aristotype
    "a0a0c+": 127,  # P4/mbm
    "a0a0c-": 140,  # I4/mcm (SrTiO3 below 105 K)
    "a0b-b-": 74,  # Imma
    "a-a-a-": 167,  # R-3c (LaAlO3)
    "a+b-b-": 62,  # Pnma (GdFeO3, CaTiO3)
    "a+a+a+": 204,  # Im-3
    "a0b+b+": 139,  # I4/mmm
    "a-b-b-": 15,  # C2/c
    "a0b-c-": 12,  # C2/m
    "a0b+c-": 63,  # Cmcm
}
#: Polar displacement directions (cubic axes).
POLAR_DIRECTIONS: dict[str, tuple[int, int, int]] = {
    "[001]": (0, 0, 1),
    "[110]": (1, 1, 0),
    "[111]": (1, 1, 1),
}
NO_POLAR = "none"


class Mode(NamedTuple):
    """One distortion the generator draws: tilt system, polar direction, textbook space group."""

    tilt: str
    polar: str
    spacegroup: int


#: The distortions drawn, with the space group of their noise-free construction.
MODES: tuple[Mode, ...] = (
    *(Mode(tilt, NO_POLAR, sg) for tilt, sg in TILT_SYSTEMS.items()),
    Mode("a0a0a0", "[001]", 99),  # P4mm (tetragonal BaTiO3, PbTiO3)
    Mode("a0a0a0", "[110]", 38),  # Amm2 (orthorhombic BaTiO3)
    Mode("a0a0a0", "[111]", 160),  # R3m (rhombohedral BaTiO3)
    Mode("a0a0c+", "[001]", 100),  # P4bm
    Mode("a0a0c-", "[001]", 108),  # I4cm
    Mode("a-a-a-", "[111]", 161),  # R3c (BiFeO3)
)
#: Relative weights of the modes (same order as MODES) in the three tolerance-factor regimes:
#: large A (polar), good fit (cubic or small tilts), small A (orthorhombic tilts).
_REGIME_WEIGHTS = np.array(
    [
        # 221  127  140  74   167  62   204  139  15   12   63   99   38   160  100  108  161
        [0.15, 0.01, 0.01, 0.01, 0.01, 0.00, 0.01, 0.01, 0.00, 0.00, 0.00, 0.32, 0.10, 0.25, 0.03, 0.03, 0.06],
        [0.40, 0.07, 0.14, 0.05, 0.13, 0.02, 0.03, 0.02, 0.02, 0.02, 0.02, 0.03, 0.01, 0.01, 0.01, 0.01, 0.01],
        [0.02, 0.04, 0.04, 0.03, 0.09, 0.55, 0.04, 0.02, 0.05, 0.03, 0.06, 0.00, 0.00, 0.00, 0.01, 0.01, 0.01],
    ]
)
#: Centre and width of the soft boundaries between the regimes, in tolerance factor.
REGIME_BOUNDS = (0.9, 1.0)
REGIME_WIDTH = 0.015
#: Probability mass spread uniformly over all modes whatever the tolerance factor.
MODE_FLOOR = 0.04

#: Octahedral rotation angles, degrees.
TILT_ANGLE_RANGE = (5.0, 15.0)
#: Smallest difference (degrees) between the angles of two different Glazer letters.
MIN_ANGLE_GAP = 4.0
#: B-site polar displacement, A.
POLAR_SHIFT_RANGE = (0.15, 0.3)
#: A-site displacement along the same direction, as a fraction of the B-site one.
A_SHIFT_FRACTION = (0.0, 0.5)
#: Relative standard deviation of the pseudo-cubic lattice parameter.
LATTICE_NOISE = 0.01
#: Standard deviation of the Gaussian noise on every Cartesian coordinate, as a fraction of
#: ``symprec`` (0.01 A at the default 0.1 A), so the noise never breaks the symmetry spglib sees.
POSITION_NOISE = 0.1

_AXES = np.eye(3)
#: ``_CROSS[b, a]`` = e_b x e_a, float64 [3, 3, 3].
_CROSS = np.cross(_AXES[:, None], _AXES[None, :])
_MAX_ATTEMPTS = 20
_CHUNK = 128


def tolerance_factor(a_species: str, b_species: str, x_species: str) -> float:
    """Goldschmidt tolerance factor ``(r_A + r_X) / (sqrt(2) (r_B + r_X))`` from the module's radii."""
    r_a = _radius(A_SITE, a_species, "A")
    r_b = _radius(B_SITE, b_species, "B")
    r_x = _radius(X_SITE, x_species, "X")
    return (r_a + r_x) / (np.sqrt(2.0) * (r_b + r_x))


def mode_probabilities(t: float) -> np.ndarray:
    """Probabilities of the :data:`MODES` for a tolerance factor ``t``: float64 [len(MODES)], sum 1.

    A mixture of the three regime tables with logistic weights around :data:`REGIME_BOUNDS`, plus
    ``MODE_FLOOR`` spread uniformly so that every mode stays possible.
    """
    low, high = REGIME_BOUNDS
    w_polar = 1.0 / (1.0 + np.exp(-(t - high) / REGIME_WIDTH))
    w_small = 1.0 / (1.0 + np.exp(-(low - t) / REGIME_WIDTH))
    weights = np.array([w_polar, max(0.0, 1.0 - w_polar - w_small), w_small])
    table = _REGIME_WEIGHTS / _REGIME_WEIGHTS.sum(axis=1, keepdims=True)
    p = (1.0 - MODE_FLOOR) * weights @ table / weights.sum() + MODE_FLOOR / len(MODES)
    return p / p.sum()


def build_perovskite(
    a_species: str,
    b_species: str,
    x_species: str,
    tilt: str = "a0a0a0",
    polar: str = NO_POLAR,
    angles: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    lattice: float | None = None,
    b_shift: float = 0.2,
    a_shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noise-free 2x2x2 supercell (40 atoms) of a tilted and/or polar ABX3 perovskite.

    Args:
        a_species, b_species, x_species: element symbols of the A, B and X sites.
        tilt: a Glazer symbol from :data:`TILT_SYSTEMS`, axes in the order x y z.
        polar: ``"none"`` or a direction from :data:`POLAR_DIRECTIONS`.
        angles: rotation angle in degrees about x, y and z: 0 where the symbol has phase ``0``,
            non-zero elsewhere, equal for equal letters.
        lattice: pseudo-cubic lattice parameter before the tilt contraction, A (default
            ``2 (r_B + r_X)`` from the module's radii).
        b_shift, a_shift: polar displacement of every B and A atom, A (ignored when ``polar`` is
            ``"none"``).

    Returns:
        ``(numbers, positions, cell)``: int64 [40] atomic numbers (per cubic cell: A, B, then the
        X at +x/2, +y/2, +z/2), float64 [40, 3] Cartesian positions in A, float64 [3, 3]
        orthogonal lattice vectors as rows.
    """
    phases = _parse_tilt(tilt)
    phi = _check_angles(tilt, phases, angles)
    if polar != NO_POLAR and polar not in POLAR_DIRECTIONS:
        raise ValueError(f"unknown polar direction {polar!r}; known: {[NO_POLAR, *POLAR_DIRECTIONS]}")
    z = [_atomic_number(s) for s in (a_species, b_species, x_species)]
    if lattice is None:
        lattice = 2.0 * (_radius(B_SITE, b_species, "B") + _radius(X_SITE, x_species, "X"))
    if lattice <= 0:
        raise ValueError(f"lattice must be > 0, got {lattice}")
    shrink = np.array([np.prod([np.cos(phi[b]) for b in range(3) if b != alpha]) for alpha in range(3)])
    edges = lattice * shrink
    if polar == NO_POLAR:
        b_step = a_step = np.zeros(3)
    else:
        direction = np.array(POLAR_DIRECTIONS[polar], dtype=np.float64)
        direction /= np.linalg.norm(direction)
        b_step, a_step = b_shift * direction / edges, a_shift * direction / edges

    # B sites n of the supercell [8, 3] and the rotation theta_beta(n) of their octahedra [8, 3].
    sites = np.array(list(itertools.product((0, 1), repeat=3)), dtype=np.float64)
    parity = sites.sum(axis=1, keepdims=True)
    in_phase = np.array([p == "+" for p in phases])
    theta = np.where(in_phase, (-1.0) ** (parity - sites), (-1.0) ** parity) * phi
    # X at n + e_alpha / 2 moves by sum_beta theta_beta(n) (e_beta x e_alpha) / 2: [8, alpha, 3].
    x_shift = 0.5 * np.einsum("nb,bac->nac", theta, _CROSS)
    frac = np.concatenate(
        [
            (sites + 0.5 + a_step)[:, None],
            (sites + b_step)[:, None],
            sites[:, None] + 0.5 * _AXES[None] + x_shift,
        ],
        axis=1,
    ).reshape(40, 3)
    cell = np.diag(2.0 * edges)
    numbers = np.tile(np.array([z[0], z[1], z[2], z[2], z[2]], dtype=np.int64), 8)
    positions = (frac / 2.0) % 1.0 @ cell
    return numbers, positions, cell


def perovskite_crystals(
    n: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    cache_dir: str | PathLike | None = None,
    symprec: float = DEFAULT_SYMPREC,
) -> StructureSet:
    """``n`` generated ABX3 perovskite-derived crystals, labelled with their spglib space group.

    Args:
        n: number of structures.
        seed: the same seed always gives the same structures.
        workers: worker processes (None: ``os.cpu_count()``; 1: in-process).
        cache_dir: if set, the set is stored under ``cache_dir/perovskite-<key>`` and reloaded by
            later calls with the same ``n``, ``seed`` and ``symprec``.
        symprec: spglib tolerance in Angstrom for the primitive cell and the labels; the position
            noise is ``POSITION_NOISE * symprec``, so the structures depend on it too.

    Returns:
        A StructureSet of primitive cells (``ATOMS_RANGE`` atoms) whose ``labels`` are spglib
        space-group numbers (1..230) and whose ``table`` has ``spacegroup_number``,
        ``intended_spacegroup`` (of the noise-free construction), ``tilt_system`` (Glazer symbol),
        ``polar`` (``"none"``, ``"[001]"``, ``"[110]"`` or ``"[111]"``), ``formula``, ``n_atoms``,
        ``a_site``, ``b_site``, ``x_site``, ``tolerance_factor``, ``lattice`` (pseudo-cubic
        parameter before the tilt contraction, A), ``tilt_x``/``tilt_y``/``tilt_z`` (degrees) and
        ``polar_shift`` (B-site displacement, A; 0 when not polar).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not symprec > 0:
        raise ValueError(f"symprec must be > 0, got {symprec}")
    params = {"n": int(n), "seed": int(seed), "symprec": float(symprec), "version": GENERATOR_VERSION}
    arrays = _store.generated(
        "perovskite",
        n,
        digest=_tables_digest(),
        params=params,
        work=functools.partial(_generate_chunk, seed=int(seed), symprec=float(symprec)),
        append=_append_chunk,
        workers=workers,
        cache_dir=cache_dir,
        chunk=_CHUNK,
    )
    return _structure_set(arrays, seed)


def _append_chunk(writer: _store.ArrayWriter, crystals: list["_Crystal"]) -> list[int]:
    """Store one chunk of generated crystals; returns their atom counts."""
    for name in _Crystal._fields:
        values = [getattr(c, name) for c in crystals]
        per_atom = name in ("numbers", "positions")
        writer.append(name, np.concatenate(values) if per_atom else np.stack(values))
    return [len(c.numbers) for c in crystals]


class _Crystal(NamedTuple):
    """One generated crystal as stored: numbers uint8 [m], positions float64 [m, 3], cell float64
    [3, 3], label/intended/mode int64, species uint8 [3] (Z of A, B, X), tolerance float64,
    lattice float64, angles float64 [3] (degrees), shift float64."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    label: np.int64
    intended: np.int64
    mode: np.int64
    species: np.ndarray
    tolerance: np.float64
    lattice: np.float64
    angles: np.ndarray
    shift: np.float64


def _structure_set(arrays: dict[str, np.ndarray], seed: int) -> StructureSet:
    ptr = np.asarray(arrays["node_ptr"])
    numbers = np.asarray(arrays["numbers"], dtype=np.int64)
    positions = np.asarray(arrays["positions"])
    atoms = [
        make_atoms(numbers[a:b], positions[a:b], arrays["cell"][k]) for k, (a, b) in enumerate(zip(ptr[:-1], ptr[1:]))
    ]
    labels = np.asarray(arrays["label"], dtype=np.int64)
    modes = [MODES[m] for m in np.asarray(arrays["mode"])]
    symbols = np.array(ase.data.chemical_symbols)[np.asarray(arrays["species"], dtype=np.int64)]
    angles = np.asarray(arrays["angles"], dtype=np.float64)
    table = pd.DataFrame(
        {
            "spacegroup_number": labels,
            "intended_spacegroup": np.asarray(arrays["intended"], dtype=np.int64),
            "tilt_system": [m.tilt for m in modes],
            "polar": [m.polar for m in modes],
            "formula": [a.get_chemical_formula() for a in atoms],
            "n_atoms": np.diff(ptr),
            "a_site": symbols[:, 0],
            "b_site": symbols[:, 1],
            "x_site": symbols[:, 2],
            "tolerance_factor": np.asarray(arrays["tolerance"], dtype=np.float64),
            "lattice": np.asarray(arrays["lattice"], dtype=np.float64),
            "tilt_x": angles[:, 0],
            "tilt_y": angles[:, 1],
            "tilt_z": angles[:, 2],
            "polar_shift": np.asarray(arrays["shift"], dtype=np.float64),
        }
    )
    ids = [f"perov-{seed}-{k}" for k in range(len(atoms))]
    return StructureSet(atoms=atoms, table=table, ids=ids, labels=labels)


def _generate_chunk(indices: Sequence[int], *, seed: int, symprec: float) -> list[_Crystal]:
    with quiet_spglib():
        return [_generate_one(seed, int(i), symprec) for i in indices]


def _generate_one(seed: int, index: int, symprec: float) -> _Crystal:
    """Crystal ``index`` of ``seed``. Attempt ``k`` draws everything from ``(seed, index, k)``; a
    further attempt is made only when spglib's primitive cell falls outside ``ATOMS_RANGE`` or the
    cell fails :func:`check_structure` or spglib. Measured at the default symprec: 3 first attempts
    in 3,000, all a+b-b- cells for which spglib's search found only P1 (40 atoms) once noise was on."""
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, index, attempt])
        a_el, b_el, x_el, t = _draw_composition(rng)
        mode_index = int(rng.choice(len(MODES), p=mode_probabilities(t)))
        mode = MODES[mode_index]
        angles = _draw_angles(rng, mode.tilt)
        lattice = 2.0 * (B_SITE[b_el][1] + X_SITE[x_el][1]) * (1.0 + LATTICE_NOISE * rng.standard_normal())
        b_shift = rng.uniform(*POLAR_SHIFT_RANGE) if mode.polar != NO_POLAR else 0.0
        a_shift = b_shift * rng.uniform(*A_SHIFT_FRACTION)
        numbers, positions, cell = build_perovskite(
            a_el, b_el, x_el, mode.tilt, mode.polar, angles, lattice=lattice, b_shift=b_shift, a_shift=a_shift
        )
        positions = positions + POSITION_NOISE * symprec * rng.standard_normal(positions.shape)
        frac = np.linalg.solve(cell.T, positions.T).T % 1.0
        primitive = spglib.standardize_cell((cell, frac, numbers), to_primitive=True, no_idealize=True, symprec=symprec)
        if primitive is None or not ATOMS_RANGE[0] <= len(primitive[2]) <= ATOMS_RANGE[1]:
            continue
        prim_cell, prim_frac, prim_numbers = primitive
        prim_positions = prim_frac @ prim_cell
        try:
            check_structure(prim_numbers, prim_positions, prim_cell)
            label = spacegroup_number(make_atoms(prim_numbers, prim_positions, prim_cell), symprec)
        except StructureError:
            continue
        return _Crystal(
            numbers=prim_numbers.astype(np.uint8),
            positions=prim_positions.astype(np.float64),
            cell=np.asarray(prim_cell, dtype=np.float64),
            label=np.int64(label),
            intended=np.int64(mode.spacegroup),
            mode=np.int64(mode_index),
            species=np.array([_atomic_number(s) for s in (a_el, b_el, x_el)], dtype=np.uint8),
            tolerance=np.float64(t),
            lattice=np.float64(lattice),
            angles=np.asarray(angles, dtype=np.float64),
            shift=np.float64(b_shift),
        )
    raise RuntimeError(f"perovskite_crystals: no valid crystal for seed {seed}, index {index}")


def _draw_composition(rng: np.random.Generator) -> tuple[str, str, str, float]:
    """A charge-balanced (A, B, X, t) with t in TOLERANCE_RANGE and r_B / r_X >= MIN_OCTAHEDRAL_FACTOR."""
    anions = list(X_SITE)
    p_x = np.array([X_SITE[x][2] for x in anions])
    while True:  # about a third of the draws are rejected, so this ends quickly
        x_el = anions[int(rng.choice(len(anions), p=p_x / p_x.sum()))]
        splits = CHARGE_SPLITS[x_el]
        p_split = np.array([w for _, _, w in splits])
        q_a, q_b, _ = splits[int(rng.choice(len(splits), p=p_split / p_split.sum()))]
        a_choices = [el for el, (q, _) in A_SITE.items() if q == q_a]
        b_choices = [el for el, (q, _) in B_SITE.items() if q == q_b]
        a_el = a_choices[int(rng.integers(len(a_choices)))]
        b_el = b_choices[int(rng.integers(len(b_choices)))]
        t = tolerance_factor(a_el, b_el, x_el)
        octahedral = B_SITE[b_el][1] / X_SITE[x_el][1]
        if TOLERANCE_RANGE[0] <= t <= TOLERANCE_RANGE[1] and octahedral >= MIN_OCTAHEDRAL_FACTOR:
            return a_el, b_el, x_el, float(t)


def _draw_angles(rng: np.random.Generator, tilt: str) -> tuple[float, float, float]:
    """Rotation angles (degrees, about x y z) for ``tilt``: one uniform draw per distinct non-zero
    letter, redrawn until different letters are ``MIN_ANGLE_GAP`` apart."""
    phases = _parse_tilt(tilt)
    letters = sorted({tilt[2 * k] for k in range(3) if phases[k] != "0"})
    while True:
        values = dict(zip(letters, rng.uniform(*TILT_ANGLE_RANGE, size=len(letters))))
        if all(abs(u - v) >= MIN_ANGLE_GAP for u, v in itertools.combinations(values.values(), 2)):
            return tuple(values[tilt[2 * k]] if phases[k] != "0" else 0.0 for k in range(3))


def _parse_tilt(tilt: str) -> tuple[str, str, str]:
    """The phases (``"0"``, ``"+"`` or ``"-"``) about x, y, z of a known tilt system."""
    if tilt not in TILT_SYSTEMS:
        raise ValueError(f"unknown tilt system {tilt!r}; known: {list(TILT_SYSTEMS)}")
    return tilt[1], tilt[3], tilt[5]


def _check_angles(tilt: str, phases: tuple[str, str, str], angles: Sequence[float]) -> np.ndarray:
    """``angles`` (degrees) as radians, float64 [3], after checking them against the Glazer symbol."""
    phi = np.radians(np.asarray(angles, dtype=np.float64))
    if phi.shape != (3,):
        raise ValueError(f"angles must be three values (degrees about x, y, z), got {list(angles)}")
    for k in range(3):
        if (phases[k] == "0") != (phi[k] == 0.0):
            need = "0" if phases[k] == "0" else "non-zero"
            raise ValueError(f"{tilt}: angle about axis {'xyz'[k]} must be {need}, got {angles[k]}")
    for j, k in itertools.combinations(range(3), 2):
        if tilt[2 * j] == tilt[2 * k] and phi[j] != phi[k]:
            raise ValueError(
                f"{tilt}: axes {'xyz'[j]} and {'xyz'[k]} share a letter and need equal angles, got {list(angles)}"
            )
    return phi


def _radius(table: dict[str, tuple], species: str, site: str) -> float:
    """The radius (A) of ``species`` in a site table; ValueError naming the site when absent."""
    if species not in table:
        raise ValueError(f"no {site}-site radius for {species!r}; known: {list(table)}")
    return float(table[species][1])


def _atomic_number(species: str) -> int:
    """Z of an element symbol; ValueError for anything else."""
    if species not in ase.data.atomic_numbers or species == "X":
        raise ValueError(f"unknown element {species!r}")
    return int(ase.data.atomic_numbers[species])


@functools.lru_cache(maxsize=1)
def _tables_digest() -> "hashlib._Hash":
    """sha256 over every table and constant the structures depend on (part of the cache key)."""
    tables = {
        "A": A_SITE,
        "B": B_SITE,
        "X": X_SITE,
        "splits": CHARGE_SPLITS,
        "modes": MODES,
        "weights": _REGIME_WEIGHTS.tolist(),
        "constants": [
            TOLERANCE_RANGE,
            MIN_OCTAHEDRAL_FACTOR,
            REGIME_BOUNDS,
            REGIME_WIDTH,
            MODE_FLOOR,
            TILT_ANGLE_RANGE,
            MIN_ANGLE_GAP,
            POLAR_SHIFT_RANGE,
            A_SHIFT_FRACTION,
            LATTICE_NOISE,
            POSITION_NOISE,
            ATOMS_RANGE,
        ],
    }
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode())
