"""Readers: the real CSV files, every other source type, and bad-row handling."""

from __future__ import annotations

import json
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pandas as pd
import pytest
from ase import Atoms

from alkernels.data import StructureError, StructureSet, read_structures

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (read-only inputs live in ../shared/data)")
    return path


def _rocksalt(a: float = 5.64) -> Atoms:
    return Atoms(
        "NaCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=0.5 * a * (np.ones((3, 3)) - np.eye(3)), pbc=True
    )


@pytest.fixture(scope="module")
def mp20() -> StructureSet:
    return read_structures(_shared("mp20_sample.csv.gz"), label="spacegroup")


def test_mp20_sample_parses_and_spglib_agrees(mp20: StructureSet) -> None:
    structures = mp20
    assert len(structures) == 1130 and structures.rejected == []
    assert structures.ids[0].startswith("mp-") and len(set(structures.ids)) == 1130
    assert "cif" not in structures.table.columns
    assert {"formation_energy_per_atom", "band_gap", "spacegroup.number"} <= set(structures.table.columns)
    agree = np.mean(structures.labels == structures.table["spacegroup.number"].to_numpy())
    assert agree >= 0.99, agree
    sizes = np.array([len(a) for a in structures.atoms])
    assert sizes.max() <= 20 and 9 < sizes.mean() < 12
    assert all(a.pbc.all() for a in structures.atoms[:20])


def test_named_label_column(tmp_path: Path) -> None:
    head = tmp_path / "head.csv"
    pd.read_csv(_shared("mp20_sample.csv.gz"), nrows=40).to_csv(head, index=False)
    structures = read_structures(head, label="spacegroup.number")
    assert structures.labels.dtype == np.int64 and len(structures) == 40
    assert np.array_equal(structures.labels, structures.table["spacegroup.number"].to_numpy())
    with pytest.raises(ValueError, match="not found"):
        read_structures(head, label="no_such_column")


@pytest.mark.parametrize("name", ["perov5_val.csv.gz", "perov5_test.csv.gz"])
def test_perovskites_parse_with_properties(name: str) -> None:
    path = _shared(name)
    structures = read_structures(path)
    raw = pd.read_csv(path)
    assert len(structures) == len(raw) and not structures.rejected
    assert list(structures.table.columns) == ["material_id", "formula", "heat_all", "heat_ref", "dir_gap", "ind_gap"]
    np.testing.assert_allclose(structures.table["dir_gap"], raw["dir_gap"])
    assert all(len(a) == 5 for a in structures.atoms)
    assert structures.labels is None


def _cif(
    lengths: tuple[float, float, float],
    angles: tuple[float, float, float],
    sites: list[tuple[str, float, float, float]],
) -> str:
    """A minimal P1 CIF text."""
    head = "".join(f"_cell_length_{ax} {v}\n" for ax, v in zip("abc", lengths))
    head += "".join(f"_cell_angle_{ax} {v}\n" for ax, v in zip(("alpha", "beta", "gamma"), angles))
    loop = "loop_\n_atom_site_label\n_atom_site_type_symbol\n" + "".join(f"_atom_site_fract_{ax}\n" for ax in "xyz")
    body = "".join(f"{el}{k} {el} {x} {y} {z}\n" for k, (el, x, y, z) in enumerate(sites))
    return f"data_test\n{head}{loop}{body}"


def _csv_with_bad_rows(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    sites = [("Na", 0, 0, 0), ("Cl", 0.5, 0.5, 0.5)]
    texts = [
        _cif((5.6, 5.6, 5.6), (90, 90, 90), sites),
        _cif((0, 0, 0), (90, 90, 90), sites),
        _cif((4, 4, 4), (90, 90, 179.99), sites),
        _cif((5, 5, 5), (90, 90, 90), [("Na", 0, 0, 0), ("Cl", 0.05, 0, 0)]),
        "data_broken\n_cell_length_a 5\nthis is { not a cif\n",
        _cif((6.0, 6.0, 6.0), (90, 90, 90), sites),
    ]
    frame = pd.DataFrame(
        {"material_id": [f"x-{k}" for k in range(len(texts))], "energy": range(len(texts)), "cif": texts}
    )
    csv = tmp_path / "rows.csv.gz"
    frame.to_csv(csv, index=False)
    reasons = {1: "zero cell", 2: "near-singular", 3: "overlapping", 4: "unparsable"}
    return csv, reasons


def test_bad_rows_lenient_and_strict(tmp_path: Path) -> None:
    csv, reasons = _csv_with_bad_rows(tmp_path)
    structures = read_structures(csv)
    assert structures.ids == ["x-0", "x-5"]
    assert structures.table["energy"].tolist() == [0, 5]
    assert [row for row, _ in structures.rejected] == sorted(reasons)
    for row, reason in structures.rejected:
        assert reasons[row] in reason, (row, reason)
    with pytest.raises(StructureError, match="row 1: zero cell"):
        read_structures(csv, strict=True)


@pytest.mark.parametrize(
    "atoms,reason",
    [
        (Atoms(numbers=[100, 11], positions=[[0, 0, 0], [2, 2, 2]], cell=np.eye(3) * 5, pbc=True), "Z=100"),
        (Atoms(numbers=[0, 11], positions=[[0, 0, 0], [2, 2, 2]], cell=np.eye(3) * 5, pbc=True), "Z=0"),
        (Atoms(cell=np.eye(3) * 4, pbc=True), "empty"),
        (Atoms("Na", cell=np.zeros((3, 3))), "zero cell"),
        (Atoms("Na", cell=[[4, 0, 0], [0, 4, 0], [4, 4.001, 0]], pbc=True), "near-singular"),
        (Atoms("Na", cell=np.diag([5.0, 5.0, 0.4]), pbc=True), "overlapping"),
    ],
)
def test_each_rejection_reason_from_objects(atoms: Atoms, reason: str) -> None:
    structures = read_structures([_rocksalt(), atoms, _rocksalt(6.0)])
    assert len(structures) == 2 and structures.ids == ["0", "2"]
    assert len(structures.rejected) == 1 and structures.rejected[0][0] == 1
    assert reason in structures.rejected[0][1]
    with pytest.raises(StructureError, match=reason):
        read_structures([_rocksalt(), atoms], strict=True)


def test_cif_file_directory_and_ase_formats(tmp_path: Path) -> None:
    ase.io.write(tmp_path / "a.cif", _rocksalt())
    ase.io.write(tmp_path / "POSCAR", _rocksalt(6.0), format="vasp")
    frames = [_rocksalt(5.0), _rocksalt(5.2)]
    for k, frame in enumerate(frames):
        frame.info["energy"] = -1.5 * k
        frame.info["spacegroup_number"] = 225
    ase.io.write(tmp_path / "b.extxyz", frames)
    (tmp_path / "c.cif").write_text("garbage")
    (tmp_path / "notes.txt").write_text("ignored")

    one = read_structures(tmp_path / "a.cif", label="spacegroup")
    assert len(one) == 1 and one.labels.tolist() == [225]

    folder = read_structures(tmp_path, label="spacegroup")
    assert folder.ids == ["POSCAR", "a.cif", "b.extxyz:0", "b.extxyz:1"]
    assert folder.labels.tolist() == [225] * 4
    assert [row for row, _ in folder.rejected] == ["c.cif"]

    extxyz = read_structures(tmp_path / "b.extxyz", label="spacegroup_number")
    assert extxyz.table["energy"].tolist() == [0.0, -1.5]
    assert extxyz.labels.tolist() == [225, 225]
    np.testing.assert_allclose(extxyz[1].cell.lengths(), frames[1].cell.lengths())


def test_ase_database(tmp_path: Path) -> None:
    path = tmp_path / "crystals.db"
    with ase.db.connect(path) as db:
        db.write(_rocksalt(), gap=1.0, family=5)
        db.write(_rocksalt(6.0), gap=2.0, family=5)
        db.write(_rocksalt(6.5), gap=3.0, family=2.5)
    structures = read_structures(path, label="family")
    assert structures.ids == ["1", "2"] and structures.table["gap"].tolist() == [1.0, 2.0]
    assert structures.labels.tolist() == [5, 5]
    assert structures.rejected == [(2, "label 'family' = 2.5 is not an integer")]


def test_pymatgen_objects_and_matbench_json(tmp_path: Path) -> None:
    pytest.importorskip("pymatgen")
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(_rocksalt())
    from_objects = read_structures([structure, _rocksalt(6.0)])
    assert len(from_objects) == 2 and sorted(from_objects[0].get_chemical_symbols()) == ["Cl", "Na"]
    doc = {
        "index": ["mb-1", "mb-2"],
        "columns": ["structure", "e_form"],
        "data": [[structure.as_dict(), -1.0], [structure.as_dict(), -2.0]],
    }
    path = tmp_path / "matbench.json"
    path.write_text(json.dumps(doc))
    structures = read_structures(path, label="spacegroup")
    assert structures.ids == ["mb-1", "mb-2"] and structures.table["e_form"].tolist() == [-1.0, -2.0]
    assert structures.labels.tolist() == [225, 225]


def test_structure_set_indexing_and_subset() -> None:
    structures = read_structures([_rocksalt(5.0), _rocksalt(5.5), _rocksalt(6.0)], label="spacegroup")
    assert isinstance(structures, StructureSet) and len(structures) == 3
    assert isinstance(structures[1], Atoms)
    sub = structures.subset([2, 0])
    assert sub.ids == ["2", "0"] and np.isclose(sub[0].cell.lengths()[0], structures[2].cell.lengths()[0])
    # a slice is a StructureSet with its table rows, ids and labels; an integer stays one Atoms
    assert isinstance(structures[np.int64(2)], Atoms) and structures[-1] is structures.atoms[2]
    head = structures[:2]
    assert isinstance(head, StructureSet) and len(head) == 2
    assert head.ids == ["0", "1"] and head.labels.tolist() == [225, 225]
    assert head.atoms == structures.atoms[:2] and len(head.table) == 2
    back = structures[::-2]
    assert back.ids == ["2", "0"] and back.atoms == [structures[2], structures[0]]
    assert back.table.index.tolist() == [0, 1] and back.table.equals(sub.table)
    assert len(structures[5:]) == 0 and structures[5:].labels.shape == (0,)
    with pytest.raises(ValueError, match="does not exist"):
        read_structures("/no/such/file.csv")
