"""``alkernels transfer``: the transfer-learning study (pre-train, fine-tune at several sizes with
every strategy, one fixed test set), resumable, with table.md, mae_vs_size.png and summary.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from alkernels.cli._common import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_FLOAT,
    add_backend_arg,
    apply_threads,
    check_device,
    check_grid_dir,
    float_in,
    log,
)


def _int_list(text: str) -> list[int]:
    """``"10,100"`` -> [10, 100]: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    """``"a, b"`` -> ["a", "b"]."""
    return [v.strip() for v in text.split(",") if v.strip()]


USAGE = (
    "alkernels transfer --pretrain COL[,COL...] [--pretrain ...] --pretrain-data PATH[,PATH...]\n"
    "                          --finetune COL --finetune-data PATH --out OUT [options]\n"
    "       alkernels transfer --report-only --out OUT"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alkernels transfer``."""
    p = sub.add_parser(
        "transfer",
        usage=USAGE,
        help="pre-train, then fine-tune at several sizes with each strategy (study C)",
        description="Pre-trains one EGNN per --pretrain source (one column: pair-wise PT; several: "
        "multi-property PT), then for every size, repeat and strategy fine-tunes on a random "
        "subsample of --finetune-data (90/10 train/validation) and scores it on one fixed test "
        "set. Re-running the same command skips finished cells and reuses cached checkpoints.",
    )
    need = p.add_argument_group("required (all but --out may be left out with --report-only)")
    need.add_argument(
        "--pretrain",
        action="append",
        type=_names,
        metavar="COL[,COL...]",
        help="required: pre-training columns; repeat the option to compare several sources "
        "(e.g. --pretrain heat_ref --pretrain heat_ref,dir_gap)",
    )
    need.add_argument(
        "--pretrain-data",
        type=_names,
        metavar="PATH[,PATH...]",
        help="required: pre-training files; each source uses the files that have any of its columns",
    )
    need.add_argument("--finetune", metavar="COL", help="required: the fine-tuning column")
    need.add_argument(
        "--finetune-data", metavar="PATH", help="required: the fine-tuning file (pool and fixed test set)"
    )
    need.add_argument("--out", required=True, help="required: the study's folder")
    p.add_argument(
        "--sizes",
        type=_int_list,
        default=[10, 100, 200, 500, 800],
        help="fine-tuning subsample sizes, train + validation (default 10,100,200,500,800)",
    )
    p.add_argument("--repeats", type=POSITIVE, default=5, help="random subsamples per size (default 5)")
    p.add_argument(
        "--strategies",
        type=_names,
        default=["scratch", "all", "head", "new_head_frozen_trunk", "new_head_frozen_embedding", "last_k_layers"],
        help="scratch, all, head, new_head_frozen_trunk, new_head_frozen_embedding, "
        "last_k_layers (K from --last-k) or last_k_layers=K (default: all six)",
    )
    p.add_argument("--last-k", type=POSITIVE, default=2, help="K of a plain last_k_layers (default 2)")
    p.add_argument(
        "--init-head",
        default=None,
        metavar="COL",
        help="pre-trained head that 'all' and 'head' start from on a multi-property source "
        "without the fine-tuning column (default: none; single-column sources use their one head)",
    )
    p.add_argument("--report-only", action="store_true", help="only rebuild the report of --out")
    p.add_argument("--test-size", type=POSITIVE, default=500, help="fixed test set size (default 500)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seeds the test split, the subsamples and training")
    p.add_argument("--pt-epochs", type=POSITIVE, default=30, help="pre-training epochs at most (default 30)")
    p.add_argument("--pt-patience", type=POSITIVE, default=6, help="pre-training early-stopping patience (epochs)")
    p.add_argument("--pt-lr", type=POSITIVE_FLOAT, default=1e-3, help="pre-training AdamW learning rate")
    p.add_argument("--pt-batch-size", type=POSITIVE, default=64, help="pre-training batch size")
    p.add_argument("--ft-epochs", type=POSITIVE, default=150, help="fine-tuning epochs at most (default 150)")
    p.add_argument(
        "--ft-steps",
        type=NON_NEGATIVE,
        default=200,
        help="fine-tuning optimiser steps at most, 0 for no cap (epochs and patience decide) (default 200)",
    )
    p.add_argument(
        "--ft-min-val",
        type=POSITIVE,
        default=1,
        help="fine-tuning: at least this many of a subsample's structures for validation (default 1; "
        "the 90/10 split leaves one at size 10)",
    )
    p.add_argument("--ft-patience", type=POSITIVE, default=25, help="fine-tuning early-stopping patience (epochs)")
    p.add_argument("--ft-lr", type=POSITIVE_FLOAT, default=1e-3, help="fine-tuning AdamW learning rate")
    p.add_argument("--ft-batch-size", type=POSITIVE, default=32, help="fine-tuning batch size")
    p.add_argument(
        "--weight-decay",
        type=float_in(0.0, closed="low"),
        default=1e-2,
        help="AdamW weight decay of both phases",
    )
    p.add_argument(
        "--loss",
        default="absolute",
        choices=["absolute", "squared"],
        help="training loss of both phases on normalised targets: absolute (L1, targets the "
        "reported MAE; default) or squared (MSE)",
    )
    p.add_argument("--cutoff", type=POSITIVE_FLOAT, default=6.0, help="graph cutoff in Angstrom (default 6)")
    p.add_argument("--max-neighbors", type=NON_NEGATIVE, default=12, help="nearest neighbours kept per atom (0: all)")
    p.add_argument(
        "--graph-mode",
        default="periodic",
        choices=["periodic", "matsciml"],
        help="neighbour graphs: periodic images within --cutoff, or matsciml's in-cell graphs",
    )
    p.add_argument(
        "--pretrain-cache",
        default=None,
        help="folder of cached pre-trained checkpoints (default OUT/pretrained); studies may share one",
    )
    p.add_argument("--cache-dir", default=None, help="graph cache (default: alkernels' cache folder)")
    p.add_argument(
        "--workers",
        type=POSITIVE,
        default=None,
        help="processes for reading files and building graphs (default: all cores)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--threads",
        type=POSITIVE,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)",
    )
    add_backend_arg(p, default="auto", what="EGNN edge-op backend")
    p.set_defaults(func=run, run_lines=False)


def settings_from_args(args: argparse.Namespace):
    """The :class:`StudySettings` of the command line (ValueError on a bad combination)."""
    from alkernels.experiments.transfer.study import StudySettings
    from alkernels.models import EGNNConfig
    from alkernels.transfer import TrainConfig, parse_strategy

    missing = [
        flag
        for flag, value in (
            ("--pretrain", args.pretrain),
            ("--pretrain-data", args.pretrain_data),
            ("--finetune", args.finetune),
            ("--finetune-data", args.finetune_data),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or --report-only)")
    strategies = tuple(str(parse_strategy(s, default_k=args.last_k)) for s in args.strategies)
    for path in [*args.pretrain_data, args.finetune_data]:
        if not Path(path).exists():
            raise ValueError(f"data file {path} does not exist")
    wd = args.weight_decay
    pt = TrainConfig(
        lr=args.pt_lr,
        weight_decay=wd,
        batch_size=args.pt_batch_size,
        max_epochs=args.pt_epochs,
        patience=args.pt_patience,
        error=args.loss,
    )
    ft = TrainConfig(
        lr=args.ft_lr,
        weight_decay=wd,
        batch_size=args.ft_batch_size,
        max_epochs=args.ft_epochs,
        max_steps=args.ft_steps or None,
        min_val=args.ft_min_val,
        patience=args.ft_patience,
        error=args.loss,
    )
    return StudySettings(
        sources=tuple(tuple(s) for s in args.pretrain),
        pretrain_data=tuple(args.pretrain_data),
        finetune=args.finetune,
        finetune_data=args.finetune_data,
        sizes=tuple(args.sizes),
        repeats=args.repeats,
        strategies=strategies,
        test_size=args.test_size,
        seed=args.seed,
        cutoff=args.cutoff,
        max_neighbors=args.max_neighbors or None,
        graph_mode=args.graph_mode,
        egnn=EGNNConfig().record(),
        pt=pt.record(),
        ft=ft.record(),
        init_head=args.init_head,
        backend=args.backend,
    )


def run(args: argparse.Namespace) -> int:
    from alkernels.experiments._grid import grid_lock
    from alkernels.experiments.transfer.report import finetune_seconds, write_report

    if args.report_only:
        check_study_folder(Path(args.out))
        with grid_lock(args.out):  # not while a process of the study writes the tables
            paths = write_report(args.out)
        for name, path in paths.items():
            print(f"{name}: {path}")
        return 0
    from alkernels.data.specs import load_property_graphs, spec_name
    from alkernels.experiments.transfer.study import run_study
    from alkernels.transfer import PropertyData

    settings = settings_from_args(args)
    if settings.graph_mode == "matsciml" and settings.max_neighbors is not None:
        raise ValueError("--graph-mode matsciml has no neighbour cap: pass --max-neighbors 0")
    check_device(args.device)
    check_grid_dir(args.out)  # a study always continues its finished cells; other processes may share it
    apply_threads(args)

    def loader(path: str) -> PropertyData:
        graphs, columns = load_property_graphs(
            path,
            cutoff=settings.cutoff,
            graph_mode=settings.graph_mode,
            max_neighbors=settings.max_neighbors,
            cache_dir=args.cache_dir,
            workers=args.workers,
        )
        return PropertyData(graphs, columns, name=spec_name(path))

    meta = run_study(settings, args.out, loader=loader, pretrain_cache=args.pretrain_cache, device=args.device)
    log.info(
        "study done: pre-training "
        + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in meta["pretraining"].items())
        + f"; fine-tuning {finetune_seconds(meta):.0f} s in total"
    )
    with grid_lock(args.out):  # the last process to finish writes the complete tables
        paths = write_report(args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def check_study_folder(folder: Path) -> None:
    """Fail, saying what ``folder`` is instead, unless it holds a transfer study."""
    from alkernels.experiments._grid import EXPERIMENT

    if not folder.is_dir():
        raise ValueError(f"--out {folder} is not a folder (give the --out folder of a transfer study)")
    if (folder / "runs.jsonl").is_file() or (folder / "runs").is_dir():
        raise ValueError(
            f"--out {folder} holds a grid of 'alkernels reproduce': rebuild it with 'alkernels report {folder}'"
        )
    if not (folder / EXPERIMENT).is_file():
        raise ValueError(f"--out {folder} holds no transfer study (no {EXPERIMENT})")
