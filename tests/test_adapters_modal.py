"""alkernels.adapters.modal inside modAL's own ActiveLearner, against modAL's native strategies.

Selections must be identical, or identical up to ties: the native scores of our picks, sorted,
equal the native scores of modAL's picks (modAL's argpartition order among equal scores is
unspecified; ours goes to the lower index). Scores are float32 on our side, so "equal" allows a
float32-sized tolerance.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

pytest.importorskip("modAL")
from modAL import uncertainty as native  # noqa: E402
from modAL.disagreement import max_std_sampling as native_max_std  # noqa: E402
from modAL.models import ActiveLearner  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: E402
from sklearn.gaussian_process.kernels import RBF  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from alkernels.adapters import modal  # noqa: E402

pytestmark = pytest.mark.timeout(120)

TOL = 2e-6


def assert_same_up_to_ties(native_scores: np.ndarray, ours: np.ndarray, theirs: np.ndarray, *, largest: bool) -> None:
    """``ours`` and ``theirs`` select equally good samples by the native ``native_scores``."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert len(set(ours.tolist())) == len(ours) == len(theirs)
    if set(ours.tolist()) == set(theirs.tolist()):
        return
    a, b = np.sort(native_scores[ours]), np.sort(native_scores[theirs])
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL)
    # and nothing left out is strictly better than the worst pick
    rest = np.setdiff1d(np.arange(len(native_scores)), ours)
    worst = a[0] if largest else a[-1]
    better = native_scores[rest] > worst + TOL if largest else native_scores[rest] < worst - TOL
    assert not better.any()


def counting(strategy):
    """Wrap a strategy to count how often modAL calls it."""

    @functools.wraps(strategy)
    def wrapped(*args, **kwargs):
        wrapped.calls += 1
        return strategy(*args, **kwargs)

    wrapped.calls = 0
    return wrapped


@pytest.fixture(scope="module")
def problem():
    X, y = make_classification(n_samples=700, n_features=12, n_informative=8, n_classes=5, random_state=0)
    return X.astype(np.float64), y


PAIRS = [
    (modal.uncertainty_sampling, native.uncertainty_sampling, native.classifier_uncertainty, True),
    (modal.margin_sampling, native.margin_sampling, native.classifier_margin, False),
    (modal.entropy_sampling, native.entropy_sampling, native.classifier_entropy, True),
]


@pytest.mark.parametrize("ours,theirs,measure,largest", PAIRS, ids=["uncertainty", "margin", "entropy"])
def test_active_learner_loop_matches_native(problem, ours, theirs, measure, largest) -> None:
    X, y = problem
    labelled = np.arange(25)
    pool = np.arange(25, len(X))
    strategy = counting(ours)
    learner = ActiveLearner(
        LogisticRegression(max_iter=300), query_strategy=strategy, X_training=X[labelled], y_training=y[labelled]
    )
    reference = ActiveLearner(
        LogisticRegression(max_iter=300), query_strategy=theirs, X_training=X[labelled], y_training=y[labelled]
    )
    for step in range(5):
        idx, rows, metrics = learner.query(X[pool], n_instances=8, return_metrics=True)
        assert strategy.calls == step + 1  # one call per query: the pair is always returned
        ref_idx, _, _ = reference.query(X[pool], n_instances=8, return_metrics=True)
        native_scores = measure(reference, X[pool])
        assert_same_up_to_ties(native_scores, idx, ref_idx, largest=largest)
        np.testing.assert_allclose(metrics, native_scores[idx], rtol=0, atol=TOL)
        np.testing.assert_array_equal(rows, X[pool][idx])
        # most informative first
        assert (np.diff(metrics) <= TOL).all() if largest else (np.diff(metrics) >= -TOL).all()
        learner.teach(X[pool][idx], y[pool][idx])
        reference.teach(X[pool][idx], y[pool][idx])  # both learners stay on the same data
        pool = np.delete(pool, idx)


class DropoutMLP:
    """A tiny scikit-learn-style torch classifier with MC dropout, as a modAL estimator."""

    def __init__(self, n_features: int, n_classes: int) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_features, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, n_classes)
        )

    def fit(self, X: np.ndarray, y: np.ndarray) -> DropoutMLP:
        opt = torch.optim.Adam(self.net.parameters(), lr=0.02)
        x, t = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
        self.net.train()
        for _ in range(40):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(self.net(x), t).backward()
            opt.step()
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.net.eval()
        with torch.no_grad():
            return torch.softmax(self.net(torch.as_tensor(X, dtype=torch.float32)), -1).numpy()

    def mc_logits(self, X: np.ndarray, passes: int = 8) -> torch.Tensor:
        """[T, N, C] float32 logits with dropout active."""
        self.net.train()
        with torch.no_grad():
            x = torch.as_tensor(X, dtype=torch.float32)
            return torch.stack([self.net(x) for _ in range(passes)])


@pytest.fixture
def modal_dropout(monkeypatch):
    """modAL.dropout's scoring helpers. modAL imports skorch there only for ``to_numpy``; skorch
    may not import in this venv, so a stub stands in for that one function."""
    stub = types.ModuleType("skorch")
    stub_utils = types.ModuleType("skorch.utils")
    stub_utils.to_numpy = lambda t: t.numpy()
    stub.utils = stub_utils
    monkeypatch.setitem(sys.modules, "skorch", stub)
    monkeypatch.setitem(sys.modules, "skorch.utils", stub_utils)
    monkeypatch.delitem(sys.modules, "modAL.dropout", raising=False)
    from modAL import dropout

    yield dropout
    sys.modules.pop("modAL.dropout", None)


def test_mc_strategies_in_loop_match_modal_dropout_scores(problem, modal_dropout) -> None:
    X, y = problem
    labelled, pool = np.arange(30), np.arange(30, 400)
    learner = ActiveLearner(
        DropoutMLP(X.shape[1], 5), query_strategy=modal.bald_sampling, X_training=X[labelled], y_training=y[labelled]
    )
    for _ in range(3):
        logits = learner.estimator.mc_logits(X[pool])
        probas = list(torch.softmax(logits, -1).numpy().astype(np.float64))  # modAL's list of [N, C]

        def mc(X_pool, logits=logits):  # the same MC draw for every strategy
            return logits

        checks = [
            (modal.bald_sampling, modal_dropout._bald_divergence(probas)),
            (modal.expected_entropy_sampling, modal_dropout._entropy(probas) * 5 / len(probas)),
            (modal.uncertainty_sampling, modal_dropout._variation_ratios(probas)),
        ]
        for ours, native_scores in checks:
            idx, metrics = ours(learner, X[pool], n_instances=6, mc=mc)
            ref_idx, _ = native.multi_argmax(native_scores, n_instances=6)
            assert_same_up_to_ties(native_scores, idx, ref_idx, largest=True)
            np.testing.assert_allclose(metrics, native_scores[idx], rtol=1e-5, atol=TOL)
        idx, rows = learner.query(X[pool], n_instances=6, mc=mc)
        learner.teach(rows, y[pool][idx])
        pool = np.delete(pool, idx)


def test_mc_probabilities_and_expected_variants() -> None:
    rng = np.random.default_rng(1)
    logits = torch.as_tensor(rng.normal(size=(6, 300, 7)) * 2, dtype=torch.float32)
    p = torch.softmax(logits.double(), -1).numpy()
    top2 = -np.sort(-p, axis=-1)[..., :2]
    expected = {
        modal.expected_margin_sampling: (top2[..., 0] - top2[..., 1]).mean(0),
        modal.expected_uncertainty_sampling: 1 - top2[..., 0].mean(0),
        modal.predictive_entropy_sampling: -(p.mean(0) * np.log(p.mean(0))).sum(-1),
    }
    for strategy, scores in expected.items():
        largest = strategy is not modal.expected_margin_sampling
        for output, values in (("logits", logits), ("proba", p)):
            idx, metrics = strategy(None, np.zeros((300, 2)), 10, mc=lambda X, v=values: v, mc_output=output)
            order = np.argsort(-scores if largest else scores, kind="stable")[:10]
            assert_same_up_to_ties(scores, idx, order, largest=largest)
            np.testing.assert_allclose(metrics, scores[idx], rtol=1e-5, atol=TOL)


def test_zero_probabilities_are_handled() -> None:
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.9, 0.1]])
    clf = types.SimpleNamespace(predict_proba=lambda X: p)
    for ours, _, measure, _ in PAIRS:
        idx, metrics = ours(clf, np.zeros((4, 1)), n_instances=4)
        ref = measure(clf, np.zeros((4, 1)))
        np.testing.assert_allclose(metrics, ref[idx], rtol=0, atol=TOL)
        assert np.isfinite(metrics).all()


def test_ties_go_to_lower_index_and_random_tie_break_matches_modal() -> None:
    rows = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.9, 0.05, 0.05]])
    which = np.random.default_rng(0).integers(0, 3, size=200)
    p = rows[which]  # many exact ties, exact in float32 too
    clf = types.SimpleNamespace(predict_proba=lambda X: p)
    X = np.zeros((200, 1))
    idx, _ = modal.uncertainty_sampling(clf, X, n_instances=5)
    np.testing.assert_array_equal(idx, np.flatnonzero(which == 1)[:5])
    for ours, theirs, _, _ in PAIRS:
        for seed in range(3):
            np.random.seed(seed)
            ref_idx, _ = theirs(clf, X, n_instances=7, random_tie_break=True)
            np.random.seed(seed)
            idx, _ = ours(clf, X, n_instances=7, random_tie_break=True)
            assert set(idx.tolist()) == set(ref_idx.tolist())


def test_unfitted_and_single_class_classifiers_behave_as_modal(problem) -> None:
    X, _ = problem
    unfitted = LogisticRegression()
    for ours, theirs, measure, _ in PAIRS:
        idx, metrics = ours(unfitted, X[:50], n_instances=4)
        np.testing.assert_array_equal(idx, np.arange(4))
        np.testing.assert_array_equal(metrics, measure(unfitted, X[:4]))
    one_class = types.SimpleNamespace(predict_proba=lambda X: np.ones((len(X), 1)))
    for ours, theirs, measure, _ in PAIRS:
        idx, metrics = ours(one_class, X[:50], n_instances=3)
        np.testing.assert_array_equal(idx, np.arange(3))
        np.testing.assert_array_equal(metrics, theirs(one_class, X[:50], n_instances=3)[1])


def test_error_paths(problem) -> None:
    X, y = problem
    clf = LogisticRegression(max_iter=300).fit(X[:40], y[:40])
    with pytest.raises(ValueError, match=r"n_instances = 51 must be less or equal than the size of the pool \(50\)"):
        modal.uncertainty_sampling(clf, X[:50], n_instances=51)
    with pytest.raises(AssertionError):  # modAL asserts it
        modal.uncertainty_sampling(clf, X[:50], n_instances=51)
    with pytest.raises(AssertionError):
        native.uncertainty_sampling(clf, X[:50], n_instances=51)
    with pytest.raises(ValueError, match="n_instances must be a non-negative int"):
        modal.entropy_sampling(clf, X[:50], n_instances=-1)
    for strategy in (modal.margin_sampling, native.margin_sampling):  # NumPy's TypeError in modAL
        with pytest.raises(TypeError):
            strategy(clf, X[:50], n_instances=2.0)
    with pytest.raises(ValueError, match=r"modAL's strategies score \[N, C\]"):
        modal.entropy_sampling(types.SimpleNamespace(predict_proba=lambda X: np.full((2, 50, 5), 0.2)), X[:50])
    nan = np.full((50, 5), 0.2)
    nan[17, 2] = np.nan
    bad = types.SimpleNamespace(predict_proba=lambda X: nan)
    for strategy in (modal.uncertainty_sampling, modal.margin_sampling, modal.entropy_sampling):
        with pytest.raises(ValueError, match="NaN, infinite or negative probability for pool sample 17"):
            strategy(bad, X[:50])
    negative = np.full((50, 5), 0.2)
    negative[3, 0] = -0.1
    with pytest.raises(ValueError, match="pool sample 3"):
        modal.margin_sampling(types.SimpleNamespace(predict_proba=lambda X: negative), X[:50])
    with pytest.raises(ValueError, match=r"predict_proba returned shape \(1, 40, 5\) for a pool of 50"):
        modal.margin_sampling(types.SimpleNamespace(predict_proba=lambda X: np.full((40, 5), 0.2)), X[:50])
    logits = torch.randn(4, 50, 5)
    with pytest.raises(ValueError, match=r"baal's \[N, C, T\] layout"):
        modal.bald_sampling(None, X[:50], mc=lambda X: logits.permute(1, 2, 0))
    with pytest.raises(ValueError, match="must return"):
        modal.bald_sampling(None, X[:50], mc=lambda X: logits[..., None])
    with pytest.raises(ValueError, match="at least 2 classes"):
        modal.bald_sampling(None, X[:50], mc=lambda X: logits[..., :1])
    inf = logits.clone()
    inf[2, 33, 1] = float("inf")
    with pytest.raises(ValueError, match="mc returned a NaN or infinite logit for pool sample 33"):
        modal.bald_sampling(None, X[:50], mc=lambda X: inf)
    with pytest.raises(ValueError, match="bald_sampling needs MC predictions"):
        modal.bald_sampling(clf, X[:50])
    with pytest.raises(ValueError, match="mc_output must be"):
        modal.bald_sampling(None, X[:50], mc=lambda X: logits, mc_output="probs")
    with pytest.raises(TypeError, match="predict_proba, which is not called"):
        modal.entropy_sampling(clf, X[:50], mc=lambda X: logits, temperature=2.0)


def test_max_std_sampling_in_loop_matches_native() -> None:
    X, y = make_regression(n_samples=160, n_features=4, noise=0.1, random_state=0)
    labelled, pool = np.arange(10), np.arange(10, 160)
    gpr = GaussianProcessRegressor(kernel=RBF(3.0), optimizer=None, normalize_y=True)
    learner = ActiveLearner(gpr, query_strategy=modal.max_std_sampling, X_training=X[labelled], y_training=y[labelled])
    for _ in range(3):
        idx, rows, stds = learner.query(X[pool], n_instances=4, return_metrics=True)
        ref_idx, _ = native_max_std(learner, X[pool], n_instances=4)
        _, std = learner.predict(X[pool], return_std=True)
        assert_same_up_to_ties(std, idx, ref_idx, largest=True)
        np.testing.assert_array_equal(stds, std[idx])  # float64, exact
        gp = learner.estimator  # the variance hook gives the same query

        def variance(X_pool, gp=gp):
            return gp.predict(X_pool, return_std=True)[1] ** 2

        var_idx, var_std = modal.max_std_sampling(None, X[pool], 4, variance=variance)
        np.testing.assert_array_equal(var_idx, idx)
        np.testing.assert_allclose(var_std, stds, rtol=1e-12)
        learner.teach(rows, y[pool][idx])
        pool = np.delete(pool, idx)


def test_max_std_sampling_errors_and_ties() -> None:
    X = np.zeros((6, 2))
    std = np.array([0.1, 0.5, 0.5, 0.2, 0.5, 0.0])
    reg = types.SimpleNamespace(predict=lambda X, return_std: (np.zeros(len(X)), std))
    idx, values = modal.max_std_sampling(reg, X, 2)
    np.testing.assert_array_equal(idx, [1, 2])
    np.testing.assert_array_equal(values, [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN, infinite or negative value for pool sample 4"):
        modal.max_std_sampling(None, X, 1, variance=lambda X: np.array([1, 1, 1, 1, -1, 1.0]))
    with pytest.raises(ValueError, match="returned 5 values"):
        modal.max_std_sampling(None, X, 1, variance=lambda X: np.ones(5))
    with pytest.raises(ValueError, match="less or equal than the size of the pool"):
        modal.max_std_sampling(reg, X, 7)
    with pytest.raises(TypeError, match="predict, which is not called"):
        modal.max_std_sampling(reg, X, 1, variance=lambda X: np.ones(6), foo=1)


def test_import_without_modal_names_the_extra() -> None:
    script = (
        "import sys\nsys.modules['modAL'] = None\n"
        "try:\n    import alkernels.adapters.modal\nexcept ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alkernels[modal]" in out.stdout


def test_backends_agree() -> None:
    logits = torch.randn(5, 400, 12, generator=torch.Generator().manual_seed(3)) * 3
    p = torch.softmax(logits[0].double(), -1).numpy()
    clf = types.SimpleNamespace(predict_proba=lambda X: p)
    X = np.zeros((400, 1))
    for strategy in (modal.bald_sampling, modal.expected_margin_sampling):
        a = strategy(None, X, 20, mc=lambda _: logits, backend="torch")
        b = strategy(None, X, 20, mc=lambda _: logits, backend="auto")
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
    a = modal.entropy_sampling(clf, X, 20, backend="torch")
    b = modal.entropy_sampling(clf, X, 20, backend="auto")
    np.testing.assert_array_equal(a[0], b[0])
