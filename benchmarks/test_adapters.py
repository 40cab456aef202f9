"""Framework adapters against each framework's own strategy, on the same input in one run.

Every group ``adapters/<framework>/<heuristic or method>`` has two members: ``ours`` (the
alkernels adapter, the baseline) and ``native`` (the framework's implementation, the peer); the
summary's ratio ``native/ours`` is the adapter's speed-up. Before an adapter is timed, its
selection is checked against the native one: the same samples, or samples whose native scores
agree up to float32-level ties.

Input (sizes ``benchmarks.settings.AdapterSizes``, ``--bench-set adapters.N=...``): float32
logits [T, N, C] (normal, scaled by 3, seed 0) and what each framework is handed (the model's
forward passes are outside the timing on both sides):

- baal (``adapters/baal/...``): ``heuristic.get_ranks(predictions)`` (scores and the ranking of
  the whole pool) of ``BALD``, ``Entropy``, ``Margin`` and ``Certainty`` on the logits in baal's
  [N, C, T] layout; and BALD on a generator of 1,000-sample [n, C, T] batches, each a view of
  memory laid out [T, n, C], as ``ModelWrapper.predict_on_dataset_generator`` yields them. The
  target is BALD >= 50x on two threads: the ratio of ``adapters/baal/BALD``.
- modAL: ``uncertainty_sampling``, ``margin_sampling`` and ``entropy_sampling`` of a classifier
  whose ``predict_proba`` returns precomputed float64 probabilities [N, C] (the first pass);
  ``mc_dropout_bald`` and ``mc_dropout_max_entropy`` after their forward passes: the softmax of
  each pass, ``_bald_divergence`` / ``_entropy`` on the T arrays and ``multi_argmax``, against
  ``bald_sampling`` / ``expected_entropy_sampling`` on the logits; ``max_std_sampling`` of a
  regressor returning a precomputed std [N]. modAL.dropout imports skorch for one helper
  (``to_numpy``); where skorch does not import, that helper is stubbed so that modAL's own
  scoring code is what runs.
- scikit-activeml: ``UncertaintySampling.query`` (``least_confident``, ``margin_sampling``,
  ``entropy``) with ``fit_clf=False`` on a fitted ``SklearnClassifier`` returning the
  precomputed probabilities, every sample unlabelled (native cost grows with the query size:
  one full ``rand_argmax`` pass per pick); ``GreedyBALD.query`` on an ensemble whose
  ``sample_proba`` returns precomputed float64 probabilities [T, N, C]. GreedyBALD clips that
  array at 1e-7 in place (idempotent, so every later call, ours included, reads the clipped
  array); its utilities therefore differ from ours by up to ``C * 2e-6``, the tolerance of its
  selection check.

At full size (N = 100,000) the inputs take about 4 GB and the native strategies' temporaries
several GB more: the suite needs about 10 GB of memory. The frameworks score in NumPy on the
CPU, so the suite runs on CPU runs only.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import settings
from benchmarks.harness import timed
from benchmarks.workloads import make_logits

IMPLS: tuple[str, ...] = ("ours", "native")
#: Tolerance of the selection checks (float32 scores of both sides).
TOL = 2e-6
#: Samples per batch of the baal generator rows.
GENERATOR_BATCH = 1_000
BAAL_HEURISTICS: tuple[str, ...] = ("BALD", "Entropy", "Margin", "Certainty")


@pytest.fixture(scope="module")
def sz(sizes: settings.Sizes, device: torch.device) -> settings.AdapterSizes:
    """The adapter sizes of this run (CPU runs only)."""
    if device.type != "cpu":
        pytest.skip("the frameworks' native strategies run in NumPy on the CPU; compared on CPU runs only")
    return sizes.adapters


@pytest.fixture(scope="module")
def pool_logits(sz: settings.AdapterSizes) -> torch.Tensor:
    """float32 logits [T, N, C], normal x 3, seed 0."""
    return make_logits(sz.T, sz.N, sz.C, torch.device("cpu"))


@pytest.fixture(scope="module")
def nct(pool_logits: torch.Tensor) -> np.ndarray:
    """The logits in baal's [N, C, T] layout (a contiguous copy)."""
    return pool_logits.permute(1, 2, 0).contiguous().numpy()


@pytest.fixture(scope="module")
def proba(pool_logits: torch.Tensor) -> np.ndarray:
    """float64 [N, C] probabilities of the first pass."""
    return torch.softmax(pool_logits[0].double(), -1).numpy()


@pytest.fixture(scope="module")
def proba_mc(pool_logits: torch.Tensor) -> np.ndarray:
    """float64 [T, N, C] probabilities of every pass."""
    return torch.softmax(pool_logits.double(), -1).numpy()


def check_selection(scores: np.ndarray, ours: np.ndarray, theirs: np.ndarray, tol: float = TOL) -> None:
    """Both selections are equally good by the native ``scores`` up to ``tol``: the same samples,
    or sorted scores that agree (samples whose scores tie may be exchanged)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"selection sizes differ: {ours.shape} vs {theirs.shape}"
    if set(ours.tolist()) == set(theirs.tolist()):
        return
    a, b = np.sort(scores[ours]), np.sort(scores[theirs])
    worst = float(np.max(np.abs(a - b)))
    assert worst <= tol, f"selection differs from the native one beyond ties (score gap {worst:.3g} > {tol:.3g})"


def _time(
    benchmark: Any,
    sz: settings.AdapterSizes,
    framework: str,
    method: str,
    impl: str,
    fn: Callable[[], object],
    **meta: Any,
) -> object:
    """Time one member of ``adapters/<framework>/<method>``."""
    ours = impl == "ours"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timed(
            benchmark,
            fn,
            group=f"adapters/{framework}/{method}",
            impl=impl,
            role="baseline" if ours else "peer",
            items=sz.N,
            unit="samples",
            rounds=sz.rounds if ours else sz.peer_rounds,
            warmup=1,
            device=torch.device("cpu"),
            framework=framework,
            method=method,
            N=sz.N,
            C=sz.C,
            **meta,
        )


# -- baal --------------------------------------------------------------------------------------
def _baal_heuristic(name: str, impl: str) -> Any:
    """A baal heuristic: the adapter's (``ours``) or baal's own."""
    pytest.importorskip("baal")
    if impl == "ours":
        from alkernels.adapters import baal as module
    else:
        from baal.active import heuristics as module
    return getattr(module, name)()


def _check_baal(name: str, predictions: Callable[[], Any], k: int) -> None:
    """The adapter's first ``k`` ranks against baal's, by baal's scores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, scores = _baal_heuristic(name, "native").get_ranks(predictions())
        ours, _ = _baal_heuristic(name, "ours").get_ranks(predictions())
    assert len(ours) == len(theirs) == len(scores)
    check_selection(np.asarray(scores, dtype=np.float64), ours[:k], theirs[:k], TOL * 4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", BAAL_HEURISTICS)
def test_baal(benchmark: Any, sz: settings.AdapterSizes, nct: np.ndarray, name: str, impl: str) -> None:
    """``get_ranks`` of one baal heuristic on [N, C, T] logits."""
    heuristic = _baal_heuristic(name, impl)
    if impl == "ours":
        _check_baal(name, lambda: nct, sz.k)
    notes = {"input": "logits [N, C, T] f32"}
    if name == "BALD" and impl == "ours":
        notes["target"] = "≥ 50× on 2 threads"
    ranks, scores = _time(
        benchmark,
        sz,
        "baal",
        name,
        impl,
        lambda: heuristic.get_ranks(nct),
        T=sz.T,
        layout="[N, C, T]",
        call="get_ranks",
        notes=notes,
    )
    assert ranks.shape == scores.shape == (sz.N,)


@pytest.mark.parametrize("impl", IMPLS)
def test_baal_generator(benchmark: Any, sz: settings.AdapterSizes, nct: np.ndarray, impl: str) -> None:
    """baal BALD on a generator of [n, C, T] batches laid out [T, n, C] in memory."""
    chunks = [
        np.ascontiguousarray(nct[i : i + GENERATOR_BATCH].transpose(2, 0, 1)).transpose(1, 2, 0)
        for i in range(0, sz.N, GENERATOR_BATCH)
    ]
    heuristic = _baal_heuristic("BALD", impl)
    if impl == "ours":
        _check_baal("BALD", lambda: (c for c in chunks), sz.k)
    ranks, _ = _time(
        benchmark,
        sz,
        "baal",
        f"BALD, generator of {GENERATOR_BATCH}-sample batches",
        impl,
        lambda: heuristic.get_ranks(c for c in chunks),
        T=sz.T,
        layout="generator of [n, C, T]",
        batch=GENERATOR_BATCH,
        call="get_ranks",
        notes={"input": "generator of logits [n, C, T] f32"},
    )
    assert ranks.shape == (sz.N,)


# -- modAL -------------------------------------------------------------------------------------
def _modal() -> tuple[types.ModuleType, types.ModuleType]:
    """(modAL.uncertainty, alkernels.adapters.modal), or a skip without modAL."""
    pytest.importorskip("modAL")
    from modAL import uncertainty

    from alkernels.adapters import modal

    return uncertainty, modal


def _modal_dropout() -> types.ModuleType:
    """modAL.dropout (its scoring helpers). It imports skorch only for ``to_numpy``; where skorch
    does not import, that one function is stubbed so that modAL's own code can be timed."""
    pytest.importorskip("modAL")
    try:
        from modAL import dropout
    except ImportError:
        stub, utils = types.ModuleType("skorch"), types.ModuleType("skorch.utils")
        utils.to_numpy = lambda t: t.detach().cpu().numpy()  # type: ignore[attr-defined]
        stub.utils = utils  # type: ignore[attr-defined]
        sys.modules["skorch"], sys.modules["skorch.utils"] = stub, utils
        sys.modules.pop("modAL.dropout", None)
        from modAL import dropout
    return dropout


#: modAL method -> (our function, modAL's score function, whether larger scores are selected).
MODAL_SINGLE: dict[str, tuple[str, str, bool]] = {
    "uncertainty_sampling": ("uncertainty_sampling", "classifier_uncertainty", True),
    "margin_sampling": ("margin_sampling", "classifier_margin", False),
    "entropy_sampling": ("entropy_sampling", "classifier_entropy", True),
}
#: modAL MC-dropout method -> (our function, modAL.dropout's score helper).
MODAL_MC: dict[str, tuple[str, str]] = {
    "mc_dropout_bald": ("bald_sampling", "_bald_divergence"),
    "mc_dropout_max_entropy": ("expected_entropy_sampling", "_entropy"),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("method", list(MODAL_SINGLE))
def test_modal_predict_proba(
    benchmark: Any, sz: settings.AdapterSizes, proba: np.ndarray, method: str, impl: str
) -> None:
    """A modAL uncertainty strategy on a classifier returning [N, C] float64 probabilities."""
    native_mod, ours_mod = _modal()
    ours_name, measure, largest = MODAL_SINGLE[method]
    native, fused = getattr(native_mod, method), getattr(ours_mod, ours_name)
    clf, X = types.SimpleNamespace(predict_proba=lambda X: proba), np.zeros((sz.N, 1))
    if impl == "ours":
        scores = getattr(native_mod, measure)(clf, X) * (1 if largest else -1)
        check_selection(scores, fused(clf, X, sz.k)[0], native(clf, X, sz.k)[0])
    strategy = fused if impl == "ours" else native
    _time(
        benchmark,
        sz,
        "modAL",
        method,
        impl,
        lambda: strategy(clf, X, sz.k),
        T=1,
        k=sz.k,
        notes={"input": "proba [N, C] f64"},
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("method", list(MODAL_MC))
def test_modal_mc(benchmark: Any, sz: settings.AdapterSizes, pool_logits: torch.Tensor, method: str, impl: str) -> None:
    """modAL's MC-dropout scoring after the forward passes, against ours on the logits."""
    _, ours_mod = _modal()
    dropout = _modal_dropout()
    from modAL.utils.selection import multi_argmax

    ours_name, helper = MODAL_MC[method]
    measure, fused = getattr(dropout, helper), getattr(ours_mod, ours_name)
    X = np.zeros((sz.N, 1))

    def native() -> object:
        probas = [torch.softmax(pool_logits[t], -1).numpy() for t in range(sz.T)]  # as get_predictions
        return multi_argmax(measure(probas), n_instances=sz.k)

    def ours() -> object:
        return fused(None, X, sz.k, mc=lambda _: pool_logits)

    if impl == "ours":
        scores = measure([torch.softmax(pool_logits[t].double(), -1).numpy() for t in range(sz.T)])
        check_selection(scores, ours()[0], native()[0])
    _time(
        benchmark,
        sz,
        "modAL",
        method,
        impl,
        ours if impl == "ours" else native,
        T=sz.T,
        k=sz.k,
        notes={"input": "logits [T, N, C] f32"},
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_modal_max_std(benchmark: Any, sz: settings.AdapterSizes, impl: str) -> None:
    """modAL's ``max_std_sampling`` on a regressor returning a std [N]."""
    _, ours_mod = _modal()
    from modAL.disagreement import max_std_sampling

    std = np.random.default_rng(0).gamma(2.0, size=sz.N)
    reg = types.SimpleNamespace(predict=lambda X, return_std: (None, std))
    X = np.zeros((sz.N, 1))
    strategy = ours_mod.max_std_sampling if impl == "ours" else max_std_sampling
    if impl == "ours":
        check_selection(std, strategy(reg, X, sz.k)[0], max_std_sampling(reg, X, sz.k)[0])
    _time(
        benchmark,
        sz,
        "modAL",
        "max_std_sampling",
        impl,
        lambda: strategy(reg, X, sz.k),
        T=1,
        k=sz.k,
        notes={"input": "std [N] f64"},
    )


# -- scikit-activeml ---------------------------------------------------------------------------
def _skactiveml_pool(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (the sample index) and labels (all missing) of an unlabelled pool of ``n``."""
    pytest.importorskip("skactiveml")
    return np.arange(n, dtype=np.float64)[:, None], np.full(n, np.nan)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("method", ["least_confident", "margin_sampling", "entropy"])
def test_skactiveml_uncertainty(
    benchmark: Any, sz: settings.AdapterSizes, proba: np.ndarray, method: str, impl: str
) -> None:
    """``UncertaintySampling.query`` on a fitted classifier returning [N, C] float64 probabilities."""
    X, y = _skactiveml_pool(sz.N)
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import UncertaintySampling
    from sklearn.linear_model import LogisticRegression

    from alkernels.adapters.skactiveml import FusedUncertaintySampling

    clf = SklearnClassifier(LogisticRegression(), classes=np.arange(sz.C)).fit(X[: sz.C], np.arange(sz.C))
    clf.predict_proba = lambda Xc: proba
    native = UncertaintySampling(method=method, random_state=0)
    fused = FusedUncertaintySampling(method=method, random_state=0)
    if impl == "ours":
        idx, util = fused.query(X, y, clf, fit_clf=False, batch_size=sz.k, return_utilities=True)
        check_selection(util[0], idx, native.query(X, y, clf, fit_clf=False, batch_size=sz.k))
    qs = fused if impl == "ours" else native
    _time(
        benchmark,
        sz,
        "scikit-activeml",
        f"UncertaintySampling {method}",
        impl,
        lambda: qs.query(X, y, clf, fit_clf=False, batch_size=sz.k),
        T=1,
        k=sz.k,
        notes={"input": "proba [N, C] f64"},
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_skactiveml_bald(benchmark: Any, sz: settings.AdapterSizes, proba_mc: np.ndarray, impl: str) -> None:
    """``GreedyBALD.query`` on an ensemble returning [T, N, C] float64 probabilities."""
    X, y = _skactiveml_pool(sz.N)
    from skactiveml.classifier import ParzenWindowClassifier
    from skactiveml.pool import GreedyBALD

    from alkernels.adapters.skactiveml import FusedGreedyBALD

    ensemble = ParzenWindowClassifier(classes=np.arange(sz.C)).fit(X[: sz.C], np.arange(sz.C))
    ensemble.sample_proba = lambda Xc: proba_mc
    kwargs = {"sample_predictions_method_name": "sample_proba"}
    native = GreedyBALD(random_state=0, **kwargs)
    fused = FusedGreedyBALD(random_state=0, **kwargs)
    if impl == "ours":
        idx, util = fused.query(X, y, ensemble, fit_ensemble=False, batch_size=sz.k, return_utilities=True)
        theirs = native.query(X, y, ensemble, fit_ensemble=False, batch_size=sz.k)
        # GreedyBALD clips the probabilities at 1e-7 before the logs: utilities differ by < C * 2e-6
        check_selection(util[0], idx, theirs, sz.C * TOL)

    def run() -> object:
        qs = fused if impl == "ours" else native
        return qs.query(X, y, ensemble, fit_ensemble=False, batch_size=sz.k)

    _time(
        benchmark,
        sz,
        "scikit-activeml",
        "GreedyBALD",
        impl,
        run,
        T=sz.T,
        k=sz.k,
        notes={"input": "proba [T, N, C] f64"},
    )
