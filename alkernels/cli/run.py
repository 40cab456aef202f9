"""``alkernels run``: one active-learning run of one strategy, resumable, with a results table."""
from __future__ import annotations

import argparse
import time

from alkernels.data._store import default_cache_dir
from alkernels.ops.dispatch import BACKENDS, normalize_backend


def count_or_fraction(text: str) -> int | float:
    """``"0.1"`` -> 0.1 (a fraction), ``"24"`` -> 24 (a count)."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from err


def add_backend_arg(p: argparse.ArgumentParser, *, default: str | None, what: str) -> None:
    """``--backend`` in the library's one vocabulary (``reference`` is accepted as ``torch``)."""
    p.add_argument("--backend", default=default, type=normalize_backend, choices=BACKENDS,
                   help=f"{what}: {', '.join(BACKENDS)} ('reference' is an alias of 'torch')")


def add_data_args(p: argparse.ArgumentParser, *, default_dataset: str | None) -> None:
    """Dataset and graph options shared by ``run`` and ``reproduce``."""
    p.add_argument("--dataset", default=default_dataset,
                   help="perovskite:N or builtin:N (N generated crystals) or a structure file/folder"
                        + (f" (default {default_dataset})" if default_dataset else " (default: the preset's)"))
    p.add_argument("--label", help="for files: 'spacegroup' (spglib) or a column of space-group numbers")
    p.add_argument("--label-mode", default=None, choices=["spacegroup", "crystal_system", "bravais"],
                   help="classes to predict: the 230 space groups (the paper's task), or, coarser, the 7 crystal "
                        "systems or 14 Bravais lattices of those space groups (default: spacegroup, or the preset's)")
    p.add_argument("--cache-dir", default=None, help=f"generated data and graph cache (default {default_cache_dir()})")
    p.add_argument("--workers", type=int, default=None, help="processes for data generation and graphs")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")


def apply_threads(args: argparse.Namespace, processes: int = 1) -> int:
    """Set torch's intra-op thread count from ``--threads`` (if given) and warn on stderr when
    ``processes`` x the threads each will run exceed the usable cores; returns the threads per
    process (``--threads``, else an even share of the cores when ``processes > 1``, else torch's)."""
    import sys

    import torch

    from alkernels._threads import oversubscription_warning, threads_per_worker

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    threads = threads_per_worker(processes, args.threads) if processes > 1 else torch.get_num_threads()
    warning = oversubscription_warning(processes, threads)
    if warning:
        print(f"alkernels: warning: {warning}", file=sys.stderr)
    return threads


def add_schedule_args(p: argparse.ArgumentParser, *, epochs_default: int | None) -> None:
    """``--epochs`` and ``--epoch-budget`` (the compute-matched schedule), shared by ``run`` and
    ``reproduce``."""
    p.add_argument("--epochs", type=int, default=epochs_default,
                   help="epochs per round" + (f" (default {epochs_default})" if epochs_default else
                                              " (default: the preset's)"))
    p.add_argument("--epoch-budget", type=float, default=None, metavar="E",
                   help="compute-matched schedule instead of fixed epochs: E full-training-set epochs in total "
                        "(E x n_train sample-epochs), the same share for every round, whole epochs and at "
                        "least 1 per round (see alkernels.loop.epochs)")


def add_precision_arg(p: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--precision`` of the GPU (Triton) matmuls."""
    p.add_argument("--precision", default=default, choices=["fp32", "tf32", "bf16"],
                   help="matmul precision of the Triton (GPU) EGNN kernels; the CPU backends compute in "
                        "float32" + (f" (default {default})" if default else " (default: the preset's)"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the active-learning loop for one strategy",
                       description="Train, evaluate and query for --rounds rounds; writes records.jsonl "
                                   "and a checkpoint to --out after every round.")
    p.add_argument("--strategy", required=True, help="a registered strategy, e.g. margin, bald, random")
    add_data_args(p, default_dataset=None)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--rounds", type=int, default=10)
    add_schedule_args(p, epochs_default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--initial", type=count_or_fraction, default=0.1, help="initial labelled count or fraction")
    p.add_argument("--query-size", type=count_or_fraction, default=0.1, help="query count or fraction")
    p.add_argument("--reset-weights", action="store_true", help="reload the initial weights every round")
    p.add_argument("--keep-optimizer", action="store_true",
                   help="with --reset-weights: keep the optimiser state (the paper's framework did)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--dropout", type=float, default=0.1, help="head dropout (MC strategies need > 0)")
    p.add_argument("--passes", type=int, default=10, help="MC-dropout passes T")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out test fraction")
    p.add_argument("--max-structures", type=int, default=None, help="for files: a random subset of this size")
    p.add_argument("--cutoff", type=float, default=4.0, help="graph cutoff in Angstrom")
    p.add_argument("--graph-mode", default="periodic", choices=["periodic", "matsciml"])
    add_backend_arg(p, default="auto", what="EGNN edge-op backend")
    add_precision_arg(p, default="fp32")
    p.set_defaults(func=run)


def results_table(records: list[dict]) -> str:
    """A fixed-width table of the records (one line per round)."""
    lines = [f"{'round':>5} {'labelled':>9} {'count':>6} {'accuracy':>9} {'loss':>8} {'train s':>8} {'query s':>8}"]
    for r in records:
        lines.append(f"{r['round'] + 1:>5} {100 * r['labelled_fraction']:>8.1f}% {r['labelled_count']:>6} "
                     f"{100 * r['accuracy']:>8.2f}% {r['loss']:>8.4f} {r['train_seconds']:>8.2f} "
                     f"{r['query_seconds']:>8.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from functools import partial

    from alkernels import strategies
    from alkernels.data import load_split
    from alkernels.loop import ActiveLearningLoop
    from alkernels.models import paper_classifier

    if not args.dataset:
        raise ValueError("--dataset is required (perovskite:N, builtin:N or a path)")
    if not 0.0 < args.test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.keep_optimizer and not args.reset_weights:
        raise ValueError("--keep-optimizer only applies with --reset-weights")
    apply_threads(args)
    strategy = strategies.make(args.strategy, passes=args.passes, cache_dir=args.cache_dir or default_cache_dir())
    t0 = time.perf_counter()
    data = load_split(args.dataset, label=args.label, structures=args.max_structures,
                     split=(1.0 - args.test_fraction, args.test_fraction), cutoff=args.cutoff,
                     graph_mode=args.graph_mode, cache_dir=args.cache_dir, workers=args.workers,
                     label_mode=args.label_mode or "spacegroup")
    print(f"dataset {args.dataset}: {len(data.train)} train / {len(data.test)} test structures, "
          f"{len(set(data.train_labels.tolist()))} space groups in train "
          f"({time.perf_counter() - t0:.1f} s)")
    loop = ActiveLearningLoop(
        partial(paper_classifier, args.backend, args.dropout, args.precision, num_classes=data.num_classes),
        strategy, data.train, data.test,
        initial=args.initial, query_size=args.query_size, rounds=args.rounds, epochs=args.epochs,
        epoch_budget=args.epoch_budget,
        reset_weights=args.reset_weights, reset_optimizer=not args.keep_optimizer if args.reset_weights else None,
        seed=args.seed, out_dir=args.out, batch_size=args.batch_size, lr=args.lr, device=args.device,
        progress=True, metadata={"dataset": data.name,
                                 **({"label_mode": data.label_mode} if data.label_mode != "spacegroup" else {})})
    t1 = time.perf_counter()
    records = loop.run(resume=args.resume)
    print(f"\n{args.strategy}, seed {args.seed}: {len(records)} rounds in {time.perf_counter() - t1:.1f} s "
          f"(records in {loop.records_path})")
    print(results_table(records))
    return 0
