"""alkernels.adapters.skactiveml in scikit-activeml's pool loop, against UncertaintySampling and
GreedyBALD.

With the same ``random_state`` the selections and utilities must be identical to the native ones
(bit for bit: ties are broken with the same draws). ``tie_break="index"`` must give equal
utilities to the lower index. Random pools with degenerate cases are in
test_adapters_skactiveml_properties.py.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("skactiveml")
from skactiveml.classifier import ParzenWindowClassifier, SklearnClassifier  # noqa: E402
from skactiveml.pool import GreedyBALD, UncertaintySampling  # noqa: E402
from skactiveml.utils import MISSING_LABEL  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.ensemble import BaggingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from alkernels.adapters._scoring import top_k  # noqa: E402
from alkernels.adapters.skactiveml import FusedGreedyBALD, FusedUncertaintySampling  # noqa: E402
from alkernels.ops.acquisition.reference import topk_torch  # noqa: E402

pytestmark = pytest.mark.timeout(120)

CLASSES = [0, 1, 2, 3]


def assert_same_query(ours: tuple[np.ndarray, np.ndarray], theirs: tuple[np.ndarray, np.ndarray]) -> None:
    """Identical indices (in pick order) and identical utilities (NaN where the native has NaN)."""
    np.testing.assert_array_equal(ours[0], theirs[0])
    assert ours[1].shape == theirs[1].shape and ours[1].dtype == theirs[1].dtype
    np.testing.assert_array_equal(ours[1], theirs[1])  # NaN compares equal to NaN here


def lower_index_picks(utilities: np.ndarray, batch_size: int) -> np.ndarray:
    """The ``batch_size`` largest non-NaN utilities, equal ones by the lower index."""
    valid = np.flatnonzero(~np.isnan(utilities))
    return valid[np.lexsort((valid, -utilities[valid]))][:batch_size]


@pytest.fixture(scope="module")
def problem():
    X, y_true = make_classification(n_samples=500, n_features=10, n_informative=6, n_classes=4, random_state=0)
    return X, y_true


@pytest.mark.parametrize("method", ["least_confident", "margin_sampling", "entropy"])
def test_pool_loop_matches_uncertainty_sampling(problem, method) -> None:
    X, y_true = problem
    y = np.full(len(X), MISSING_LABEL)
    y[:20] = y_true[:20]
    clf = SklearnClassifier(LogisticRegression(max_iter=300), classes=CLASSES)
    ours = FusedUncertaintySampling(method=method, random_state=0)
    native = UncertaintySampling(method=method, random_state=0)
    for _ in range(4):  # scikit-activeml's pool loop: query, label, repeat
        idx, util = ours.query(X, y, clf, batch_size=6, return_utilities=True)
        assert_same_query((idx, util), native.query(X, y, clf, batch_size=6, return_utilities=True))
        assert np.isnan(util[:, ~np.isnan(y)]).all()  # labelled samples are NaN
        assert (np.diff(util[0][idx]) <= 0).all()  # highest utility first
        np.testing.assert_array_equal(ours.query(X, y, clf, batch_size=6), idx)  # screened: same picks
        y[idx] = y_true[idx]


def test_bald_matches_greedy_bald_for_every_ensemble_form(problem) -> None:
    X, y_true = problem
    y = np.full(len(X), MISSING_LABEL)
    y[:40] = y_true[:40]
    bagging = SklearnClassifier(
        BaggingClassifier(LogisticRegression(max_iter=300), n_estimators=5, random_state=0), classes=CLASSES
    )
    members = [SklearnClassifier(LogisticRegression(C=c, max_iter=300), classes=CLASSES) for c in (0.05, 0.3, 1, 5)]
    parzen = ParzenWindowClassifier(classes=CLASSES, class_prior=1.0)
    sampled = {
        "sample_predictions_method_name": "sample_proba",
        "sample_predictions_dict": {"n_samples": 8, "random_state": 0},
    }
    for ensemble, kwargs in ((bagging, {}), (members, {}), (parzen, sampled)):
        drop_ins = (
            FusedUncertaintySampling(method="bald", random_state=0, **kwargs),
            FusedGreedyBALD(random_state=0, **kwargs),
        )
        for ours in drop_ins:
            native = GreedyBALD(random_state=0, **kwargs)
            yy = y.copy()
            for _ in range(3):
                idx, util = ours.query(X, yy, ensemble, batch_size=5, return_utilities=True)
                assert_same_query((idx, util), native.query(X, yy, ensemble, batch_size=5, return_utilities=True))
                np.testing.assert_array_equal(ours.query(X, yy, ensemble, batch_size=5), idx)
                yy[idx] = y_true[idx]


def test_bald_with_ties_from_a_forest(problem) -> None:
    X, y_true = problem
    y = np.full(len(X), MISSING_LABEL)
    y[:40] = y_true[:40]
    forest = SklearnClassifier(RandomForestClassifier(n_estimators=10, random_state=0), classes=CLASSES)
    for seed in range(3):
        native = GreedyBALD(random_state=seed).query(X, y, forest, batch_size=5, return_utilities=True)
        ours = FusedGreedyBALD(random_state=seed).query(X, y, forest, batch_size=5, return_utilities=True)
        assert_same_query(ours, native)
        np.testing.assert_array_equal(FusedGreedyBALD(random_state=seed).query(X, y, forest, batch_size=5), ours[0])
    idx, util = FusedGreedyBALD(tie_break="index").query(X, y, forest, batch_size=5, return_utilities=True)
    u = util[0]
    assert (u == u[idx[-1]]).sum() > 1  # the forest's discrete probabilities tie
    np.testing.assert_array_equal(idx, lower_index_picks(u, 5))


def test_candidates_as_indices_and_as_features(problem) -> None:
    X, y_true = problem
    y = np.full(len(X), MISSING_LABEL)
    y[:30] = y_true[:30]
    clf = SklearnClassifier(LogisticRegression(max_iter=300), classes=CLASSES)
    cand = np.array([3, 50, 51, 90, 200, 201, 202, 400])  # a labelled index is allowed, as in skactiveml
    ours = FusedUncertaintySampling(method="entropy", random_state=0)
    native = UncertaintySampling(method="entropy", random_state=0)
    idx, util = ours.query(X, y, clf, candidates=cand, batch_size=3, return_utilities=True)
    assert set(idx) <= set(cand) and util.shape == (3, len(X))
    assert_same_query((idx, util), native.query(X, y, clf, candidates=cand, batch_size=3, return_utilities=True))
    new = X[:40] + 0.5
    idx, util = ours.query(X, y, clf, candidates=new, batch_size=4, return_utilities=True)
    assert util.shape == (4, 40) and idx.max() < 40  # indices into the candidates
    assert_same_query((idx, util), native.query(X, y, clf, candidates=new, batch_size=4, return_utilities=True))


def test_utility_weight_and_fit_options(problem) -> None:
    X, y_true = problem
    y = np.full(len(X), MISSING_LABEL)
    y[:30] = y_true[:30]
    weight = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    sample_weight = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    clf = SklearnClassifier(LogisticRegression(max_iter=300), classes=CLASSES)
    for method in ("least_confident", "margin_sampling"):
        kw = {"utility_weight": weight, "sample_weight": sample_weight, "batch_size": 5, "return_utilities": True}
        ours = FusedUncertaintySampling(method=method, random_state=0).query(X, y, clf, **kw)
        assert_same_query(ours, UncertaintySampling(method=method, random_state=0).query(X, y, clf, **kw))
    fitted = clone(clf).fit(X, y)
    a = FusedUncertaintySampling().query(X, y, fitted, fit_clf=False, batch_size=4)
    b = FusedUncertaintySampling().query(X, y, clf, batch_size=4)
    np.testing.assert_array_equal(a, b)


def test_ties_and_random_state() -> None:
    X = np.arange(60, dtype=float)[:, None]
    y = np.full(60, MISSING_LABEL)
    y[:4] = [0, 1, 2, 3]
    rows = np.array([[0.4, 0.4, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1]])
    which = np.arange(60) % 3 == 0
    clf = SklearnClassifier(LogisticRegression(), classes=CLASSES).fit(X, y)
    clf.predict_proba = lambda Xc: rows[(~which[Xc[:, 0].astype(int)]).astype(int)]
    tied = np.flatnonzero(which & np.isnan(y))
    idx = FusedUncertaintySampling(method="margin_sampling", tie_break="index").query(
        X, y, clf, fit_clf=False, batch_size=5
    )
    np.testing.assert_array_equal(idx, tied[:5])
    draws = [
        FusedUncertaintySampling(method="margin_sampling", random_state=s).query(X, y, clf, fit_clf=False, batch_size=5)
        for s in (0, 0, 1)
    ]
    np.testing.assert_array_equal(draws[0], draws[1])  # seeded
    assert set(draws[0]) <= set(tied) and set(draws[2]) <= set(tied)
    assert set(draws[0]) != set(draws[2])
    for seed in (0, 1, np.random.RandomState(5)):  # the same draws as scikit-activeml's rand_argmax
        native = UncertaintySampling(method="margin_sampling", random_state=seed)
        np.testing.assert_array_equal(
            FusedUncertaintySampling(method="margin_sampling", random_state=seed).query(
                X, y, clf, fit_clf=False, batch_size=5
            ),
            native.query(X, y, clf, fit_clf=False, batch_size=5),
        )
    # unseeded: NumPy's global stream, consumed exactly as scikit-activeml consumes it
    np.random.seed(3)
    ours = FusedUncertaintySampling(method="margin_sampling").query(X, y, clf, fit_clf=False, batch_size=5)
    after_ours = np.random.random()
    np.random.seed(3)
    native = UncertaintySampling(method="margin_sampling").query(X, y, clf, fit_clf=False, batch_size=5)
    np.testing.assert_array_equal(ours, native)
    assert np.random.random() == after_ours


def test_batch_size_larger_than_candidates_warns_like_skactiveml(problem) -> None:
    X, y_true = problem
    y = np.full(len(X), MISSING_LABEL)
    y[:-3] = y_true[:-3]
    clf = SklearnClassifier(LogisticRegression(max_iter=300), classes=CLASSES)
    with pytest.warns(UserWarning, match="'batch_size=10' is larger than number of candidates"):
        idx, util = FusedUncertaintySampling().query(X, y, clf, batch_size=10, return_utilities=True)
    np.testing.assert_array_equal(np.sort(idx), np.arange(len(X) - 3, len(X)))
    assert util.shape == (3, len(X))


def test_error_paths(problem) -> None:
    X, y_true = problem
    y = np.full(len(X), MISSING_LABEL)
    y[:30] = y_true[:30]
    clf = SklearnClassifier(LogisticRegression(max_iter=300), classes=CLASSES).fit(X, y)
    with pytest.raises(ValueError, match="The given method 'margin' is not valid"):
        FusedUncertaintySampling(method="margin").query(X, y, clf)
    for qs in (FusedUncertaintySampling(method=3), UncertaintySampling(method=3)):
        with pytest.raises(TypeError, match="invalid type for method"):
            qs.query(X, y, clf)
    with pytest.raises(ValueError, match="tie_break must be"):
        FusedUncertaintySampling(tie_break="first").query(X, y, clf)
    with pytest.raises(ValueError, match="only used by method 'bald'"):
        FusedUncertaintySampling(sample_predictions_method_name="sample_proba").query(X, y, clf)
    with pytest.raises(TypeError, match="clf"):
        FusedUncertaintySampling().query(X, y, LogisticRegression())
    with pytest.raises(ValueError, match="'utility_weight' must have length 'n_samples'"):
        FusedUncertaintySampling().query(X, y, clf, utility_weight=np.ones(3))
    with pytest.raises(ValueError, match="no candidate samples"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FusedUncertaintySampling().query(X, y_true.astype(float), clf)
    n_unlabelled = int(np.isnan(y).sum())
    bad = np.full((n_unlabelled, 4), 0.25)
    bad[7, 1] = np.nan
    clf.predict_proba = lambda Xc: bad
    for qs in (FusedUncertaintySampling(method="entropy"), UncertaintySampling(method="entropy")):
        with pytest.raises(ValueError, match="Input contains NaN"):  # scikit-activeml's check
            qs.query(X, y, clf, fit_clf=False)
    unnormalised = np.full((n_unlabelled, 4), 0.3)
    clf.predict_proba = lambda Xc: unnormalised
    for qs in (FusedUncertaintySampling(), UncertaintySampling()):
        with pytest.raises(ValueError, match="The sum over axis 1 must be one"):
            qs.query(X, y, clf, fit_clf=False)
    parzen = ParzenWindowClassifier(classes=CLASSES, class_prior=1.0).fit(X, y)
    parzen.sample_proba = lambda Xc, n_samples: np.full((len(Xc), 4, n_samples), 0.25)  # [N, C, T]
    qs = FusedUncertaintySampling(
        method="bald", sample_predictions_method_name="sample_proba", sample_predictions_dict={"n_samples": 5}
    )
    with pytest.raises(ValueError, match=r"baal's \[N, C, T\] layout"):
        qs.query(X, y, parzen, fit_clf=False)


def test_sklearn_estimator_contract() -> None:
    qs = FusedUncertaintySampling(method="entropy", tie_break="index", random_state=3)
    params = qs.get_params()
    assert params["method"] == "entropy" and params["tie_break"] == "index" and params["random_state"] == 3
    assert clone(qs).get_params() == params
    # scikit-activeml's positional order: method, cost_matrix, missing_label, random_state
    assert FusedUncertaintySampling("margin_sampling", None, -1, 7).get_params()["missing_label"] == -1
    bald = FusedGreedyBALD(4, 1e-6, None, None, -1, 7)
    assert (bald.n_MC_samples, bald.eps, bald.missing_label, bald.random_state) == (4, 1e-6, -1, 7)
    assert clone(bald).get_params() == bald.get_params()


def test_top_k_float64_rule() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        key = rng.integers(0, 6, size=40).astype(np.float64) / 7
        key[rng.random(40) < 0.2] = np.nan
        valid = int((~np.isnan(key)).sum())
        for k in (0, 1, 5, valid):
            ref = topk_torch(torch.from_numpy(key), k, None)[0].numpy()
            np.testing.assert_array_equal(top_k(key, k), ref)
    with pytest.raises(ValueError, match="larger than the number of selectable samples"):
        top_k(np.array([1.0, np.nan]), 2)


def test_import_without_skactiveml_names_the_extra() -> None:
    script = (
        "import sys\nsys.modules['skactiveml'] = None\n"
        "try:\n    import alkernels.adapters.skactiveml\nexcept ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alkernels[skactiveml]" in out.stdout
