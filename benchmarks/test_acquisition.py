"""Acquisition scoring + top-k: ours against its peers on the same logits, in one run.

Input: float32 logits [T, N, C] (normal, scaled by 3), query k = 10% of N. Groups:

- ``acquisition/score + top-k/<strategy>``: ``select`` (ours, the baseline) against the eager
  PyTorch formulas (one op per step), the same under ``torch.compile`` (full size only; compile
  time excluded by a warm-up call and recorded) and baal's NumPy heuristics on the [N, C, T]
  layout (the four strategies baal has; scores only, CPU only). Peak extra memory of ours and the
  eager peer is measured for BALD in fresh processes.
- ``acquisition/score + top-k/all 8 strategies``: ``score_all`` (one pass) and a top-k per
  strategy, against the eager peer run for each of the eight.
- ``acquisition/memcpy/copy of the logits``: the copy bandwidth of the same device in the same run
  (the summary reports every member's read GB/s against it).
- ``acquisition/scaling with N/N=<n>``: ours and eager BALD over pool sizes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from alkernels import acquisition
from benchmarks import settings
from benchmarks.harness import timed
from benchmarks.memory import peak_extra_mib
from benchmarks.peers import BAAL_HEURISTICS, baal_heuristic, eager_select
from benchmarks.workloads import make_logits, query_size, sync

STRATEGIES: tuple[str, ...] = acquisition.STRATEGIES
SELECT = "acquisition/score + top-k"
ALL = f"{SELECT}/all 8 strategies"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the scaling tests over the pool sizes of this run."""
    if "pool_n" in metafunc.fixturenames:
        ns = settings.from_config(metafunc.config).acquisition.scaling_N
        metafunc.parametrize("pool_n", ns, ids=[f"N={n}" for n in ns])


def _facts(logits: torch.Tensor, **more: Any) -> dict[str, Any]:
    """Sizes and bytes read of a call on ``logits``, for ``extra_info``."""
    T, N, C = logits.shape
    return {"T": T, "N": N, "C": C, "bytes": logits.numel() * logits.element_size(), **more}


def _memory(impl: str, sizes: settings.Sizes, device: torch.device) -> float | None:
    """Peak extra MiB of one BALD selection by ``impl`` ("ours" or "eager") in a fresh process."""
    a = sizes.acquisition
    params = {
        "impl": impl,
        "strategy": "bald",
        "T": a.T,
        "N": a.N,
        "C": a.C,
        "k": query_size(a.N, a.k_fraction),
        "device": device.type,
    }
    return peak_extra_mib("acquisition", params)


@pytest.fixture(scope="module")
def k(sizes: settings.Sizes) -> int:
    """The query size of the main comparison."""
    return query_size(sizes.acquisition.N, sizes.acquisition.k_fraction)


@pytest.fixture(scope="module")
def baal_logits(logits: torch.Tensor, device: torch.device) -> Any:
    """The logits as baal expects them: a NumPy array [N, C, T] (CPU runs only)."""
    pytest.importorskip("baal")
    if device.type != "cpu":
        pytest.skip("baal's heuristics run in NumPy on the CPU; compared on CPU runs only")
    return logits.permute(1, 2, 0).contiguous().numpy()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_select_ours(
    benchmark: Any, logits: torch.Tensor, k: int, sizes: settings.Sizes, device: torch.device, strategy: str
) -> None:
    """Ours: fused score + top-k of one strategy (``select``); BALD also measures peak memory."""
    timed(
        benchmark,
        lambda: acquisition.select(logits, strategy, k),
        group=f"{SELECT}/{strategy}",
        impl="ours",
        role="baseline",
        items=logits.shape[1],
        unit="samples",
        rounds=sizes.acquisition.rounds,
        warmup=2,
        device=device,
        **_facts(logits, k=k, strategy=strategy),
    )
    if strategy == "bald":
        benchmark.extra_info["peak_extra_mib"] = _memory("ours", sizes, device)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_select_eager(
    benchmark: Any, logits: torch.Tensor, k: int, sizes: settings.Sizes, device: torch.device, strategy: str
) -> None:
    """Peer: the strategy's formulas as eager PyTorch ops, then ``torch.topk``."""
    peer = eager_select(strategy)
    timed(
        benchmark,
        lambda: peer(logits, k),
        group=f"{SELECT}/{strategy}",
        impl="eager",
        role="peer",
        items=logits.shape[1],
        unit="samples",
        rounds=sizes.acquisition.peer_rounds,
        warmup=1,
        device=device,
        **_facts(logits, k=k, strategy=strategy),
    )
    if strategy == "bald":
        benchmark.extra_info["peak_extra_mib"] = _memory("eager", sizes, device)


@pytest.mark.full
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_select_compiled(
    benchmark: Any, logits: torch.Tensor, k: int, sizes: settings.Sizes, device: torch.device, strategy: str
) -> None:
    """Peer: the eager formulas under ``torch.compile`` (compile time recorded, not timed)."""
    torch.compiler.reset()  # each strategy compiles afresh, within the recompile limit
    compiled = torch.compile(eager_select(strategy), dynamic=False)
    start = time.perf_counter()
    compiled(logits, k)
    sync(device)
    compile_s = time.perf_counter() - start
    timed(
        benchmark,
        lambda: compiled(logits, k),
        group=f"{SELECT}/{strategy}",
        impl="compiled",
        role="peer",
        items=logits.shape[1],
        unit="samples",
        rounds=sizes.acquisition.peer_rounds,
        warmup=1,
        device=device,
        **_facts(logits, k=k, strategy=strategy, compile_s=compile_s),
    )


@pytest.mark.parametrize("strategy", sorted(BAAL_HEURISTICS))
def test_select_baal(
    benchmark: Any,
    logits: torch.Tensor,
    baal_logits: Any,
    k: int,
    sizes: settings.Sizes,
    device: torch.device,
    strategy: str,
) -> None:
    """Peer: baal's heuristic on [N, C, T] NumPy logits (scores only, no ranking)."""
    score = baal_heuristic(strategy)
    facts = _facts(logits, k=k, strategy=strategy, heuristic=BAAL_HEURISTICS[strategy], scope="scores only")
    timed(
        benchmark,
        lambda: score(baal_logits),
        group=f"{SELECT}/{strategy}",
        impl="baal",
        role="peer",
        items=logits.shape[1],
        unit="samples",
        rounds=sizes.acquisition.peer_rounds,
        warmup=1,
        device=device,
        **facts,
    )


def test_all_strategies_ours(
    benchmark: Any, logits: torch.Tensor, k: int, sizes: settings.Sizes, device: torch.device
) -> None:
    """Ours: all eight scores in one pass (``score_all``), then a top-k per strategy."""

    def run() -> list[tuple[torch.Tensor, torch.Tensor]]:
        scores = acquisition.score_all(logits)
        return [acquisition.topk(scores[s], k) for s in STRATEGIES]

    timed(
        benchmark,
        run,
        group=ALL,
        impl="ours",
        role="baseline",
        items=logits.shape[1],
        unit="samples",
        rounds=sizes.acquisition.rounds,
        warmup=2,
        device=device,
        **_facts(logits, k=k),
    )


def test_all_strategies_eager(
    benchmark: Any, logits: torch.Tensor, k: int, sizes: settings.Sizes, device: torch.device
) -> None:
    """Peer: the eager formulas and a top-k for each of the eight strategies."""
    peers = [eager_select(s) for s in STRATEGIES]
    timed(
        benchmark,
        lambda: [peer(logits, k) for peer in peers],
        group=ALL,
        impl="eager",
        role="peer",
        items=logits.shape[1],
        unit="samples",
        rounds=sizes.acquisition.peer_rounds,
        warmup=1,
        device=device,
        **_facts(logits, k=k),
    )


def test_memcpy(benchmark: Any, logits: torch.Tensor, sizes: settings.Sizes, device: torch.device) -> None:
    """Reference: a device copy of the logits (reads and writes every byte)."""
    dst = torch.empty_like(logits)
    facts = _facts(logits)
    facts["bytes"] *= 2  # a copy reads and writes every byte
    timed(
        benchmark,
        lambda: dst.copy_(logits),
        group="acquisition/memcpy/copy of the logits",
        impl="memcpy",
        role="reference",
        items=logits.shape[1],
        unit="samples",
        rounds=sizes.acquisition.rounds,
        warmup=2,
        device=device,
        **facts,
    )


def _pool(logits: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Logits of a pool of ``n``: the first ``n`` samples of the main input (a contiguous copy),
    or new logits when ``n`` exceeds it."""
    T, N, C = logits.shape
    if n == N:
        return logits
    return logits[:, :n].contiguous() if n < N else make_logits(T, n, C, device)


def test_scaling_ours(
    benchmark: Any, logits: torch.Tensor, sizes: settings.Sizes, device: torch.device, pool_n: int
) -> None:
    """Ours: BALD ``select`` on a pool of ``pool_n`` samples."""
    pool, k = _pool(logits, pool_n, device), query_size(pool_n, sizes.acquisition.k_fraction)
    timed(
        benchmark,
        lambda: acquisition.select(pool, "bald", k),
        group=f"acquisition/scaling with N/N={pool_n}",
        impl="ours",
        role="baseline",
        items=pool_n,
        unit="samples",
        rounds=sizes.acquisition.rounds,
        warmup=2,
        device=device,
        scaling="N",
        **_facts(pool, k=k, strategy="bald"),
    )


def test_scaling_eager(
    benchmark: Any, logits: torch.Tensor, sizes: settings.Sizes, device: torch.device, pool_n: int
) -> None:
    """Peer: eager BALD on a pool of ``pool_n`` samples."""
    pool, k = _pool(logits, pool_n, device), query_size(pool_n, sizes.acquisition.k_fraction)
    peer = eager_select("bald")
    timed(
        benchmark,
        lambda: peer(pool, k),
        group=f"acquisition/scaling with N/N={pool_n}",
        impl="eager",
        role="peer",
        items=pool_n,
        unit="samples",
        rounds=sizes.acquisition.peer_rounds,
        warmup=1,
        device=device,
        scaling="N",
        **_facts(pool, k=k, strategy="bald"),
    )
