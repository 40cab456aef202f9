"""modAL query strategies backed by the fused alkernels scoring (extra ``modal``).

Swap the import and keep the rest of a modAL loop::

    from alkernels.adapters.modal import uncertainty_sampling   # was: from modAL.uncertainty ...
    learner = ActiveLearner(estimator=clf, query_strategy=uncertainty_sampling, ...)
    idx, rows = learner.query(X_pool, n_instances=100)

Every strategy has modAL's signature ``strategy(classifier, X_pool, n_instances=1,
random_tie_break=False, **kwargs)`` and always returns the pair ``(indices, metrics)``: modAL's
``ActiveLearner.query`` unpacks the result inside a bare ``try`` and calls the strategy a second
time when unpacking fails, so a strategy returning one array would either run twice or, for
``n_instances=2``, be silently unpacked into the wrong two values.

Where the predictions come from:

- ``classifier.predict_proba(X_pool, **kwargs)`` (the modAL default): probabilities [N, C].
  The answer is modAL's own: the fused kernel (or one exact torch pass) screens the pool, and
  the samples that can still be selected are scored again by modAL's measure
  (``classifier_uncertainty``, ``classifier_margin``, ``classifier_entropy``) in its
  precision, so indices and metrics are the ones modAL computes. One class column, rows that
  do not sum to one (all zeros included) and unfitted classifiers get modAL's values too.
- ``mc=callable``: ``mc(X_pool)`` returns MC-dropout or ensemble outputs [T, N, C] (or [N, C]),
  NumPy or torch on any device, as logits (default) or as probabilities with
  ``mc_output="proba"``. ``predict_proba`` is not called then. Pass it per query
  (``learner.query(X_pool, n_instances=k, mc=fn)``) or bind it once with
  ``functools.partial(bald_sampling, mc=fn)``. These scores are the fused kernel's (float32);
  modAL has no strategy on such input.

Strategies (score definitions in ``docs/acquisition.md``; the returned metric follows modAL's
convention of each name):

==================================  =====================  ====================================
strategy                            alkernels score        metric returned (selected where)
==================================  =====================  ====================================
uncertainty_sampling                least_confidence       ``1 - max p_bar`` (largest)
margin_sampling                     margin                 ``p_bar(1) - p_bar(2)`` (smallest)
entropy_sampling                    entropy                ``H(p_bar)`` (largest)
bald_sampling (mc)                  bald                   mutual information (largest)
predictive_entropy_sampling         predictive_entropy     ``H(p_bar)`` (largest)
expected_entropy_sampling (mc)      expected_entropy       ``mean_t H(p_t)`` (largest)
expected_uncertainty_sampling (mc)  expected_least_conf.   ``1 - mean_t max p_t`` (largest)
expected_margin_sampling (mc)       expected_margin        ``mean_t (p_t(1) - p_t(2))`` (smallest)
max_std_sampling (regression)       --                     predictive std (largest)
==================================  =====================  ====================================

With one pass (``predict_proba``) ``p_bar`` is that pass; the ``(mc)`` strategies need ``mc=``.
modAL's own MC-dropout strategies (skorch only) rank the same way: ``mc_dropout_bald`` as
``bald_sampling``, ``mc_dropout_max_entropy`` (``T/C`` times the expected entropy) as
``expected_entropy_sampling``, ``mc_dropout_max_variationRatios`` as ``uncertainty_sampling``
with ``mc=``.

Differences from modAL's strategies:

- **Ties** (the intended one). With ``random_tie_break=False`` equal metrics go to the lower
  pool index (modAL's ``argpartition`` leaves them unspecified). With ``random_tie_break=True``
  the tie is broken by one ``np.random.permutation`` drawn from NumPy's global generator exactly
  as modAL draws it, so the same generator state selects the same samples as modAL.
- **Order.** Indices come most informative first (modAL returns ``argpartition`` order, or
  least informative first with ``random_tie_break=True``); the set is modAL's.
- **Non-probabilities.** A NaN, infinite or negative entry of ``predict_proba`` (or of the
  std of ``max_std_sampling``) raises ``ValueError`` naming the sample: modAL scores whatever
  it gets, and selects a NaN metric never or first, depending on ``random_tie_break``.
- **Errors.** ``n_instances`` larger than the pool raises an error that is both modAL's
  ``AssertionError`` and a ``ValueError``, a non-integer one a ``TypeError`` as in modAL; a
  negative one raises ``ValueError`` (modAL returns N - 1 samples for -1); ``predict_proba``
  output that is not [N, C] raises ``ValueError``, and so does an MC output that does not
  cover the pool (with a hint for baal's [N, C, T] layout).

Rows that do not sum to one make ``entropy_sampling`` score the whole pool with modAL's measure
(a :class:`~alkernels.adapters._scoring.DelegationWarning` says so); so does an array that is
not C-contiguous, without a warning (SciPy sums its rows in another order). Extra keyword
arguments go to ``predict_proba`` (or ``predict`` for ``max_std_sampling``).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from alkernels import acquisition as acq
from alkernels._extras import missing_extra
from alkernels.adapters._scoring import (
    DelegationWarning,
    FrameworkAssertionError,
    as_tnc,
    first_bad_probability,
    fused_bound,
    logit_scores,
    proba_scores,
    screen,
    top_k,
)

try:
    from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty
    from modAL.utils.data import modALinput
    from sklearn.exceptions import NotFittedError
except ImportError as err:
    raise missing_extra("modal", __name__, err) from err

__all__ = [
    "uncertainty_sampling",
    "margin_sampling",
    "entropy_sampling",
    "bald_sampling",
    "predictive_entropy_sampling",
    "expected_entropy_sampling",
    "expected_uncertainty_sampling",
    "expected_margin_sampling",
    "max_std_sampling",
]

MCOutput = Literal["logits", "proba"]
#: ``mc(X_pool)``: [T, N, C] (or [N, C]) logits or probabilities, NumPy or torch.
MCCallable = Callable[[modALinput], np.ndarray | torch.Tensor]
Query = tuple[np.ndarray, np.ndarray]
#: modAL's measure of one ``predict_proba`` pass: ``measure(classifier, X) -> [N]``.
Measure = Callable[..., np.ndarray]

#: What modAL's measures return for an unfitted classifier (they catch ``NotFittedError``).
_UNFITTED: dict[Measure, float] = {classifier_uncertainty: 1.0, classifier_margin: 0.0, classifier_entropy: 0.0}
#: Row sums of ``predict_proba`` within which the fused entropy screens the pool (further out,
#: float32 loses small entries relative to the row).
_ENTROPY_ROW_SUMS = (2.0**-10, 2.0**10)


def _pool_size(X_pool: modALinput) -> int:
    shape = getattr(X_pool, "shape", None)
    return int(shape[0]) if shape is not None else len(X_pool)


def _check_n_instances(n_instances: int, n: int) -> int:
    """``n_instances`` as an int: TypeError for a non-integer (as NumPy raises in modAL), an
    error that is also modAL's AssertionError above the pool size."""
    try:
        k = operator.index(n_instances)
    except TypeError:
        raise TypeError(f"n_instances must be an int, got {type(n_instances).__name__} {n_instances!r}") from None
    if k < 0:
        raise ValueError(f"n_instances must be a non-negative int, got {n_instances!r}")
    if k > n:
        raise FrameworkAssertionError(f"n_instances = {k} must be less or equal than the size of the pool ({n})")
    return k


def _select(scores: torch.Tensor, k: int, random_tie_break: bool) -> torch.Tensor:
    """int64 [k] indices of the k largest scores: ties to the lower index, or modAL's shuffle."""
    if not random_tie_break:
        return acq.topk(scores, k)[0]
    # modAL's shuffled_argmax sorts the shuffled scores ascending (stable) and keeps the last k,
    # so among ties the LATEST shuffled positions win: the lower-index rule on the reversed
    # shuffle picks the same set.
    order = torch.from_numpy(np.random.permutation(scores.shape[0])[::-1].copy()).to(scores.device)
    return order[acq.topk(scores[order], k)[0]]


class _Given:
    """A stand-in classifier whose ``predict_proba`` returns given probabilities, so that modAL's
    own measure scores rows that were already predicted."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, X: Any, **kwargs: Any) -> np.ndarray:
        return self.proba


def _take_rows(proba: np.ndarray | torch.Tensor, rows: np.ndarray | None) -> np.ndarray:
    """Rows of ``predict_proba``'s output as a NumPy array (all of them for None)."""
    if isinstance(proba, torch.Tensor):
        taken = proba if rows is None else proba[torch.from_numpy(rows).to(proba.device)]
        return taken.detach().cpu().numpy()
    return proba if rows is None else proba[rows]


def _screen_key(
    strategy: str, p: torch.Tensor, backend: str, name: str
) -> tuple[np.ndarray, np.ndarray | float] | None:
    """(float64 [N] approximation of modAL's selection key, its error bound) of probabilities
    ``p`` [N, C >= 2]; None where the whole pool must be scored by modAL's measure.

    The key is the metric, negated for margins (smallest first). ``1 - max p`` and the margin
    are exact in ``p``'s dtype (one torch pass); the entropy is the fused kernel's float32
    score, which renormalises each row exactly as modAL's (SciPy's) entropy does. SciPy gives a
    row subset of a C-contiguous pool the same bits as the whole pool, not of other layouts:
    their entropy is modAL's on every row.
    """
    if strategy == "least_confidence":
        key = (1 - p.amax(1)).double()
    elif strategy == "margin":
        top2 = p.topk(2, dim=1).values
        key = -(top2[:, 0] - top2[:, 1]).double()
    elif not p.is_contiguous():
        return None
    else:
        sums = p.sum(1, dtype=torch.float64)
        if not bool(((sums >= _ENTROPY_ROW_SUMS[0]) & (sums <= _ENTROPY_ROW_SUMS[1])).all()):
            warnings.warn(
                f"{name}: rows of predict_proba sum to 0 or far from one; the pool is scored by "
                "modAL's classifier_entropy instead of the fused kernel",
                DelegationWarning,
                stacklevel=5,
            )
            return None
        key = proba_scores(p, "entropy", backend=backend).double()
        return key.cpu().numpy(), fused_bound("entropy", p.shape[1])
    key = key.cpu().numpy()
    return key, 2.0**-40 * (1.0 + np.abs(key))  # exact: the bound only absorbs an ulp of doubt


def _modal_order(values: np.ndarray, rows: np.ndarray, largest: bool, position: np.ndarray | None) -> np.ndarray:
    """The order in which modAL selects among ``rows`` with exact metrics ``values``.

    ``position`` None: ``multi_argmax``/``multi_argmin``: the best first, NaN after every
    number (``argpartition`` sorts NaN last); equal metrics to the lower index. Otherwise
    ``position`` [N] is each sample's place in modAL's shuffle (``shuffled_argmax``/
    ``shuffled_argmin`` keep the last k of a stable ascending sort): NaN first, then the best,
    equal metrics to the later place.
    """
    key = np.asarray(values, dtype=np.float64)
    key = key if largest else -key
    nan = np.isnan(key)
    key = np.where(nan, 0.0, key)
    if position is None:
        return np.lexsort((rows, -key, nan))
    return np.lexsort((-position[rows], -key, ~nan))


def _query_proba(
    strategy: str,
    measure: Measure,
    largest: bool,
    classifier: Any,
    X_pool: modALinput,
    k: int,
    random_tie_break: bool,
    backend: str,
    predict_proba_kwargs: dict[str, Any],
    name: str,
) -> Query:
    """modAL's strategy on ``predict_proba``: modAL's metric and modAL's selection rule."""
    n = _pool_size(X_pool)
    try:
        proba = classifier.predict_proba(X_pool, **predict_proba_kwargs)
    except NotFittedError:
        rows, values = np.arange(n), np.full(n, _UNFITTED[measure])
    else:
        if not isinstance(proba, torch.Tensor):
            proba = np.asarray(proba)
        p = as_tnc(proba, n, "predict_proba", min_classes=1)
        if proba.ndim != 2:
            raise ValueError(
                f"predict_proba returned shape {tuple(proba.shape)}; modAL's strategies score [N, C] "
                "probabilities (pass mc= for [T, N, C] MC predictions)"
            )
        p = p[0]
        bad = first_bad_probability(p)
        if bad is not None:
            raise ValueError(f"predict_proba returned a NaN, infinite or negative probability for pool sample {bad}")
        screened = None if p.shape[1] < 2 else _screen_key(strategy, p, backend, name)
        if screened is None:  # one class column, or rows far from normalised: modAL's measure on all
            rows, values = np.arange(n), measure(_Given(_take_rows(proba, None)), X_pool)
        else:
            rows = screen(*screened, k)
            values = measure(_Given(_take_rows(proba, rows)), X_pool)
    position = None
    if random_tie_break:  # modAL draws this permutation after predict_proba, over the whole pool
        position = np.empty(n, dtype=np.int64)
        position[np.random.permutation(n)] = np.arange(n)
    order = _modal_order(values, rows, largest, position)[:k]
    return rows[order].astype(np.int64), values[order]


def _query(
    strategy: str,
    measure: Measure | None,
    largest: bool,
    classifier: Any,
    X_pool: modALinput,
    n_instances: int,
    random_tie_break: bool,
    mc: MCCallable | None,
    mc_output: MCOutput,
    backend: str,
    predict_proba_kwargs: dict[str, Any],
    name: str,
) -> Query:
    """One strategy: modAL's ``measure`` on ``predict_proba`` (see :func:`_query_proba`), or with
    ``mc`` the fused alkernels ``strategy`` on MC output (metric negated when not ``largest``).
    ``measure`` is None for the strategies that need ``mc``."""
    n = _pool_size(X_pool)
    k = _check_n_instances(n_instances, n)
    if mc_output not in ("logits", "proba"):
        raise ValueError(f"mc_output must be 'logits' or 'proba', got {mc_output!r}")
    if mc is None:
        if measure is None:
            raise ValueError(
                f"{name} needs MC predictions: pass mc=callable(X_pool) returning [T, N, C] logits "
                "(or probabilities with mc_output='proba')"
            )
        return _query_proba(
            strategy, measure, largest, classifier, X_pool, k, random_tie_break, backend, predict_proba_kwargs, name
        )
    if predict_proba_kwargs:
        raise TypeError(
            f"{name} got unexpected keyword arguments {sorted(predict_proba_kwargs)}: "
            "they would go to predict_proba, which is not called when mc= is given"
        )
    out = as_tnc(mc(X_pool), n, "mc")
    score = proba_scores if mc_output == "proba" else logit_scores
    scores = score(out, strategy, backend=backend, source="mc")
    idx = _select(scores, k, random_tie_break)
    sign = 1.0 if largest else -1.0
    return idx.cpu().numpy(), (sign * scores[idx]).cpu().numpy()


def uncertainty_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
    **predict_proba_kwargs: Any,
) -> Query:
    """Least-confident sampling: the samples whose top class is least probable.

    Args:
        classifier: anything with ``predict_proba(X_pool, **predict_proba_kwargs)`` -> [N, C]
            (a modAL learner or a scikit-learn classifier); unused when ``mc`` is given.
        X_pool: the pool (array, sparse matrix, DataFrame, list: anything modAL accepts).
        n_instances: how many samples to query, at most the pool size.
        random_tie_break: break ties by modAL's random shuffle instead of the lower index.
        mc: ``mc(X_pool)`` -> [T, N, C] (or [N, C]) logits or probabilities; then the score is
            taken on the mean distribution ``p_bar`` over the T passes.
        mc_output: ``"logits"`` or ``"proba"``: what ``mc`` returns.
        backend: ``"auto"``, ``"torch"``, ``"cpu"`` or ``"triton"``.
        **predict_proba_kwargs: passed to ``predict_proba``.

    Returns:
        (int64 [n_instances] pool indices most informative first, [n_instances] uncertainties
        ``1 - max_c p_bar``: modAL's values in ``predict_proba``'s dtype (float64 for
        scikit-learn), float32 with ``mc``).
    """
    return _query(
        "least_confidence",
        classifier_uncertainty,
        True,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        predict_proba_kwargs,
        "uncertainty_sampling",
    )


def margin_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
    **predict_proba_kwargs: Any,
) -> Query:
    """Margin sampling: the samples whose two most probable classes are closest.

    Arguments as :func:`uncertainty_sampling`.

    Returns:
        (int64 [n_instances] indices, smallest margin first; [n_instances] margins
        ``p_bar(1) - p_bar(2)`` as modAL returns them, dtypes as :func:`uncertainty_sampling`).
    """
    return _query(
        "margin",
        classifier_margin,
        False,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        predict_proba_kwargs,
        "margin_sampling",
    )


def entropy_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
    **predict_proba_kwargs: Any,
) -> Query:
    """Entropy sampling: the samples with the largest predictive entropy ``H(p_bar)`` (nats).

    Arguments as :func:`uncertainty_sampling`.

    Returns:
        (int64 [n_instances] indices, [n_instances] entropies, dtypes as
        :func:`uncertainty_sampling`).
    """
    return _query(
        "entropy",
        classifier_entropy,
        True,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        predict_proba_kwargs,
        "entropy_sampling",
    )


def predictive_entropy_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
    **predict_proba_kwargs: Any,
) -> Query:
    """Predictive entropy ``H(p_bar)``: :func:`entropy_sampling` under its MC-dropout name.

    Arguments as :func:`uncertainty_sampling`; usually given ``mc``.

    Returns:
        (int64 [n_instances] indices, [n_instances] predictive entropies, dtypes as
        :func:`uncertainty_sampling`).
    """
    return _query(
        "predictive_entropy",
        classifier_entropy,
        True,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        predict_proba_kwargs,
        "predictive_entropy_sampling",
    )


def bald_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
) -> Query:
    """BALD: the mutual information between prediction and MC pass, ``H(p_bar) - mean_t H(p_t)``.

    Needs ``mc`` (``classifier`` is not used); arguments as :func:`uncertainty_sampling`.

    Returns:
        (int64 [n_instances] indices, float32 [n_instances] BALD scores in nats).
    """
    return _query(
        "bald",
        None,
        True,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        {},
        "bald_sampling",
    )


def expected_entropy_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
) -> Query:
    """Expected entropy ``mean_t H(p_t)``: the ranking of modAL's ``mc_dropout_max_entropy``.

    Needs ``mc`` (``classifier`` is not used); arguments as :func:`uncertainty_sampling`.

    Returns:
        (int64 [n_instances] indices, float32 [n_instances] expected entropies in nats).
    """
    return _query(
        "expected_entropy",
        None,
        True,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        {},
        "expected_entropy_sampling",
    )


def expected_uncertainty_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
) -> Query:
    """Expected least confidence ``1 - mean_t max_c p_t``.

    Needs ``mc`` (``classifier`` is not used); arguments as :func:`uncertainty_sampling`.

    Returns:
        (int64 [n_instances] indices, float32 [n_instances] expected uncertainties).
    """
    return _query(
        "expected_least_confidence",
        None,
        True,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        {},
        "expected_uncertainty_sampling",
    )


def expected_margin_sampling(
    classifier: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    mc: MCCallable | None = None,
    mc_output: MCOutput = "logits",
    backend: str = "auto",
) -> Query:
    """Expected margin ``mean_t (p_t(1) - p_t(2))``, smallest first.

    Needs ``mc`` (``classifier`` is not used); arguments as :func:`uncertainty_sampling`.

    Returns:
        (int64 [n_instances] indices, float32 [n_instances] expected margins).
    """
    return _query(
        "expected_margin",
        None,
        False,
        classifier,
        X_pool,
        n_instances,
        random_tie_break,
        mc,
        mc_output,
        backend,
        {},
        "expected_margin_sampling",
    )


def max_std_sampling(
    regressor: Any,
    X_pool: modALinput,
    n_instances: int = 1,
    random_tie_break: bool = False,
    *,
    variance: Callable[[modALinput], np.ndarray | torch.Tensor] | None = None,
    **predict_kwargs: Any,
) -> Query:
    """Regression: the samples with the largest predictive standard deviation.

    The uncertainty comes from one of two places:

    - ``regressor.predict(X_pool, return_std=True, **predict_kwargs)`` -> ``(mean, std)``, the
      scikit-learn protocol that modAL's ``max_std_sampling`` uses (``GaussianProcessRegressor``,
      or a modAL ``ActiveLearner`` wrapping one);
    - ``variance(X_pool)`` -> [N] predictive variances, for a model that returns a variance
      instead, such as a Gaussian process whose ``predict(X)`` gives ``(mean, variance)``
      (``functools.partial(max_std_sampling, variance=lambda X: gp.predict(X)[1])``). This is
      the hook for ``alkernels.gp``. ``regressor`` is not used then.

    Ranking by standard deviation, by variance and by Gaussian predictive entropy is the same
    (``docs/acquisition.md``). Selection is exact in float64 with the lower-index tie rule (or
    modAL's random shuffle with ``random_tie_break=True``).

    Returns:
        (int64 [n_instances] indices, largest std first; [n_instances] standard deviations as
        ``predict`` returned them (float64 from ``variance``)).

    Raises:
        ValueError: ``n_instances`` larger than the pool (also an ``AssertionError``, as in
            modAL), an uncertainty vector of the wrong size, a NaN, infinite or negative std or
            variance (modAL would rank it).
    """
    n = _pool_size(X_pool)
    k = _check_n_instances(n_instances, n)
    if variance is not None:
        if predict_kwargs:
            raise TypeError(
                f"max_std_sampling got unexpected keyword arguments {sorted(predict_kwargs)}: they "
                "would go to predict, which is not called when variance= is given"
            )
        source, values = "variance", variance(X_pool)
    else:
        source = "predict(return_std=True)"
        values = regressor.predict(X_pool, return_std=True, **predict_kwargs)[1]
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.size != n:
        raise ValueError(
            f"{source} returned {values.size} values (shape {values.shape}) for a pool of {n} samples; "
            "expected one per sample"
        )
    values = values.reshape(n)
    key = values.astype(np.float64)
    bad = ~(np.isfinite(key) & (key >= 0))
    if bad.any():
        raise ValueError(f"{source} returned a NaN, infinite or negative value for pool sample {int(np.argmax(bad))}")
    if variance is not None:
        values = key = np.sqrt(key)
    if random_tie_break:  # modAL's shuffled_argmax: among ties the later place in the shuffle wins
        order = np.random.permutation(n)[::-1]
        idx = order[top_k(key[order], k)]
    else:
        idx = top_k(key, k)
    return idx.astype(np.int64), values[idx]
