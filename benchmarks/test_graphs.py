"""Graph building (periodic mode): alkernels' ``build_graphs`` (vesin) against ASE's neighbour list.

Runs on the built-in synthetic crystals (about 10-atom cells); needs the ``data`` extra. Groups:

- ``graphs/1 process/<n> structures``: ours (the baseline) and the builder on
  ``ase.neighborlist`` on the same ``ase_n`` structures, one process each; the edge counts are
  checked to agree.
- ``graphs/worker processes/<n> structures``: ours with 1 and with ``workers`` processes.
- ``graphs/end to end/<total> structures``: the synthetic set tiled to ``total``: hashing,
  validation, neighbour lists, CSR assembly and the write of the memory-mapped cache (one cold
  build), and the reload of that cache.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import settings
from benchmarks.harness import timed
from benchmarks.peers import ase_build
from benchmarks.workloads import has_extra

pytestmark = pytest.mark.skipif(not has_extra("data"), reason="needs the 'data' extra: pip install 'alkernels[data]'")


@pytest.fixture(scope="module")
def structures(sizes: settings.Sizes) -> list[Any]:
    """``n`` synthetic crystals (seed 0, cached on disk) as ``ase.Atoms``."""
    from alkernels.data import default_cache_dir, synthetic_crystals

    return synthetic_crystals(sizes.graphs.n, seed=0, cache_dir=default_cache_dir()).atoms


@pytest.fixture(scope="module")
def cache_root() -> Iterator[Path]:
    """A fresh directory for the end-to-end build's cache, removed after the module."""
    path = Path(tempfile.mkdtemp(prefix="alkernels-bench-graphs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _facts(structures: list[Any], cutoff: float) -> dict[str, Any]:
    """Mode, cutoff and size of a build, for ``extra_info``."""
    return {
        "mode": "periodic",
        "cutoff": cutoff,
        "structures": len(structures),
        "mean_atoms": round(float(np.mean([len(a) for a in structures])), 2),
    }


def test_one_process_ours(benchmark: Any, sizes: settings.Sizes, structures: list[Any]) -> None:
    """Ours: ``build_graphs`` in one process on the first ``ase_n`` structures."""
    from alkernels.data import build_graphs

    g = sizes.graphs
    subset = structures[: g.ase_n]
    graphs = timed(
        benchmark,
        lambda: build_graphs(subset, cutoff=g.cutoff, workers=1),
        group=f"graphs/1 process/{len(subset)} structures",
        impl="alkernels",
        role="baseline",
        items=len(subset),
        unit="structures",
        rounds=g.rounds,
        warmup=1,
        device=torch.device("cpu"),
        **_facts(subset, g.cutoff),
    )
    benchmark.extra_info["notes"] = {"edges per atom": round(graphs.num_edges / graphs.num_nodes, 1)}


def test_one_process_ase(benchmark: Any, sizes: settings.Sizes, structures: list[Any]) -> None:
    """Peer: the ASE neighbour-list builder on the same structures (edge counts must agree)."""
    from alkernels.data import build_graphs

    g = sizes.graphs
    subset = structures[: g.ase_n]
    arrays = timed(
        benchmark,
        lambda: ase_build(subset, g.cutoff),
        group=f"graphs/1 process/{len(subset)} structures",
        impl="ase",
        role="peer",
        items=len(subset),
        unit="structures",
        rounds=g.rounds,
        warmup=1,
        device=torch.device("cpu"),
        **_facts(subset, g.cutoff),
    )
    assert np.array_equal(arrays[4], build_graphs(subset, cutoff=g.cutoff, workers=1).edge_ptr), (
        "ASE and alkernels find different edges"
    )


@pytest.mark.parametrize("workers", ["1", "many"])
def test_worker_processes(benchmark: Any, sizes: settings.Sizes, structures: list[Any], workers: str) -> None:
    """Ours: ``build_graphs`` on ``n`` structures with 1 or ``workers`` processes."""
    from alkernels.data import build_graphs

    g = sizes.graphs
    count = 1 if workers == "1" else g.workers
    timed(
        benchmark,
        lambda: build_graphs(structures, cutoff=g.cutoff, workers=count),
        group=f"graphs/worker processes/{len(structures)} structures",
        impl=f"{count} process" + ("es" if count > 1 else ""),
        role="baseline" if workers == "1" else "ours",
        items=len(structures),
        unit="structures",
        rounds=g.rounds,
        warmup=1,
        device=torch.device("cpu"),
        workers=count,
        **_facts(structures, g.cutoff),
    )


def _tiled(structures: list[Any], total: int) -> list[Any]:
    """``total`` structures cycling over ``structures``."""
    return (structures * (total // len(structures) + 1))[:total]


def test_end_to_end_build(benchmark: Any, sizes: settings.Sizes, structures: list[Any], cache_root: Path) -> None:
    """Ours: a cold build of ``total`` structures into a fresh on-disk cache."""
    from alkernels.data import build_graphs

    g = sizes.graphs
    tiled = _tiled(structures, g.total)
    graphs = timed(
        benchmark,
        lambda: build_graphs(tiled, cutoff=g.cutoff, workers=g.workers, cache_dir=cache_root),
        group=f"graphs/end to end/{g.total} structures",
        impl="build + cache write",
        role="baseline",
        items=g.total,
        unit="structures",
        rounds=1,
        warmup=0,
        device=torch.device("cpu"),
        workers=g.workers,
        **_facts(tiled, g.cutoff),
    )
    cache_mib = sum(f.stat().st_size for f in Path(graphs.path).iterdir()) / 2**20
    benchmark.extra_info["notes"] = {"cache MiB": round(cache_mib, 1)}


def test_end_to_end_reload(benchmark: Any, sizes: settings.Sizes, structures: list[Any], cache_root: Path) -> None:
    """Reloads the cache the build test wrote (the warm-up call builds it if that test did not run)."""
    from alkernels.data import build_graphs

    g = sizes.graphs
    tiled = _tiled(structures, g.total)
    timed(
        benchmark,
        lambda: build_graphs(tiled, cutoff=g.cutoff, workers=g.workers, cache_dir=cache_root),
        group=f"graphs/end to end/{g.total} structures",
        impl="cache reload",
        role="ours",
        items=g.total,
        unit="structures",
        rounds=g.rounds,
        warmup=1,
        device=torch.device("cpu"),
        workers=g.workers,
        **_facts(tiled, g.cutoff),
    )
