"""A committed grid (runs.jsonl + experiment.json, no runs/ folder) is continued by reproduce:
finished runs with the same settings are kept, the rest run, and the report merges both."""

from __future__ import annotations

import json

import pytest

from helpers import cli

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]


def grid_args(crystal_dir, out, tmp_path, strategies, *extra):
    return [
        "reproduce",
        "--preset",
        "quick",
        "--dataset",
        crystal_dir,
        "--label",
        "spacegroup",
        "--strategies",
        strategies,
        "--seeds",
        1,
        "--reset",
        "keep",
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
        "--workers",
        1,
        "--backend",
        "torch",
        *extra,
    ]


def test_a_packed_grid_is_continued(crystal_dir, tmp_path, capsys):  # noqa: F811
    first = tmp_path / "first"
    assert cli(*grid_args(crystal_dir, first, tmp_path, "random")) == 0
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("runs.jsonl", "experiment.json"):
        (packed / name).write_bytes((first / name).read_bytes())
    capsys.readouterr()
    # the standard run and random are packed; margin is new
    assert cli(*grid_args(crystal_dir, packed, tmp_path, "random,margin")) == 0
    assert "3 runs (2 already finished)" in capsys.readouterr().err
    assert not (packed / "runs" / "keep" / "random").exists()
    runs = [json.loads(line) for line in (packed / "runs.jsonl").read_text().splitlines()]
    assert [r["run"] for r in runs] == ["runs/keep/margin/seed0", "runs/keep/random/seed0", "runs/standard/seed0"]
    assert "| margin |" in (packed / "table.md").read_text()
    # other settings make a packed run not count: with 2 epochs every run is redone
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    (other / "runs.jsonl").write_bytes((first / "runs.jsonl").read_bytes())
    assert cli(*grid_args(crystal_dir, other, tmp_path, "random", "--epochs", 2)) == 0
    assert "2 runs (0 already finished)" in capsys.readouterr().err


def test_run_folders_with_other_settings_are_refused_before_any_work(crystal_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "grid"
    assert cli(*grid_args(crystal_dir, out, tmp_path, "random")) == 0
    before = (out / "experiment.json").read_bytes()
    capsys.readouterr()
    # the same folder with 2 epochs: the finished random and standard runs were made with 1
    assert cli(*grid_args(crystal_dir, out, tmp_path, "random,margin", "--epochs", 2)) == 2
    err = capsys.readouterr().err
    assert "2 run folder(s) of" in err and "(runs/standard/seed0, runs/keep/random/seed0)" in err
    assert "epochs: 1 -> 2" in err
    assert not (out / "runs" / "keep" / "margin").exists()  # nothing ran
    assert (out / "experiment.json").read_bytes() == before


def test_a_failing_cell_does_not_stop_the_others(crystal_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "grid"
    assert cli(*grid_args(crystal_dir, out, tmp_path, "random")) == 0
    # random becomes an unfinished run with a damaged checkpoint: resuming it fails
    run = out / "runs" / "keep" / "random" / "seed0"
    records = (run / "records.jsonl").read_text().splitlines(keepends=True)
    (run / "records.jsonl").write_text(records[0])
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert cli(*grid_args(crystal_dir, out, tmp_path, "random,margin,least_confidence", "--processes", 2)) == 2
    captured = capsys.readouterr()
    assert "1 run(s) failed, the others finished and are reported: runs/keep/random/seed0:" in captured.err
    assert "rerun with --restart-round" in captured.err  # reproduce has no --resume flag
    meta = json.loads((out / "experiment.json").read_text())
    assert {"runs/keep/margin/seed0", "runs/keep/least_confidence/seed0"} <= set(meta["cell_seconds"])
    table = (out / "table.md").read_text()
    assert "| margin |" in table and "| least_confidence |" in table


def test_errors_cross_process_boundaries_intact():
    """Grid workers and ranks send exceptions back pickled: a class that does not rebuild from
    its pickle breaks the whole process pool."""
    import pickle
    from pathlib import Path

    from alkernels.acquisition import NonFiniteLogitsError
    from alkernels.distributed.group import DistributedError
    from alkernels.experiments.spacegroup.grid import CellsFailedError
    from alkernels.loop.rundir import DamagedCheckpointError

    errors = [
        DamagedCheckpointError(Path("run/checkpoint.pt"), "bad checksum"),
        NonFiniteLogitsError(7),
        DistributedError("rank 1 died", rank=0, phase="training, round 3", unresponsive=(1,)),
        CellsFailedError({"runs/keep/margin/seed0": ValueError("x")}, 3),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert {k: str(v) for k, v in vars(back).items()} == {k: str(v) for k, v in vars(err).items()}
