"""Local ranks for timing sharded pool scoring inside pytest.

:class:`LocalRanks` starts ``R`` worker processes (``python -m benchmarks.local_ranks``, one per
rank) that join one ``gloo`` process group over a file store in a temporary folder, build the same
model and pool (:func:`benchmarks.bench_distributed.pool_dataset`, the paper's classifier with
seed 0) and warm up on one batch. Then each :meth:`LocalRanks.query` sends one line to every
worker, which runs ``strategies.get("bald", passes=T).query_distributed`` (its shard of the pool
scored, the exact global top-10% merged; the path of ``ActiveLearningLoop(distributed=True)``),
and waits for every reply. The caller times ``query()``: the pool query of ``R`` ranks plus a
pipe round trip per rank (well under a millisecond).

Protocol: the worker writes ``@alk ready`` after its warm-up and ``@alk <json>`` after each query
(the selection's size, its index sum and this rank's shard, so the parent can check that every
rank returned the same selection); ``exit`` on stdin ends it. Each worker runs with
``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set to the threads per rank; its stderr goes to
a file whose tail is shown when it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "@alk "


class LocalRanks:
    """``ranks`` worker processes scoring one pool together (see the module doc).

    Args:
        ranks: the world size R.
        pool: structures in the pool; each query selects ``pool // 10``.
        distinct: distinct random structures tiled to the pool.
        T: MC-dropout passes.
        batch: graphs per scoring batch.
        threads: torch/OpenMP threads of each rank.
        timeout: seconds any collective may wait (``ALKERNELS_DIST_TIMEOUT`` of the workers).
    """

    def __init__(
        self, ranks: int, *, pool: int, distinct: int, T: int, batch: int, threads: int, timeout: float = 300.0
    ) -> None:
        if ranks < 1:
            raise ValueError(f"ranks must be positive, got {ranks}")
        self.ranks, self.k = ranks, pool // 10
        self._dir = Path(tempfile.mkdtemp(prefix="alk-ranks-"))
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "GLOO_SOCKET_IFNAME": "lo",
            "ALKERNELS_DIST_TIMEOUT": str(timeout),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        }
        args = [
            "--world",
            str(ranks),
            "--store",
            str(self._dir / "store"),
            "--pool",
            str(pool),
            "--distinct",
            str(distinct),
            "--T",
            str(T),
            "--batch",
            str(batch),
            "--threads",
            str(threads),
        ]
        self._logs: list[IO[str]] = []
        self._procs: list[subprocess.Popen[str]] = []
        try:
            for rank in range(ranks):
                log = open(self._dir / f"rank{rank}.log", "w")  # noqa: SIM115 (closed in close())
                self._logs.append(log)
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "benchmarks.local_ranks", "--rank", str(rank), *args],
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                        bufsize=1,
                    )
                )
            for rank in range(ranks):
                if self._reply(rank) != "ready":
                    raise RuntimeError(self._failure(rank, "did not report ready"))
        except BaseException:
            self.close()
            raise

    def _reply(self, rank: int) -> str:
        """The next protocol line of ``rank`` (other output skipped); raises when it ended."""
        stdout = self._procs[rank].stdout
        assert stdout is not None
        for line in stdout:
            if line.startswith(PREFIX):
                return line[len(PREFIX) :].strip()
        raise RuntimeError(self._failure(rank, "ended"))

    def _failure(self, rank: int, what: str) -> str:
        """An error message with the tail of ``rank``'s stderr."""
        self._logs[rank].flush()
        tail = (self._dir / f"rank{rank}.log").read_text()[-3000:]
        return f"local rank {rank} of {self.ranks} {what} (exit status {self._procs[rank].poll()}):\n{tail}"

    def query(self) -> list[dict[str, Any]]:
        """One pool query on every rank; the replies, by rank. Raises unless every rank selected
        the same ``k`` samples."""
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write("query\n")
            proc.stdin.flush()
        replies = [json.loads(self._reply(rank)) for rank in range(self.ranks)]
        selections = {(r["selected"], r["index_sum"]) for r in replies}
        if len(selections) != 1 or replies[0]["selected"] != self.k:
            raise RuntimeError(f"the ranks disagree on the selection or its size (k = {self.k}): {replies}")
        return replies

    def close(self) -> None:
        """Ask every worker to exit; end those that do not within 60 s; remove the folder."""
        for proc in self._procs:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write("exit\n")
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in self._procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self._logs:
            log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalRanks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker(argv: list[str] | None = None) -> None:
    """One rank: join the group, build the model and pool, warm up, then serve queries."""
    parser = argparse.ArgumentParser(description="one local rank of benchmarks.local_ranks (started by it)")
    for name in ("rank", "world", "pool", "distinct", "T", "batch", "threads"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--store", required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from alkernels import distributed
    from benchmarks.bench_distributed import scoring_workload

    torch.set_num_threads(args.threads)
    distributed.init_process_group(
        device="cpu", init_method=f"file://{args.store}", rank=args.rank, world_size=args.world
    )
    model, pool, bald, warm = scoring_workload(args.pool, args.distinct, args.batch, args.T)
    rng = np.random.default_rng(0)
    bald.query_distributed(model, warm, max(1, len(warm) // 10), rng=rng)
    print(PREFIX + "ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "query":
            break
        chosen = bald.query_distributed(model, pool, args.pool // 10, rng=rng)
        shard = pool.shard(distributed.rank(), distributed.world_size())[1]
        reply = {"rank": args.rank, "shard": len(shard), "selected": len(chosen), "index_sum": int(chosen.sum())}
        print(PREFIX + json.dumps(reply), flush=True)
    distributed.destroy_process_group()


if __name__ == "__main__":
    _worker()
