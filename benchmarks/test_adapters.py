"""Benchmark: each framework adapter against the framework's own heuristic, in the same run.

pytest-benchmark suite. Each group (``<framework>:<heuristic>``) holds the framework's native
implementation and the alkernels adapter on the same input; the adapter's entry records its
speed-up over the native one (same run, medians) in ``extra_info["speedup_vs_native"]``.

Input: the reference pool of docs/performance.md, N = 100,000 samples, T = 10 MC iterations,
C = 230 classes, float32 normal logits scaled by 3, in the framework's layout. Set
``ALK_BENCH_N`` for a smaller pool on a quick run. The timed call is what the framework's loop
calls; for baal, ``heuristic.get_ranks(predictions)`` (scores plus the full pool ranking).

Full measurement (quiet machine, two threads; the baal BALD target is >= 50x)::

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m pytest benchmarks/test_adapters.py \\
        --benchmark-only --benchmark-json=benchmarks/results/adapters_cpu2.json

Quick check: ``ALK_BENCH_N=2000 .venv/bin/python -m pytest benchmarks/test_adapters.py``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

N = int(os.environ.get("ALK_BENCH_N", "100000"))
T, C = 10, 230
#: Native heuristics taking seconds per call at full size get fewer rounds.
SLOW_ROUNDS, FAST_ROUNDS = 3, 10

_medians: dict[str, float] = {}


def _info(benchmark, **extra) -> None:
    benchmark.extra_info.update(
        {
            "N": N,
            "T": T,
            "C": C,
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            **extra,
        }
    )


def _record(benchmark, group: str, impl: str) -> None:
    """Store this entry's median; on the adapter's entry, the speed-up over the native one."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: nothing was timed
        return
    _medians[f"{group}/{impl}"] = stats.stats.median
    native = _medians.get(f"{group}/native")
    if impl == "alkernels" and native is not None:
        benchmark.extra_info["speedup_vs_native"] = native / stats.stats.median


@pytest.fixture(scope="module")
def logits_nct() -> np.ndarray:
    """The pool in baal's [N, C, T] layout, float32 logits."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, C, T), dtype=np.float32) * np.float32(3.0)


# ---- baal ----------------------------------------------------------------------------------
BAAL = ("BALD", "Entropy", "Margin", "Certainty")
BAAL_CASES = [(name, impl) for name in BAAL for impl in ("native", "alkernels")]


@pytest.mark.parametrize(("name", "impl"), BAAL_CASES, ids=[f"{n}-{i}" for n, i in BAAL_CASES])
def test_baal(benchmark, logits_nct: np.ndarray, name: str, impl: str) -> None:
    heuristics = pytest.importorskip("baal.active.heuristics")
    from alkernels.adapters import baal as adapter

    group = f"baal:{name}"
    benchmark.group = group
    heuristic = getattr(heuristics if impl == "native" else adapter, name)()
    rounds = SLOW_ROUNDS if impl == "native" and name == "BALD" else FAST_ROUNDS
    _info(
        benchmark, framework="baal", heuristic=name, impl=impl, layout="[N, C, T]", call="get_ranks"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks, scores = benchmark.pedantic(
            heuristic.get_ranks, args=(logits_nct,), rounds=rounds, iterations=1, warmup_rounds=1
        )
    assert ranks.shape == scores.shape == (N,)
    _record(benchmark, group, impl)


@pytest.mark.parametrize("impl", ["native", "alkernels"])
def test_baal_generator(benchmark, logits_nct: np.ndarray, impl: str) -> None:
    """BALD on ModelWrapper.predict_on_dataset_generator's form: batches of 1,000 samples, each
    an [n, C, T] view of memory laid out [T, n, C] as the wrapper yields them."""
    heuristics = pytest.importorskip("baal.active.heuristics")
    from alkernels.adapters import baal as adapter

    batch = 1000
    chunks = [
        np.ascontiguousarray(logits_nct[a : a + batch].transpose(2, 0, 1)).transpose(1, 2, 0)
        for a in range(0, N, batch)
    ]
    group = "baal:BALD-generator"
    benchmark.group = group
    heuristic = (heuristics if impl == "native" else adapter).BALD()
    _info(
        benchmark,
        framework="baal",
        heuristic="BALD",
        impl=impl,
        layout="generator of [n, C, T]",
        batch=batch,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks, _ = benchmark.pedantic(
            lambda: heuristic.get_ranks(c for c in chunks),
            rounds=SLOW_ROUNDS if impl == "native" else FAST_ROUNDS,
            iterations=1,
            warmup_rounds=1,
        )
    assert ranks.shape == (N,)
    _record(benchmark, group, impl)
