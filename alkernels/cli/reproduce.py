"""``alkernels reproduce``: the paper's Table 1 grid (strategies x seeds x reset variants + standard)."""
from __future__ import annotations

import argparse
from dataclasses import replace

from alkernels.cli.run import add_backend_arg, add_data_args, add_precision_arg, add_schedule_args, apply_threads


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run the paper's active-learning grid and write the report",
                       description="Runs every strategy x seed x reset variant and the full-data standard "
                                   "run, then writes table.md, accuracy.png, loss.png and spacegroups.png. "
                                   "Re-running the same command resumes an interrupted grid.")
    p.add_argument("--preset", default="quick", choices=["demo", "quick", "cpu", "paper"],
                   help="demo: 2,500 generated perovskites, 5 rounds of 3 epochs (make demo); quick: a smoke "
                        "test (300 structures, 1 epoch per round); cpu: the CPU study (see "
                        "experiments/spacegroup/README.md); paper: the full protocol (a GPU)")
    p.add_argument("--strategies", default="all", help="'all' (the paper's 12) or a comma-separated list")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--reset", default="both", choices=["both", "keep", "reset"],
                   help="weight-reset variants to run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--processes", type=int, default=1,
                   help="grid cells run in parallel processes, each with cores / processes threads unless "
                        "--threads says otherwise")
    add_schedule_args(p, epochs_default=None)
    add_backend_arg(p, default=None, what="override the preset's EGNN backend")
    add_precision_arg(p, default=None)
    add_data_args(p, default_dataset=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alkernels.data import load_split
    from alkernels.experiments.spacegroup.grid import VARIANTS, grid, preset_with, reproduce
    from alkernels.experiments.spacegroup.report import console_tables, write_report
    from alkernels.strategies import PAPER_STRATEGIES

    preset = preset_with(args.preset, epochs=args.epochs, backend=args.backend, precision=args.precision,
                         label_mode=args.label_mode)
    if args.epoch_budget is not None:
        preset = replace(preset, epoch_budget=args.epoch_budget)
    elif args.epochs is not None:
        preset = replace(preset, epoch_budget=None)  # fixed epochs asked for: drop the preset's budget
    names = list(PAPER_STRATEGIES) if args.strategies == "all" else \
        [s.strip() for s in args.strategies.split(",") if s.strip()]
    variants = list(VARIANTS) if args.reset == "both" else [args.reset]
    grid(names, args.seeds, variants)  # a bad strategy name or seed count fails before data loading
    if args.processes < 1:
        raise ValueError(f"--processes must be >= 1, got {args.processes}")
    apply_threads(args, args.processes)
    data = load_split(args.dataset or preset.dataset, label=args.label, structures=preset.structures, split=preset.split,
                     cutoff=preset.cutoff, graph_mode=preset.graph_mode, cache_dir=args.cache_dir,
                     workers=args.workers, label_mode=preset.label_mode)
    meta = reproduce(data, preset, args.out, strategy_names=names, seeds=args.seeds, variants=variants,
                     processes=args.processes, threads=args.threads, device=args.device)
    print(f"grid done: {meta['wall_seconds'] / 60:.1f} min in total\n")
    paths = write_report(args.out)
    print(console_tables(args.out))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
