"""Smoke runs of ``alkernels run``, ``reproduce`` and ``report`` at tiny sizes, and their errors."""
from __future__ import annotations

import json

import ase.io
import pytest
from ase.build import bulk
from test_strategies import one_thread  # noqa: F401  (autouse fixture)

from alkernels.cli import main
from alkernels.loop import RECORD_KEYS, read_records

#: (formula, crystal structure, lattice constant a in Angstrom) of simple crystals.
CRYSTALS = [("Cu", "fcc", 3.6), ("Fe", "bcc", 2.87), ("Si", "diamond", 5.43), ("NaCl", "rocksalt", 5.64),
            ("GaAs", "zincblende", 5.65), ("Mg", "hcp", 3.21), ("CsCl", "cesiumchloride", 4.12),
            ("CaF2", "fluorite", 5.46)]


@pytest.fixture(scope="module")
def crystal_dir(tmp_path_factory):
    """A folder of 24 CIFs: the crystals above at three lattice constants each."""
    folder = tmp_path_factory.mktemp("cifs")
    k = 0
    for scale in (0.97, 1.0, 1.03):
        for formula, kind, a in CRYSTALS:
            ase.io.write(folder / f"{k:02d}-{formula}.cif", bulk(formula, kind, a=a * scale))
            k += 1
    return folder


def cli(*args) -> int:
    return main([str(a) for a in args])


def assert_packed_report_rebuilds(out, tmp_path, table: str) -> None:
    """The compact form of a grid (``runs.jsonl`` + ``experiment.json``, what gets committed)
    alone rebuilds the same ``table.md``, and holds no machine paths."""
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("runs.jsonl", "experiment.json"):
        (packed / name).write_bytes((out / name).read_bytes())
    assert str(tmp_path) not in (packed / "runs.jsonl").read_text() + (packed / "experiment.json").read_text()
    assert cli("report", packed) == 0
    assert (packed / "table.md").read_text() == table


def run_args(crystal_dir, out, *extra):
    return ["run", "--dataset", crystal_dir, "--label", "spacegroup", "--out", out, "--rounds", 3,
            "--epochs", 1, "--initial", 3, "--query-size", 3, "--backend", "torch",
            "--cache-dir", out.parent / "cache", "--workers", 1, *extra]


def test_run_writes_records_and_prints_a_table(crystal_dir, tmp_path, capsys):
    assert cli(*run_args(crystal_dir, tmp_path / "x", "--strategy", "margin")) == 0
    printed = capsys.readouterr().out
    assert "19 train / 5 test structures" in printed
    assert "accuracy" in printed and printed.strip().splitlines()[-1].split()[:3] == ["3", "47.4%", "9"]
    records = read_records(tmp_path / "x" / "records.jsonl")
    assert [tuple(r) for r in records] == [RECORD_KEYS] * 3
    assert [r["labelled_count"] for r in records] == [3, 6, 9]
    assert (tmp_path / "x" / "checkpoint.pt").exists()
    # resuming a finished run changes nothing; a second run without --resume is refused
    assert cli(*run_args(crystal_dir, tmp_path / "x", "--strategy", "margin", "--resume")) == 0
    assert read_records(tmp_path / "x" / "records.jsonl") == records
    assert cli(*run_args(crystal_dir, tmp_path / "x", "--strategy", "margin")) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["builtin:10", "perovskite:12"])
def test_run_on_the_generators(tmp_path, spec):
    args = ["run", "--strategy", "random", "--dataset", spec, "--out", tmp_path / "b", "--rounds", 2,
            "--epochs", 1, "--initial", 2, "--query-size", 2, "--backend", "torch",
            "--cache-dir", tmp_path / "cache", "--workers", 1]
    assert cli(*args) == 0
    assert len(read_records(tmp_path / "b" / "records.jsonl")) == 2
    assert json.loads((tmp_path / "b" / "config.json").read_text())["dataset"] == spec


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--strategy", "margin", "--query-size", 10], "the training set has 19"),
    (["--strategy", "margin", "--query-size", 0.6], "more than the pool holds"),
])
def test_run_bad_configuration_is_a_clear_error(crystal_dir, tmp_path, capsys, extra, message):
    assert cli(*run_args(crystal_dir, tmp_path / "x", *extra)) == 2
    assert message in capsys.readouterr().err


def test_run_dataset_without_labels_is_a_clear_error(crystal_dir, tmp_path, capsys):
    args = run_args(crystal_dir, tmp_path / "x", "--strategy", "margin")
    args.remove("--label")
    args.remove("spacegroup")
    assert cli(*args) == 2
    assert "has no labels: pass --label spacegroup" in capsys.readouterr().err
    assert cli("run", "--strategy", "margin", "--dataset", tmp_path / "missing.csv", "--label", "spacegroup",
               "--out", tmp_path / "y") == 2
    assert "neither perovskite:N, builtin:N nor an existing path" in capsys.readouterr().err


def test_reproduce_then_report(crystal_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert cli("reproduce", "--preset", "quick", "--dataset", crystal_dir, "--label", "spacegroup",
               "--strategies", "random,margin", "--seeds", 1, "--reset", "both", "--out", out,
               "--cache-dir", tmp_path / "cache", "--workers", 1) == 0
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["n_train"] + meta["n_test"] == 24 and meta["seeds"] == 1
    assert len(list(out.glob("runs/*/*/seed*/records.jsonl"))) == 4
    assert len(list(out.glob("runs/standard/seed*/records.jsonl"))) == 1
    for name in ("table.md", "accuracy.png", "loss.png", "spacegroups.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    table = (out / "table.md").read_text()
    # 19 training structures: 10% chunks of 2 structures (rounded half up) until all 19
    assert "| strategy | 11% | 21% | 32% |" in table and "| 100% |" in table
    assert "| standard (full data) |" in table
    # per variant an accuracy, a timing and an area table, and one labels-to-reach table; margin also
    # has a row in each variant's paired-difference table
    assert table.count("| random |") == 7 and table.count("| margin |") == 9
    assert "## The paper's claims" in table and (out / "differences.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["claims"]) == {"keep", "reset", "standard"}
    assert summary["claims"]["keep"]["first_at_standard"].keys() == {"random", "margin"}
    (out / "table.md").unlink()
    assert cli("report", out) == 0
    assert (out / "table.md").read_text() == table
    assert_packed_report_rebuilds(out, tmp_path, table)
    capsys.readouterr()
    # a second reproduce finds every run finished and only rewrites the report
    assert cli("reproduce", "--preset", "quick", "--dataset", crystal_dir, "--label", "spacegroup",
               "--strategies", "random,margin", "--seeds", 1, "--out", out,
               "--cache-dir", tmp_path / "cache", "--workers", 1) == 0
    assert "5 runs (5 already finished)" in capsys.readouterr().out


def test_reproduce_rejects_unknown_strategies(tmp_path, capsys):
    assert cli("reproduce", "--strategies", "margin,nope", "--out", tmp_path / "g") == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err
