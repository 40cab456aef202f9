"""``alkernels reproduce``: the paper's Table 1 grid (strategies x seeds x reset variants + standard)."""
from __future__ import annotations

import argparse
import os

from alkernels.cli.run import (add_backend_arg, add_data_args, add_distributed_args, apply_threads, check_device,
                               check_output_dir, cli_words, start_distributed, stop_distributed)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run the paper's active-learning grid and write the report",
                       description="Runs every strategy x seed x reset variant and the full-data standard "
                                   "run, then writes table.md, accuracy.png, loss.png and spacegroups.png. "
                                   "Re-running the same command resumes an interrupted grid.")
    p.add_argument("--preset", default="quick", choices=["demo", "quick", "paper"],
                   help="demo: 2,500 generated perovskites, 5 rounds of 3 epochs (make demo); quick: CPU-sized "
                        "(300 structures, 1 epoch per round); paper: the full protocol")
    p.add_argument("--strategies", default="all", help="'all' (the paper's 12) or a comma-separated list")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--reset", default="both", choices=["both", "keep", "reset"],
                   help="weight-reset variants to run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--restart-round", action="store_true",
                   help="discard a damaged checkpoint of an unfinished run and redo its last round")
    p.add_argument("--processes", type=int, default=1, help="grid cells run in parallel processes")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs per round")
    add_backend_arg(p, default=None, what="override the preset's EGNN backend")
    add_data_args(p, default_dataset=None)
    add_distributed_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alkernels.data import load_split
    from alkernels.distributed import is_rank_zero as distributed_rank_zero
    from alkernels.experiments.spacegroup.grid import VARIANTS, grid, preset_with, reproduce
    from alkernels.experiments.spacegroup.report import console_tables, write_report
    from alkernels.strategies import PAPER_STRATEGIES

    preset = preset_with(args.preset, epochs=args.epochs, backend=args.backend)
    names = list(PAPER_STRATEGIES) if args.strategies == "all" else \
        [s.strip() for s in args.strategies.split(",") if s.strip()]
    variants = list(VARIANTS) if args.reset == "both" else [args.reset]
    grid(names, args.seeds, variants)  # a bad strategy name or seed count fails before data loading
    if args.distributed and args.processes != 1:
        raise ValueError("--distributed runs one grid cell at a time on all ranks; drop --processes")
    if args.processes < 1:
        raise ValueError(f"--processes must be >= 1, got {args.processes}")
    check_device(args.device)
    if not args.distributed or int(os.environ.get("RANK", "0")) == 0:
        check_output_dir(args.out, resume=True)  # a grid always resumes its finished runs
    apply_threads(args)
    device, say, data_first = start_distributed(args)
    with data_first:
        data = load_split(args.dataset or preset.dataset, label=args.label, structures=preset.structures,
                          split=preset.split, cutoff=preset.cutoff, graph_mode=preset.graph_mode,
                          cache_dir=args.cache_dir, workers=args.workers)
    try:
        meta = reproduce(data, preset, args.out, strategy_names=names, seeds=args.seeds, variants=variants,
                         processes=args.processes, device=device, distributed=args.distributed, log=say,
                         restart_round=args.restart_round)
    except ValueError as err:
        raise cli_words(err) from err
    say(f"grid done: {meta['wall_seconds'] / 60:.1f} min in total\n")
    if not args.distributed or distributed_rank_zero():
        paths = write_report(args.out)
        print(console_tables(args.out))
        print("written: " + ", ".join(str(p) for p in paths.values()))
    stop_distributed(args)
    return 0
