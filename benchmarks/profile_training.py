"""Where the time of an AL training epoch and of an MC pool-scoring pass goes, on the CPU.

The two tasks of the EGNN suite's tasks table (``benchmarks/test_egnn.py``), run the library's way
on the same synthetic crystals in matsciml mode (``benchmarks.workloads``), taken apart:

- **Training epoch** (batch 24, :meth:`alkernels.loop.Trainer.adamw`): wall-clock timers around the
  parts of every step (fetching and collating the batch; the encoder's forward; head and loss;
  the backward; the optimiser step), the fused C++ edge kernels timed inside them (a timing
  proxy in front of ``alkernels._C``), after one untimed warm-up epoch. Also: the same epoch
  uninstrumented on 2 threads and on 1; the fixed cost of a step (a batch of one structure: what
  Python, dispatch and the kernels' set-up cost per step, whatever the batch); the AdamW step
  alone in PyTorch's three implementations, with how far their weights drift apart.
- **Pool scoring** (batch 256, T MC-dropout passes, BALD with the streaming top-k, the
  :class:`alkernels.strategies.UncertaintyStrategy` path): the same timers per chunk (collation;
  the encoder, once per chunk; the T head passes; the selector's update), and the strategy's
  ``query`` uninstrumented.

Timers read ``time.perf_counter`` on the host; on the CPU every op is synchronous, so each part's
time is its own. The instrumented totals exceed the uninstrumented ones by the timers' cost
(reported side by side).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/profile_training.py [--threads 2] [--train 2400] [--pool 5120]

writes ``benchmarks/results/profile_cpu_<threads>t.json`` and the block between
``<!-- profile:start -->`` and ``<!-- profile:end -->`` in ``docs/performance.md``
(``--no-write``: print only). Run it on a quiet machine: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import alkernels.ops.message_passing.cpu as cpu_launchers  # noqa: E402
from alkernels.acquisition import StreamingSelector  # noqa: E402
from alkernels.data import GraphBatch, GraphDataset, collate  # noqa: E402
from alkernels.loop import Trainer  # noqa: E402
from alkernels.models import EGNN, SpaceGroupClassifier  # noqa: E402
from alkernels.strategies import Pool, UncertaintyStrategy  # noqa: E402
from benchmarks import summary  # noqa: E402
from benchmarks.workloads import query_size, synthetic_graphs, tiled  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- profile:start -->", "<!-- profile:end -->"
MODE, DISTINCT, TRAIN_BATCH, POOL_BATCH, T = "matsciml", 2000, 24, 256, 10


class _TimedExtension:
    """``alkernels._C`` with its edge-kernel entry points timed into ``seconds``."""

    def __init__(self, module: Any, seconds: dict[str, float]) -> None:
        self._module, self._seconds = module, seconds

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._module, name)
        if not name.startswith("egnn_edge"):
            return fn

        def timed(*args: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self._seconds[name] += time.perf_counter() - t

        return timed


@contextmanager
def kernel_clock() -> Iterator[dict[str, float]]:
    """Seconds spent in each C++ edge kernel (``egnn_edge_forward``, ``egnn_edge_backward``) while
    the context is open."""
    seconds: dict[str, float] = defaultdict(float)
    original = cpu_launchers._module
    module = original()
    cpu_launchers._module = lambda: _TimedExtension(module, seconds)  # type: ignore[assignment]
    try:
        yield seconds
    finally:
        cpu_launchers._module = original  # type: ignore[assignment]


@contextmanager
def module_clock(module: torch.nn.Module) -> Iterator[list[float]]:
    """Seconds spent in ``module``'s forward (a one-element list) while the context is open."""
    spent, started = [0.0], [0.0]
    pre = module.register_forward_pre_hook(lambda *_: started.__setitem__(0, time.perf_counter()))
    post = module.register_forward_hook(lambda *_: spent.__setitem__(0, spent[0] + time.perf_counter() - started[0]))
    try:
        yield spent
    finally:
        pre.remove()
        post.remove()


def _classifier() -> SpaceGroupClassifier:
    torch.manual_seed(0)
    return SpaceGroupClassifier(EGNN(), dropout=0.1)


def _loss(model: torch.nn.Module, batch: GraphBatch) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(batch), batch.y)


def _loader(dataset: GraphDataset, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=TRAIN_BATCH,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )


def _epoch_seconds(model: torch.nn.Module, trainer: Trainer, dataset: GraphDataset) -> float:
    t = time.perf_counter()
    trainer.epoch(_loader(dataset, 1), lambda b: _loss(model, b))
    return time.perf_counter() - t


def profile_training(dataset: GraphDataset) -> dict[str, Any]:
    """The training epoch taken apart (seconds per part, summed over the epoch's steps)."""
    model = _classifier().train()
    trainer = Trainer.adamw(model.parameters(), lr=1e-4)
    opt = trainer.optimizer
    _epoch_seconds(model, trainer, dataset)  # warm-up: graph pages, allocator, thread pool
    parts: dict[str, float] = defaultdict(float)
    steps = 0
    with kernel_clock() as kernels, module_clock(model.encoder) as encoder:
        t_all = time.perf_counter()
        batches = iter(_loader(dataset, 2))
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            t1 = time.perf_counter()
            before = encoder[0]
            loss = _loss(model, batch)
            t2 = time.perf_counter()
            parts["encoder forward"] += encoder[0] - before
            parts["head and loss"] += (t2 - t1) - (encoder[0] - before)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            parts["data"] += t1 - t0
            parts["backward"] += t3 - t2
            parts["optimizer"] += t4 - t3
            steps += 1
        parts["total"] = time.perf_counter() - t_all
    parts["edge forward"] = kernels["egnn_edge_forward"]
    parts["edge backward"] = kernels["egnn_edge_backward"]
    wall = {threads: _threads_epoch(dataset, threads) for threads in sorted({1, torch.get_num_threads()})}
    return {
        "structures": len(dataset),
        "batch": TRAIN_BATCH,
        "steps": steps,
        "seconds": dict(parts),
        "uninstrumented_seconds": {str(k): v for k, v in wall.items()},
        "fixed_step_ms": _fixed_step_ms(dataset),
        "optimizer": _optimizer_variants(dataset),
    }


def _threads_epoch(dataset: GraphDataset, threads: int) -> float:
    """One uninstrumented epoch (after a warm-up one) on ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = _classifier().train()
        trainer = Trainer.adamw(model.parameters(), lr=1e-4)
        _epoch_seconds(model, trainer, dataset)
        return _epoch_seconds(model, trainer, dataset)
    finally:
        torch.set_num_threads(previous)


def _fixed_step_ms(dataset: GraphDataset, steps: int = 60) -> float:
    """Median wall time of a whole training step on a batch of the dataset's smallest structure."""
    sizes = [len(dataset.graphs[int(k)].z) for k in dataset.indices]
    batch = collate([dataset[int(np.argmin(sizes))]])
    model = _classifier().train()
    trainer = Trainer.adamw(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        trainer.step(_loss(model, batch))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times[10:]))


def _optimizer_variants(dataset: GraphDataset, rounds: int = 30, steps: int = 5) -> dict[str, dict[str, Any]]:
    """AdamW's step in its three implementations on copies of the classifier's parameters with
    the gradients of one real batch, interleaved (``rounds`` rounds of ``steps`` steps of each, so
    that drifts of the machine hit all three alike): median ms per step, and the largest weight
    difference from the per-parameter loop after the same ``rounds x steps`` steps."""
    model = _classifier().train()
    _loss(model, collate([dataset[i] for i in range(TRAIN_BATCH)])).backward()
    variants = {"per-parameter loop": {"foreach": False}, "multi-tensor": {}, "fused": {"fused": True}}
    params: dict[str, list[torch.Tensor]] = {}
    optimizers: dict[str, torch.optim.Optimizer] = {}
    for name, options in variants.items():
        params[name] = [p.detach().clone().requires_grad_() for p in model.parameters()]
        for p, original in zip(params[name], model.parameters()):
            p.grad = original.grad.clone()
        optimizers[name] = Trainer.adamw(params[name], lr=1e-4, **options).optimizer
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            t = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times[name].append((time.perf_counter() - t) / steps)
    reference = params["per-parameter loop"]
    results: dict[str, dict[str, Any]] = {
        name: {
            "ms": 1e3 * float(np.median(times[name])),
            "max_abs_weight_diff": max(float((a - b).detach().abs().max()) for a, b in zip(params[name], reference)),
        }
        for name in variants
    }
    results["_tensors"] = {
        "count": len(reference),
        "parameters": sum(p.numel() for p in reference),
        "steps": rounds * steps,
    }
    return results


def profile_pool(dataset: GraphDataset) -> dict[str, Any]:
    """The MC pool-scoring pass taken apart (seconds per part over the pool)."""
    model = _classifier().eval()
    pool = Pool(dataset, np.arange(len(dataset)), batch_size=POOL_BATCH, collate_fn=collate)
    k = query_size(len(dataset), 0.1)
    strategy = UncertaintyStrategy("bald", passes=T)
    strategy.query(model, pool, k, rng=np.random.default_rng(0))  # warm-up
    t = time.perf_counter()
    strategy.query(model, pool, k, rng=np.random.default_rng(0))
    wall = time.perf_counter() - t
    parts: dict[str, float] = defaultdict(float)
    selector = StreamingSelector("bald", k)
    model.eval()
    with torch.no_grad(), kernel_clock() as kernels, module_clock(model.encoder) as encoder:
        t_all = time.perf_counter()
        chunks = pool.chunks()
        while True:
            t0 = time.perf_counter()
            item = next(chunks, None)
            if item is None:
                break
            offset, batch = item
            t1 = time.perf_counter()
            before = encoder[0]
            logits = model.mc_logits(batch, T)
            t2 = time.perf_counter()
            selector.update(logits.float(), offset=offset)
            t3 = time.perf_counter()
            parts["data"] += t1 - t0
            parts["encoder"] += encoder[0] - before
            parts["head passes"] += (t2 - t1) - (encoder[0] - before)
            parts["selection"] += t3 - t2
        parts["total"] = time.perf_counter() - t_all
    parts["edge forward"] = kernels["egnn_edge_forward"]
    return {
        "structures": len(dataset),
        "batch": POOL_BATCH,
        "T": T,
        "chunks": -(-len(dataset) // POOL_BATCH),
        "seconds": dict(parts),
        "uninstrumented_seconds": wall,
    }


def _row(name: str, seconds: float, per: int, total: float) -> str:
    return f"| {name} | {1e3 * seconds / per:.2f} | {100 * seconds / total:.0f}% |"


def table(result: dict[str, Any]) -> str:
    """The markdown block of ``docs/performance.md`` from a result of :func:`main`."""
    tr, po, env = result["training"], result["pool"], result["environment"]
    s, n = tr["seconds"], tr["steps"]
    threads = env["threads"]
    total = s["total"]
    walls = tr["uninstrumented_seconds"]
    rate = {k: tr["structures"] / v for k, v in walls.items()}
    lines = [
        f"Measured by `benchmarks/profile_training.py` on {env['cpu']} ({threads} threads), "
        f"{env['date'][:10]}, commit `{(env.get('commit') or 'unknown')[:7]}`: synthetic crystals in "
        f"{MODE} mode, the paper's classifier, after a warm-up epoch.",
        "",
        f"**Training epoch** ({tr['structures']} structures, batch {tr['batch']}, {n} steps, `Trainer.adamw`):",
        "",
        "| part of a step | ms per step | share |",
        "| --- | --- | --- |",
        _row("fetch and collate the batch", s["data"], n, total),
        _row("encoder forward: fused C++ edge kernels (5 layers)", s["edge forward"], n, total),
        _row(
            "encoder forward: the rest (node MLPs, first-layer split, index build and checks, "
            "embedding, projection, Python)",
            s["encoder forward"] - s["edge forward"],
            n,
            total,
        ),
        _row("head and loss", s["head and loss"], n, total),
        _row("backward: fused C++ edge kernels", s["edge backward"], n, total),
        _row(
            "backward: the rest (autograd of the node MLPs and head, the edge op's per-node GEMMs, Python)",
            s["backward"] - s["edge backward"],
            n,
            total,
        ),
        _row("optimizer step (AdamW, multi-tensor)", s["optimizer"], n, total),
        f"| **total** (instrumented) | **{1e3 * total / n:.2f}** | 100% |",
        "",
    ]
    one, many = rate.get("1"), rate.get(str(threads))
    scaling = f"; on 1 thread {one:.0f} structures/s ({many / one:.2f}x from the second core)" if one and many else ""
    lines += [
        f"Uninstrumented: {many:.0f} structures/s on {threads} threads{scaling}. A step on a batch "
        f"of one structure takes {tr['fixed_step_ms']:.1f} ms: the fixed cost of a step "
        f"(Python, dispatch, the custom operators' argument handling, the kernels' set-up), "
        f"{100 * tr['fixed_step_ms'] / (1e3 * total / n):.0f}% of a batch-{tr['batch']} step.",
        "",
    ]
    opt = tr["optimizer"]
    meta = opt["_tensors"]
    base = opt["per-parameter loop"]["ms"]
    lines += [
        f"**AdamW step** alone ({meta['count']} tensors, {meta['parameters']:,} parameters; the three "
        f"interleaved), weights after {meta['steps']} steps from the same start compared with the "
        "per-parameter loop:",
        "",
        "| implementation | ms per step | speed-up | largest weight difference |",
        "| --- | --- | --- | --- |",
    ]
    labels = {
        "per-parameter loop": "per-parameter loop (PyTorch's CPU default)",
        "multi-tensor": "multi-tensor, `foreach` (`Trainer.adamw`'s default)",
        "fused": "fused (opt-in: `Trainer.adamw(..., fused=True)`)",
    }
    for name, label in labels.items():
        v = opt[name]
        diff = "identical" if v["max_abs_weight_diff"] == 0 else f"{v['max_abs_weight_diff']:.1e}"
        lines.append(f"| {label} | {v['ms']:.2f} | {base / v['ms']:.2f}x | {diff} |")
    p, c = po["seconds"], po["chunks"]
    ptotal = p["total"]
    lines += [
        "",
        f"**MC pool scoring** ({po['structures']} structures, chunks of {po['batch']}, T = {po['T']}, "
        "BALD with the streaming top-k, `UncertaintyStrategy.query`):",
        "",
        "| part of a chunk | ms per chunk | share |",
        "| --- | --- | --- |",
        _row("fetch and collate the chunk", p["data"], c, ptotal),
        _row("encoder: fused C++ edge kernels (5 layers)", p["edge forward"], c, ptotal),
        _row("encoder: the rest", p["encoder"] - p["edge forward"], c, ptotal),
        _row(f"head: {po['T']} dropout passes", p["head passes"], c, ptotal),
        _row("acquisition: fused BALD scores and running top-k", p["selection"], c, ptotal),
        f"| **total** (instrumented) | **{1e3 * ptotal / c:.2f}** | 100% |",
        "",
        f"Uninstrumented: {po['structures'] / po['uninstrumented_seconds']:.0f} structures/s.",
    ]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    """Replace the text between the markers of ``docs/performance.md`` with ``block``."""
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", type=int, default=2400, help="structures in the training epoch")
    parser.add_argument("--pool", type=int, default=5120, help="structures in the scored pool")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    graphs, labels = synthetic_graphs(MODE, DISTINCT)
    result = {
        "format": summary.PROFILE_FORMAT,
        "environment": summary.environment("full", torch.device("cpu"), load),
        "training": profile_training(tiled(graphs, args.train, labels)),
        "pool": profile_pool(tiled(graphs, args.pool)),
    }
    block = table(result)
    print(block)
    if not args.no_write:
        out = ROOT / "benchmarks" / "results" / f"profile_cpu_{args.threads}t.json"
        out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        write_doc(block)
        print(f"wrote {out.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
