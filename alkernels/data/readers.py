"""``read_structures``: crystals from CSV/CIF/POSCAR/extxyz/ASE-db/matbench JSON/Python lists."""

from __future__ import annotations

import functools
import gzip
import io
import itertools
import json
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence, Union

import numpy as np

from alkernels._extras import missing_extra
from alkernels._paths import user_path

try:
    import ase
    import ase.db
    import ase.io
    import pandas as pd
except ImportError as err:
    raise missing_extra("data", __name__, err) from err

from alkernels.data._store import chunked, map_chunks, resolve_workers
from alkernels.data.structures import StructureError, StructureSet, check_structure, make_atoms
from alkernels.data.symmetry import DEFAULT_SYMPREC, spacegroup_number

#: Name of the CIF text column in MP-20/CDVAE-style CSV files.
CIF_COLUMN = "cif"
#: Column used as the structure id when present.
ID_COLUMNS = ("material_id", "id", "mbid")
#: File names picked up when ``source`` is a directory.
_DIR_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz")
_DIR_NAMES = ("POSCAR", "CONTCAR")

#: Longest CIF text accepted (characters): a CIF of thousands of atoms is far below it.
MAX_CIF_CHARS = 5_000_000
#: Most atom sites accepted in a CIF's ``_atom_site`` loop: ASE expands the sites by the
#: symmetry operations at a cost that grows with the square of the atoms (about 60 s at 4,096).
MAX_CIF_SITES = 1_000

#: Inputs with fewer rows are read in-process (a worker pool costs more than it saves).
_PARALLEL_MIN_ROWS = 256
_CHUNK = 256


class _Unreadable(NamedTuple):
    """A row whose structure could not be obtained, with the reason."""

    reason: str


#: What a row's structure is, before validation: CIF text (parsed in a worker), a structure, a
#: deferred conversion (run in the calling process), or the reason it could not be read.
_Payload = Union[str, ase.Atoms, Callable[[], ase.Atoms], _Unreadable]
#: One input row: (row key, structure id, properties, payload).
_Row = tuple[int | str, str, dict[str, Any], _Payload]
#: A validated structure: (numbers int64 [n], positions float64 [n, 3], cell float64 [3, 3],
#: spglib space group or None).
_Accepted = tuple[np.ndarray, np.ndarray, np.ndarray, int | None]


def read_structures(
    source: str | PathLike | Sequence[Any],
    *,
    label: str | None = None,
    strict: bool = False,
    symprec: float = DEFAULT_SYMPREC,
    cif_column: str = CIF_COLUMN,
    workers: int | None = None,
) -> StructureSet:
    """Read crystals into a :class:`StructureSet`, skipping (or, if ``strict``, raising on) bad rows.

    Args:
        source: one of
            - a ``.csv`` / ``.csv.gz`` file with a CIF text column (MP-20/CDVAE layout); the other
              columns become ``table``, ``material_id`` (if present) the ids;
            - a ``.json`` / ``.json.gz`` matbench file (pandas "split" layout whose rows hold a
              pymatgen structure dict and the target; needs pymatgen);
            - a ``.db`` ASE database (its key-value pairs become ``table``);
            - a directory: every ``*.cif``, ``*.vasp``, ``*.poscar``, ``*.extxyz``, ``*.xyz``,
              ``POSCAR*`` and ``CONTCAR*`` inside it, sorted by name;
            - any other file ASE reads (all frames; scalar ``atoms.info`` entries and calculator
              results such as an extxyz ``energy`` become ``table``);
            - a list of ``ase.Atoms`` or pymatgen ``Structure`` objects.
        label: a table column holding integer class labels, or ``"spacegroup"`` to label each
            structure with its spglib space-group number (1..230) at tolerance ``symprec``.
        strict: raise :class:`StructureError` on the first bad row instead of skipping it.
        symprec: spglib tolerance in Angstrom for ``label="spacegroup"``.
        cif_column: name of the CIF text column of CSV sources.
        workers: processes that parse and validate (None: ``os.cpu_count()``; 1: in-process);
            inputs of fewer than 256 rows are always read in-process.

    Every accepted structure becomes a fresh periodic ``ase.Atoms`` (pbc on all axes, no info).
    Rows are rejected for: an unparsable file or CIF, a CIF longer than :data:`MAX_CIF_CHARS` or
    with more than :data:`MAX_CIF_SITES` atom sites, an empty structure, Z outside 1..99, a
    non-finite, zero, near-singular or over-long (:data:`~alkernels.data.structures.MAX_CELL_LENGTH`)
    cell, non-finite positions, atoms closer than 0.5 A, an unusable label. Nothing in a row can
    crash the reader: each bad row is one entry of ``rejected`` with its reason. (Structures too
    dense for a graph's cutoff are rejected by :meth:`StructureSet.drop_dense`.)
    """
    rows = list(_rows(source, cif_column))
    payloads = [_run_deferred(row[3]) for row in rows]
    n_workers = 1 if len(rows) < _PARALLEL_MIN_ROWS else resolve_workers(workers)
    chunks = chunked(payloads, n_workers, _CHUNK)
    work = functools.partial(_accept_chunk, symprec=symprec if label == "spacegroup" else None)
    results = itertools.chain.from_iterable(map_chunks(work, chunks, map(len, chunks), workers=n_workers, desc="read"))
    atoms: list[ase.Atoms] = []
    props: list[dict[str, Any]] = []
    ids: list[str] = []
    labels: list[int] = []
    rejected: list[tuple[int | str, str]] = []
    for (key, row_id, row_props, _), result in zip(rows, results):
        try:
            if isinstance(result, str):
                raise StructureError(result)
            numbers, positions, cell, spacegroup = result
            if spacegroup is not None:
                labels.append(spacegroup)
            elif label is not None:
                labels.append(_integer_label(row_props, label))
        except StructureError as err:
            if strict:
                raise StructureError(f"row {key!r}: {err}") from err
            rejected.append((key, str(err)))
            continue
        atoms.append(make_atoms(numbers, positions, cell))
        ids.append(row_id)
        props.append(row_props)
    table = pd.DataFrame(props) if props else pd.DataFrame(index=pd.RangeIndex(0))
    return StructureSet(
        atoms=atoms,
        table=table.reset_index(drop=True),
        ids=ids,
        labels=np.asarray(labels, dtype=np.int64) if label is not None else None,
        rejected=rejected,
    )


def _run_deferred(payload: _Payload) -> str | ase.Atoms | _Unreadable:
    """Run a deferred conversion here, so that what goes to workers pickles cheaply."""
    if not callable(payload):
        return payload
    try:
        return payload()
    except Exception as err:  # any conversion failure is this row's rejection reason
        return _unreadable(err)


def _unreadable(err: Exception) -> _Unreadable:
    return _Unreadable(f"unparsable structure: {type(err).__name__}: {err}")


def _accept_chunk(payloads: Sequence[str | ase.Atoms | _Unreadable], *, symprec: float | None) -> list[_Accepted | str]:
    """Parse and validate each payload: the accepted arrays (with the spglib label when
    ``symprec`` is set) or the rejection reason."""
    return [_accept(payload, symprec) for payload in payloads]


def cif_problem(text: str) -> str | None:
    """Why CIF ``text`` is refused before parsing (too long, too many atom sites), or None."""
    if len(text) > MAX_CIF_CHARS:
        return f"CIF text of {len(text):,} characters (at most {MAX_CIF_CHARS:,})"
    sites = _atom_site_rows(text)
    if sites > MAX_CIF_SITES:
        return f"CIF with {sites:,} atom sites (at most {MAX_CIF_SITES:,}: expanding them costs quadratic time)"
    return None


def _atom_site_rows(text: str) -> int:
    """Data rows of the CIF loops that hold ``_atom_site_`` columns (a bound on the sites)."""
    rows, in_header, in_sites = 0, False, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "loop_":
            in_header, in_sites = True, False
        elif line.startswith("_"):
            if in_header:
                in_sites = in_sites or line.lower().startswith("_atom_site_")
            else:
                in_sites = False
        elif line.lower().startswith("data_"):
            in_header = in_sites = False
        else:
            in_header = False
            rows += in_sites
    return rows


def _accept(payload: str | ase.Atoms | _Unreadable, symprec: float | None) -> _Accepted | str:
    if isinstance(payload, _Unreadable):
        return payload.reason
    if isinstance(payload, str):
        problem = cif_problem(payload)
        if problem is not None:
            return problem
        try:
            if not payload.strip():
                raise ValueError("empty CIF text")
            payload = ase.io.read(io.StringIO(payload), format="cif")
        except Exception as err:  # any parser failure is this row's rejection reason
            return _unreadable(err).reason
    crystal = make_atoms(payload.numbers, payload.positions, payload.cell[:])
    try:
        check_structure(crystal.numbers, crystal.positions, crystal.cell[:])
        spacegroup = spacegroup_number(crystal, symprec) if symprec is not None else None
    except StructureError as err:
        return str(err)
    return crystal.numbers.astype(np.int64), crystal.positions, crystal.cell[:], spacegroup


def _integer_label(props: dict[str, Any], column: str) -> int:
    if column not in props:
        raise ValueError(f"label column {column!r} not found; columns are {sorted(props)}")
    value = props[column]
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number != int(number):
        raise StructureError(f"label {column!r} = {value!r} is not an integer")
    return int(number)


def _rows(source: str | PathLike | Sequence[Any], cif_column: str) -> Iterator[_Row]:
    if isinstance(source, (str, PathLike)):
        path = user_path(source)
        if not path.exists():
            raise ValueError(f"read_structures: {path} does not exist")
        if path.is_dir():
            return _directory_rows(path)
        name = path.name.lower()
        if name.endswith((".csv", ".csv.gz")):
            return _csv_rows(path, cif_column)
        if name.endswith((".json", ".json.gz")):
            return _matbench_rows(path)
        if name.endswith(".db"):
            return _database_rows(path)
        return _ase_file_rows(path, prefix="")
    if isinstance(source, Iterable):
        return _object_rows(list(source))
    raise ValueError(f"read_structures: unsupported source of type {type(source).__name__}")


def _csv_rows(path: Path, cif_column: str) -> Iterator[_Row]:
    frame = pd.read_csv(path)
    if cif_column not in frame.columns:
        raise ValueError(f"{path}: no CIF column {cif_column!r}; columns are {list(frame.columns)}")
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed:")])
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    cifs = frame.pop(cif_column).tolist()
    for row, (cif, props) in enumerate(zip(cifs, frame.to_dict("records"))):
        row_id = str(props[id_column]) if id_column is not None else str(row)
        yield row, row_id, props, cif if isinstance(cif, str) else _Unreadable("unparsable structure: no CIF")


def _directory_rows(path: Path) -> Iterator[_Row]:
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and (p.suffix.lower() in _DIR_SUFFIXES or p.name.startswith(_DIR_NAMES))
    )
    if not files:
        raise ValueError(f"{path}: no CIF/POSCAR/extxyz files found")
    for file in files:
        yield from _ase_file_rows(file, prefix=file.name)


def _ase_file_rows(path: Path, prefix: str) -> Iterator[_Row]:
    """One row per frame of a file ASE reads; an unreadable file is one rejected row."""
    key: int | str = prefix or 0
    fmt = "vasp" if path.name.startswith(_DIR_NAMES) or path.suffix.lower() in (".vasp", ".poscar") else None
    if path.suffix.lower() == ".cif":  # bounded before ASE parses it (see cif_problem)
        problem = (
            f"CIF file of {path.stat().st_size:,} bytes (at most {MAX_CIF_CHARS:,})"
            if path.stat().st_size > MAX_CIF_CHARS
            else cif_problem(path.read_text(errors="replace"))
        )
        if problem is not None:
            yield key, str(key), {}, _Unreadable(problem)
            return
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as err:  # reported as the rejection reason of this file's row
        yield key, str(key), {}, _unreadable(err)
        return
    for k, frame in enumerate(frames):
        row_key: int | str = f"{prefix}:{k}" if prefix and len(frames) > 1 else (prefix or k)
        results = frame.calc.results if frame.calc is not None else {}
        props = {name: v for name, v in {**frame.info, **results}.items() if np.isscalar(v)}
        yield row_key, str(props.get("id", row_key)), props, frame


def _database_rows(path: Path) -> Iterator[_Row]:
    with ase.db.connect(path) as db:
        for k, row in enumerate(db.select()):
            yield k, str(row.id), dict(row.key_value_pairs), (lambda r=row: r.toatoms())


def _matbench_rows(path: Path) -> Iterator[_Row]:
    structure_from_dict, to_ase = _pymatgen_converters()
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt") as handle:
        doc = json.load(handle)
    if not all(k in doc for k in ("index", "columns", "data")):
        raise ValueError(f"{path}: not a matbench JSON (needs 'index', 'columns', 'data')")
    columns = list(doc["columns"])
    if "structure" not in columns:
        raise ValueError(f"{path}: no 'structure' column; columns are {columns}")
    s_col = columns.index("structure")
    for k, (index, values) in enumerate(zip(doc["index"], doc["data"])):
        props = {c: v for c, v in zip(columns, values) if c != "structure"}
        yield k, str(index), props, (lambda d=values[s_col]: to_ase(structure_from_dict(d)))


def _object_rows(items: list[Any]) -> Iterator[_Row]:
    to_ase: Callable[[Any], ase.Atoms] | None = None
    for k, item in enumerate(items):
        if isinstance(item, ase.Atoms):
            yield k, str(k), {}, item
            continue
        if to_ase is None:
            to_ase = _pymatgen_converters()[1]
        yield k, str(k), {}, (lambda s=item: to_ase(s))


def _pymatgen_converters() -> tuple[Callable[[dict], Any], Callable[[Any], ase.Atoms]]:
    """``(Structure.from_dict, structure -> ase.Atoms)``; pymatgen is an optional extra."""
    try:
        from pymatgen.core import Structure
        from pymatgen.io.ase import AseAtomsAdaptor
    except ImportError as err:
        raise missing_extra("pymatgen", "reading pymatgen structures", err) from err

    def to_ase(structure: Any) -> ase.Atoms:
        if not isinstance(structure, Structure):
            raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(structure).__name__}")
        return AseAtomsAdaptor.get_atoms(structure)

    return Structure.from_dict, to_ase
