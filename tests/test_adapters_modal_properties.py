"""Differential property tests: alkernels.adapters.modal against the installed modAL on random pools.

Pools come from a coarse grid (exact ties everywhere, zeros, all-zero rows), from [0, 1]
floats, normalised or not, in float64 or float32, C- or Fortran-ordered, with one to five
class columns and one to twelve samples; ``n_instances`` runs from 0 to the pool size. For
every strategy the metrics must be modAL's bit for bit, the selected metrics must be the ones
modAL selects, ties must go to the lower index (the one intended difference) and, with
``random_tie_break=True``, the selected set must be modAL's for the same NumPy generator state,
which must advance as with modAL. Larger pools plant near-ties below float32 resolution at the
selection boundary, where only modAL's float64 metric can decide.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("modAL")
pytest.importorskip("hypothesis")
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from modAL import uncertainty as native
from modAL.disagreement import max_std_sampling as native_max_std
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression

from alkernels.adapters import modal
from alkernels.adapters._scoring import DelegationWarning, screen

pytestmark = pytest.mark.timeout(120)

PROPERTY = settings(max_examples=50, deadline=None, database=None)

#: name -> (ours, modAL's strategy, modAL's measure, whether the largest metric is selected)
STRATEGIES = {
    "uncertainty": (modal.uncertainty_sampling, native.uncertainty_sampling, native.classifier_uncertainty, True),
    "margin": (modal.margin_sampling, native.margin_sampling, native.classifier_margin, False),
    "entropy": (modal.entropy_sampling, native.entropy_sampling, native.classifier_entropy, True),
    "predictive_entropy": (
        modal.predictive_entropy_sampling,
        native.entropy_sampling,
        native.classifier_entropy,
        True,
    ),
}


def given_proba(p: np.ndarray) -> types.SimpleNamespace:
    return types.SimpleNamespace(predict_proba=lambda X, **kwargs: p)


@st.composite
def proba_pools(draw: st.DrawFn) -> np.ndarray:
    """[N, C] outputs of predict_proba, degenerate ones included."""
    n, c = draw(st.integers(1, 12)), draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["grid", "grid unnormalised", "floats", "floats unnormalised"]))
    if kind.startswith("grid"):
        p = draw(arrays(np.int64, (n, c), elements=st.integers(0, 3))).astype(np.float64)
    else:
        p = draw(arrays(np.float64, (n, c), elements=st.floats(0, 1)))
    if kind.endswith("unnormalised"):
        p = p / 3 if kind.startswith("grid") else p  # all-zero rows stay all zero
    else:
        sums = p.sum(1, keepdims=True)
        p = np.where(sums > 0, p / np.where(sums > 0, sums, 1), 1 / c)
    p = p.astype(draw(st.sampled_from([np.float64, np.float32])))
    return np.asfortranarray(p) if draw(st.booleans()) else p


def lower_index_selection(metric: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """modAL's multi_argmax/multi_argmin choice with equal metrics to the lower index (NaN last)."""
    key = np.asarray(metric, dtype=np.float64) * (1 if largest else -1)
    nan = np.isnan(key)
    return np.lexsort((np.arange(len(key)), -np.where(nan, 0, key), nan))[:k]


def check_against_modal(name: str, p: np.ndarray, k: int, seed: int) -> None:
    ours, theirs, measure, largest = STRATEGIES[name]
    clf, X = given_proba(p), np.zeros((len(p), 1))
    unchanged = p.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy's 0/0 on all-zero rows, our DelegationWarning
        metric = measure(clf, X)
        idx, values = ours(clf, X, k)
        ref_idx, ref_values = theirs(clf, X, k)
        np.random.seed(seed)
        shuffled_idx, shuffled_values = ours(clf, X, k, random_tie_break=True)
        after_ours = np.random.random()
        np.random.seed(seed)
        ref_shuffled_idx, _ = theirs(clf, X, k, random_tie_break=True)
        after_modal = np.random.random()
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == len(idx) == k
    assert values.dtype == metric.dtype
    np.testing.assert_array_equal(values, metric[idx])  # modAL's metric, bit for bit
    np.testing.assert_array_equal(np.sort(values), np.sort(ref_values))  # what modAL selects
    np.testing.assert_array_equal(idx, lower_index_selection(metric, k, largest))  # ties: lower index
    assert set(shuffled_idx.tolist()) == set(ref_shuffled_idx.tolist())  # modAL's own random tie-break
    np.testing.assert_array_equal(shuffled_values, metric[shuffled_idx])
    assert after_ours == after_modal  # the global generator advanced as with modAL
    np.testing.assert_array_equal(p, unchanged)  # the caller's probabilities are only read


@pytest.mark.parametrize("name", list(STRATEGIES))
@PROPERTY
@given(p=proba_pools(), data=st.data())
def test_strategies_equal_modal_on_random_pools(name: str, p: np.ndarray, data: st.DataObject) -> None:
    check_against_modal(name, p, data.draw(st.integers(0, len(p)), label="k"), data.draw(st.integers(0, 2**32 - 1)))


#: How far a planted twin's probabilities move from its original's: from below float64
#: resolution of the metric to above float32's, in both directions.
NUDGES = np.array([0.0, 1e-12, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6])


def near_tie_pool(rng: np.random.Generator, key: Callable[[np.ndarray], np.ndarray], k: int) -> np.ndarray:
    """float64 [N, C] normalised probabilities where copies of the ~2k best samples by ``key``
    (larger is selected), moved by :data:`NUDGES`, crowd the selection boundary."""
    n, c = int(rng.integers(50, 300)), int(rng.integers(2, 7))
    p = rng.dirichlet(np.full(c, rng.choice([0.3, 1.0, 5.0])), size=n)
    best = np.argsort(-key(p), kind="stable")[: 2 * k + 2]
    rest = np.setdiff1d(np.arange(n), best)
    twins = rng.choice(rest, size=min(len(rest), 3 * k + 3), replace=False)
    moved = p[rng.choice(best, size=len(twins))]
    nudge = rng.choice(NUDGES, size=len(twins)) * rng.choice([-1.0, 1.0], size=len(twins))
    moved[:, 0] += nudge
    moved[:, 1] -= nudge
    p[twins] = np.clip(moved, 0, 1)
    return p


@pytest.mark.parametrize("name", ["uncertainty", "margin", "entropy"])
@settings(max_examples=30, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_float64_near_ties_are_decided_as_modal_decides(name: str, seed: int) -> None:
    _, _, measure, largest = STRATEGIES[name]
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 12))
    p = near_tie_pool(rng, lambda q: measure(given_proba(q), None) * (1 if largest else -1), k)
    check_against_modal(name, p, k, seed)


@PROPERTY
@given(
    std=arrays(np.float64, st.integers(1, 15), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.0 + 1e-12])),
    dtype=st.sampled_from([np.float64, np.float32]),
    data=st.data(),
)
def test_max_std_sampling_equals_modal(std: np.ndarray, dtype: type, data: st.DataObject) -> None:
    std = std.astype(dtype)
    k = data.draw(st.integers(0, len(std)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    reg = types.SimpleNamespace(predict=lambda X, return_std: (np.zeros(len(X)), std))
    X = np.zeros((len(std), 1))
    idx, values = modal.max_std_sampling(reg, X, k)
    _, ref_values = native_max_std(reg, X, k)
    assert values.dtype == ref_values.dtype
    np.testing.assert_array_equal(values, std[idx])
    np.testing.assert_array_equal(np.sort(values), np.sort(ref_values))
    np.testing.assert_array_equal(idx, lower_index_selection(std, k, largest=True))
    np.random.seed(seed)
    shuffled = modal.max_std_sampling(reg, X, k, random_tie_break=True)[0]
    after_ours = np.random.random()
    np.random.seed(seed)
    assert set(shuffled.tolist()) == set(native_max_std(reg, X, k, random_tie_break=True)[0].tolist())
    assert np.random.random() == after_ours


@PROPERTY
@given(
    key=arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 0.1, 0.1 + 1e-9, 0.2, 0.5, np.nan])),
    data=st.data(),
)
def test_screen_keeps_every_possible_selection(key: np.ndarray, data: st.DataObject) -> None:
    """Exact keys, approximations within a bound: the screened positions hold the k largest
    exact keys and every tie with the k-th."""
    n_valid = int((~np.isnan(key)).sum())
    k = data.draw(st.integers(0, n_valid))
    bound = data.draw(st.sampled_from([0.0, 1e-8, 0.05]))
    noise = data.draw(arrays(np.float64, len(key), elements=st.floats(-1, 1))) * bound
    kept = screen(key + noise, bound, k)
    assert np.array_equal(kept, np.unique(kept)) and not np.isnan(key[kept]).any()
    if k:
        exact = np.where(np.isnan(key), -np.inf, key)
        kth = np.sort(exact)[::-1][k - 1]
        assert set(np.flatnonzero(exact >= kth).tolist()) <= set(kept.tolist())
    else:
        assert kept.size == 0


# ---- degenerate pools and delegated inputs, named ----------------------------------------------
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_one_class_and_unfitted_classifiers(name: str) -> None:
    ours, theirs, measure, largest = STRATEGIES[name]
    X = np.arange(8, dtype=float)[:, None]
    one_class = DummyClassifier(strategy="prior").fit(X, np.zeros(8))  # predict_proba: [N, 1] of ones
    sigmoid = given_proba(np.linspace(0.1, 0.9, 8)[:, None])  # one column that is not constant
    for clf in (one_class, sigmoid, LogisticRegression()):  # the last one is unfitted
        for k in (0, 1, 8):
            idx, values = ours(clf, X, k)
            ref_idx, ref_values = theirs(clf, X, k)
            np.testing.assert_array_equal(np.sort(values), np.sort(ref_values))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                metric = measure(clf, X)
            np.testing.assert_array_equal(idx, lower_index_selection(metric, k, largest))
    with pytest.raises(NotFittedError):
        LogisticRegression().predict_proba(X)  # the unfitted case really is one


def test_unnormalised_entropy_is_delegated_once_and_equal() -> None:
    p = np.array([[0.0, 0.0, 0.0], [0.2, 0.2, 0.1], [2.0, 1.0, 1.0], [0.5, 0.5, 0.0]])
    clf, X = given_proba(p), np.zeros((4, 1))
    with pytest.warns(DelegationWarning, match="classifier_entropy") as record:
        idx, values = modal.entropy_sampling(clf, X, 4)
    assert len([w for w in record if w.category is DelegationWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = native.classifier_entropy(clf, X)
    assert np.isnan(metric[0])  # modAL's 0/0 for the all-zero row: selected last
    np.testing.assert_array_equal(idx, [1, 2, 3, 0])
    np.testing.assert_array_equal(values, metric[idx])
    # uncertainty and margin take raw rows as they are: no delegation, modAL's values
    with warnings.catch_warnings():
        warnings.simplefilter("error", DelegationWarning)
        idx, values = modal.uncertainty_sampling(clf, X, 2)
    np.testing.assert_array_equal(idx, [0, 1])  # 1 - max(0, 0, 0) = 1 is the largest
    np.testing.assert_array_equal(values, [1.0, 0.8])


def test_normalised_pools_are_not_delegated() -> None:
    p = np.random.default_rng(0).dirichlet(np.ones(5), size=300)
    clf, X = given_proba(p), np.zeros((300, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DelegationWarning)
        for ours, theirs, measure, largest in STRATEGIES.values():
            idx, values = ours(clf, X, 10)
            np.testing.assert_array_equal(idx, lower_index_selection(measure(clf, X), 10, largest))
