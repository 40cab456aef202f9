"""Differential property tests: alkernels.adapters.skactiveml against the installed scikit-activeml.

Random pools of one to ten samples (grid probabilities full of exact ties, or [0, 1] floats),
one to four classes, some labelled (missing labels NaN, or -1 in integer labels); candidates
None, as indices or as a feature array;
utility and sample weights; batch sizes up to past the candidates; ``random_state`` an int, a
``RandomState`` or None (NumPy's global generator, seeded); with and without utilities. Every
query must return what ``UncertaintySampling`` / ``GreedyBALD`` return, bit for bit, leave
NumPy's global generator where they leave it, warn as they warn and raise what they raise.
``tie_break="index"`` must pick the native utilities' best with ties to the lower index.
Delegated parameters (cost matrices, expected average precision) and delegated inputs (entropy
of negative entries, BALD outside the simplex) must warn once and equal the native answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skactiveml")
pytest.importorskip("hypothesis")
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skactiveml.base import SkactivemlClassifier
from skactiveml.pool import GreedyBALD, UncertaintySampling, batch_bald, uncertainty_scores
from skactiveml.utils import MISSING_LABEL

from alkernels.adapters._scoring import DelegationWarning
from alkernels.adapters.skactiveml import FusedGreedyBALD, FusedUncertaintySampling

pytestmark = pytest.mark.timeout(120)

PROPERTY = settings(max_examples=50, deadline=None, database=None)


class TableClassifier(SkactivemlClassifier):
    """A classifier (or, with a 3-D table, an ensemble with ``sample_proba``) whose
    probabilities are rows of ``table`` picked by the first feature; a parameter, so it survives
    ``clone``. ``fortran`` hands out Fortran-ordered arrays."""

    def __init__(
        self,
        table: np.ndarray | None = None,
        fortran: bool = False,
        classes: Any = None,
        missing_label: Any = MISSING_LABEL,
        cost_matrix: Any = None,
        random_state: Any = None,
    ) -> None:
        super().__init__(
            classes=classes, missing_label=missing_label, cost_matrix=cost_matrix, random_state=random_state
        )
        self.table = table
        self.fortran = fortran

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> TableClassifier:
        self.classes_ = np.arange(self.table.shape[-1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        rows = self.table[np.asarray(X)[:, 0].astype(int)]
        return np.asfortranarray(rows) if self.fortran else rows

    def sample_proba(self, X: np.ndarray) -> np.ndarray:
        return self.table[:, np.asarray(X)[:, 0].astype(int)]


def probability_rows(draw: st.DrawFn, shape: tuple[int, ...], normalised: bool) -> np.ndarray:
    """Grid or [0, 1] float rows over the last axis; normalised ones sum to one."""
    if draw(st.booleans()):
        p = draw(arrays(np.int64, shape, elements=st.integers(0, 3))).astype(np.float64)
    else:
        p = draw(arrays(np.float64, shape, elements=st.floats(0, 1)))
    if not normalised:
        return p / 3
    sums = p.sum(-1, keepdims=True)
    return np.where(sums > 0, p / np.where(sums > 0, sums, 1), 1 / shape[-1])


@st.composite
def queries(draw: st.DrawFn, members: int = 0) -> dict[str, Any]:
    """A pool, a table of probabilities ([rows, C], or [members, rows, C]) and query arguments."""
    n, c = draw(st.integers(1, 10), label="n"), draw(st.integers(1, 4), label="C")
    new = draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["unlabelled", "indices", "features"]))
    shape = (n + new, c) if not members else (members, n + new, c)
    table = probability_rows(draw, shape, normalised=draw(st.integers(0, 9)) > 0)
    missing_label = draw(st.sampled_from([MISSING_LABEL, -1]))  # NaN in float labels, or -1 in int ones
    labelled = draw(arrays(bool, n))
    y = np.where(labelled, draw(st.integers(0, c - 1)), missing_label)
    if missing_label == -1:
        y = y.astype(np.int64)
    if kind == "unlabelled":
        candidates, n_cand, n_util = None, int((~labelled).sum()), n
    elif kind == "indices":
        candidates = np.asarray(draw(st.permutations(range(n)))[: draw(st.integers(1, n))])
        n_cand, n_util = len(candidates), n
    else:
        candidates = np.arange(n, n + new, dtype=float)[:, None]
        n_cand = n_util = new
    weights = st.sampled_from([0.5, 1.0, 2.0])
    return {
        "X": np.arange(n, dtype=float)[:, None],
        "y": y,
        "missing_label": missing_label,
        "table": table,
        "fortran": draw(st.booleans()),
        "candidates": candidates,
        "utility_weight": draw(st.none() | arrays(np.float64, n_util, elements=weights)),
        "sample_weight": draw(st.none() | arrays(np.float64, n, elements=weights)),
        "fit": draw(st.booleans()),
        "batch_size": draw(st.integers(1, max(n_cand, 1) + 1)),
        "return_utilities": draw(st.booleans()),
        "seed": draw(st.none() | st.integers(0, 2**31 - 1)),
        "as_random_state": draw(st.booleans()),
    }


def run(qs: Any, q: dict[str, Any], **call: Any) -> tuple[Any, list[str], float, int]:
    """(result or exception, the warnings other than ours, NumPy's next global draw, how many
    DelegationWarnings)."""
    np.random.seed(12345)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = qs.query(
                q["X"],
                q["y"],
                candidates=q["candidates"],
                batch_size=q["batch_size"],
                return_utilities=q["return_utilities"],
                **call,
            )
        except (ValueError, TypeError) as err:
            result = err
    messages = [str(w.message) for w in caught if not issubclass(w.category, (DelegationWarning, RuntimeWarning))]
    delegated = sum(w.category is DelegationWarning for w in caught)
    return result, messages, np.random.random(), delegated


def random_state(q: dict[str, Any]) -> Any:
    if q["seed"] is None:
        return None
    return np.random.RandomState(q["seed"]) if q["as_random_state"] else q["seed"]


def assert_same(ours: tuple[Any, list[str], float, int], theirs: tuple[Any, list[str], float, int]) -> None:
    if isinstance(theirs[0], Exception):
        assert isinstance(ours[0], type(theirs[0])), (ours[0], theirs[0])
        return
    assert not isinstance(ours[0], Exception), ours[0]
    if isinstance(theirs[0], tuple):
        np.testing.assert_array_equal(ours[0][0], theirs[0][0])
        assert ours[0][1].dtype == theirs[0][1].dtype
        np.testing.assert_array_equal(ours[0][1], theirs[0][1])  # NaN where the native has NaN
    else:
        np.testing.assert_array_equal(ours[0], theirs[0])
    assert ours[1] == theirs[1]  # e.g. the batch size reduced to the candidates
    assert ours[2] == theirs[2]  # the global generator advanced alike


def lower_index_picks(utilities: np.ndarray, batch_size: int) -> np.ndarray:
    valid = np.flatnonzero(~np.isnan(utilities))
    return valid[np.lexsort((valid, -utilities[valid]))][:batch_size]


@pytest.mark.parametrize("method", ["least_confident", "margin_sampling", "entropy"])
@PROPERTY
@given(q=queries())
def test_uncertainty_sampling_equals_scikit_activeml(method: str, q: dict[str, Any]) -> None:
    missing = q["missing_label"]
    clf = TableClassifier(q["table"], fortran=q["fortran"], missing_label=missing)
    clf.fit(q["X"], q["y"])
    call = {"clf": clf, "fit_clf": q["fit"], "sample_weight": q["sample_weight"], "utility_weight": q["utility_weight"]}
    ours = run(FusedUncertaintySampling(method, None, missing, random_state(q)), q, **call)
    theirs = run(UncertaintySampling(method, None, missing, random_state(q)), q, **call)
    assert_same(ours, theirs)
    if isinstance(theirs[0], Exception):
        return
    full = dict(q, return_utilities=True)
    native_utilities = run(UncertaintySampling(method, None, missing, 0), full, **call)[0][1][0]
    by_index = run(FusedUncertaintySampling(method, None, missing, tie_break="index"), full, **call)[0]
    np.testing.assert_array_equal(by_index[0], lower_index_picks(native_utilities, len(by_index[0])))
    np.testing.assert_array_equal(by_index[1][0], native_utilities)


@pytest.mark.parametrize("members", [1, 3])
@PROPERTY
@given(data=st.data(), eps=st.sampled_from([1e-7, 1e-3, 0.1]))
def test_greedy_bald_equals_scikit_activeml(members: int, data: st.DataObject, eps: float) -> None:
    q = data.draw(queries(members=members))
    ensemble = TableClassifier(q["table"], missing_label=q["missing_label"])
    ensemble.fit(q["X"], q["y"])
    call = {"ensemble": ensemble, "fit_ensemble": q["fit"], "sample_weight": q["sample_weight"]}
    kwargs = {
        "sample_predictions_method_name": "sample_proba",
        "missing_label": q["missing_label"],
        "random_state": random_state(q),
    }
    theirs = run(GreedyBALD(eps=eps, **kwargs), q, **call)
    assert_same(run(FusedGreedyBALD(eps=eps, **kwargs), q, **call), theirs)
    if eps == 1e-7:  # GreedyBALD's default: FusedUncertaintySampling(method="bald") is the same query
        call = {"clf": ensemble, "fit_clf": q["fit"], "sample_weight": q["sample_weight"]}
        assert_same(run(FusedUncertaintySampling("bald", **kwargs), q, **call), theirs)


@st.composite
def cost_matrices(draw: st.DrawFn, c: int) -> np.ndarray:
    return draw(arrays(np.float64, (c, c), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0])))


@pytest.mark.parametrize("method", ["least_confident", "margin_sampling", "entropy", "expected_average_precision"])
@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_delegated_parameters_equal_scikit_activeml(method: str, data: st.DataObject) -> None:
    q = data.draw(queries())
    c = q["table"].shape[1]
    cost = None if method == "expected_average_precision" else data.draw(cost_matrices(c))
    clf = TableClassifier(q["table"], missing_label=q["missing_label"])
    clf.fit(q["X"], q["y"])
    call = {"clf": clf, "fit_clf": q["fit"], "utility_weight": q["utility_weight"]}
    ours = run(FusedUncertaintySampling(method, cost, q["missing_label"], random_state(q)), q, **call)
    theirs = run(UncertaintySampling(method, cost, q["missing_label"], random_state(q)), q, **call)
    assert_same(ours, theirs)
    if not isinstance(theirs[0], Exception):
        assert ours[3] == 1  # the caller learns, once, that scikit-activeml answered


def test_delegated_inputs_warn_once_and_equal_scikit_activeml() -> None:
    X, y = np.arange(6, dtype=float)[:, None], np.full(6, np.nan)
    negative = np.array([[1.1, -0.1], [0.5, 0.5], [0.7, 0.3], [1.2, -0.2], [0.5, 0.5], [0.9, 0.1]])  # sums to one
    clf = TableClassifier(negative).fit(X, y)
    with pytest.warns(DelegationWarning, match="negative entries") as record:
        ours = FusedUncertaintySampling("entropy", random_state=1).query(X, y, clf, batch_size=3, fit_clf=False)
    assert len([w for w in record if w.category is DelegationWarning]) == 1
    np.testing.assert_array_equal(
        ours, UncertaintySampling("entropy", random_state=1).query(X, y, clf, batch_size=3, fit_clf=False)
    )
    outside = np.array([[[1.5, 0.0], [0.2, 0.2], [0.0, 0.0], [0.6, 0.6], [0.3, 0.7], [2.0, 1.0]]])  # GreedyBALD clips
    ensemble = TableClassifier(outside).fit(X, y)
    kwargs = {"sample_predictions_method_name": "sample_proba", "random_state": 2}
    with pytest.warns(DelegationWarning, match="batch_bald"):
        ours = FusedGreedyBALD(**kwargs).query(X, y, ensemble, fit_ensemble=False, batch_size=4)
    theirs = GreedyBALD(**kwargs).query(X, y, ensemble, fit_ensemble=False, batch_size=4, return_utilities=True)
    np.testing.assert_array_equal(ours, theirs[0])
    with warnings.catch_warnings():  # every utility wanted: all are scikit-activeml's anyway, no warning
        warnings.simplefilter("error", DelegationWarning)
        ours = FusedGreedyBALD(**kwargs).query(X, y, ensemble, fit_ensemble=False, batch_size=4, return_utilities=True)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
    # a sampling method that hands out its stored array: GreedyBALD clips it in place, ours reads it
    stored = np.array([[[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [0.5, 0.5], [0.9, 0.1]]])
    ensemble.sample_proba = lambda X_cand: stored[:, : len(X_cand)]
    FusedGreedyBALD(**kwargs).query(X, y, ensemble, fit_ensemble=False, batch_size=2)
    assert stored[0, 0, 0] == 0.0
    GreedyBALD(**kwargs).query(X, y, ensemble, fit_ensemble=False, batch_size=2)
    assert stored[0, 0, 0] == 1e-7


def test_one_class_is_scored_by_scikit_activeml_without_warning() -> None:
    X, y = np.arange(5, dtype=float)[:, None], np.full(5, np.nan)
    clf = TableClassifier(np.ones((5, 1))).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DelegationWarning)
        for method in ("least_confident", "entropy"):
            kw = {"batch_size": 2, "return_utilities": True}
            ours = FusedUncertaintySampling(method, random_state=3).query(X, y, clf, **kw)
            theirs = UncertaintySampling(method, random_state=3).query(X, y, clf, **kw)
            np.testing.assert_array_equal(ours[0], theirs[0])
            np.testing.assert_array_equal(ours[1], theirs[1])
    for qs in (FusedUncertaintySampling("margin_sampling"), UncertaintySampling("margin_sampling")):
        with pytest.raises(ValueError, match="kth"):  # NumPy's partition of a single column, in both
            qs.query(X, y, clf)


#: How far a planted twin's probabilities move from its original's: from below float64
#: resolution of the utility to above float32's, in both directions.
NUDGES = np.array([0.0, 1e-12, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6])


def near_tie_pool(rng: np.random.Generator, utility: Callable[[np.ndarray], np.ndarray], k: int) -> np.ndarray:
    """float64 [..., N, C] probabilities (rows sum to one) where copies of the ~2k best samples
    by ``utility``, moved by :data:`NUDGES`, crowd the selection boundary."""
    members = int(rng.integers(2, 5))
    n, c = int(rng.integers(50, 300)), int(rng.integers(2, 7))
    p = rng.dirichlet(np.full(c, rng.choice([0.3, 1.0, 5.0])), size=(members, n))
    best = np.argsort(-utility(p), kind="stable")[: 2 * k + 2]
    rest = np.setdiff1d(np.arange(n), best)
    twins = rng.choice(rest, size=min(len(rest), 3 * k + 3), replace=False)
    moved = p[:, rng.choice(best, size=len(twins))]
    nudge = rng.choice(NUDGES, size=len(twins)) * rng.choice([-1.0, 1.0], size=len(twins))
    moved[..., 0] += nudge
    moved[..., 1] -= nudge
    p[:, twins] = np.clip(moved, 0, 1)
    return p


@pytest.mark.parametrize("method", ["least_confident", "margin_sampling", "entropy", "bald"])
@settings(max_examples=30, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_float64_near_ties_are_decided_as_scikit_activeml_decides(method: str, seed: int) -> None:
    """Twins around the batch boundary whose utilities differ below float32 resolution."""
    rng = np.random.default_rng(seed)
    batch = int(rng.integers(1, 12))
    if method == "bald":
        p = near_tie_pool(rng, lambda q: batch_bald(q.copy(), 1)[0], batch)
    else:
        p = near_tie_pool(rng, lambda q: uncertainty_scores(q[0], method=method), batch)[0]
    n = p.shape[-2]
    X, y = np.arange(n, dtype=float)[:, None], np.full(n, np.nan)
    clf = TableClassifier(p).fit(X, y)
    state = seed % 1000
    if method == "bald":
        kwargs = {"sample_predictions_method_name": "sample_proba", "random_state": state}
        ours = FusedGreedyBALD(**kwargs).query(X, y, clf, fit_ensemble=False, batch_size=batch)
        theirs = GreedyBALD(**kwargs).query(X, y, clf, fit_ensemble=False, batch_size=batch)
    else:
        ours = FusedUncertaintySampling(method, random_state=state).query(X, y, clf, fit_clf=False, batch_size=batch)
        theirs = UncertaintySampling(method, random_state=state).query(X, y, clf, fit_clf=False, batch_size=batch)
    np.testing.assert_array_equal(ours, theirs)


@PROPERTY
@given(
    table=st.integers(1, 3).flatmap(
        lambda members: st.integers(3, 25).flatmap(
            lambda n: (
                arrays(np.int64, (members, n, 2), elements=st.integers(0, 3))
                | arrays(np.int64, (members, n, 3), elements=st.integers(0, 3))
            )
        )
    ),
    data=st.data(),
)
def test_greedy_bald_on_tied_grid_ensembles_equals_scikit_activeml(table: np.ndarray, data: st.DataObject) -> None:
    """Many samples whose BALD is equal in exact arithmetic but not always in NumPy's (members
    or classes in another order), screened to fewer than all candidates: GreedyBALD's last-bit
    ties and orders must survive."""
    sums = table.sum(-1, keepdims=True)
    p = np.where(sums > 0, table / np.where(sums > 0, sums, 1), 1 / table.shape[-1])
    n = p.shape[1]
    X, y = np.arange(n, dtype=float)[:, None], np.full(n, np.nan)
    ensemble = TableClassifier(p).fit(X, y)
    batch = data.draw(st.integers(1, n - 1))
    kwargs = {"sample_predictions_method_name": "sample_proba", "random_state": data.draw(st.integers(0, 99))}
    ours = FusedGreedyBALD(**kwargs).query(X, y, ensemble, fit_ensemble=False, batch_size=batch)
    theirs = GreedyBALD(**kwargs).query(X, y, ensemble, fit_ensemble=False, batch_size=batch)
    np.testing.assert_array_equal(ours, theirs)
