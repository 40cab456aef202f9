"""A committed grid (runs.jsonl + experiment.json, no runs/ folder) is continued by reproduce:
finished runs with the same settings are kept, the rest run, and the report merges both."""
from __future__ import annotations

import json

import pytest
from test_cli_run import cli, crystal_dir  # noqa: F401  (fixture)
from test_strategies import one_thread  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.timeout(300)


def grid_args(crystal_dir, out, tmp_path, strategies, *extra):
    return ["reproduce", "--preset", "quick", "--dataset", crystal_dir, "--label", "spacegroup",
            "--strategies", strategies, "--seeds", 1, "--reset", "keep", "--out", out,
            "--cache-dir", tmp_path / "cache", "--workers", 1, "--backend", "torch", *extra]


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
    assert "3 runs (2 already finished)" in capsys.readouterr().out
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
    assert "2 runs (0 already finished)" in capsys.readouterr().out
