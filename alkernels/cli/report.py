"""``alkernels report DIR``: regenerate the tables and plots of a study grid (space-group
classification or GP regression, whichever the folder holds)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild table.md and the PNG plots from a grid's records")
    p.add_argument("dir", help="the --out folder of 'alkernels reproduce' (runs/ or a committed runs.jsonl)")
    p.add_argument("--dest", default=None, help="write the report here instead of DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alkernels.experiments.gp_regression.report import is_regression_grid

    if is_regression_grid(args.dir):
        from alkernels.experiments.gp_regression.report import write_report
    else:
        from alkernels.experiments.spacegroup.report import write_report
    from alkernels.experiments._grid import grid_lock

    with grid_lock(args.dest or args.dir):  # not while a process of the grid writes the tables
        paths = write_report(args.dir, args.dest)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
