"""``read_structures``: crystals from CSV/CIF/POSCAR/extxyz/ASE-db/matbench JSON/Python lists."""
from __future__ import annotations

import gzip
import io
import json
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import ase
import ase.db
import ase.io
import numpy as np
import pandas as pd

from alkernels.data.structures import (
    DEFAULT_SYMPREC,
    StructureError,
    StructureSet,
    check_structure,
    make_atoms,
    spacegroup_number,
)

#: Name of the CIF text column in MP-20/CDVAE-style CSV files.
CIF_COLUMN = "cif"
#: Column used as the structure id when present.
ID_COLUMNS = ("material_id", "id", "mbid")
#: File names picked up when ``source`` is a directory.
_DIR_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz")
_DIR_NAMES = ("POSCAR", "CONTCAR")

#: One input row: (row key, structure id, properties, a parser returning ``ase.Atoms``).
_Row = tuple[int | str, str, dict[str, Any], Callable[[], ase.Atoms]]


def read_structures(
    source: str | PathLike | Sequence[Any],
    *,
    label: str | None = None,
    strict: bool = False,
    symprec: float = DEFAULT_SYMPREC,
    cif_column: str = CIF_COLUMN,
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

    Every accepted structure becomes a fresh periodic ``ase.Atoms`` (pbc on all axes, no info).
    Rows are rejected for: an unparsable file or CIF, an empty structure, Z outside 1..99, a zero
    or near-singular cell, atoms closer than 0.5 A, an unusable label.
    """
    rows = _rows(source, cif_column)
    atoms: list[ase.Atoms] = []
    props: list[dict[str, Any]] = []
    ids: list[str] = []
    labels: list[int] = []
    rejected: list[tuple[int | str, str]] = []
    for key, row_id, row_props, parse in rows:
        try:
            try:
                parsed = parse()
            except Exception as err:  # any parser failure is a per-row rejection reason
                raise StructureError(f"unparsable structure: {type(err).__name__}: {err}") from err
            crystal = make_atoms(parsed.numbers, parsed.positions, parsed.cell[:])
            check_structure(crystal.numbers, crystal.positions, crystal.cell[:])
            if label == "spacegroup":
                labels.append(spacegroup_number(crystal, symprec))
            elif label is not None:
                labels.append(_integer_label(row_props, label))
        except StructureError as err:
            if strict:
                raise StructureError(f"row {key!r}: {err}") from err
            rejected.append((key, str(err)))
            continue
        atoms.append(crystal)
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
        path = Path(source)
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
        yield row, row_id, props, _cif_parser(cif)


def _cif_parser(text: Any) -> Callable[[], ase.Atoms]:
    def parse() -> ase.Atoms:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty CIF text")
        return ase.io.read(io.StringIO(text), format="cif")

    return parse


def _directory_rows(path: Path) -> Iterator[_Row]:
    files = sorted(
        p for p in path.iterdir()
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
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as err:  # reported as the rejection reason of this file's row
        yield key, str(key), {}, _raiser(err)
        return
    for k, frame in enumerate(frames):
        row_key: int | str = f"{prefix}:{k}" if prefix and len(frames) > 1 else (prefix or k)
        results = frame.calc.results if frame.calc is not None else {}
        props = {name: v for name, v in {**frame.info, **results}.items() if np.isscalar(v)}
        yield row_key, str(props.get("id", row_key)), props, (lambda f=frame: f)


def _raiser(err: Exception) -> Callable[[], ase.Atoms]:
    def parse() -> ase.Atoms:
        raise err

    return parse


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
            yield k, str(k), {}, (lambda a=item: a)
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
        raise ImportError(
            "reading pymatgen structures needs pymatgen: pip install 'alkernels[pymatgen]'"
        ) from err

    def to_ase(structure: Any) -> ase.Atoms:
        if not isinstance(structure, Structure):
            raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(structure).__name__}")
        return AseAtomsAdaptor.get_atoms(structure)

    return Structure.from_dict, to_ase
