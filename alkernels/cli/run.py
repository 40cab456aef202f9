"""``alkernels run``: one active-learning run of one strategy, resumable, with a results table."""

from __future__ import annotations

import argparse
import time

from alkernels.cli._common import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_FLOAT,
    add_backend_arg,
    add_data_args,
    add_distributed_args,
    add_precision_arg,
    add_schedule_args,
    apply_threads,
    check_dataset,
    check_device,
    check_output_dir,
    cli_words,
    count_or_fraction,
    float_in,
    int_at_least,
    log,
    rank_zero,
    start_distributed,
    stop_distributed,
    strategy_help,
)
from alkernels.data._store import default_cache_dir
from alkernels.ops.acquisition import NONFINITE_MODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alkernels run``; its defaults are the ``demo`` preset's (the settings that learn)."""
    from alkernels.experiments.spacegroup.grid import PRESETS

    demo = PRESETS["demo"]
    p = sub.add_parser(
        "run",
        help="run the active-learning loop for one strategy",
        description="Classification (default): train, evaluate and query for --rounds rounds "
        "(numbered from 0 in records.jsonl, the progress bar and the table); writes "
        "records.jsonl and a checkpoint to --out after every round. The defaults are those of "
        "the demo preset ('alkernels demo'). --task regression: a GP on frozen features labels "
        "--queries structures --batch at a time (protocol B); records step 0 (the initial set) "
        "and one step per batch.",
    )
    p.add_argument(
        "--task",
        default="classification",
        choices=["classification", "regression"],
        help="space-group classification (protocol A) or GP regression of a numeric column (protocol B)",
    )
    p.add_argument("--strategy", required=True, help=strategy_help())
    add_data_args(p, default_dataset=None, required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--restart-round",
        action="store_true",
        help="with --resume: discard a damaged checkpoint and redo the last round from the previous one",
    )
    p.add_argument(
        "--rounds", type=POSITIVE, default=demo.rounds, help="train-evaluate-query rounds, numbered 0 to ROUNDS-1"
    )
    add_schedule_args(p, epochs_default=demo.epochs)
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seeds the initial set, the model and the queries")
    p.add_argument("--initial", type=count_or_fraction, default=demo.initial, help="initial labelled count or fraction")
    p.add_argument(
        "--query-size", type=count_or_fraction, default=demo.query_size, help="query count or fraction per round"
    )
    p.add_argument("--reset-weights", action="store_true", help="reload the initial weights every round")
    p.add_argument(
        "--keep-optimizer",
        action="store_true",
        help="with --reset-weights: keep the optimiser state (the paper's framework did)",
    )
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=demo.lr, help="AdamW learning rate")
    p.add_argument("--batch-size", type=POSITIVE, default=demo.batch_size, help="training batch size")
    p.add_argument(
        "--dropout",
        type=float_in(0.0, 1.0, closed="low"),
        default=demo.dropout,
        help="head dropout (MC strategies need > 0)",
    )
    p.add_argument("--passes", type=POSITIVE, default=demo.passes, help="MC-dropout passes T")
    p.add_argument(
        "--nonfinite",
        default="raise",
        choices=NONFINITE_MODES,
        help="structures whose logits are NaN/inf: stop with an error (raise) or never query them",
    )
    p.add_argument("--test-fraction", type=float_in(0.0, 1.0), default=demo.split[-1], help="held-out test fraction")
    p.add_argument(
        "--max-structures",
        type=int_at_least(2),
        default=None,
        help="for files: a random subset of this size, at least 2 (a train and a test structure; "
        "default: every structure)",
    )
    p.add_argument("--cutoff", type=POSITIVE_FLOAT, default=demo.cutoff, help="graph cutoff in Angstrom")
    p.add_argument(
        "--graph-mode",
        default=demo.graph_mode,
        choices=["periodic", "matsciml"],
        help="neighbour graphs: periodic images within --cutoff, or matsciml's in-cell graphs",
    )
    add_backend_arg(p, default=demo.backend, what="EGNN edge-op backend")
    add_distributed_args(p)
    add_regression_args(p)
    add_precision_arg(p, default=demo.precision)
    p.set_defaults(func=run)


def add_regression_args(p: argparse.ArgumentParser) -> None:
    """The options of ``--task regression`` (protocol B)."""
    g = p.add_argument_group("regression (--task regression)")
    g.add_argument(
        "--target",
        help="the numeric column to predict, e.g. heat_ref or formation_energy_per_atom (default: none; "
        "required with --task regression)",
    )
    g.add_argument(
        "--queries",
        type=NON_NEGATIVE,
        default=100,
        help="labels to acquire after the initial set; the records hold step 0 (the initial set) and "
        "one step per --batch",
    )
    g.add_argument("--batch", type=POSITIVE, default=1, help="labels per step")
    g.add_argument("--kernel", default="matern12", help="matern12 (default), matern32, matern52 or rbf")
    g.add_argument("--ard", action="store_true", help="one lengthscale per feature")
    g.add_argument(
        "--noise",
        default="learn",
        help="'learn' (default), 0 (noise-free with jitter, as the study) or a fixed variance",
    )
    g.add_argument(
        "--gp-method",
        default="auto",
        choices=["auto", "exact", "sparse"],
        help="exact GP, inducing points (SGPR), or auto by memory",
    )
    g.add_argument("--inducing", type=POSITIVE, default=512, help="inducing points of the sparse method")
    g.add_argument("--fit-iterations", type=POSITIVE, default=200, help="Adam steps of the hyper-parameter fit")
    g.add_argument(
        "--refit-every", type=NON_NEGATIVE, default=0, help="refit hyper-parameters every R queries (0: never)"
    )
    g.add_argument(
        "--embedding", default="train-initial", help="train-initial (default), checkpoint:PATH or composition"
    )
    g.add_argument("--embedding-epochs", type=POSITIVE, default=100, help="train-initial: encoder epochs")
    g.add_argument(
        "--embedding-lr", type=POSITIVE_FLOAT, default=1e-3, help="train-initial: encoder AdamW learning rate"
    )
    g.add_argument(
        "--retrain-every",
        type=NON_NEGATIVE,
        default=0,
        help="retrain the encoder on the labelled set every R queries (0: never)",
    )
    g.add_argument("--checkpoint-every", type=POSITIVE, default=500, help="steps between checkpoints")


def results_table(records: list[dict]) -> str:
    """A fixed-width table of the records (one line per round, numbered from 0 as in records.jsonl)."""
    lines = [f"{'round':>5} {'labelled':>9} {'count':>6} {'accuracy':>9} {'loss':>8} {'train s':>8} {'query s':>8}"]
    for r in records:
        lines.append(
            f"{r['round']:>5} {100 * r['labelled_fraction']:>8.1f}% {r['labelled_count']:>6} "
            f"{100 * r['accuracy']:>8.2f}% {r['loss']:>8.4f} {r['train_seconds']:>8.2f} "
            f"{r['query_seconds']:>8.2f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.task == "regression":
        return run_regression(args)
    return run_classification(args)


def run_classification(args: argparse.Namespace) -> int:
    from functools import partial

    from alkernels import strategies
    from alkernels.data import load_split
    from alkernels.loop import ActiveLearningLoop, LoopConfig, LoopRuntime
    from alkernels.models import paper_classifier

    if not args.dataset:
        raise ValueError("--dataset is required (perovskite:N, builtin:N or a path)")
    if args.keep_optimizer and not args.reset_weights:
        raise ValueError("--keep-optimizer only applies with --reset-weights")
    if args.strategy not in strategies.available():
        from alkernels.gp import GP_STRATEGIES

        if args.strategy in GP_STRATEGIES:
            raise ValueError(
                f"--strategy {args.strategy} is a regression strategy: add --task regression "
                f"(classification strategies: {', '.join(strategies.available())})"
            )
    if args.strategy in strategies.MC_PASS and args.dropout == 0.0:
        raise ValueError(
            f"--strategy {args.strategy} scores MC-dropout passes, which are identical with "
            "--dropout 0 (the scores would rank rounding noise); use --dropout > 0 or a "
            "single-pass strategy"
        )
    check_device(args.device)
    check_dataset(args.dataset)
    # the loop's settings, checked by constructing them, before any data is read
    config = LoopConfig(
        initial=args.initial,
        query_size=args.query_size,
        rounds=args.rounds,
        epochs=args.epochs,
        epoch_budget=args.epoch_budget,
        reset_weights=args.reset_weights,
        reset_optimizer=not args.keep_optimizer if args.reset_weights else None,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    apply_threads(args)
    strategy = strategies.make(
        args.strategy, passes=args.passes, cache_dir=args.cache_dir or default_cache_dir(), nonfinite=args.nonfinite
    )
    if rank_zero(args):
        check_output_dir(args.out, resume=args.resume, restart_round=args.restart_round)
    device, data_first = start_distributed(args)
    t0 = time.perf_counter()
    with data_first:
        data = load_split(
            args.dataset,
            label=args.label,
            structures=args.max_structures,
            split=(1.0 - args.test_fraction, args.test_fraction),
            cutoff=args.cutoff,
            graph_mode=args.graph_mode,
            cache_dir=args.cache_dir,
            workers=args.workers,
            label_mode=args.label_mode or "spacegroup",
        )
    log.info(
        f"dataset {args.dataset}: {len(data.train)} train / {len(data.test)} test structures, "
        f"{len(set(data.train_labels.tolist()))} space groups in train "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    loop = ActiveLearningLoop(
        partial(paper_classifier, args.backend, args.dropout, args.precision, num_classes=data.num_classes),
        strategy,
        data.train,
        data.test,
        config,
        out_dir=args.out,
        runtime=LoopRuntime(device=device, progress=True, distributed=args.distributed),
        metadata={
            "dataset": data.name,
            "label": args.label,
            "max_structures": args.max_structures,
            "test_fraction": args.test_fraction,
            "cutoff": args.cutoff,
            "graph_mode": args.graph_mode,
            **({"label_mode": data.label_mode} if data.label_mode != "spacegroup" else {}),
        },
    )
    t1 = time.perf_counter()
    try:
        records = loop.run(resume=args.resume, restart_round=args.restart_round)
    except ValueError as err:
        raise cli_words(err) from err
    if rank_zero(args):
        print(
            f"{args.strategy}, seed {args.seed}: rounds 0-{len(records) - 1} in {time.perf_counter() - t1:.1f} s "
            f"(records in {loop.records_path})"
        )
        print(results_table(records))
    stop_distributed(args)
    return 0


def parse_noise(text: str) -> float | None:
    """``--noise``: ``learn`` -> None, else a non-negative number."""
    if text == "learn":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"--noise must be 'learn', 0 or a positive variance, got {text!r}")
    return value


def regression_table(records: list[dict], rows: int = 11) -> str:
    """A fixed-width table of about ``rows`` evenly spaced steps (always the first and last)."""
    picks = sorted({round(k * (len(records) - 1) / max(rows - 1, 1)) for k in range(rows)})
    lines = [f"{'step':>6} {'labelled':>9} {'MAE':>10} {'RMSE':>10} {'query ms':>9} {'update ms':>10}"]
    for r in (records[i] for i in picks):
        lines.append(
            f"{r['step']:>6} {r['labelled_count']:>9} {r['mae']:>10.5f} {r['rmse']:>10.5f} "
            f"{1e3 * r['query_seconds']:>9.2f} {1e3 * r['update_seconds']:>10.2f}"
        )
    return "\n".join(lines)


def run_regression(args: argparse.Namespace) -> int:
    """``alkernels run --task regression``: one GP active-learning run (protocol B)."""
    from functools import partial

    from alkernels.data import load_regression
    from alkernels.gp import (
        Embedding,
        GPActiveLearner,
        GPConfig,
        GPFitConfig,
        GPKernelConfig,
        GPLoopConfig,
        GPSolverConfig,
        get_strategy,
    )

    if not args.dataset:
        raise ValueError("--dataset is required (a structure file, or several separated by commas)")
    if not args.target:
        raise ValueError("--task regression needs --target COLUMN (the property to predict)")
    if args.distributed:
        raise ValueError("--distributed applies to --task classification; a GP run is one process")
    check_device(args.device)
    check_dataset(args.dataset)
    # the run's and the GP's settings, checked by constructing them, before the data is read
    try:
        strategy = get_strategy(args.strategy)
    except ValueError as err:
        from alkernels.strategies import available

        if args.strategy not in available():
            raise
        raise ValueError(f"{err}; {args.strategy} is a classification strategy: drop --task regression") from err
    config = GPLoopConfig(
        strategy=strategy,
        initial=args.initial,
        queries=args.queries,
        batch=args.batch,
        refit_every=args.refit_every,
        retrain_every=args.retrain_every,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    gp = GPConfig(
        GPKernelConfig(args.kernel, ard=args.ard, noise=parse_noise(args.noise)),
        GPFitConfig(iterations=args.fit_iterations),
        GPSolverConfig(method=args.gp_method, inducing_points=args.inducing),
    )
    embedding = Embedding(
        args.embedding,
        epochs=args.embedding_epochs,
        lr=args.embedding_lr,
        backend=args.backend,
        device=args.device,
        cache_dir=args.cache_dir or default_cache_dir(),
        progress=True,
    )
    check_output_dir(args.out, resume=args.resume, restart_round=args.restart_round)
    apply_threads(args)
    t0 = time.perf_counter()
    data = load_regression(
        args.dataset,
        args.target,
        test_fraction=args.test_fraction,
        structures=args.max_structures,
        cutoff=args.cutoff,
        graph_mode=args.graph_mode,
        cache_dir=args.cache_dir,
        workers=args.workers,
    )
    log.info(
        f"dataset {data.name}: {len(data.train)} pool / {len(data.test)} test structures with a finite "
        f"{args.target!r} ({time.perf_counter() - t0:.1f} s)"
    )
    if data.skipped:
        reasons = "; ".join(f"{row}: {why}" for row, why in data.skipped[:3])
        log.warning(f"skipped {len(data.skipped)} rows (first: {reasons})")
    learner = GPActiveLearner(
        partial(embedding, data.dataset),
        data.y,
        data.train,
        data.test,
        config,
        out_dir=args.out,
        gp=gp,
        progress=True,
        metadata={
            "dataset": data.name,
            "target": args.target,
            "skipped": len(data.skipped),
            "test_fraction": args.test_fraction,
            **embedding.describe(),
        },
    )
    t1 = time.perf_counter()
    try:
        records = learner.run(resume=args.resume, restart_round=args.restart_round)
    except ValueError as err:
        raise cli_words(err) from err
    print(
        f"{args.strategy}, seed {args.seed}: {args.queries} queries in {len(records) - 1} steps of up to "
        f"{args.batch}, after step 0 (the fit on the initial set), in {time.perf_counter() - t1:.1f} s "
        f"(records in {learner.records_path})"
    )
    print(regression_table(records))
    return 0
