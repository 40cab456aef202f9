"""``alkernels reproduce``: a study's grid. ``--study spacegroup`` (default): the paper's Table 1
grid (strategies x seeds x reset variants + standard); ``--study gp-regression``: protocol B's
regression grid (strategies x seeds with a GP on frozen features)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from alkernels.cli._common import (
    NON_NEGATIVE,
    POSITIVE,
    add_backend_arg,
    add_data_args,
    add_distributed_args,
    add_precision_arg,
    add_schedule_args,
    apply_threads,
    check_dataset,
    check_device,
    check_grid_dir,
    cli_words,
    log,
    rank_zero,
    start_distributed,
    stop_distributed,
)

if TYPE_CHECKING:
    from alkernels.experiments.gp_regression.grid import Preset as GPPreset

#: Studies and their presets (the first is the default).
STUDY_PRESETS = {
    "spacegroup": ("quick", "demo", "cpu", "paper"),
    "gp-regression": ("perovskite", "perovskite-composition", "perovskite-pretrained", "mp20", "mp20-composition"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alkernels reproduce``."""
    p = sub.add_parser(
        "reproduce",
        help="run a study's grid and write the report",
        description="spacegroup: runs every strategy x seed x reset variant and the full-data "
        "standard run, then writes table.md, accuracy.png, loss.png and "
        "spacegroups.png. gp-regression: runs every strategy arm x seed of a preset "
        "and writes table.md and mae.png. Re-running the same command resumes an "
        "interrupted grid.",
    )
    p.add_argument(
        "--study",
        default="spacegroup",
        choices=list(STUDY_PRESETS),
        help="spacegroup: protocol A, space-group classification with the paper's 12 strategies; "
        "gp-regression: protocol B, a GP on frozen features (needs --data-dir)",
    )
    p.add_argument(
        "--preset",
        default=None,
        help="spacegroup: quick (default; a smoke test: 300 structures, 1 epoch per round), demo "
        "(2,500 generated perovskites, make demo), cpu (the CPU study, see "
        "experiments/spacegroup/README.md) or paper (the full protocol, a GPU); gp-regression: "
        + ", ".join(STUDY_PRESETS["gp-regression"])
        + " (default perovskite)",
    )
    p.add_argument(
        "--strategies",
        default="all",
        help="'all' (the preset's) or a comma-separated list; gp-regression arms are STRATEGY[:BATCH]",
    )
    p.add_argument("--seeds", type=POSITIVE, default=None, help="seeds per strategy (default 3, gp-regression 5)")
    p.add_argument(
        "--reset",
        default="both",
        choices=["both", "keep", "reset"],
        help="spacegroup: weight-reset variants to run (keep: weights carry over between rounds, as "
        "the paper's Table 1; reset: reloaded every round)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--restart-round",
        action="store_true",
        help="discard a damaged checkpoint of an unfinished run and redo its last round",
    )
    p.add_argument(
        "--processes",
        type=POSITIVE,
        default=1,
        help="grid cells run in parallel worker processes, each with cores / processes threads "
        "unless --threads says otherwise (other reproduce commands may share --out as well)",
    )
    add_schedule_args(p, epochs_default=None)
    p.add_argument(
        "--queries",
        type=NON_NEGATIVE,
        default=None,
        help="gp-regression: override the preset's queries (default: the preset's)",
    )
    p.add_argument(
        "--max-structures",
        type=POSITIVE,
        default=None,
        help="gp-regression: a fixed random subset of this many structures (default: all)",
    )
    p.add_argument(
        "--encoder-dropout",
        type=float,
        default=None,
        help="spacegroup: dropout on the encoder's node state, a labelled variant of the paper's "
        "model (which has dropout in the head only); MC strategies then run the encoder once per "
        "pass (default: the preset's, 0)",
    )
    p.add_argument(
        "--embedding",
        default=None,
        help="gp-regression: override the preset's features: train-initial, composition or "
        "checkpoint:PATH (an encoder pre-trained elsewhere, e.g. by 'alkernels transfer'; "
        "experiment.json records its file name and content hash; default: the preset's)",
    )
    p.add_argument(
        "--fit-iterations",
        type=NON_NEGATIVE,
        default=None,
        help="gp-regression: Adam steps of the hyper-parameter fit (default: the preset's, 200)",
    )
    p.add_argument(
        "--data-dir",
        default="../shared/data",
        help="gp-regression: the folder holding the preset's files, perov5_val.csv.gz and "
        "perov5_test.csv.gz (perovskite presets) or mp20_sample.csv.gz (mp20 presets); default "
        "../shared/data, where a development checkout has them",
    )
    add_backend_arg(p, default=None, what="override the preset's EGNN backend")
    add_precision_arg(p, default=None)
    add_data_args(p, default_dataset=None)
    add_distributed_args(p)
    p.set_defaults(func=run, run_lines=False)


def run(args: argparse.Namespace) -> int:
    preset = args.preset or STUDY_PRESETS[args.study][0]
    if preset not in STUDY_PRESETS[args.study]:
        raise ValueError(f"unknown {args.study} preset {preset!r}; use one of {', '.join(STUDY_PRESETS[args.study])}")
    if args.study == "gp-regression":
        return run_gp_regression(args, preset)
    for flag, value in (("--embedding", args.embedding), ("--fit-iterations", args.fit_iterations)):
        if value is not None:
            raise ValueError(f"{flag} applies to the gp-regression study")
    from alkernels.data import load_split
    from alkernels.experiments._grid import CellsFailedError, grid_lock
    from alkernels.experiments.spacegroup.grid import VARIANTS, grid, preset_with, reproduce
    from alkernels.experiments.spacegroup.report import console_tables, write_report
    from alkernels.strategies import PAPER_STRATEGIES

    preset = preset_with(
        preset,
        epochs=args.epochs,
        backend=args.backend,
        precision=args.precision,
        label_mode=args.label_mode,
        encoder_dropout=args.encoder_dropout,
    )
    if not 0.0 <= preset.encoder_dropout < 1.0:
        raise ValueError(f"--encoder-dropout must lie in [0, 1), got {preset.encoder_dropout}")
    if args.epoch_budget is not None:
        preset = replace(preset, epoch_budget=args.epoch_budget)
    elif args.epochs is not None:
        preset = replace(preset, epoch_budget=None)  # fixed epochs asked for: drop the preset's budget
    seeds = 3 if args.seeds is None else args.seeds
    names = (
        list(PAPER_STRATEGIES)
        if args.strategies == "all"
        else [s.strip() for s in args.strategies.split(",") if s.strip()]
    )
    variants = list(VARIANTS) if args.reset == "both" else [args.reset]
    grid(names, seeds, variants)  # a bad strategy name or seed count fails before data loading
    if args.distributed and args.processes != 1:
        raise ValueError("--distributed runs one grid cell at a time on all ranks; drop --processes")
    check_device(args.device)
    if args.dataset:
        check_dataset(args.dataset)
    if rank_zero(args):
        check_grid_dir(args.out)  # a grid always resumes its finished runs; other processes may share it
    apply_threads(args, args.processes)
    device, data_first = start_distributed(args)
    with data_first:
        data = load_split(
            args.dataset or preset.dataset,
            label=args.label,
            structures=preset.structures,
            split=preset.split,
            cutoff=preset.cutoff,
            graph_mode=preset.graph_mode,
            cache_dir=args.cache_dir,
            workers=args.workers,
            label_mode=preset.label_mode,
        )
    failed: CellsFailedError | None = None
    try:
        meta = reproduce(
            data,
            preset,
            args.out,
            strategy_names=names,
            seeds=seeds,
            variants=variants,
            processes=args.processes,
            threads=args.threads,
            device=device,
            distributed=args.distributed,
            restart_round=args.restart_round,
        )
        log.info(f"grid done: {meta['wall_seconds'] / 60:.1f} min in total")
    except ValueError as err:
        raise cli_words(err, resumes=True) from err
    except CellsFailedError as err:  # report what finished, then fail naming the rest
        failed = err
    if rank_zero(args):
        with grid_lock(args.out):  # the last process to finish writes the complete tables
            paths = write_report(args.out)
            tables = console_tables(args.out)
        print(tables)
        print("written: " + ", ".join(str(p) for p in paths.values()))
    stop_distributed(args)
    if failed is not None:
        why = "; ".join(
            f"{name}: {cli_words(e, resumes=True) if isinstance(e, ValueError) else e}"
            for name, e in failed.failures.items()
        )
        raise ValueError(
            f"{len(failed.failures)} run(s) failed, the others finished and are reported: {why}; "
            "fix or remove those run folders and rerun to finish the grid"
        ) from failed
    return 0


def run_gp_regression(args: argparse.Namespace, preset_name: str) -> int:
    from alkernels.experiments._grid import grid_lock
    from alkernels.experiments.gp_regression.grid import arms_of, grid, load_data, preset_with, reproduce
    from alkernels.experiments.gp_regression.report import write_report
    from alkernels.gp.embeddings import parse_embedding

    arms = None if args.strategies == "all" else arms_of([s.strip() for s in args.strategies.split(",") if s.strip()])
    preset = preset_with(
        preset_name,
        arms=arms,
        queries=args.queries,
        embedding_epochs=args.epochs,
        max_structures=args.max_structures,
        embedding=args.embedding,
    )
    if preset.embedding == "checkpoint":
        raise ValueError(
            f"preset {preset_name!r} takes its features from a pre-trained encoder: give --embedding "
            "checkpoint:PATH (how to pre-train it: experiments/gp-regression/README.md)"
        )
    parse_embedding(preset.embedding)  # a bad spec or a missing checkpoint fails before any data loads
    if args.fit_iterations is not None:
        gp = preset.gp
        preset = replace(preset, gp=replace(gp, fit=replace(gp.fit, iterations=args.fit_iterations)))
    seeds = 5 if args.seeds is None else args.seeds
    grid(preset, seeds)  # bad arms or seeds fail before data loading
    if args.epoch_budget is not None:
        raise ValueError("--epoch-budget applies to the spacegroup study")
    if args.encoder_dropout is not None:
        raise ValueError("--encoder-dropout applies to the spacegroup study")
    if args.distributed:
        raise ValueError("--distributed applies to the spacegroup study; the GP study runs in one process")
    check_device(args.device)
    check_data_dir(args.data_dir, preset)
    check_grid_dir(args.out)  # a grid always resumes its finished runs; other processes may share it
    apply_threads(args, args.processes)
    data = load_data(preset, args.data_dir, cache_dir=args.cache_dir, workers=args.workers)
    if data.skipped:
        log.warning(f"skipped {len(data.skipped)} rows without a usable structure or {preset.target!r}")
    meta = reproduce(
        data,
        preset,
        args.out,
        seeds=seeds,
        device=args.device,
        backend=args.backend or "auto",
        progress=True,
        processes=args.processes,
        threads=args.threads,
    )
    log.info(f"grid done: {meta['wall_seconds'] / 60:.1f} min in total")
    with grid_lock(args.out):  # the last process to finish writes the complete tables
        paths = write_report(args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def check_data_dir(data_dir: str, preset: GPPreset) -> None:
    """Fail before any work when ``--data-dir`` lacks a file of the gp-regression ``preset``,
    naming the flag, the folder and the files it must hold."""
    from pathlib import Path

    folder = Path(data_dir).expanduser()
    missing = [name for name in preset.files if not (folder / name).is_file()]
    if not missing:
        return
    where = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
    raise ValueError(
        f"--data-dir {data_dir} {where}: the gp-regression preset {preset.name!r} reads "
        f"{', '.join(preset.files)} (gzipped CSVs with a 'cif' column and the {preset.target!r} "
        "column; a development checkout has them in ../shared/data); pass --data-dir FOLDER"
    )
