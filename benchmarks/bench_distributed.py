"""Sharded pool scoring on R ranks, launched by torchrun (one process per rank).

Every rank scores its shard of a pool of ``--pool`` random crystal graphs (``random_graphs``, the
``--distinct`` structures tiled; no neighbour library) with the paper's classifier: per batch of
``--batch`` graphs the encoder runs once, the head ``--T`` times with dropout on, and a
``DistributedStreamingSelector("bald", k = pool // 10)`` consumes the [T, b, 230] logits. Then the
ranks gather and merge the exact global top-k. Per repeat and rank it records

- ``collate_s``: building the batches alone (a separate pass; bounds any accelerator's rate),
- ``score_s``: this rank's shard, batches + encoder + T heads + fused BALD + local top-k,
- ``merge_s``: the two all_gathers and the merge (collective, starts when this rank is done, so
  faster ranks also wait for the slowest; the summary takes the rank that arrived last),
- ``query_s``: from the barrier before the query to the end of the merge (the slowest rank sets it),

and, with ``--gather-keys``, the time of one ``all_gather`` of that many 8-byte keys per rank
(the candidate exchange of a query with k = that number) on this transport. Rank 0 writes the
JSON (machine, versions, sizes, load average) and prints a table. The pytest-benchmark suite
(``benchmarks/test_distributed.py``) times the same query on 1 and 2 local ranks against one
process; this script adds the per-rank breakdown, the all_gather times, GPUs and several nodes.
Examples::

    torchrun --standalone --nproc_per_node 1 benchmarks/bench_distributed.py \
        --out benchmarks/results/distributed_r1.json
    torchrun --standalone --nproc_per_node 2 benchmarks/bench_distributed.py \
        --out benchmarks/results/distributed_r2.json
    torchrun --standalone --nproc_per_node 1 benchmarks/bench_distributed.py --threads 2 \
        --out benchmarks/results/distributed_r1t2.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist

from alkernels import distributed as D
from alkernels import strategies
from alkernels.data import GraphDataset, random_graphs
from alkernels.models import paper_classifier
from alkernels.ops import topk_merge
from alkernels.strategies import Pool, Strategy


def pool_dataset(n: int, distinct: int) -> GraphDataset:
    """``n`` graphs: ``distinct`` random cells of 4-20 atoms (matsciml edges), tiled."""
    graphs = random_graphs(distinct, atoms=(4, 20), seed=0)
    return GraphDataset(graphs, y=np.zeros(distinct, dtype=np.int64), indices=np.resize(np.arange(distinct), n))


def scoring_workload(
    pool_n: int, distinct: int, batch: int, passes: int
) -> tuple[torch.nn.Module, Pool, Strategy, Pool]:
    """What the pool-scoring comparison times, the same in one process and on every rank: the
    paper's classifier (seed 0, eval mode), a pool of ``pool_n`` graphs (:func:`pool_dataset`) in
    batches of ``batch``, BALD with ``passes`` MC passes, and a one-batch pool to warm it up."""
    torch.manual_seed(0)
    model = paper_classifier("auto", 0.1).eval()
    pool = Pool(pool_dataset(pool_n, distinct), np.arange(pool_n), batch)
    warm = Pool(pool.dataset, np.arange(min(pool_n, batch)), batch)
    return model, pool, strategies.get("bald", passes=passes), warm


@torch.no_grad()
def one_query(model: torch.nn.Module, pool: Pool, k: int, passes: int, device: torch.device) -> dict:
    """Score this rank's shard and merge the global top-k; per-rank timings in seconds."""
    start, part = pool.shard(D.rank(), D.world_size())
    t0 = time.perf_counter()
    for _ in part.chunks():
        pass
    collate_s = time.perf_counter() - t0
    tdist.barrier()
    t0 = time.perf_counter()
    selector = D.DistributedStreamingSelector("bald", k)
    for offset, batch in part.chunks():
        selector.update(model.mc_logits(batch.to(device), passes).float(), start + offset)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    idx, _ = selector.result()
    t2 = time.perf_counter()
    assert idx.numel() == k
    return {"shard": len(part), "collate_s": collate_s, "score_s": t1 - t0, "merge_s": t2 - t1, "query_s": t2 - t0}


def gather_keys(n: int, device: torch.device, repeats: int) -> float:
    """Median seconds of one all_gather of ``n`` int64 keys per rank (after a warm-up)."""
    keys = torch.randint(0, 2**62, (n,), device=device)
    out = [torch.empty_like(keys) for _ in range(D.world_size())]
    times = []
    for _ in range(repeats + 1):
        tdist.barrier()
        t0 = time.perf_counter()
        tdist.all_gather(out, keys)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    merged = torch.cat(out)
    topk_merge.merge_topk_keys(merged, n)  # the merge that follows (not timed here)
    return statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", type=int, default=20_000, help="pool size N")
    p.add_argument("--distinct", type=int, default=500, help="distinct random structures, tiled")
    p.add_argument("--T", type=int, default=10, help="MC-dropout passes")
    p.add_argument("--batch", type=int, default=256, help="graphs per scoring batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--gather-keys",
        default="1000,10000,100000,1000000",
        help="comma-separated key counts per rank to time one all_gather of ('' to skip)",
    )
    p.add_argument("--out", default=None, help="JSON file (written by rank 0)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = D.init_process_group(device=args.device)
    rank, world = D.rank(), D.world_size()
    torch.manual_seed(0)
    model = paper_classifier("auto", 0.1).to(device).eval()
    pool = Pool(pool_dataset(args.pool, args.distinct), np.arange(args.pool), args.batch)
    k = args.pool // 10
    one_query(
        model, Pool(pool.dataset, np.arange(min(args.pool, 4 * args.batch)), args.batch), 10, args.T, device
    )  # warm-up
    rows = []
    for _ in range(args.repeats):
        mine = one_query(model, pool, k, args.T, device)
        rows.append(D.all_gather_objects(mine))
    gathers = {int(n): gather_keys(int(n), device, args.repeats) for n in args.gather_keys.split(",") if n}
    if rank == 0:
        query = [max(r["query_s"] for r in rep) for rep in rows]
        result = {
            "benchmark": "sharded pool scoring (encoder once, head T times, streaming BALD top-10%) and merge",
            "command": "torchrun --nproc_per_node {} benchmarks/bench_distributed.py {}".format(
                world, " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
            ),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "backend": tdist.get_backend(),
                "device": str(device),
                "load_average_1min": os.getloadavg()[0],
            },
            "ranks": world,
            "threads_per_rank": args.threads,
            "pool": args.pool,
            "k": k,
            "T": args.T,
            "batch": args.batch,
            "repeats": rows,
            "query_s_median": statistics.median(query),
            "structures_per_s": args.pool / statistics.median(query),
            "per_rank_score_structures_per_s": statistics.median(
                r["shard"] / r["score_s"] for rep in rows for r in rep if r["shard"]
            ),
            "collate_structures_per_s": statistics.median(
                r["shard"] / r["collate_s"] for rep in rows for r in rep if r["shard"]
            ),
            "merge_s_median": statistics.median(min(r["merge_s"] for r in rep) for rep in rows),
            "all_gather_s": {str(n): s for n, s in gathers.items()},
        }
        print(
            f"{world} rank(s) x {args.threads} thread(s), pool {args.pool}, k {k}, T {args.T}: "
            f"query {result['query_s_median']:.2f} s ({result['structures_per_s']:.0f} structures/s); "
            f"per rank {result['per_rank_score_structures_per_s']:.0f} structures/s scoring, "
            f"{result['collate_structures_per_s']:.0f} structures/s batching; merge "
            f"{1e3 * result['merge_s_median']:.1f} ms"
        )
        for n, s in gathers.items():
            print(f"  all_gather of {n} keys/rank: {1e3 * s:.2f} ms ({8 * n * world / s / 1e9:.2f} GB/s gathered)")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
    D.destroy_process_group()


if __name__ == "__main__":
    main()
