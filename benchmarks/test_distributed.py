"""Sharded pool scoring: the top-k merge, the key packing, and scoring on 1 and 2 local ranks.

The model behind these rows and the estimates for large pools are in ``benchmarks/distributed.md``.
Sizes: ``benchmarks.settings.DistributedSizes`` (``--bench-set distributed.pool=20000``). Groups:

- ``distributed/top-k merge, k=<k>/R=<R>``: what every rank runs after the all_gather: the best
  ``k`` of ``R`` local top-k lists of ``k`` candidates each (the most a rank sends), ranks
  simulated in one process. ``packed`` (ours, the baseline: ``merge_topk_keys`` on the packed
  64-bit keys, then ``unpack_keys``) against ``two-sort`` (``merge_topk_torch``, the two stable
  sorts of the reference). The candidates come from a pool of ``10 k R`` scores with ties; both
  results are checked equal before timing. Items are candidates (``k R``); the ``ranks`` scaling
  plot shows the merge rate against ``R``, one line per ``k``.
- ``distributed/key packing/k=<k>``: ``pack_keys`` of one rank's ``k`` candidates.
- ``distributed/pool scoring/N=<pool>``: one BALD query (encoder once, head ``T`` times, fused
  BALD, streaming top-10%) of a pool of random graphs with the paper's classifier: ``1 process``
  (the baseline, ``UncertaintyStrategy.query`` in this process) against ``R rank(s)``
  (``query_distributed`` in ``R`` worker processes joined in a gloo group, see
  :mod:`benchmarks.local_ranks`; their start-up and warm-up are not timed). Every process runs
  ``threads_per_rank`` threads, so ``2 ranks`` uses two cores where ``1 process`` uses one.

The merge rows run on the run's threads (``--bench-threads``); ``distributed.md`` quotes them on
one thread (``--bench-threads 1``). The ``all_gather`` of the keys over a real transport, and
scoring on GPUs or several nodes, are measured by ``benchmarks/bench_distributed.py`` under
torchrun (its own JSON; see ``distributed.md``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch

from alkernels import acquisition
from alkernels.distributed import shard_range
from alkernels.ops.topk_merge import (
    merge_topk_keys,
    merge_topk_torch,
    pack_keys,
    unpack_keys,
)
from benchmarks import settings
from benchmarks.bench_distributed import scoring_workload
from benchmarks.harness import timed
from benchmarks.local_ranks import LocalRanks

MERGE_IMPLS: tuple[str, ...] = ("packed", "two-sort")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the tests over the k, R and rank counts of this run's sizes; the merge cases
    run implementation-fastest, so each candidate set is built once."""
    d = settings.from_config(metafunc.config).distributed
    name = metafunc.definition.name
    if name == "test_merge":
        cases = [
            pytest.param(k, r, impl, id=f"k{k}-R{r}-{impl}") for k in d.ks for r in d.ranks for impl in MERGE_IMPLS
        ]
        metafunc.parametrize("k,ranks,impl", cases)
    elif name == "test_pack":
        metafunc.parametrize("k", d.ks, ids=[f"k{k}" for k in d.ks])
    elif name == "test_scoring_ranks":
        metafunc.parametrize("ranks", d.scoring_ranks, ids=[f"R{r}" for r in d.scoring_ranks])


@pytest.fixture(scope="module")
def dsizes(sizes: settings.Sizes, device: torch.device) -> settings.DistributedSizes:
    """The distributed sizes of this run (CPU runs only: the ranks are CPU processes on gloo)."""
    if device.type != "cpu":
        pytest.skip("the distributed suite runs CPU ranks (gloo); GPU ranks: benchmarks/bench_distributed.py")
    return sizes.distributed


@functools.lru_cache(maxsize=1)
def candidates(k: int, ranks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ranks`` local top-k lists over a pool of ``10 k ranks`` scores with ties (seed 0): int64
    global indices [k ranks] and float32 scores [k ranks]."""
    g = torch.Generator().manual_seed(0)
    n = 10 * k * ranks
    idx, val = [], []
    for r in range(ranks):
        lo, hi = shard_range(n, r, ranks)
        scores = torch.randint(0, 1 << 16, (hi - lo,), generator=g).float() / (1 << 16)
        i, v = acquisition.topk(scores, k)
        idx.append(i + lo)
        val.append(v)
    return torch.cat(idx), torch.cat(val)


def test_merge(benchmark: Any, dsizes: settings.DistributedSizes, k: int, ranks: int, impl: str) -> None:
    """The exact merge of ``ranks`` candidate lists of ``k``: packed keys or two sorts."""
    idx, val = candidates(k, ranks)
    keys = pack_keys(idx, val)
    if impl == "packed":
        got, want = unpack_keys(merge_topk_keys(keys, k)), merge_topk_torch(idx, val, k)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), "packed merge differs from the reference"

        def fn() -> object:
            return unpack_keys(merge_topk_keys(keys, k))
    else:

        def fn() -> object:
            return merge_topk_torch(idx, val, k)

    timed(
        benchmark,
        fn,
        group=f"distributed/top-k merge, k={k}/R={ranks}",
        impl=impl,
        role="baseline" if impl == "packed" else "peer",
        items=idx.numel(),
        unit="candidates",
        rounds=dsizes.merge_rounds,
        warmup=1,
        device=torch.device("cpu"),
        k=k,
        ranks=ranks,
        candidates=idx.numel(),
        scaling="ranks",
        notes={"keys received per rank (MB)": round(8 * idx.numel() / 1e6, 3)},
    )


def test_pack(benchmark: Any, dsizes: settings.DistributedSizes, k: int) -> None:
    """Packing one rank's ``k`` candidates into the 64-bit keys it sends."""
    idx, val = candidates(k, 1)
    timed(
        benchmark,
        lambda: pack_keys(idx, val),
        group=f"distributed/key packing/k={k}",
        impl="pack_keys",
        role="baseline",
        items=k,
        unit="candidates",
        rounds=dsizes.merge_rounds,
        warmup=1,
        device=torch.device("cpu"),
        k=k,
    )


def _scoring_facts(d: settings.DistributedSizes) -> dict[str, Any]:
    """Sizes of a pool-scoring row, for ``extra_info``."""
    return {
        "pool": d.pool,
        "k": d.pool // 10,
        "T": d.T,
        "batch": d.batch,
        "distinct": d.distinct,
        "threads_per_rank": d.threads_per_rank,
        "strategy": "bald",
        "graphs": "random_graphs",
    }


def test_scoring_one_process(benchmark: Any, dsizes: settings.DistributedSizes) -> None:
    """Baseline: ``UncertaintyStrategy.query`` (BALD) on the whole pool in this process."""
    d = dsizes
    before = torch.get_num_threads()
    torch.set_num_threads(d.threads_per_rank)
    try:
        model, pool, bald, warm = scoring_workload(d.pool, d.distinct, d.batch, d.T)
        rng = np.random.default_rng(0)
        bald.query(model, warm, max(1, len(warm) // 10), rng=rng)
        chosen = timed(
            benchmark,
            lambda: bald.query(model, pool, d.pool // 10, rng=rng),
            group=f"distributed/pool scoring/N={d.pool}",
            impl="1 process",
            role="baseline",
            items=d.pool,
            unit="structures",
            rounds=d.rounds,
            warmup=0,
            device=torch.device("cpu"),
            ranks=1,
            **_scoring_facts(d),
        )
    finally:
        torch.set_num_threads(before)
    assert len(np.unique(chosen)) == d.pool // 10


def test_scoring_ranks(benchmark: Any, dsizes: settings.DistributedSizes, ranks: int) -> None:
    """``query_distributed`` (BALD) on ``ranks`` local worker processes, each scoring its shard."""
    d = dsizes
    with LocalRanks(
        ranks, pool=d.pool, distinct=d.distinct, T=d.T, batch=d.batch, threads=d.threads_per_rank
    ) as workers:
        timed(
            benchmark,
            workers.query,
            group=f"distributed/pool scoring/N={d.pool}",
            impl=f"{ranks} rank" + ("s" if ranks > 1 else ""),
            role="ours",
            items=d.pool,
            unit="structures",
            rounds=d.rounds,
            warmup=0,
            device=torch.device("cpu"),
            ranks=ranks,
            transport="gloo, loopback",
            **_scoring_facts(d),
        )
