"""The ``alkernels data`` command: synth writes readable files, build-graphs caches graphs."""
from __future__ import annotations

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
    args = ["data", "build-graphs", str(out / "synthetic.extxyz"), "--cutoff", "5", "--cache-dir", str(cache),
            "--workers", "1"]
    assert main(args) == 0
    (entry,) = cache.iterdir()
    assert (entry / "header.json").is_file()
    assert "read 4 structures (0 rejected)" in capsys.readouterr().out
    assert main(args) == 0 and [p.name for p in cache.iterdir()] == [entry.name]
