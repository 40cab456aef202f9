"""Benchmark: the GP active-learning loop of protocol B at fixed hyper-parameters.

Every step of the loop picks the unlabelled pool structure with the largest posterior variance,
labels it, and updates the posterior mean and variance of the whole tracked set (the pool and
the fixed test set, whose means give the step's MAE). Implementations, all float64 on identical
inputs and hyper-parameters, in this process:

- ``ours``: :class:`alkernels.ops.gp.ExactPosterior`, one incremental update per label;
- ``gpytorch_refit`` (a): a gpytorch ``ExactGP`` given the labelled set (``set_train_data``)
  and asked for the tracked set's posterior at every step: what a user would write;
- ``numpy_refit`` (b): the study's approach, a Cholesky refit per step in NumPy/SciPy;
- ``gpytorch_fantasy`` (c): gpytorch's ``ExactGP.get_fantasy_model`` chained one label at a
  time (documented as a cheap update of the prediction caches).

Every implementation must make the same selections as ``ours`` (checked at every timed step).
The refit peers cost O(n^3) per step, so at the full size each peer is timed at a documented
subsample of steps (``sample_steps``: its labelled set is ``ours``'s at that step, the fantasy
peer's model holds the labels before the step and adds the last one) and the loop total is the
trapezoid integral of those per-step times over all steps (slightly high for a convex curve).
``test_direct_small_loop`` runs every implementation through a whole, smaller loop for a direct
comparison. Results: ``benchmarks/results/gp_<dataset>_cpu_<threads>t.json`` (format
:data:`benchmarks.report.GP_FORMAT`, rendered into ``benchmarks/README.md`` by
``benchmarks/report.py``) and the same tables printed (:func:`benchmarks.report.render_gp_result`).

Sizes: :class:`benchmarks.settings.GPSizes`, ``quick`` (synthetic 32-d features) or ``full``
(the perovskite set: both perov5 files, the model-free composition descriptor of
:func:`alkernels.gp.composition_features`, a fixed 20% test split, 10% of the pool labelled at
the start, 3,000 queries), chosen and overridden like every suite's (``--bench-size``,
``--bench-set gp.queries=500``); ``benchmarks/bench_gp.py`` also sets the thread count.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

gpytorch = pytest.importorskip("gpytorch")
scipy_linalg = pytest.importorskip("scipy.linalg")
import scipy  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402

from alkernels.ops.gp import ExactPosterior, GPParams  # noqa: E402
from benchmarks.report import GP_FORMAT, render_gp_result  # noqa: E402
from benchmarks.settings import GPSizes, Sizes  # noqa: E402
from benchmarks.summary import environment  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PEERS = ("gpytorch_refit", "numpy_refit", "gpytorch_fantasy")


# -- the workload -----------------------------------------------------------------------------
@dataclass
class Workload:
    """Tracked inputs ``x`` [pool + test, d] (pool first), standardised targets ``y``, the
    initial labelled pool positions and the fixed hyper-parameters."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    n_pool: int
    initial: list[int]
    queries: int
    params: GPParams


def _synthetic(pool: int, test: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(pool + test, dim))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=pool + test)
    return x, y


def _perovskite() -> tuple[np.ndarray, np.ndarray, int]:
    """Composition descriptors and heat_ref of both perov5 files, pool first then the fixed
    20% test split (seed 0) of :func:`alkernels.data.load_regression`, and the pool size."""
    if not (DATA / "perov5_val.csv.gz").exists():
        pytest.skip(f"the perovskite files are not in {DATA}")
    from alkernels.data import load_regression
    from alkernels.gp import composition_features

    data = load_regression(f"{DATA / 'perov5_val.csv.gz'},{DATA / 'perov5_test.csv.gz'}", "heat_ref", cutoff=5.0)
    feats = composition_features(data.dataset.graphs)
    order = np.concatenate([data.train, data.test])
    return feats[order], data.y[order], len(data.train)


def make_workload(name: str, x: np.ndarray, y: np.ndarray, n_pool: int, initial: int | float, queries: int) -> Workload:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    xt = xt - xt[:n_pool].mean(0)
    yt = torch.from_numpy(np.asarray(y, dtype=np.float64))
    yt = (yt - yt[:n_pool].mean()) / yt[:n_pool].std()
    n0 = int(round(initial * n_pool)) if isinstance(initial, float) else initial
    initial_set = sorted(np.random.default_rng(0).choice(n_pool, n0, replace=False).tolist())
    sub = xt[:n_pool][:: max(1, n_pool // 1000)]
    lengthscale = float(torch.pdist(sub).median())  # the median heuristic, fixed
    params = GPParams("matern12", torch.tensor([lengthscale]), outputscale=1.0, noise=0.1, mean=0.0)
    return Workload(name, xt, yt, n_pool, initial_set, queries, params)


# -- the implementations ----------------------------------------------------------------------
def run_ours(w: Workload, steps: int | None = None) -> tuple[list[int], list[float]]:
    """The incremental loop; returns (picked pool positions, seconds per step)."""
    post = ExactPosterior(w.params, w.x, capacity=len(w.initial) + w.queries)
    post.condition(w.x[w.initial], w.y[w.initial])
    free = torch.ones(w.n_pool, dtype=torch.bool)
    free[w.initial] = False
    picks, times = [], []
    for _ in range(w.queries if steps is None else steps):
        t0 = time.perf_counter()
        var = torch.where(free, post.pool_var[: w.n_pool], torch.full((w.n_pool,), -torch.inf, dtype=torch.float64))
        j = int(torch.argmax(var))
        post.condition(w.x[j : j + 1], w.y[j : j + 1], pool_index=torch.tensor([j]))
        free[j] = False
        times.append(time.perf_counter() - t0)
        picks.append(j)
    return picks, times


def _argmax_free(var: torch.Tensor, n_pool: int, labelled: list[int]) -> int:
    v = var[:n_pool].clone()
    v[labelled] = -torch.inf
    return int(torch.argmax(v))


class _Exact(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, params: GPParams):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=0.5))
        self.covar_module.base_kernel.lengthscale = float(params.lengthscale[0])
        self.covar_module.outputscale = params.outputscale
        self.mean_module.constant.data.fill_(params.mean)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _gpytorch_model(w: Workload, labelled: list[int]) -> _Exact:
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    lik.noise = w.params.noise
    model = _Exact(w.x[labelled], w.y[labelled], lik, w.params).double()
    model.eval()
    lik.eval()
    return model


def _exact_settings() -> contextlib.ExitStack:
    """gpytorch exactly: Cholesky at every size, exact predictive variances."""
    stack = contextlib.ExitStack()
    for setting in (
        gpytorch.settings.max_cholesky_size(10**9),
        gpytorch.settings.fast_pred_var(False),
        gpytorch.settings.skip_posterior_variances(False),
    ):
        stack.enter_context(setting)
    return stack


def _posterior(model: _Exact, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), _exact_settings():
        out = model(x)
        return out.mean, out.variance


def gpytorch_refit_step(w: Workload, labelled: list[int], model: _Exact | None = None) -> int:
    """(a) One step: the exact GP given the labelled set, posterior of the tracked set, argmax."""
    model = model or _gpytorch_model(w, labelled)
    model.set_train_data(w.x[labelled], w.y[labelled], strict=False)
    _, var = _posterior(model, w.x)
    return _argmax_free(var, w.n_pool, labelled)


def numpy_refit_step(w: Workload, labelled: list[int]) -> int:
    """(b) One step of the study's approach: a Cholesky refit in NumPy/SciPy."""
    x = w.x.numpy()
    ls, s2, noise, m = float(w.params.lengthscale[0]), w.params.outputscale, w.params.noise, w.params.mean
    xl, yl = x[labelled], w.y.numpy()[labelled]
    k = s2 * np.exp(-cdist(xl, xl) / ls)
    k[np.diag_indices_from(k)] += noise
    low = np.linalg.cholesky(k)
    ks = s2 * np.exp(-cdist(xl, x) / ls)
    alpha = scipy_linalg.cho_solve((low, True), yl - m)
    v = scipy_linalg.solve_triangular(low, ks, lower=True)
    mean = m + ks.T @ alpha  # the test MAE of the step needs it, as in the loop
    var = s2 - np.einsum("ij,ij->j", v, v)
    assert mean.shape == var.shape
    return _argmax_free(torch.from_numpy(var), w.n_pool, labelled)


def gpytorch_fantasy_model(w: Workload, labelled: list[int]) -> _Exact:
    """A gpytorch model on ``labelled`` with its prediction caches built (untimed set-up)."""
    model = _gpytorch_model(w, labelled)
    _posterior(model, w.x)
    return model


def gpytorch_fantasy_step(w: Workload, model: _Exact, new: int, labelled: list[int]) -> tuple[_Exact, int]:
    """(c) One step: add the new label with ``get_fantasy_model``, posterior of the tracked set."""
    with _exact_settings():
        model = model.get_fantasy_model(w.x[new : new + 1], w.y[new : new + 1])
    _, var = _posterior(model, w.x)
    return model, _argmax_free(var, w.n_pool, labelled)


# -- fixtures ---------------------------------------------------------------------------------
RESULT: dict = {}


@pytest.fixture(scope="module")
def gp(sizes: Sizes) -> GPSizes:
    """The GP sizes of this run's preset (``--bench-size``, ``--bench-set gp.FIELD=VALUE``)."""
    return sizes.gp


@pytest.fixture(scope="module")
def workload(gp) -> Workload:
    if gp.dataset == "perovskite":
        x, y, n_pool = _perovskite()
    else:
        x, y = _synthetic(gp.pool, gp.test, gp.dim)
        n_pool = gp.pool
    return make_workload(gp.dataset, x, y, n_pool, gp.initial, gp.queries)


@pytest.fixture(scope="module")
def small(gp, workload) -> Workload:
    keep = np.r_[0 : gp.small_pool, workload.n_pool : workload.n_pool + gp.small_test]
    return make_workload(
        f"{workload.name}-small",
        workload.x[keep].numpy(),
        workload.y[keep].numpy(),
        gp.small_pool,
        gp.small_initial,
        gp.small_queries,
    )


@pytest.fixture(scope="module", autouse=True)
def write_summary(sizes: Sizes, gp: GPSizes):
    RESULT.clear()
    RESULT.update(format=GP_FORMAT, sizes=asdict(gp), ours={}, peers={}, small={})
    load_start = os.getloadavg()[0]
    yield
    if not RESULT["ours"]:
        return
    _finish(gp, sizes.preset, load_start)


def _finish(gp: GPSizes, preset: str, load_start: float) -> None:
    """Integrate the peers' sampled steps, record the environment (that of the other suites,
    plus gpytorch and scipy), write the result file and print its tables."""
    ours = RESULT["ours"]
    q = ours["queries"]
    for peer, entry in RESULT["peers"].items():
        steps = sorted(int(s) for s in entry["step_seconds"])
        if len(steps) >= 2:
            ts = [entry["step_seconds"][str(s)] for s in steps]
            grid = np.arange(q)
            entry["loop_seconds_integrated"] = float(np.interp(grid, steps, ts).sum())
            entry["ratio_to_ours"] = entry["loop_seconds_integrated"] / ours["loop_seconds"]
    env = environment(preset, torch.device("cpu"), load_start)
    del env["fused_backend"]  # the GP loop runs no fused op (docs/gp.md: BLAS does the work)
    env["versions"].update(gpytorch=gpytorch.__version__, scipy=scipy.__version__)
    RESULT["environment"] = env
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gp_{gp.dataset}_cpu_{env['threads']}t.json"
    path.write_text(json.dumps(RESULT, indent=1, sort_keys=True) + "\n")
    print("\n" + "\n".join(render_gp_result(RESULT)) + f"\nwritten: {path}")


# -- the tests --------------------------------------------------------------------------------
def test_ours_whole_loop(benchmark, workload, gp):
    """Our incremental loop over every query (one timed round)."""
    benchmark.group = "gp/loop"
    out = benchmark.pedantic(run_ours, args=(workload,), rounds=1, iterations=1, warmup_rounds=0)
    picks, times = out
    assert len(set(picks)) == workload.queries and not set(picks) & set(workload.initial)
    RESULT["ours"] = {
        "workload": workload.name,
        "queries": workload.queries,
        "initial": len(workload.initial),
        "tracked": int(workload.x.shape[0]),
        "dim": int(workload.x.shape[1]),
        "params": workload.params.to_dict(),
        "loop_seconds": float(sum(times)),
        "picks": picks,
        "step_seconds": {str(s): float(np.median(times[max(0, s - 5) : s + 6])) for s in gp.sample_steps},
        "step_seconds_every_100": [float(np.median(times[s : s + 100])) for s in range(0, len(times), 100)],
    }
    benchmark.extra_info.update(impl="ours", role="baseline", items=workload.queries, unit="queries")


@pytest.mark.parametrize("peer", PEERS)
def test_peer_sampled_steps(benchmark, workload, gp, peer):
    """One peer at the sampled steps, from ``ours``'s labelled set there; same pick required."""
    if not RESULT["ours"]:
        pytest.skip("needs test_ours_whole_loop first")
    picks = RESULT["ours"]["picks"]
    entry = RESULT["peers"].setdefault(peer, {"step_seconds": {}, "same_picks": True})
    benchmark.group = f"gp/step/{peer}"
    seconds = []
    for s in gp.sample_steps:
        labelled = workload.initial + picks[:s]
        if peer == "gpytorch_refit":
            model = _gpytorch_model(workload, labelled)

            def step():
                return gpytorch_refit_step(workload, labelled, model)
        elif peer == "numpy_refit":

            def step():
                return numpy_refit_step(workload, labelled)
        else:
            model = gpytorch_fantasy_model(workload, labelled[:-1])

            def step():
                return gpytorch_fantasy_step(workload, model, labelled[-1], labelled)[1]

        times = []
        for _ in range(gp.step_rounds):
            t0 = time.perf_counter()
            pick = step()
            times.append(time.perf_counter() - t0)
        entry["step_seconds"][str(s)] = float(np.median(times))
        entry["same_picks"] = entry["same_picks"] and pick == picks[s]
        seconds.append(entry["step_seconds"][str(s)])
        assert pick == picks[s], f"{peer} picks {pick} at step {s}, ours {picks[s]}"
    # pytest-benchmark records the last sampled step (the largest n)
    benchmark.pedantic(step, rounds=1, iterations=1)
    benchmark.extra_info.update(impl=peer, role="peer", items=1, unit="queries", step_seconds=seconds)


@pytest.mark.parametrize("impl", ("ours",) + PEERS)
def test_direct_small_loop(benchmark, small, impl):
    """Every implementation through the whole smaller loop; identical pick sequences."""
    benchmark.group = "gp/small-loop"
    if impl == "ours":

        def loop():
            return run_ours(small)[0]
    elif impl == "gpytorch_fantasy":

        def loop():
            model = gpytorch_fantasy_model(small, small.initial)
            labelled, picks = list(small.initial), []
            _, var = _posterior(model, small.x)
            j = _argmax_free(var, small.n_pool, labelled)
            for _ in range(small.queries):
                picks.append(j)
                labelled.append(j)
                model, j = gpytorch_fantasy_step(small, model, j, labelled)
            return picks
    else:
        step_fn = gpytorch_refit_step if impl == "gpytorch_refit" else numpy_refit_step

        def loop():
            labelled, picks = list(small.initial), []
            for _ in range(small.queries):
                j = step_fn(small, labelled)
                picks.append(j)
                labelled.append(j)
            return picks

    t0 = time.perf_counter()
    picks = benchmark.pedantic(loop, rounds=1, iterations=1)
    seconds = time.perf_counter() - t0
    reference = RESULT["small"].get("ours", {}).get("picks", picks)
    RESULT["small"][impl] = {
        "loop_seconds": seconds,
        "queries": small.queries,
        "initial": len(small.initial),
        "tracked": int(small.x.shape[0]),
        "picks": picks,
        "same_picks": picks == reference,
    }
    benchmark.extra_info.update(
        impl=impl, role="baseline" if impl == "ours" else "peer", items=small.queries, unit="queries"
    )
    assert picks == reference, f"{impl} made other selections than ours"


# -- memory -----------------------------------------------------------------------------------
MEMORY_PROBE = r"""
import ctypes, sys, json, torch
from alkernels.ops.gp import ExactPosterior, GPParams, exact_memory_bytes
trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc keeps freed temporaries resident until trimmed
n, p, d, block = (int(a) for a in sys.argv[1:4] + sys.argv[5:6])
dtype = getattr(torch, sys.argv[4])

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

torch.manual_seed(0)
x = torch.randn(p, d, dtype=dtype)
params = GPParams("matern12", torch.tensor([float(d) ** 0.5]), 1.0, 0.1)
warm = ExactPosterior(params, x[:64], capacity=32)  # BLAS/LAPACK set-up is not the posterior's memory
warm.condition(x[:16], torch.randn(16, dtype=dtype), pool_index=torch.arange(16))
warm.condition(x[16:17], torch.randn(1, dtype=dtype), pool_index=torch.tensor([16]))
warm.predict(x[:64])
del warm
trim(0)
base = status("VmRSS")
reset_peak()
post = ExactPosterior(params, x, capacity=n)
post.condition(x[:block], torch.randn(block, dtype=dtype), pool_index=torch.arange(block))
for s in range(block, n):
    post.condition(x[s:s + 1], torch.randn(1, dtype=dtype), pool_index=torch.tensor([s]))
peak_updates = status("VmHWM") - base
trim(0)
held = status("VmRSS") - base
reset_peak()
post.predict(x[:4096])
peak_predict = status("VmHWM") - base
print(json.dumps({"n": n, "p": p, "d": d, "dtype": sys.argv[4], "initial_block": block,
                  "formula_bytes": exact_memory_bytes(n, p, d, dtype), "held_bytes": held,
                  "peak_bytes_updates": peak_updates, "peak_bytes_predict_4096": peak_predict}))
"""


def measure_exact_memory(n: int, p: int, d: int, dtype: str, block: int) -> dict:
    """Resident memory of an :class:`ExactPosterior` grown to n observations over p pool points
    (an initial block of ``block``, then single updates, then one 4,096-row predict), measured
    in a fresh process: RSS held after the updates and peak RSS (VmHWM, reset through
    /proc/self/clear_refs) during the updates and during the predict, over the RSS before.
    Before the two RSS readings glibc's ``malloc_trim`` returns freed heap: its dynamic mmap
    threshold otherwise keeps up to 32 MiB of freed temporaries resident, counted as held."""
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(n), str(p), str(d), dtype, str(block)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_exact_posterior_memory(gp):
    """Allocation check of :func:`alkernels.ops.gp.exact_memory_bytes` at a size that fits,
    and the largest n for a 24 GiB machine from that formula."""
    from alkernels.ops.gp import exact_max_n

    n, p = gp.memory_n, gp.memory_p
    rows = [measure_exact_memory(n, p, 128, dtype, n // 10) for dtype in ("float64", "float32")]
    slack = 8 * 2**20  # allocator and page granularity, independent of the size
    for r in rows:
        assert r["held_bytes"] <= r["formula_bytes"] * 1.05 + slack, r
        assert r["peak_bytes_updates"] <= r["formula_bytes"] * 1.3 + slack, r
    budget = 24 * 2**30
    pools = (0, 7_572, 10_000, 100_000, 1_000_000)  # 7,572: the whole perovskite set
    RESULT["memory"] = {
        "measured": rows,
        "n_max_24GiB": {
            dtype: {str(pool): exact_max_n(budget, pool, 128, getattr(torch, dtype)) for pool in pools}
            for dtype in ("float64", "float32")
        },
    }
