"""alkernels.adapters.baal against baal 2.x itself.

Scores and ranks are compared with baal's own heuristics on the same input (arrays, tensors,
probabilities, logits, half precision, baal's generator batches, extra axes), the variants baal
lacks with float64 formulas of docs/acquisition.md, and baal's own ``ActiveLearningLoop`` and
``ModelWrapper`` are run for a few steps on a small MC-dropout classifier with the native and
the fused heuristic side by side: they must label the same samples at every step. (Importing
the adapter without baal is checked in test_core_only.py.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

baal_heuristics = pytest.importorskip("baal.active.heuristics")
from baal import ModelWrapper
from baal.active import ActiveLearningDataset, ActiveLearningLoop
from baal.active.heuristics.stochastics import PowerSampling
from baal.bayesian.dropout import MCDropoutModule
from baal.modelwrapper import TrainingArgs

from alkernels import acquisition as acq
from alkernels.adapters import baal as ab

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # baal's own training metric, not this adapter
    pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True:UserWarning"),
]

NATIVE = ("BALD", "Entropy", "Margin", "Certainty", "Variance")


def pool(n: int = 400, c: int = 12, t: int = 6, seed: int = 0, scale: float = 2.5) -> np.ndarray:
    """float32 logits in baal's [N, C, T] layout."""
    return (np.random.default_rng(seed).standard_normal((n, c, t)) * scale).astype(np.float32)


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def assert_same_ranking(ours: np.ndarray, theirs: np.ndarray, scores: np.ndarray, tol: float) -> None:
    """Identical rankings, except that samples whose (reference) scores agree within ``tol``
    may trade places: float32 sums in another order can swap near-ties."""
    assert sorted(ours.tolist()) == list(range(len(scores)))
    differ = np.flatnonzero(ours != theirs)
    gaps = np.abs(scores[ours[differ]] - scores[theirs[differ]])
    assert np.all(gaps <= tol), f"rankings differ beyond near-ties at positions {differ[gaps > tol][:10]}"


def both(name: str, **kw) -> tuple[object, object]:
    return getattr(ab, name)(**kw), getattr(baal_heuristics, name)(**kw)


def inputs(name: str) -> list[tuple[str, object]]:
    x = pool()
    cases = [
        ("logits", x),
        ("probabilities", softmax(x)),
        ("float64", x.astype(np.float64)),
        ("torch", torch.from_numpy(x)),
        ("float16", x.astype(np.float16)),
        # ModelWrapper's batches: an [N, C, T] view of memory laid out [T, N, C]
        ("permuted", np.ascontiguousarray(x.transpose(2, 0, 1)).transpose(1, 2, 0)),
        ("one-element list", [x]),
        ("large offset", x + 1000.0),
    ]
    if name not in ("BALD", "Variance"):
        cases += [("2-D logits", x[..., 0]), ("2-D probabilities", softmax(x[..., 0]))]
    return cases


@pytest.mark.parametrize("name", NATIVE)
def test_scores_and_ranks_match_baal(name: str) -> None:
    for label, predictions in inputs(name):
        ours, theirs = both(name)
        want = theirs.get_uncertainties(predictions.numpy() if isinstance(predictions, torch.Tensor) else predictions)
        got = ours.get_uncertainties(predictions)
        assert got.shape == want.shape and got.dtype == np.float32, label
        # float16 input, and logits near 1000 (float32 spacing 6e-5: the mean over iterations
        # of baal's single-pass heuristics rounds differently in NumPy and torch)
        tol, atol = {"float16": (1e-2, 1e-3), "large offset": (2e-4, 2e-4)}.get(label, (1e-5, 1e-6))
        np.testing.assert_allclose(got, want, rtol=tol, atol=atol, err_msg=f"{name} {label}")
        ranks, scores = ours.get_ranks(predictions)
        np.testing.assert_array_equal(scores, got)
        np.testing.assert_array_equal(ours(predictions), ranks)
        want_ranks = theirs.get_ranks(predictions.numpy() if isinstance(predictions, torch.Tensor) else predictions)[0]
        assert_same_ranking(ranks, want_ranks, np.asarray(want, np.float64), tol=4 * tol)


@pytest.mark.parametrize("name", ["BALD", "Entropy", "Margin", "Certainty"])
@pytest.mark.parametrize("reduction", ["mean", "max", "none"])
def test_extra_axes_and_reductions(name: str, reduction: str) -> None:
    x = (np.random.default_rng(1).standard_normal((50, 5, 3, 4, 6)) * 2).astype(np.float32)  # [N, C, H, W, T]
    ours, theirs = both(name, reduction=reduction)
    np.testing.assert_allclose(ours.compute_score(x), theirs.compute_score(x), rtol=1e-5, atol=1e-6)
    want = theirs.get_uncertainties(x)
    np.testing.assert_allclose(ours.get_uncertainties(x), want, rtol=1e-5, atol=1e-6)
    if reduction == "none":  # one score per pixel cannot be ranked
        with pytest.raises(ValueError, match="set a reduction"):
            ours.get_ranks(x)
    else:
        assert_same_ranking(ours(x), theirs(x), np.asarray(want, np.float64), tol=1e-5)
    custom = both(name, reduction=lambda s: s.reshape(len(s), -1).std(1))
    np.testing.assert_allclose(custom[0].get_uncertainties(x), custom[1].get_uncertainties(x), rtol=1e-4, atol=1e-6)


def test_variance_regression() -> None:
    y = np.random.default_rng(2).standard_normal((300, 3, 8)).astype(np.float32) * [[[1.0], [5.0], [0.1]]]
    for reduction in ("mean", "sum", "max"):
        ours, theirs = both("Variance", reduction=reduction)
        want = theirs.get_uncertainties(y)
        np.testing.assert_allclose(ours.get_uncertainties(y), want, rtol=1e-5)
        assert_same_ranking(ours(y), theirs(y), want.astype(np.float64), tol=1e-5)
    single = y[:, :1]  # one target: no class-count requirement
    np.testing.assert_allclose(ab.Variance()(single), baal_heuristics.Variance()(single))
    with pytest.raises(ValueError, match="needs a reduction"):
        ab.Variance(reduction="none")
    with pytest.raises(ValueError, match="n_iterations"):
        ab.Variance()(y[..., 0])


def spec(x: np.ndarray) -> dict[str, np.ndarray]:
    """docs/acquisition.md in float64 on baal-layout logits [N, C, T], in baal's sign
    convention: the predictive/expected variants."""
    p = softmax(x.astype(np.float64), axis=1)  # [N, C, T]
    p_bar = p.mean(-1)

    def entropy(q: np.ndarray) -> np.ndarray:
        return -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), axis=1)

    top_bar = np.sort(p_bar, axis=1)[:, ::-1]
    top_t = np.sort(p, axis=1)[:, ::-1]
    return {
        "PredictiveEntropy": entropy(p_bar),
        "PredictiveMargin": top_bar[:, 0] - top_bar[:, 1],
        "PredictiveCertainty": top_bar[:, 0],
        "ExpectedEntropy": entropy(p).mean(-1),
        "ExpectedMargin": (top_t[:, 0] - top_t[:, 1]).mean(-1),
        "ExpectedCertainty": top_t[:, 0].mean(-1),
        "BALD": entropy(p_bar) - entropy(p).mean(-1),
    }


@pytest.mark.parametrize("name", list(spec(pool(2, 3, 2))))
def test_variants_match_spec_and_core(name: str) -> None:
    x = pool(seed=3)
    want = spec(x)[name]
    heuristic = getattr(ab, name)()
    for predictions in (x, softmax(x)):
        np.testing.assert_allclose(heuristic.get_uncertainties(predictions), want, rtol=1e-5, atol=1e-6)
    descending = heuristic.reversed
    assert descending == (name in ("PredictiveEntropy", "ExpectedEntropy", "BALD"))
    # the ranking is the core selection of the mapped strategy, tie rule included
    core_idx, _ = acq.select(torch.from_numpy(x).permute(2, 0, 1), heuristic.strategy, len(x))
    assert_same_ranking(heuristic(x), core_idx.numpy(), want, tol=1e-6)


def test_baal_single_pass_definitions_differ_from_p_bar_on_mc_logits() -> None:
    """baal's Entropy/Margin average the logits over iterations before the softmax; the drop-ins
    keep that, the Predictive* variants score p_bar; on probabilities they agree."""
    x = pool(seed=4)
    assert not np.allclose(ab.Entropy().get_uncertainties(x), ab.PredictiveEntropy().get_uncertainties(x), atol=1e-3)
    assert not np.allclose(ab.Margin().get_uncertainties(x), ab.PredictiveMargin().get_uncertainties(x), atol=1e-3)
    p = softmax(x)
    for drop_in, variant in (
        ("Entropy", "PredictiveEntropy"),
        ("Margin", "PredictiveMargin"),
        ("Certainty", "PredictiveCertainty"),
    ):
        np.testing.assert_allclose(
            getattr(ab, drop_in)().get_uncertainties(p),
            getattr(ab, variant)().get_uncertainties(p),
            rtol=1e-5,
            atol=1e-6,
        )


def test_exact_ties_go_to_the_lower_index() -> None:
    x = pool(n=60, seed=5)
    x[[7, 20, 41]] = x[33]  # four identical samples
    x[[3, 50]] = x[12]
    for name in (
        "BALD",
        "Entropy",
        "Margin",
        "Certainty",
        "Variance",
        "ExpectedMargin",
        "PredictiveCertainty",
    ):
        ranks = getattr(ab, name)()(x)
        for group in ([7, 20, 33, 41], [3, 12, 50]):
            where = sorted(np.flatnonzero(np.isin(ranks, group)))
            assert ranks[where].tolist() == group, name  # consecutive positions, ascending index
            assert where == list(range(where[0], where[0] + len(group)))
        theirs = getattr(baal_heuristics, name, None)
        if theirs is not None:  # same ranking as baal once ties are put in index order
            want = theirs().get_uncertainties(x)
            ref = np.lexsort((np.arange(len(want)), -want if theirs().reversed else want))
            assert_same_ranking(ranks, ref, want.astype(np.float64), tol=1e-5)


def batches(x: np.ndarray, size: int):
    """baal's generator form: [batch, C, T] arrays."""
    for start in range(0, len(x), size):
        yield x[start : start + size]


@pytest.mark.parametrize("name", ["BALD", "Entropy", "Margin", "Certainty", "Variance", "ExpectedEntropy"])
def test_generator_of_batches(name: str) -> None:
    x = pool(n=250, seed=6)
    ours = getattr(ab, name)()
    ranks, scores = ours.get_ranks(batches(x, 32))
    np.testing.assert_array_equal(scores, ours.get_uncertainties(x))
    np.testing.assert_array_equal(ranks, ours(x))
    theirs = getattr(baal_heuristics, name, None)
    if theirs is not None:
        want_ranks, want = theirs().get_ranks(batches(x, 32))
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
        assert_same_ranking(ranks, want_ranks, want.astype(np.float64), tol=1e-5)
    # any iterator works, not only generators
    np.testing.assert_array_equal(ours.get_ranks(iter(list(batches(x, 50))))[0], ranks)


def test_nonfinite_predictions() -> None:
    x = pool(n=200, seed=7)
    x[130, 4, 2] = np.nan
    x[170, 0, 0] = np.inf
    gen_error = "pool sample 130"
    for name in ("BALD", "Entropy", "Margin", "Certainty", "Variance", "PredictiveMargin"):
        with pytest.raises(ValueError, match="pool sample 130"):
            getattr(ab, name)()(x)
        with pytest.raises(ValueError, match=gen_error):  # the global index across batches
            getattr(ab, name)().get_ranks(batches(x, 64))
        ours = getattr(ab, name)(nonfinite="exclude")
        with pytest.warns(UserWarning, match="2 non-finite score"):
            ranks, scores = ours.get_ranks(x)
        fill = 0.0 if ours.reversed else 10000.0
        assert scores[130] == scores[170] == fill
        assert set(ranks[-2:].tolist()) == {130, 170}, name  # ranked last, as baal's fill does
        theirs = getattr(baal_heuristics, name, None)
        if theirs is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = theirs().get_uncertainties(x)
            ok = np.isfinite(scores) & (np.arange(len(x)) != 130) & (np.arange(len(x)) != 170)
            np.testing.assert_allclose(scores[ok], want[ok], rtol=1e-5, atol=1e-6)


def test_layout_errors() -> None:
    x = pool(n=20)
    with pytest.raises(ValueError, match=r"n_iterations\] or \[n_sample, n_classes\], got shape \(20,\)"):
        ab.Entropy()(x[:, 0, 0])
    with pytest.raises(ValueError, match="needs MC predictions"):
        ab.BALD()(x[..., 0])
    with pytest.raises(AssertionError):  # baal's own assert
        ab.BALD()(x[..., 0])
    with pytest.raises(IndexError, match="at least 2 classes"):  # baal's Margin indexes a 2nd class
        ab.Margin()(x[:, :1])
    with pytest.raises(ValueError, match="at least 2 classes"):  # no baal counterpart
        ab.PredictiveMargin()(x[:, :1])
    with pytest.raises(IndexError):  # baal's to_prob reads shape[1]
        ab.Entropy()(x[:, 0, 0])
    with pytest.raises(AssertionError):
        ab.Variance()(x[..., 0])
    with pytest.raises(AssertionError):
        ab.Variance(reduction="none")
    with pytest.raises(ValueError, match="list of 2 outputs"):
        ab.BALD()([x, x])
    with pytest.raises(TypeError, match="expects a NumPy array or torch tensor"):
        ab.BALD()("predictions")
    with pytest.raises(ValueError, match="unsupported predictions dtype"):
        ab.BALD()(x > 0)
    with pytest.raises(ValueError, match="yielded no predictions"):
        ab.BALD().get_ranks(batches(x[:0], 4))
    with pytest.raises(ValueError, match="reduction must be"):
        ab.BALD(reduction="median")
    with pytest.raises(AssertionError):  # baal asserts the reduction
        ab.BALD(reduction="median")
    with pytest.raises(ValueError, match="nonfinite must be"):
        ab.BALD(nonfinite="skip")
    with pytest.raises(ValueError, match="unknown backend"):
        ab.BALD(backend="gpu")
    assert ab.BALD().get_uncertainties(x[:0]).shape == (0,)


def test_shuffle_prop_and_random_stream_as_baal() -> None:
    x = pool(seed=8)
    for shuffle_prop in (0.1, 0.5):
        np.random.seed(3)
        with pytest.warns(DeprecationWarning):
            theirs = baal_heuristics.BALD(shuffle_prop=shuffle_prop)(x)
        np.random.seed(3)
        ours = ab.BALD(shuffle_prop=shuffle_prop)(x)
        np.testing.assert_array_equal(ours, theirs)
        assert not np.array_equal(ours, ab.BALD()(x))
    # without shuffling, NumPy's global stream advances exactly as with baal's heuristics
    np.random.seed(4)
    baal_heuristics.Margin()(x)
    after_baal = np.random.rand()
    np.random.seed(4)
    ab.Margin()(x)
    assert np.random.rand() == after_baal


def test_power_sampling_wraps_fused_heuristics() -> None:
    x = pool(seed=9)
    np.random.seed(5)
    want = PowerSampling(baal_heuristics.BALD(), query_size=15).get_ranks(x)[0]
    np.random.seed(5)
    got = PowerSampling(ab.BALD(), query_size=15).get_ranks(x)[0]
    np.testing.assert_array_equal(got, want)


def test_get_heuristic() -> None:
    assert isinstance(ab.get_heuristic("bald"), ab.BALD)
    assert isinstance(ab.get_heuristic("expected_margin", backend="torch"), ab.ExpectedMargin)
    assert ab.get_heuristic("expected_margin", backend="torch").backend == "torch"
    assert ab.get_heuristic("variance")._reduction_name == "mean"
    assert ab.get_heuristic("entropy", reduction="max")._reduction_name == "max"
    assert type(ab.get_heuristic("random")) is baal_heuristics.Random
    with pytest.raises(ValueError, match="unknown heuristic 'bold'"):
        ab.get_heuristic("bold")
    for name in ("BALD", "Entropy", "Margin", "Certainty", "Variance"):
        assert issubclass(getattr(ab, name), baal_heuristics.AbstractHeuristic)
        assert getattr(ab, name)().reversed == getattr(baal_heuristics, name)().reversed


# ---- baal's own loop, native and fused heuristics side by side ------------------------------
def blobs(n: int = 360, classes: int = 4, dim: int = 6, seed: int = 0) -> torch.utils.data.TensorDataset:
    """Gaussian blobs with overlapping classes (a small real classification problem)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 1.5
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, dim, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def run_loop(heuristic: object, generator: bool, steps: int = 3, max_sample: int = -1) -> list[np.ndarray]:
    """baal's ActiveLearningLoop + ModelWrapper on an MC-dropout MLP; the labelled map after
    each step. Seeded so that two runs with equally-ranking heuristics are identical."""
    torch.manual_seed(0)
    np.random.seed(0)
    dataset = ActiveLearningDataset(blobs(), random_state=0)
    dataset.label_randomly(20)
    net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 4))
    model = MCDropoutModule(net)
    wrapper = ModelWrapper(
        model,
        TrainingArgs(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            criterion=torch.nn.CrossEntropyLoss(),
            batch_size=16,
            epoch=3,
            use_cuda=False,
            workers=0,
        ),
    )
    predict = wrapper.predict_on_dataset_generator if generator else wrapper.predict_on_dataset
    loop = ActiveLearningLoop(
        dataset,
        predict,
        heuristic=heuristic,
        query_size=12,
        max_sample=max_sample,
        iterations=5,
        verbose=False,
    )
    history = []
    for step in range(steps):
        wrapper.train_on_dataset(dataset)
        torch.manual_seed(100 + step)  # the same dropout masks for both heuristics
        assert loop.step()
        history.append(dataset.labelled_map.copy())
    return history


@pytest.mark.parametrize("name", ["BALD", "Entropy", "Margin", "Certainty"])
@pytest.mark.parametrize("generator", [False, True], ids=["array", "generator"])
def test_active_learning_loop_labels_what_baal_labels(name: str, generator: bool) -> None:
    native = run_loop(getattr(baal_heuristics, name)(), generator)
    fused = run_loop(getattr(ab, name)(), generator)
    for step, (want, got) in enumerate(zip(native, fused)):
        assert np.array_equal(got, want), f"{name}: different samples labelled at step {step}"
        assert (got > 0).sum() == 20 + 12 * (step + 1)


def test_active_learning_loop_with_max_sample_and_exhausted_pool() -> None:
    # max_sample draws pool subsets from np.random: identical only if the heuristics consume
    # the global stream alike
    native = run_loop(baal_heuristics.BALD(), generator=False, max_sample=100)
    fused = run_loop(ab.BALD(), generator=False, max_sample=100)
    for want, got in zip(native, fused):
        assert np.array_equal(got, want)
    # a query larger than what is left labels the rest, as with baal's heuristics
    dataset = ActiveLearningDataset(blobs(n=30), random_state=0)
    dataset.label_randomly(25)
    loop = ActiveLearningLoop(dataset, lambda pool, **_: pool_logits(len(pool)), heuristic=ab.BALD(), query_size=10)
    assert loop.step() and dataset.n_unlabelled == 0
    assert not loop.step()


def pool_logits(n: int) -> np.ndarray:
    return pool(n=n, c=4, t=3, seed=n)
