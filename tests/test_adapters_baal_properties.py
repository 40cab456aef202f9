"""Differential property tests: alkernels.adapters.baal against the installed baal on random pools.

Pools are built from one to four prototype samples (logits on an integer grid, or grid
probabilities), so that identical samples tie exactly and different ones are well apart or tie
in exact arithmetic; one to four classes, one to four iterations, layouts [N, C], [N, C, T] and
segmentation-style [N, C, H, W, T] with every reduction, float32 or float64, sometimes a NaN
sample (with ``nonfinite="exclude"``) or a masked class (a ``-inf`` logit, which baal's softmax
makes probability 0), and baal's generator of batches. For every heuristic:
the same exception type where baal raises; otherwise baal's scores (float32 tolerance; bit for
bit where one class column is delegated to baal), a ranking in baal's order up to float32-level
near-ties, and identical samples ranked by the lower index (the one intended difference).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

pytest.importorskip("baal")
pytest.importorskip("hypothesis")
from baal.active import heuristics as baal_heuristics
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from alkernels.adapters import baal as ab
from alkernels.adapters._scoring import DelegationWarning

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PROPERTY = settings(max_examples=50, deadline=None, database=None)
HEURISTICS = ("BALD", "Entropy", "Margin", "Certainty", "Variance")
REDUCTIONS = {
    "mean": "mean",
    "max": "max",
    "min": "min",
    "sum": "sum",
    "none": "none",
    "std over pixels": lambda s: s.reshape(len(s), -1).std(1),
}


@st.composite
def pools(draw: st.DrawFn) -> dict[str, Any]:
    """baal-layout predictions of a few prototypes, and how to score them."""
    n, c, t = draw(st.integers(1, 10)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    layout = draw(st.sampled_from(["NC", "NCT", "NCHWT"]))
    rest = {"NC": (), "NCT": (t,), "NCHWT": (draw(st.integers(1, 3)), draw(st.integers(1, 2)), t)}[layout]
    prototypes = draw(arrays(np.int64, (draw(st.integers(1, 4)), c, *rest), elements=st.integers(-3, 3)))
    prototypes = prototypes.astype(np.float64)
    if draw(st.booleans()):  # grid probabilities over the classes
        prototypes = np.abs(prototypes)
        sums = prototypes.sum(1, keepdims=True)
        prototypes = np.where(sums > 0, prototypes / np.where(sums > 0, sums, 1), 1 / c)
    which = draw(arrays(np.int64, n, elements=st.integers(0, len(prototypes) - 1)))
    x = prototypes[which].astype(draw(st.sampled_from([np.float32, np.float64])))
    which = which.copy()
    for value, mark in ((np.nan, -1), (-np.inf, -2)):  # a broken sample; a masked class (log 0)
        sample = draw(st.none() | st.integers(0, n - 1))
        if sample is not None:
            x[(sample, c - 1) + (0,) * len(rest)] = value
            which[sample] = mark - 2 * sample  # no longer identical to its prototype's others
    reduction = draw(st.sampled_from(list(REDUCTIONS))) if layout == "NCHWT" else "none"
    return {"x": x, "which": which, "reduction": reduction, "batch": draw(st.integers(1, n))}


def outcome(fn: Any) -> Any:
    """fn()'s value, or the exception it raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception as err:  # noqa: BLE001 - the type is what is compared
        return err


def batches(x: np.ndarray, size: int):
    for start in range(0, len(x), size):
        yield x[start : start + size]


def assert_ranked_as_baal(ranks: np.ndarray, scores: np.ndarray, descending: bool, groups: np.ndarray) -> None:
    """``ranks`` orders baal's ``scores`` best first up to float32-level near-ties, and the
    samples of one group (equal ``groups`` values: identical predictions, or equal scores of
    ours) go to the lower index."""
    assert sorted(ranks.tolist()) == list(range(len(scores)))
    ordered = scores[ranks] if descending else -scores[ranks]
    tol = 1e-5 * (1 + np.abs(ordered))
    assert np.all(ordered[1:] <= ordered[:-1] + tol[:-1]), "not in baal's order beyond float32 near-ties"
    place = np.argsort(ranks)
    for group in np.unique(groups):
        same = np.flatnonzero(groups == group)
        assert np.all(np.diff(place[same]) > 0), "tied samples out of index order"


@pytest.mark.parametrize("name", HEURISTICS)
@PROPERTY
@given(pool=pools())
def test_heuristics_equal_baal(name: str, pool: dict[str, Any]) -> None:
    x, reduction = pool["x"], REDUCTIONS[pool["reduction"]]
    if name == "Variance" and pool["reduction"] == "none":
        reduction = "mean"  # baal's Variance needs a reduction (tested in test_adapters_baal.py)
    ours = getattr(ab, name)(reduction=reduction, nonfinite="exclude")
    theirs = getattr(baal_heuristics, name)(reduction=reduction)
    want = outcome(lambda: theirs.get_uncertainties(x.copy()))
    got = outcome(lambda: ours.get_uncertainties(x))
    if isinstance(want, Exception):
        assert isinstance(got, type(want)), (got, want)
        return
    assert not isinstance(got, Exception), got
    assert got.shape == want.shape
    one_class = x.shape[1] == 1 and name in ("BALD", "Entropy")
    if one_class:  # baal's own heuristic scored it
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if np.isfinite(x).all():  # the default nonfinite="raise" only differs on broken predictions
        np.testing.assert_array_equal(outcome(lambda: getattr(ab, name)(reduction=reduction).get_uncertainties(x)), got)
    if got.ndim != 1:  # one score per pixel cannot be ranked, by baal either
        assert isinstance(outcome(lambda: ours.get_ranks(x)), ValueError)
        assert isinstance(outcome(lambda: theirs.get_ranks(x.copy())), ValueError)
        return
    ranks, scores = outcome(lambda: ours.get_ranks(x))
    np.testing.assert_array_equal(scores, got)
    which = pool["which"]
    if one_class:
        key = want if theirs.reversed else -want
        np.testing.assert_array_equal(ranks, np.lexsort((np.arange(len(key)), -key)))
    else:
        assert_ranked_as_baal(ranks, want.astype(np.float64), theirs.reversed, which)
    # baal's generator of batches (baal reads each batch as probabilities or logits on its own)
    gen_ranks, gen_scores = outcome(lambda: ours.get_ranks(batches(x, pool["batch"])))
    native_gen_scores = outcome(lambda: theirs.get_ranks(batches(x.copy(), pool["batch"])))[1]
    if one_class:
        np.testing.assert_array_equal(gen_scores, native_gen_scores)
    else:
        np.testing.assert_allclose(gen_scores, native_gen_scores, rtol=1e-5, atol=1e-5)
        # identical samples in batches that baal reads differently need not tie: group by score
        assert_ranked_as_baal(gen_ranks, native_gen_scores.astype(np.float64), theirs.reversed, gen_scores)


def test_one_class_delegation_warns_once_per_call() -> None:
    x = np.random.default_rng(0).random((12, 1, 3)).astype(np.float32)
    for name in ("BALD", "Entropy"):
        with pytest.warns(DelegationWarning, match=f"baal's own {name}") as record:
            ab.__dict__[name]().get_ranks(batches(x, 4))
        assert len([w for w in record if w.category is DelegationWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", DelegationWarning)
        ab.Certainty()(x)  # scored by the adapter itself
        ab.BALD()(np.concatenate([x, 1 - x], axis=1))  # two classes: fused
