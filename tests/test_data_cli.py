"""The ``alkernels data`` command: synth writes readable files, build-graphs caches graphs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from alkernels.cli import main
from alkernels.data import read_structures


def test_synth_then_build_graphs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synth"
    assert main(["data", "synth", "--n", "4", "--out", str(out), "--seed", "2", "--workers", "1"]) == 0
    table = pd.read_csv(out / "synthetic.csv")
    assert table["id"].tolist() == [f"synth-2-{k}" for k in range(4)]
    structures = read_structures(out / "synthetic.extxyz", label="spacegroup_number")
    assert structures.labels.tolist() == table["spacegroup_number"].tolist()
    assert structures.ids == table["id"].tolist()

    cache = tmp_path / "graphs"
    args = [
        "data",
        "build-graphs",
        str(out / "synthetic.extxyz"),
        "--cutoff",
        "5",
        "--cache-dir",
        str(cache),
        "--workers",
        "1",
    ]
    assert main(args) == 0
    (entry,) = cache.iterdir()
    assert (entry / "header.json").is_file()
    assert "read 4 structures (0 rejected)" in capsys.readouterr().out
    assert main(args) == 0 and [p.name for p in cache.iterdir()] == [entry.name]


def test_synth_perovskites(tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert main(["data", "synth", "--generator", "perovskite", "--n", "5", "--out", str(out), "--workers", "1"]) == 0
    table = pd.read_csv(out / "perovskite.csv")
    structures = read_structures(out / "perovskite.extxyz", label="spacegroup_number")
    assert structures.labels.tolist() == table["spacegroup_number"].tolist()
    assert {"tilt_system", "tolerance_factor"} <= set(structures.table.columns)


def test_synth_checks_its_output_before_generating(tmp_path: Path, capsys, monkeypatch) -> None:
    import alkernels.data as data

    def never(*args, **kwargs):
        raise AssertionError("generated although the output was unusable")

    monkeypatch.setattr(data, "synthetic_crystals", never, raising=False)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["data", "synth", "--n", "3", "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["data", "synth", "--n", "3", "--out", str(a_file / "below")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "synthetic.extxyz").write_text("")
    assert main(["data", "synth", "--n", "3", "--out", str(used)]) == 2
    assert "already holds synthetic.extxyz" in capsys.readouterr().err
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anywhere
            assert main(["data", "synth", "--n", "3", "--out", str(locked)]) == 2
            assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)
