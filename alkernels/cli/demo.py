"""``alkernels demo``: score a synthetic 100k pool with every strategy and print a table."""

from __future__ import annotations

import argparse
import time

import torch

from alkernels.cli._common import add_backend_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="score a synthetic pool with all eight strategies")
    p.add_argument("--pool", type=int, default=100_000, help="pool size N")
    p.add_argument("--passes", type=int, default=10, help="MC passes T")
    p.add_argument("--classes", type=int, default=230, help="classes C")
    p.add_argument("--k", type=int, default=10_000, help="query size")
    add_backend_arg(p, default="auto", what="acquisition backend")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alkernels import acquisition

    g = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.passes, args.pool, args.classes, generator=g) * 3.0
    t0 = time.perf_counter()
    scores = acquisition.score_all(logits, backend=args.backend)
    t1 = time.perf_counter()
    print(
        f"pool T={args.passes} N={args.pool} C={args.classes}: all 8 strategies in one pass, "
        f"{(t1 - t0) * 1e3:.1f} ms (backend={args.backend})"
    )
    print(f"{'strategy':<28}{'mean score':>12}{'top-k min':>12}{'top-1 index':>13}{'select ms':>11}")
    for name in acquisition.STRATEGIES:
        t0 = time.perf_counter()
        idx, val = acquisition.topk(scores[name], args.k)
        dt = (time.perf_counter() - t0) * 1e3
        print(f"{name:<28}{scores[name].mean().item():>12.4f}{val[-1].item():>12.4f}{int(idx[0]):>13}{dt:>11.2f}")
    return 0
