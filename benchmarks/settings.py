"""Problem sizes and repetition counts of the benchmark suites.

Two presets: ``quick`` (the CPU suite that must finish in under 5 minutes on 2 cores) and
``full`` (the reference sizes of ``docs/performance.md``; opt-in). Any field can be overridden
from the command line with ``--bench-set SUITE.FIELD=VALUE`` (tuples as comma-separated
integers), e.g. ``--bench-set acquisition.N=50000 --bench-set egnn.batches=24,128``. The sizes
that ran are written into the summary JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AcquisitionSizes:
    """Acquisition scoring: logits [T, N, C] (normal, scaled by 3), a query of ``k_fraction * N``.

    Attributes:
        T: MC-dropout passes.
        N: pool samples of the main comparison.
        C: classes.
        k_fraction: query size as a fraction of the pool.
        scaling_N: pool sizes of the scaling series (ours and eager BALD).
        rounds: timed rounds of our kernels (a few ms to 0.1 s each).
        peer_rounds: timed rounds of the peers (up to seconds each).
    """

    T: int
    N: int
    C: int
    k_fraction: float
    scaling_N: tuple[int, ...]
    rounds: int
    peer_rounds: int


@dataclass(frozen=True)
class EGNNSizes:
    """EGNN encoder forward+backward, and the training and pool-scoring tasks.

    Attributes:
        batches: batch sizes timed for every implementation in both graph modes.
        scaling_batches: extra batch sizes of the scaling series (matsciml mode, fused and torch).
        distinct: distinct structures per graph mode, tiled to the batch and task sizes.
        rounds: timed rounds per batch.
        train_steps: AdamW steps that produce the trained weights (full only).
        train_n: structures in the timed training epoch (full only).
        pool_n: structures in the timed pool-scoring pass (full only).
        pool_batch: batch size of the pool-scoring pass.
        T: MC-dropout passes of the pool-scoring pass.
        force_structures: EMT-labelled fcc cells in the force-training step's batch.
        force_repeat: each cell is the cubic fcc cell repeated this many times per axis.
    """

    batches: tuple[int, ...]
    scaling_batches: tuple[int, ...]
    distinct: int
    rounds: int
    train_steps: int
    train_n: int
    pool_n: int
    pool_batch: int
    T: int
    force_structures: int
    force_repeat: int


@dataclass(frozen=True)
class GraphSizes:
    """Graph building (periodic mode) on the synthetic crystals.

    Attributes:
        n: structures built by ``build_graphs`` with 1 and with ``workers`` processes.
        ase_n: of those, how many both builders (ours and ASE) build in one process.
        total: end-to-end size (the synthetic set tiled), built into a fresh on-disk cache.
        workers: worker processes of the parallel and end-to-end builds.
        cutoff: neighbour cutoff in Angstrom.
        rounds: timed rounds of the in-memory builds.
    """

    n: int
    ase_n: int
    total: int
    workers: int
    cutoff: float
    rounds: int


@dataclass(frozen=True)
class AdapterSizes:
    """Framework adapters (baal, modAL, scikit-activeml) against each framework's own strategy.

    Inputs: float32 logits [T, N, C] (normal, scaled by 3) in each framework's layout, and the
    float64 probabilities the scikit-learn style frameworks return. At full size the inputs take
    about 4 GB and the native peers' temporaries several GB more: allow about 10 GB of memory.

    Attributes:
        N: pool samples.
        T: MC-dropout passes of the MC methods (the single-pass methods use the first pass).
        C: classes.
        k: query size of modAL and scikit-activeml (baal ranks the whole pool).
        rounds: timed rounds of the adapters (milliseconds to 0.1 s each).
        peer_rounds: timed rounds of the native strategies (up to seconds each).
    """

    N: int
    T: int
    C: int
    k: int
    rounds: int
    peer_rounds: int


@dataclass(frozen=True)
class DistributedSizes:
    """Sharded pool scoring: the top-k merge, the key packing, and scoring on local ranks.

    Attributes:
        ks: per-rank candidate list lengths k of the merge grid.
        ranks: numbers of ranks R of the merge grid (simulated in one process).
        merge_rounds: timed rounds of each merge and packing call.
        pool: structures in the scored pool (``random_graphs``, tiled); the query is 10%.
        distinct: distinct random structures tiled to the pool.
        T: MC-dropout passes of the classifier's head.
        batch: graphs per scoring batch.
        scoring_ranks: local rank counts of the scoring comparison (worker processes, gloo).
        threads_per_rank: torch threads of each rank and of the one-process baseline.
        rounds: timed rounds of each pool-scoring query.
    """

    ks: tuple[int, ...]
    ranks: tuple[int, ...]
    merge_rounds: int
    pool: int
    distinct: int
    T: int
    batch: int
    scoring_ranks: tuple[int, ...]
    threads_per_rank: int
    rounds: int


@dataclass(frozen=True)
class GPSizes:
    """The GP query loop (``benchmarks/test_gp.py``): ours against per-query refits.

    Attributes:
        dataset: ``"synthetic"`` (normal features) or ``"perovskite"`` (both perov5 files and
            their composition descriptor, a fixed 20% test split; needs ``../shared/data``).
        pool, test, dim: synthetic sizes (the perovskite set fixes its own; 0 there).
        initial: labelled at the start, a fraction of the pool.
        queries: single-structure queries of the whole loop.
        sample_steps: steps at which the refit and fantasy peers are timed.
        small_pool, small_test, small_initial, small_queries: the direct whole-loop comparison.
        step_rounds: timed repetitions of a sampled peer step.
        memory_n, memory_p: observations and tracked points of the memory probe (d = 128).
    """

    dataset: str
    pool: int
    test: int
    dim: int
    initial: float
    queries: int
    sample_steps: tuple[int, ...]
    small_pool: int
    small_test: int
    small_initial: int
    small_queries: int
    step_rounds: int
    memory_n: int
    memory_p: int


@dataclass(frozen=True)
class Sizes:
    """The sizes of every suite under one preset name."""

    preset: str
    acquisition: AcquisitionSizes
    egnn: EGNNSizes
    graphs: GraphSizes
    adapters: AdapterSizes
    distributed: DistributedSizes
    gp: GPSizes

    def suite(self, name: str) -> dict[str, Any]:
        """The sizes of suite ``name`` as a JSON-ready dict."""
        return dataclasses.asdict(getattr(self, name))


PRESETS: dict[str, Sizes] = {
    "quick": Sizes(
        preset="quick",
        acquisition=AcquisitionSizes(
            T=10, N=20_000, C=230, k_fraction=0.1, scaling_N=(5_000, 10_000, 20_000), rounds=10, peer_rounds=3
        ),
        egnn=EGNNSizes(
            batches=(24, 64),
            scaling_batches=(4, 8, 16, 32),
            distinct=64,
            rounds=3,
            train_steps=400,
            train_n=10_000,
            pool_n=100_000,
            pool_batch=256,
            T=10,
            force_structures=8,
            force_repeat=2,
        ),
        graphs=GraphSizes(n=128, ase_n=32, total=2_000, workers=2, cutoff=6.0, rounds=3),
        adapters=AdapterSizes(N=20_000, T=10, C=230, k=100, rounds=5, peer_rounds=2),
        distributed=DistributedSizes(
            ks=(1_000, 10_000),
            ranks=(2, 8, 64),
            merge_rounds=5,
            pool=1_000,
            distinct=500,
            T=10,
            batch=256,
            scoring_ranks=(1, 2),
            threads_per_rank=1,
            rounds=2,
        ),
        gp=GPSizes(
            dataset="synthetic",
            pool=1200,
            test=300,
            dim=32,
            initial=0.1,
            queries=300,
            sample_steps=(1, 150, 299),
            small_pool=300,
            small_test=100,
            small_initial=30,
            small_queries=60,
            step_rounds=1,
            memory_n=1500,
            memory_p=3000,
        ),
    ),
    "full": Sizes(
        preset="full",
        acquisition=AcquisitionSizes(
            T=10, N=100_000, C=230, k_fraction=0.1, scaling_N=(10_000, 30_000, 100_000), rounds=15, peer_rounds=3
        ),
        egnn=EGNNSizes(
            batches=(24, 256),
            scaling_batches=(8, 64, 128),
            distinct=2_000,
            rounds=5,
            train_steps=400,
            train_n=10_000,
            pool_n=100_000,
            pool_batch=256,
            T=10,
            force_structures=16,
            force_repeat=3,
        ),
        graphs=GraphSizes(n=2_000, ase_n=400, total=100_000, workers=2, cutoff=6.0, rounds=3),
        adapters=AdapterSizes(N=100_000, T=10, C=230, k=100, rounds=10, peer_rounds=3),
        distributed=DistributedSizes(
            ks=(1_000, 10_000, 100_000),
            ranks=(2, 8, 64),
            merge_rounds=5,
            pool=20_000,
            distinct=500,
            T=10,
            batch=256,
            scoring_ranks=(1, 2),
            threads_per_rank=1,
            rounds=3,
        ),
        gp=GPSizes(
            dataset="perovskite",
            pool=0,
            test=0,
            dim=0,
            initial=0.1,
            queries=3000,
            sample_steps=(1, 500, 1000, 1500, 2000, 2500, 2999),
            small_pool=1500,
            small_test=300,
            small_initial=150,
            small_queries=500,
            step_rounds=1,
            memory_n=6000,
            memory_p=12000,
        ),
    ),
}

SUITES: tuple[str, ...] = ("acquisition", "egnn", "graphs", "adapters", "distributed", "gp")
"""Every suite with sizes here; ``gp`` writes its own result file (``benchmarks/test_gp.py``),
the others the summary of ``benchmarks/conftest.py``."""


def _parse(text: str, current: Any) -> Any:
    """``text`` converted to the type of the field's ``current`` value."""
    if isinstance(current, tuple):
        return tuple(int(part) for part in text.split(",") if part)
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    return type(current)(text)


def resolve(preset: str, overrides: list[str]) -> Sizes:
    """The sizes of ``preset`` with ``SUITE.FIELD=VALUE`` overrides applied.

    Raises:
        ValueError: for an unknown preset, suite or field, or a malformed override.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown size preset {preset!r}; expected one of {', '.join(PRESETS)}")
    sizes = PRESETS[preset]
    for item in overrides:
        key, sep, value = item.partition("=")
        suite, dot, name = key.partition(".")
        if not sep or not dot or suite not in SUITES:
            raise ValueError(f"--bench-set expects SUITE.FIELD=VALUE with SUITE in {SUITES}, got {item!r}")
        group = getattr(sizes, suite)
        if name not in {f.name for f in dataclasses.fields(group)}:
            known = ", ".join(f.name for f in dataclasses.fields(group))
            raise ValueError(f"{suite} has no size {name!r}; known: {known}")
        group = dataclasses.replace(group, **{name: _parse(value, getattr(group, name))})
        sizes = dataclasses.replace(sizes, **{suite: group})
    return sizes


def from_config(config: Any) -> Sizes:
    """The sizes selected by a pytest config's ``--bench-size`` and ``--bench-set`` options."""
    return resolve(config.getoption("--bench-size"), config.getoption("--bench-set"))
