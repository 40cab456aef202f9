"""pytest configuration of the benchmark suite: options, sizes, shared inputs and the summary JSON.

Options (see ``pytest benchmarks/ --help``, group "alkernels benchmarks"):

``--bench-size quick|full``
    the size preset of :mod:`benchmarks.settings` (default quick). Tests marked ``full`` (the
    ``torch.compile`` peer, trained weights, the training and pool-scoring tasks) are skipped at
    quick sizes; ``-m "not full"`` deselects them at any size.
``--bench-threads N``
    ``torch.set_num_threads(N)`` (the fused C++ kernels use the same OpenMP pool) and
    ``OMP_NUM_THREADS=N`` for the memory probes' child processes. OpenMP reads
    ``OMP_NUM_THREADS`` when its runtime starts, before this option is seen, so the entry scripts
    ``benchmarks/bench_*.py`` set the variable and then exec pytest; when calling pytest directly,
    set ``OMP_NUM_THREADS=N`` too.
``--bench-device cpu|cuda``
    where inputs and models live (default cpu).
``--bench-out PATH``
    the summary JSON of every suite that ran (default: one file per suite,
    ``benchmarks/results/local/<suite>_<device>_<threads>t_<size>.json``, a folder git ignores).
``--bench-commit``
    write the per-suite files into ``benchmarks/results/`` instead, the committed results that
    ``report.py`` renders (the size stays in the name, so a quick run never replaces a full one).
``--bench-set SUITE.FIELD=VALUE``
    override one size (repeatable), e.g. ``--bench-set acquisition.N=50000``.

pytest-benchmark's own options work as usual (``--benchmark-json``, ``--benchmark-autosave``,
``--benchmark-compare``, ...). The summary is written when at least one benchmark was timed.
It covers the suites of :data:`benchmarks.settings.SUITES` but the GP loop (``test_gp.py``),
which writes its own result file (``gp_<dataset>_cpu_<threads>t.json``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
import torch

from alkernels.data import GraphSet
from benchmarks import settings, summary
from benchmarks.workloads import has_extra, make_logits, timing_graphs

RESULTS = Path(__file__).resolve().parent / "results"

_SIZES = pytest.StashKey[settings.Sizes]()
_RECORDS = pytest.StashKey[list[dict[str, Any]]]()
_WRITTEN = pytest.StashKey[list[Path]]()
_LOAD = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--bench-*`` options of the module doc."""
    group = parser.getgroup("alkernels benchmarks")
    group.addoption(
        "--bench-size",
        choices=sorted(settings.PRESETS),
        default="quick",
        help="size preset (default quick; full is the reference size of docs/performance.md)",
    )
    group.addoption(
        "--bench-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch/OpenMP threads (also set OMP_NUM_THREADS=N before starting pytest)",
    )
    group.addoption("--bench-device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    group.addoption(
        "--bench-out",
        type=Path,
        default=None,
        metavar="PATH",
        help="summary JSON path (default benchmarks/results/local/<suite>_<device>_<threads>t_<size>.json)",
    )
    group.addoption(
        "--bench-commit",
        action="store_true",
        help="write the summaries into benchmarks/results/ (committed, rendered by report.py)",
    )
    group.addoption(
        "--bench-set",
        action="append",
        default=[],
        metavar="SUITE.FIELD=VALUE",
        help="override one size of the preset (repeatable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the sizes, apply the thread count, check the device, start the record list."""
    config.addinivalue_line("markers", "full: runs only with --bench-size full")
    try:
        config.stash[_SIZES] = settings.from_config(config)
    except ValueError as err:
        raise pytest.UsageError(str(err)) from err
    threads = config.getoption("--bench-threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--bench-threads must be positive, got {threads}")
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if config.getoption("--bench-device") == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: no CUDA device is available")
    config.stash[_RECORDS] = []
    config.stash[_WRITTEN] = []
    config.stash[_LOAD] = os.getloadavg()[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``full`` unless the full sizes run."""
    if config.stash[_SIZES].preset == "full":
        return
    skip = pytest.mark.skip(reason="full size only (--bench-size full)")
    for item in items:
        if item.get_closest_marker("full"):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the statistics and metadata of every passed test that timed something."""
    report = yield
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if call.when == "call" and report.passed and fixture is not None:
        record = summary.record_of(fixture)
        if record is not None:
            item.config.stash[_RECORDS].append(record)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the summary JSON of every suite that timed something (see :mod:`benchmarks.summary`)."""
    config = session.config
    records = config.stash.get(_RECORDS, [])
    if not records:
        return
    sizes = config.stash[_SIZES]
    device = torch.device(config.getoption("--bench-device"))
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        suite = record["group"].split("/", 1)[0]
        if suite in settings.SUITES and suite != "gp":  # the GP loop writes its own file (test_gp.py)
            by_suite.setdefault(suite, []).append(record)
    if not by_suite:
        return
    env = summary.environment(sizes.preset, device, config.stash[_LOAD])
    suites = {name: summary.suite_summary(recs, sizes.suite(name)) for name, recs in by_suite.items()}
    out = config.getoption("--bench-out")
    if out is not None:
        targets = {out: suites}
    else:
        folder = RESULTS if config.getoption("--bench-commit") else RESULTS / "local"
        targets = {
            folder / result_name(name, device.type, env["threads"], sizes.preset): {name: s}
            for name, s in suites.items()
        }
    for path, content in targets.items():
        summary.write(path, {"format": summary.FORMAT, "environment": env, "suites": content})
        config.stash[_WRITTEN].append(path)


def result_name(suite: str, device: str, threads: int, preset: str) -> str:
    """The file name of a suite's summary: ``<suite>_<device>_<threads>t_<size>.json``."""
    return f"{suite}_{device}_{threads}t_{preset}.json"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Name the summary files written."""
    for path in config.stash.get(_WRITTEN, []):
        terminalreporter.write_line(f"alkernels benchmark summary: {path}")


@pytest.fixture(scope="session")
def sizes(pytestconfig: pytest.Config) -> settings.Sizes:
    """The sizes of this run (preset plus ``--bench-set`` overrides)."""
    return pytestconfig.stash[_SIZES]


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device of ``--bench-device``."""
    return torch.device(pytestconfig.getoption("--bench-device"))


@pytest.fixture(scope="session")
def logits(sizes: settings.Sizes, device: torch.device) -> torch.Tensor:
    """The acquisition input: float32 [T, N, C] normal logits scaled by 3, seed 0."""
    a = sizes.acquisition
    return make_logits(a.T, a.N, a.C, device)


@pytest.fixture(scope="session")
def egnn_graphs(sizes: settings.Sizes) -> Callable[[str], GraphSet]:
    """``mode -> GraphSet``: the distinct graphs the EGNN rows of that mode are timed on, built
    once per session; periodic graphs need the ``data`` extra (the calling test is skipped
    without it)."""
    cache: dict[str, GraphSet] = {}

    def graphs(mode: str) -> GraphSet:
        if mode == "periodic" and not has_extra("data"):
            pytest.skip("periodic graphs need the 'data' extra: pip install 'alkernels[data]'")
        if mode not in cache:
            cache[mode] = timing_graphs(mode, sizes.egnn.distinct)
        return cache[mode]

    return graphs
