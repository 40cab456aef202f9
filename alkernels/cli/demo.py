"""``alkernels demo``: the main job of ``make demo``. Margin sampling next to random (and the
full-data standard run) on 2,500 generated perovskite-derived crystals, 10% -> 50% labelled;
writes table.md and accuracy.png to --out. A re-run finds the runs finished and only rewrites
the report."""

from __future__ import annotations

import argparse

from alkernels.cli._common import POSITIVE
from alkernels.data._store import default_cache_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alkernels demo``."""
    p = sub.add_parser(
        "demo",
        help="the main job: margin next to random on generated perovskites (what 'make demo' runs)",
        description="Runs 'alkernels reproduce --preset demo --strategies margin,random --seeds 1 "
        "--reset keep --processes 2 --out runs/demo' (the options below change those values): "
        "2,500 generated perovskite-derived crystals (2,000 train / 500 test), 10% to 50% "
        "labelled in 5 rounds of 8 epochs, then table.md and accuracy.png in --out. A few minutes "
        "on 2 cores; a re-run only rewrites the report.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--strategies", default="margin,random", help="comma-separated strategies to compare")
    p.add_argument("--seeds", type=POSITIVE, default=1, help="seeds per strategy")
    p.add_argument(
        "--processes",
        type=POSITIVE,
        default=2,
        help="runs in parallel worker processes, each with cores / processes threads",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--cache-dir", default=None, help=f"generated data and graph cache (default {default_cache_dir()})")
    p.set_defaults(func=run, run_lines=False)


def run(args: argparse.Namespace) -> int:
    """``alkernels reproduce`` with the demo's settings."""
    from alkernels.cli import build_parser, reproduce

    argv = [
        "reproduce",
        "--preset",
        "demo",
        "--strategies",
        args.strategies,
        "--seeds",
        str(args.seeds),
        "--reset",
        "keep",
        "--processes",
        str(args.processes),
        "--device",
        args.device,
        "--out",
        args.out,
    ]
    if args.cache_dir is not None:
        argv += ["--cache-dir", args.cache_dir]
    return reproduce.run(build_parser().parse_args(argv))
