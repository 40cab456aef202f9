"""Benchmark: the modAL and scikit-activeml adapters against each framework's native strategy.

Same input for both sides, in the same run: a pool of N = 100,000 samples, C = 230 classes,
float32 normal logits scaled by 3 (as ``bench_acquisition.py``); T = 10 MC passes for the MC
methods, one pass for the others. Each pair is one pytest-benchmark group, native first; the
alkernels entry records ``speedup_vs_native`` (native median / ours) in ``extra_info``.

What each side is given (the model's forward passes are outside the timing on both sides):

- modAL ``uncertainty|margin|entropy_sampling``: a classifier whose ``predict_proba`` returns
  precomputed float64 probabilities [N, C] (what scikit-learn returns).
- modAL ``bald``/``expected_entropy``: the [T, N, C] float32 logits of T dropout passes. Native is
  what ``mc_dropout_bald``/``mc_dropout_max_entropy`` do after the forward passes: the softmax of
  each pass (as ``get_predictions``), ``_bald_divergence``/``_entropy`` on the list of T
  probability arrays, ``multi_argmax``. Ours: ``bald_sampling(mc=...)`` on the logits.
- modAL ``max_std_sampling``: a regressor returning a precomputed std [N].
- scikit-activeml ``least_confident|margin_sampling|entropy``: ``UncertaintySampling.query`` with
  ``fit_clf=False`` and a fitted ``SklearnClassifier`` whose ``predict_proba`` returns the
  precomputed probabilities; every sample unlabelled. Native cost grows with ``batch_size``
  (one full ``rand_argmax`` pass per pick).
- scikit-activeml ``bald``: ``GreedyBALD.query`` on an ensemble whose ``sample_proba`` returns
  precomputed float64 probabilities [T, N, C] (ours takes the same ensemble). Note that
  GreedyBALD clips that array in place.

Environment: ``ALKERNELS_BENCH_N`` (pool size, default 100000), ``ALKERNELS_BENCH_K`` (query
size, default 100), ``ALKERNELS_BENCH_ROUNDS`` (default 3). Each alkernels run is checked
against the native selection (identical up to float32-level ties) before it is timed.

    OMP_NUM_THREADS=2 .venv/bin/python -m pytest benchmarks/test_adapters_frameworks.py \\
        --benchmark-only --benchmark-group-by=group --benchmark-json=benchmarks/results/adapters_frameworks.json
    ALKERNELS_BENCH_N=2000 .venv/bin/python -m pytest benchmarks/test_adapters_frameworks.py --benchmark-only
"""
from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable

import numpy as np
import pytest
import torch

modAL = pytest.importorskip("modAL")
skactiveml = pytest.importorskip("skactiveml")

from modAL import uncertainty as modal_native  # noqa: E402
from modAL.disagreement import max_std_sampling as modal_max_std  # noqa: E402
from modAL.utils.selection import multi_argmax  # noqa: E402
from skactiveml.classifier import ParzenWindowClassifier, SklearnClassifier  # noqa: E402
from skactiveml.pool import GreedyBALD, UncertaintySampling  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from alkernels.adapters import modal as modal_fused  # noqa: E402
from alkernels.adapters.skactiveml import FusedUncertaintySampling  # noqa: E402

N = int(os.environ.get("ALKERNELS_BENCH_N", "100000"))
K = int(os.environ.get("ALKERNELS_BENCH_K", "100"))
ROUNDS = int(os.environ.get("ALKERNELS_BENCH_ROUNDS", "3"))
T, C = 10, 230
TOL = 2e-6

_native_median: dict[str, float] = {}


def _modal_dropout() -> types.ModuleType:
    """modAL.dropout (its scoring helpers). It imports skorch only for ``to_numpy``; where skorch
    does not import, that one function is stubbed so modAL's own code can be timed."""
    try:
        from modAL import dropout
    except ImportError:
        stub, utils = types.ModuleType("skorch"), types.ModuleType("skorch.utils")
        utils.to_numpy = lambda t: t.detach().cpu().numpy()
        stub.utils = utils
        sys.modules["skorch"], sys.modules["skorch.utils"] = stub, utils
        sys.modules.pop("modAL.dropout", None)
        from modAL import dropout
    return dropout


@pytest.fixture(scope="module")
def logits() -> torch.Tensor:
    """float32 [T, N, C] logits, normal x 3."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(T, N, C, generator=g) * 3


@pytest.fixture(scope="module")
def proba(logits: torch.Tensor) -> np.ndarray:
    """float64 [N, C] probabilities of the first pass."""
    return torch.softmax(logits[0].double(), -1).numpy()


@pytest.fixture(scope="module")
def proba_mc(logits: torch.Tensor) -> np.ndarray:
    """float64 [T, N, C] probabilities of all passes."""
    return torch.softmax(logits.double(), -1).numpy()


def _same_up_to_ties(scores: np.ndarray, ours: np.ndarray, theirs: np.ndarray, tol: float = TOL) -> None:
    """Both selections are equally good by ``scores`` (larger is better) up to ``tol``."""
    if set(ours.tolist()) == set(theirs.tolist()):
        return
    a, b = np.sort(scores[ours]), np.sort(scores[theirs])
    assert np.allclose(a, b, rtol=0, atol=tol), "selection differs from the native one beyond ties"


def _run(benchmark, group: str, impl: str, fn: Callable[[], object], **info: object) -> None:
    benchmark.group = group
    benchmark.extra_info.update(
        {"framework": group.split(":")[0], "method": group.split(":")[1], "impl": impl, "N": N,
         "C": C, "k": K, "torch_threads": torch.get_num_threads(), **info}
    )
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    if impl == "native":
        _native_median[group] = median
    elif group in _native_median:
        benchmark.extra_info["speedup_vs_native"] = _native_median[group] / median


def _proba_classifier(p: np.ndarray) -> types.SimpleNamespace:
    return types.SimpleNamespace(predict_proba=lambda X: p)


MODAL_SINGLE = {
    "uncertainty": (modal_native.uncertainty_sampling, modal_fused.uncertainty_sampling,
                    modal_native.classifier_uncertainty, True),
    "margin": (modal_native.margin_sampling, modal_fused.margin_sampling, modal_native.classifier_margin, False),
    "entropy": (modal_native.entropy_sampling, modal_fused.entropy_sampling, modal_native.classifier_entropy, True),
}


@pytest.mark.parametrize("impl", ["native", "alkernels"])
@pytest.mark.parametrize("method", list(MODAL_SINGLE))
def test_modal_predict_proba(benchmark, proba: np.ndarray, method: str, impl: str) -> None:
    native, fused, measure, largest = MODAL_SINGLE[method]
    clf, X = _proba_classifier(proba), np.zeros((N, 1))
    if impl == "alkernels":
        ours, theirs = fused(clf, X, K)[0], native(clf, X, K)[0]
        _same_up_to_ties(measure(clf, X) * (1 if largest else -1), ours, theirs)
    _run(benchmark, f"modal:{method}", impl, lambda: (native if impl == "native" else fused)(clf, X, K), T=1)


@pytest.mark.parametrize("impl", ["native", "alkernels"])
@pytest.mark.parametrize("method", ["bald", "expected_entropy"])
def test_modal_mc(benchmark, logits: torch.Tensor, method: str, impl: str) -> None:
    dropout = _modal_dropout()
    measure = dropout._bald_divergence if method == "bald" else dropout._entropy
    fused = modal_fused.bald_sampling if method == "bald" else modal_fused.expected_entropy_sampling
    X = np.zeros((N, 1))

    def native() -> object:
        probas = [torch.softmax(logits[t], -1).numpy() for t in range(T)]  # as get_predictions
        return multi_argmax(measure(probas), n_instances=K)

    def ours() -> object:
        return fused(None, X, K, mc=lambda _: logits)

    if impl == "alkernels":
        scores = measure([torch.softmax(logits[t].double(), -1).numpy() for t in range(T)])
        _same_up_to_ties(scores, ours()[0], native()[0])
    _run(benchmark, f"modal:{method}", impl, native if impl == "native" else ours, T=T)


@pytest.mark.parametrize("impl", ["native", "alkernels"])
def test_modal_max_std(benchmark, impl: str) -> None:
    std = np.random.default_rng(0).gamma(2.0, size=N)
    reg = types.SimpleNamespace(predict=lambda X, return_std: (None, std))
    X = np.zeros((N, 1))
    strategy = modal_max_std if impl == "native" else modal_fused.max_std_sampling
    if impl == "alkernels":
        _same_up_to_ties(std, strategy(reg, X, K)[0], modal_max_std(reg, X, K)[0])
    _run(benchmark, "modal:max_std", impl, lambda: strategy(reg, X, K), T=1)


def _skactiveml_pool() -> tuple[np.ndarray, np.ndarray]:
    X = np.arange(N, dtype=np.float64)[:, None]
    return X, np.full(N, np.nan)


@pytest.mark.parametrize("impl", ["native", "alkernels"])
@pytest.mark.parametrize("method", ["least_confident", "margin_sampling", "entropy"])
def test_skactiveml_uncertainty(benchmark, proba: np.ndarray, method: str, impl: str) -> None:
    X, y = _skactiveml_pool()
    clf = SklearnClassifier(LogisticRegression(), classes=np.arange(C)).fit(X[:C], np.arange(C))
    clf.predict_proba = lambda Xc: proba
    native = UncertaintySampling(method=method, random_state=0)
    fused = FusedUncertaintySampling(method=method)
    if impl == "alkernels":
        idx, util = fused.query(X, y, clf, fit_clf=False, batch_size=K, return_utilities=True)
        _same_up_to_ties(util[0], idx, native.query(X, y, clf, fit_clf=False, batch_size=K))
    qs = native if impl == "native" else fused
    _run(benchmark, f"skactiveml:{method}", impl, lambda: qs.query(X, y, clf, fit_clf=False, batch_size=K), T=1)


@pytest.mark.parametrize("impl", ["native", "alkernels"])
def test_skactiveml_bald(benchmark, proba_mc: np.ndarray, impl: str) -> None:
    X, y = _skactiveml_pool()
    ensemble = ParzenWindowClassifier(classes=np.arange(C)).fit(X[:C], np.arange(C))
    ensemble.sample_proba = lambda Xc: proba_mc
    kwargs = {"sample_predictions_method_name": "sample_proba"}
    native = GreedyBALD(random_state=0, **kwargs)
    fused = FusedUncertaintySampling(method="bald", **kwargs)
    if impl == "alkernels":
        idx, util = fused.query(X, y, ensemble, fit_clf=False, batch_size=K, return_utilities=True)
        # GreedyBALD clips probabilities at 1e-7 before the logs: its utilities differ by < C * 2e-6
        _same_up_to_ties(util[0], idx, native.query(X, y, ensemble, fit_ensemble=False, batch_size=K), C * 2e-6)

    def run() -> object:
        if impl == "native":
            return native.query(X, y, ensemble, fit_ensemble=False, batch_size=K)
        return fused.query(X, y, ensemble, fit_clf=False, batch_size=K)

    _run(benchmark, "skactiveml:bald", impl, run, T=T)
