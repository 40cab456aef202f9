"""pytest-benchmark: the costs of sharded pool scoring (model and figures: benchmarks/distributed.md).

1. ``test_merge_*``: the top-k merge as k and the number of ranks R grow, ranks simulated in one
   process: R local top-k lists of k candidates each (the most a rank sends), merged with the
   packed keys (``merge_topk_keys`` + ``unpack_keys``, what every rank runs after the gather)
   and with the two-sort reference as the peer; ``test_pack`` is the per-rank packing.
2. ``test_scoring_one_process``: one process scoring a pool of random graphs with the paper's
   classifier (encoder once, head T = 10 times, streaming BALD top-10%): the per-rank rate.
3. ``test_scoring_local_ranks[R]``: ``benchmarks/bench_distributed.py`` under torchrun on R local
   ranks; its measured figures (query time, per-rank rates, merge, all_gather times) are in
   ``extra_info``; the benchmark's own time includes starting the processes.

Sizes: ``ALK_BENCH_POOL`` (default 2000 structures) and ``ALK_BENCH_MAX_K`` (largest k of the merge
grid, default 100000). The lead's run on a quiet machine::

    OMP_NUM_THREADS=1 ALK_BENCH_POOL=20000 python -m pytest benchmarks/test_distributed.py \\
        --benchmark-json benchmarks/results/distributed_cpu.json

A quick check: ``python -m pytest benchmarks/test_distributed.py -k "1000-2 or pack or one_process"``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alkernels import acquisition, strategies
from alkernels.distributed import shard_range
from alkernels.ops.topk_merge import merge_topk_keys, merge_topk_torch, pack_keys, unpack_keys

ROOT = Path(__file__).resolve().parents[1]
POOL = int(os.environ.get("ALK_BENCH_POOL", "2000"))
KS = tuple(k for k in (1_000, 10_000, 100_000) if k <= int(os.environ.get("ALK_BENCH_MAX_K", "100000")))
RANKS = (2, 8, 64)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def candidates(k: int, ranks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R local top-k lists over a pool of 10 * k * R rows (scores with ties), as (global idx, val)."""
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


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("k", KS)
def test_merge_packed(benchmark, k, ranks):
    idx, val = candidates(k, ranks)
    keys = pack_keys(idx, val)
    got = benchmark(lambda: unpack_keys(merge_topk_keys(keys, k)))
    ref = merge_topk_torch(idx, val, k)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    benchmark.extra_info.update(k=k, ranks=ranks, candidates=int(keys.numel()),
                                gathered_bytes_per_rank=8 * int(keys.numel()))


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("k", KS)
def test_merge_reference(benchmark, k, ranks):
    idx, val = candidates(k, ranks)
    benchmark(merge_topk_torch, idx, val, k)
    benchmark.extra_info.update(k=k, ranks=ranks, candidates=int(idx.numel()))


@pytest.mark.parametrize("k", KS)
def test_pack(benchmark, k):
    idx, val = candidates(k, 1)
    benchmark(pack_keys, idx, val)
    benchmark.extra_info.update(k=k)


def test_scoring_one_process(benchmark):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_distributed import pool_dataset

    from alkernels.models import paper_classifier

    torch.manual_seed(0)
    model = paper_classifier("auto", 0.1).eval()
    pool = strategies.Pool(pool_dataset(POOL, 500), np.arange(POOL), 256)
    bald = strategies.get("bald", passes=10)
    rng = np.random.default_rng(0)
    chosen = benchmark.pedantic(bald.query, args=(model, pool, POOL // 10), kwargs={"rng": rng},
                                rounds=3, iterations=1, warmup_rounds=0)
    assert len(chosen) == POOL // 10
    benchmark.extra_info.update(pool=POOL, k=POOL // 10, T=10,
                                structures_per_s=POOL / benchmark.stats.stats.median)


@pytest.mark.parametrize("ranks", (1, 2))
def test_scoring_local_ranks(benchmark, ranks, tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(ROOT / "benchmarks" / "bench_distributed.py"), "--pool", str(POOL), "--repeats", "3",
           "--out", str(out)]

    def launch():
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        assert res.returncode == 0, res.stderr[-3000:]

    benchmark.pedantic(launch, rounds=1, iterations=1)
    result = json.loads(out.read_text())
    benchmark.extra_info.update({k: result[k] for k in (
        "ranks", "pool", "k", "T", "query_s_median", "structures_per_s", "per_rank_score_structures_per_s",
        "collate_structures_per_s", "merge_s_median", "all_gather_s")})
