"""``alkernels report DIR``: regenerate the tables and plots of a study grid (space-group
classification or GP regression, whichever the folder holds)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alkernels report``."""
    p = sub.add_parser(
        "report",
        help="rebuild table.md and the PNG plots from a grid's records",
        description="Rebuilds the report of a folder written by 'alkernels reproduce' (or 'alkernels "
        "demo'), from its runs/ or from a committed runs.jsonl. A transfer study's report is "
        "rebuilt by 'alkernels transfer --report-only --out DIR'.",
    )
    p.add_argument("dir", help="the --out folder of 'alkernels reproduce' (runs/ or a committed runs.jsonl)")
    p.add_argument("--dest", default=None, help="write the report, with a copy of experiment.json, here (default: DIR)")
    p.set_defaults(func=run)


def check_grid_folder(folder: Path) -> None:
    """Fail, saying what ``folder`` is instead, unless it holds a grid's records (or the BALD
    MC-spread diagnosis's summary)."""
    from alkernels.experiments._report import COMPACT_RUNS
    from alkernels.experiments.spacegroup.mc_spread import is_spread_folder
    from alkernels.experiments.transfer.study import CELLS

    if is_spread_folder(folder):
        return
    if not folder.exists():
        raise ValueError(f"{folder} does not exist (give the --out folder of 'alkernels reproduce')")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder (give the --out folder of 'alkernels reproduce')")
    if (folder / CELLS).is_file():
        raise ValueError(
            f"{folder} holds a transfer study: rebuild its report with "
            f"'alkernels transfer --report-only --out {folder}'"
        )
    if (folder / "records.jsonl").is_file() and (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} holds a single run of 'alkernels run' (its rounds are in {folder / 'records.jsonl'}); "
            "report rebuilds the tables of a grid made by 'alkernels reproduce'"
        )
    if not (folder / COMPACT_RUNS).is_file() and next(folder.glob("runs/**/records.jsonl"), None) is None:
        raise ValueError(
            f"{folder} holds no grid records (neither runs/**/records.jsonl nor {COMPACT_RUNS}): give the "
            "--out folder of 'alkernels reproduce'"
        )


def run(args: argparse.Namespace) -> int:
    """Rebuild the report; print the paths written."""
    check_grid_folder(Path(args.dir))
    from alkernels.experiments.gp_regression.report import is_regression_grid
    from alkernels.experiments.spacegroup.mc_spread import is_spread_folder

    if is_spread_folder(args.dir):
        from alkernels.experiments.spacegroup.mc_spread import write_report
    elif is_regression_grid(args.dir):
        from alkernels.experiments.gp_regression.report import write_report
    else:
        from alkernels.experiments.spacegroup.report import write_report
    from alkernels.experiments._grid import grid_lock

    with grid_lock(args.dest or args.dir):  # not while a process of the grid writes the tables
        paths = write_report(args.dir, args.dest)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
