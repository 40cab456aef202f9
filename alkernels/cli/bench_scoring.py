"""``alkernels bench-scoring``: score a synthetic pool of random logits with every acquisition
function in one fused pass, then time the top-k selection of each (a micro-benchmark)."""

from __future__ import annotations

import argparse
import time

from alkernels.cli._common import NON_NEGATIVE, POSITIVE, add_backend_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``alkernels bench-scoring``."""
    p = sub.add_parser(
        "bench-scoring",
        help="time the eight acquisition scores on a synthetic pool of random logits",
        description="Draws random logits [passes, pool, classes], scores all eight acquisition "
        "functions in one pass and selects the top --k of each, printing the times and a table.",
    )
    p.add_argument("--pool", type=POSITIVE, default=100_000, help="pool size N")
    p.add_argument("--passes", type=POSITIVE, default=10, help="MC passes T")
    p.add_argument("--classes", type=POSITIVE, default=230, help="classes C")
    p.add_argument("--k", type=POSITIVE, default=10_000, help="query size (at most --pool)")
    add_backend_arg(p, default="auto", what="acquisition backend")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of the random logits")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score and select; print the table."""
    if args.k > args.pool:
        raise ValueError(f"--k {args.k} exceeds --pool {args.pool}")
    import torch

    from alkernels import acquisition

    g = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.passes, args.pool, args.classes, generator=g) * 3.0
    t0 = time.perf_counter()
    scores = acquisition.score_all(logits, backend=args.backend)
    t1 = time.perf_counter()
    print(
        f"pool T={args.passes} N={args.pool} C={args.classes}: all {len(acquisition.STRATEGIES)} strategies in "
        f"one pass, {(t1 - t0) * 1e3:.1f} ms (backend={args.backend})"
    )
    print(f"{'strategy':<28}{'mean score':>12}{'top-k min':>12}{'top-1 index':>13}{'select ms':>11}")
    for name in acquisition.STRATEGIES:
        t0 = time.perf_counter()
        idx, val = acquisition.topk(scores[name], args.k)
        dt = (time.perf_counter() - t0) * 1e3
        print(f"{name:<28}{scores[name].mean().item():>12.4f}{val[-1].item():>12.4f}{int(idx[0]):>13}{dt:>11.2f}")
    return 0
