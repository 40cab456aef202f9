"""Smoke runs of ``alkernels run``, ``reproduce`` and ``report`` at tiny sizes, and their errors."""

from __future__ import annotations

import json

import pytest

from alkernels.loop import RECORD_KEYS, read_records
from helpers import assert_packed_report_rebuilds, cli

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread


def run_args(crystal_dir, out, *extra):
    return [
        "run",
        "--dataset",
        crystal_dir,
        "--label",
        "spacegroup",
        "--out",
        out,
        "--rounds",
        3,
        "--epochs",
        1,
        "--initial",
        3,
        "--query-size",
        3,
        "--backend",
        "torch",
        "--cache-dir",
        out.parent / "cache",
        "--workers",
        1,
        *extra,
    ]


def test_run_writes_records_and_prints_a_table(crystal_dir, tmp_path, capsys):
    assert cli(*run_args(crystal_dir, tmp_path / "x", "--strategy", "margin")) == 0
    captured = capsys.readouterr()
    printed = captured.out  # the results; the progress lines go to stderr
    assert "19 train / 5 test structures" in captured.err and "round 2/2: 9 labelled" in captured.err
    # rounds count from 0 in the table as in records.jsonl
    assert "rounds 0-2" in printed and printed.strip().splitlines()[-1].split()[:3] == ["2", "47.4%", "9"]
    records = read_records(tmp_path / "x" / "records.jsonl")
    assert [r["round"] for r in records] == [0, 1, 2]
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
    args = [
        "run",
        "--strategy",
        "random",
        "--dataset",
        spec,
        "--out",
        tmp_path / "b",
        "--rounds",
        2,
        "--epochs",
        1,
        "--initial",
        2,
        "--query-size",
        2,
        "--backend",
        "torch",
        "--cache-dir",
        tmp_path / "cache",
        "--workers",
        1,
    ]
    assert cli(*args) == 0
    assert len(read_records(tmp_path / "b" / "records.jsonl")) == 2
    assert json.loads((tmp_path / "b" / "config.json").read_text())["dataset"] == spec


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--strategy", "margin", "--query-size", 10], "the training set has 19"),
        (["--strategy", "margin", "--query-size", 0.6], "more than the pool holds"),
    ],
)
def test_run_bad_configuration_is_a_clear_error(crystal_dir, tmp_path, capsys, extra, message):
    assert cli(*run_args(crystal_dir, tmp_path / "x", *extra)) == 2
    assert message in capsys.readouterr().err


def test_run_dataset_without_labels_is_a_clear_error(crystal_dir, tmp_path, capsys):
    args = run_args(crystal_dir, tmp_path / "x", "--strategy", "margin")
    args.remove("--label")
    args.remove("spacegroup")
    assert cli(*args) == 2
    assert "has no labels: pass --label spacegroup" in capsys.readouterr().err
    assert (
        cli(
            "run",
            "--strategy",
            "margin",
            "--dataset",
            tmp_path / "missing.csv",
            "--label",
            "spacegroup",
            "--out",
            tmp_path / "y",
        )
        == 2
    )
    assert "the file does not exist (give perovskite:N, builtin:N or a path)" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()  # refused before the output folder is made


def test_reproduce_then_report(crystal_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert (
        cli(
            "reproduce",
            "--preset",
            "quick",
            "--dataset",
            crystal_dir,
            "--label",
            "spacegroup",
            "--strategies",
            "random,margin",
            "--seeds",
            1,
            "--reset",
            "both",
            "--out",
            out,
            "--cache-dir",
            tmp_path / "cache",
            "--workers",
            1,
        )
        == 0
    )
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
    # per variant an accuracy, a timing, an area and a query-composition table, and one labels-to-reach
    # table; margin also has a row in each variant's paired-difference table
    assert table.count("| random |") == 9 and table.count("| margin |") == 11
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
    assert (
        cli(
            "reproduce",
            "--preset",
            "quick",
            "--dataset",
            crystal_dir,
            "--label",
            "spacegroup",
            "--strategies",
            "random,margin",
            "--seeds",
            1,
            "--out",
            out,
            "--cache-dir",
            tmp_path / "cache",
            "--workers",
            1,
        )
        == 0
    )
    assert "5 runs (5 already finished)" in capsys.readouterr().err


def test_reproduce_rejects_unknown_strategies(tmp_path, capsys):
    assert cli("reproduce", "--strategies", "margin,nope", "--out", tmp_path / "g") == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err


def test_version_prints_the_package_version(capsys):
    import alkernels

    with pytest.raises(SystemExit) as exit_info:
        cli("--version")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"alkernels {alkernels.__version__}"
