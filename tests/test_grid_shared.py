"""One grid runner for the three studies: several processes fill one grid folder together (each
cell runs once, the tables equal a one-process run), busy cells are skipped, a dead worker's
claim is free again, ``experiment.json`` merges, and every committed study table rebuilds
byte-for-byte from its committed raw files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
pytest.importorskip("ase")

from alkernels.experiments._grid import CLAIM, Grid, claim, merge_experiment, read_experiment, run_grid  # noqa: E402
from alkernels.loop import TIMING_KEYS  # noqa: E402
from alkernels.loop.rundir import claim_folder  # noqa: E402
from helpers import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _reproduce_args(crystal_dir: Path, out: Path, cache: Path) -> list[str]:
    return [
        "reproduce",
        "--preset",
        "quick",
        "--dataset",
        str(crystal_dir),
        "--label",
        "spacegroup",
        "--strategies",
        "random,margin,entropy",
        "--seeds",
        "1",
        "--reset",
        "both",
        "--threads",
        "1",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--workers",
        "1",
    ]


def _without_timings(table: str) -> str:
    """table.md without what depends on the machine and the processes: the wall-time sentence
    and the seconds-per-round tables."""
    lines, skipping = [], False
    for line in table.splitlines():
        if line.startswith("Seconds per round"):
            skipping = True
        elif skipping and not line.startswith("|") and line.strip():
            skipping = False
        if not skipping:
            lines.append(line.split(" Wall time ")[0])
    return "\n".join(lines)


def _runs(out: Path) -> dict[str, list[dict]]:
    """Each packed run's records without their timings."""
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return {r["run"]: [{k: v for k, v in rec.items() if k not in TIMING_KEYS} for rec in r["records"]] for r in runs}


def test_three_processes_fill_one_grid_each_cell_once(crystal_dir, tmp_path):
    cache = tmp_path / "cache"
    # one process alone: the reference (it also builds the graph cache the others read)
    alone = tmp_path / "alone"
    assert cli(*_reproduce_args(crystal_dir, alone, cache)) == 0
    shared = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "alkernels", *_reproduce_args(crystal_dir, shared, cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for _ in range(3)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(logs)
    finished = [line.split()[1] for log in logs for line in log.splitlines() if line.startswith("finished runs/")]
    cells = json.loads((alone / "experiment.json").read_text())["cell_seconds"]
    assert len(cells) == 7  # 1 standard + 3 strategies x 2 variants
    assert sorted(finished) == sorted(cells), "\n".join(logs)  # every cell ran exactly once
    meta = read_experiment(shared)
    assert sorted(meta["cell_seconds"]) == sorted(cells)
    # the last process to finish wrote the complete report; it equals the one-process run's
    assert _runs(shared) == _runs(alone)
    assert _without_timings((shared / "table.md").read_text()) == _without_timings((alone / "table.md").read_text())
    summaries = [json.loads((o / "summary.json").read_text()) for o in (shared, alone)]
    for key in ("claims", "verdicts", "paired_to_random", "areas", "labels_to_reach_standard"):
        assert summaries[0][key] == summaries[1][key], key


class _Counting(Grid[int]):
    """A grid of integer cells whose runs write a marker file and count themselves."""

    def __init__(self, out: Path, n: int = 4) -> None:
        self.out, self.n, self.ran = out, n, []

    def cells(self) -> list[int]:
        return list(range(self.n))

    def name(self, cell: int) -> str:
        return f"cells/c{cell}"

    def is_finished(self, cell: int) -> bool:
        return (self.out / self.name(cell) / "done").is_file()

    def run_cell(self, cell: int) -> dict:
        if cell == 3 and (self.out / "fail").exists():
            raise RuntimeError("cell 3 broke")
        (self.out / self.name(cell) / "done").write_text("x")
        self.ran.append(cell)
        return {}

    def settings(self) -> dict:
        return {"n": self.n}


def test_busy_cells_are_skipped_and_run_later(tmp_path):
    grid, lines = _Counting(tmp_path / "g"), []
    claim_folder(grid.out)  # as the other process's run_grid did
    with claim(tmp_path / "g" / "cells" / "c1" / CLAIM) as mine:  # "another process" holds cell 1
        assert mine
        meta = run_grid(grid, progress=False, log=lines.append)
    assert grid.ran == [0, 2, 3] and "skipped cells/c1: another process is running it" in lines
    assert sorted(meta["cell_seconds"]) == ["cells/c0", "cells/c2", "cells/c3"]
    meta = run_grid(grid, progress=False, log=lines.append)  # the claim was released: it runs now
    assert grid.ran == [0, 2, 3, 1] and sorted(meta["cell_seconds"]) == [f"cells/c{k}" for k in range(4)]
    assert meta["n"] == 4 and meta["processes"] == 1


def test_one_process_records_the_threads_its_cells_ran_with(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as `--threads 1` does before the grid starts
        grid = _Counting(tmp_path / "g")
        claim_folder(grid.out)
        assert run_grid(grid, progress=False, log=lambda _: None)["threads"] == 1
        grid = _Counting(tmp_path / "h")
        claim_folder(grid.out)
        meta = run_grid(grid, threads=2, progress=False, log=lambda _: None)
        assert meta["threads"] == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_failed_cell_leaves_the_others_and_is_named(tmp_path):
    from alkernels.experiments._grid import CellsFailedError

    grid = _Counting(tmp_path / "g")
    claim_folder(grid.out)
    (grid.out / "fail").write_text("")
    with pytest.raises(CellsFailedError, match="cells/c3: RuntimeError: cell 3 broke"):
        run_grid(grid, progress=False, log=lambda _: None)
    assert grid.ran == [0, 1, 2]


def test_a_killed_workers_claim_is_free_at_once(tmp_path):
    folder = tmp_path / "g" / "cells" / "c0"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from alkernels.experiments._grid import claim\n"
            "with claim(Path(sys.argv[1])) as mine:\n    print(mine, flush=True); time.sleep(600)",
            str(folder / CLAIM),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "True"
    with claim(folder / CLAIM) as mine:
        assert not mine  # held by the live process
    assert f" {holder.pid}" in (folder / CLAIM).read_text()  # host and process, for people
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with claim(folder / CLAIM) as mine:
        assert mine  # no stale claim: the lock died with its process


def test_experiment_json_merges_across_processes(tmp_path):
    out = tmp_path / "g"
    merge_experiment(out, {"a": 1}, add={"wall_seconds": 2.0}, join={"cell_seconds": {"x": 1.0}})
    meta = merge_experiment(out, {"a": 2}, add={"wall_seconds": 3.0}, join={"cell_seconds": {"y": 4.0}})
    assert meta == {"a": 2, "wall_seconds": 5.0, "cell_seconds": {"x": 1.0, "y": 4.0}}
    assert read_experiment(out) == meta


def _committed() -> list[tuple[str, Path]]:
    root = ROOT / "experiments"
    found = [("spacegroup", p) for p in sorted((root / "spacegroup" / "results").iterdir()) if p.is_dir()]
    found += [("gp", p) for p in sorted((root / "gp-regression" / "results").iterdir()) if p.is_dir()]
    found += [("transfer", p) for p in sorted((root / "transfer" / "results").iterdir()) if p.is_dir()]
    return found


@pytest.mark.parametrize("study,folder", _committed(), ids=lambda x: x.name if isinstance(x, Path) else x)
def test_committed_tables_rebuild_byte_for_byte(study, folder, tmp_path):
    if study == "spacegroup" and not (folder / "runs.jsonl").exists():  # the MC-spread diagnosis
        from alkernels.experiments.spacegroup.mc_spread import write_report
    else:
        write_report = _report_writer(study)
    src = tmp_path / "src"
    shutil.copytree(folder, src)
    written = write_report(src, tmp_path / "dest")
    texts = [p for p in written.values() if p.suffix in (".md", ".json", ".jsonl")]
    assert {p.name for p in texts} >= {"table.md", "summary.json"}
    for path in texts:
        assert path.read_bytes() == (folder / path.name).read_bytes(), f"{folder.name}/{path.name} differs"


def _report_writer(study: str):
    if study == "spacegroup":
        from alkernels.experiments.spacegroup.report import write_report
    elif study == "gp":
        from alkernels.experiments.gp_regression.report import write_report
    else:
        from alkernels.experiments.transfer.report import write_report
    return write_report


@pytest.mark.parametrize(
    "study,folder",
    [
        ("spacegroup", "spacegroup/results/cpu-budget16.5"),
        ("gp", "gp-regression/results/mp20"),
        ("transfer", "transfer/results/out_of_domain_epochs"),
    ],
)
def test_a_report_written_elsewhere_rebuilds_there(study, folder, tmp_path):
    """`report --dest`: the other folder gets the raw files its report came from, so rebuilding
    it there gives the same table (the wall time of experiment.json included)."""
    write_report = _report_writer(study)
    src = tmp_path / "src"
    shutil.copytree(ROOT / "experiments" / folder, src)
    write_report(src, tmp_path / "dest")
    first = (tmp_path / "dest" / "table.md").read_bytes()
    assert (tmp_path / "dest" / "experiment.json").read_bytes() == (src / "experiment.json").read_bytes()
    write_report(tmp_path / "dest")
    assert (tmp_path / "dest" / "table.md").read_bytes() == first == (src / "table.md").read_bytes()


def test_report_rebuilds_the_mc_spread_diagnosis(tmp_path, capsys):
    """`alkernels report` recognises the BALD MC-spread folder and rebuilds its table."""
    from helpers import cli

    folder = ROOT / "experiments" / "spacegroup" / "results" / "bald-mc-spread"
    src = tmp_path / "spread"
    shutil.copytree(folder, src)
    (src / "table.md").unlink()
    assert cli("report", str(src)) == 0
    assert (src / "table.md").read_text() == (folder / "table.md").read_text()
