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

- ``classifier.predict_proba(X_pool, **kwargs)`` (the modAL default): probabilities [N, C];
  they are scored as ``log p`` by the fused kernel (see :mod:`alkernels.adapters._scoring`).
- ``mc=callable``: ``mc(X_pool)`` returns MC-dropout or ensemble outputs [T, N, C] (or [N, C]),
  NumPy or torch on any device, as logits (default) or as probabilities with
  ``mc_output="proba"``. ``predict_proba`` is not called then. Pass it per query
  (``learner.query(X_pool, n_instances=k, mc=fn)``) or bind it once with
  ``functools.partial(bald_sampling, mc=fn)``.

Strategies (score definitions in ``docs/acquisition.md``; the returned metric follows modAL's
convention of each name):

==============================  =====================  ====================================
strategy                        alkernels score        metric returned (selected where)
==============================  =====================  ====================================
uncertainty_sampling            least_confidence       ``1 - max p_bar`` (largest)
margin_sampling                 margin                 ``p_bar(1) - p_bar(2)`` (smallest)
entropy_sampling                entropy                ``H(p_bar)`` (largest)
bald_sampling (mc)              bald                   mutual information (largest)
predictive_entropy_sampling     predictive_entropy     ``H(p_bar)`` (largest)
expected_entropy_sampling (mc)  expected_entropy       ``mean_t H(p_t)`` (largest)
expected_uncertainty_... (mc)   expected_least_conf.   ``1 - mean_t max p_t`` (largest)
expected_margin_sampling (mc)   expected_margin        ``mean_t (p_t(1) - p_t(2))`` (smallest)
max_std_sampling (regression)   --                     predictive std (largest)
==============================  =====================  ====================================

With one pass (``predict_proba``) ``p_bar`` is that pass; the ``(mc)`` strategies need ``mc=``.
modAL's own MC-dropout strategies (skorch only) rank the same way: ``mc_dropout_bald`` as
``bald_sampling``, ``mc_dropout_max_entropy`` (``T/C`` times the expected entropy) as
``expected_entropy_sampling``, ``mc_dropout_max_variationRatios`` as ``uncertainty_sampling``
with ``mc=``.

Differences from modAL's strategies, all deliberate:

- **Ties.** With ``random_tie_break=False`` equal scores go to the lower pool index (modAL's
  ``argpartition`` leaves them unspecified). With ``random_tie_break=True`` the tie is broken
  by one ``np.random.permutation`` drawn from NumPy's global generator exactly as modAL draws
  it, so the same generator state selects the same set as modAL's ``shuffled_argmax``.
- **Order.** Indices come most informative first (modAL returns ``argpartition`` order, or
  least informative first with ``random_tie_break=True``).
- **Precision.** Classification scores are float32 (modAL: float64), so two samples whose
  scores differ below float32 resolution count as tied. Probabilities are renormalised per
  row (``softmax(log p)``), as modAL's entropy does and its margin and uncertainty do not.
- **Errors.** Bad input raises ``ValueError`` naming the problem: ``n_instances`` larger than
  the pool (modAL: ``AssertionError``), NaN, infinite or negative probabilities, non-finite
  logits, an MC output that does not cover the pool (with a hint for baal's [N, C, T] layout).

Unchanged from modAL: an unfitted classifier (``NotFittedError``) or one that has seen a single
class scores every sample alike (``uncertainty`` 1 or 0, ``margin`` 0, ``entropy`` 0), and
extra keyword arguments go to ``predict_proba`` (or ``predict`` for ``max_std_sampling``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from alkernels import acquisition as acq
from alkernels._extras import missing_extra
from alkernels.adapters._scoring import as_tnc, logit_scores, proba_scores, top_k

try:
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


def _pool_size(X_pool: modALinput) -> int:
    shape = getattr(X_pool, "shape", None)
    return int(shape[0]) if shape is not None else len(X_pool)


def _check_n_instances(n_instances: int, n: int) -> int:
    if isinstance(n_instances, bool) or not isinstance(n_instances, (int, np.integer)) or n_instances < 0:
        raise ValueError(f"n_instances must be a non-negative int, got {n_instances!r}")
    if n_instances > n:
        raise ValueError(f"n_instances = {n_instances} must be less or equal than the size of the pool ({n})")
    return int(n_instances)


def _select(scores: torch.Tensor, k: int, random_tie_break: bool) -> torch.Tensor:
    """int64 [k] indices of the k largest scores: ties to the lower index, or modAL's shuffle."""
    if not random_tie_break:
        return acq.topk(scores, k)[0]
    # modAL's shuffled_argmax sorts the shuffled scores ascending (stable) and keeps the last k,
    # so among ties the LATEST shuffled positions win: the lower-index rule on the reversed
    # shuffle picks the same set.
    order = torch.from_numpy(np.random.permutation(scores.shape[0])[::-1].copy()).to(scores.device)
    return order[acq.topk(scores[order], k)[0]]


def _result(scores: torch.Tensor, idx: torch.Tensor, sign: float) -> Query:
    return idx.cpu().numpy(), (sign * scores[idx]).cpu().numpy()


def _query(
    strategy: str,
    sign: float,
    constants: tuple[float, float] | None,
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
    """Score the pool with one alkernels strategy and select; ``metric = sign * score``.

    ``constants`` = (metric when the classifier is unfitted, metric for a single class), modAL's
    values; None for the strategies that need ``mc``.
    """
    n = _pool_size(X_pool)
    k = _check_n_instances(n_instances, n)
    if mc_output not in ("logits", "proba"):
        raise ValueError(f"mc_output must be 'logits' or 'proba', got {mc_output!r}")
    if mc is not None:
        if predict_proba_kwargs:
            raise TypeError(
                f"{name} got unexpected keyword arguments {sorted(predict_proba_kwargs)}: "
                "they would go to predict_proba, which is not called when mc= is given"
            )
        out = as_tnc(mc(X_pool), n, "mc")
        score = proba_scores if mc_output == "proba" else logit_scores
        scores = score(out, strategy, backend=backend, source="mc")
    elif constants is None:
        raise ValueError(
            f"{name} needs MC predictions: pass mc=callable(X_pool) returning [T, N, C] logits "
            "(or probabilities with mc_output='proba')"
        )
    else:
        try:
            proba = classifier.predict_proba(X_pool, **predict_proba_kwargs)
            single_class = np.ndim(proba) == 2 and np.shape(proba)[1] == 1
        except NotFittedError:
            proba, single_class = None, False
        if proba is None or single_class:
            metric = constants[1] if single_class else constants[0]
            scores = torch.full((n,), sign * metric, dtype=torch.float32)
        else:
            scores = proba_scores(as_tnc(proba, n, "predict_proba"), strategy, backend=backend)
    return _result(scores, _select(scores, k, random_tie_break), sign)


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
        (int64 [n_instances] pool indices most informative first, float32 [n_instances]
        uncertainties ``1 - max_c p_bar``).
    """
    return _query(
        "least_confidence",
        1.0,
        (1.0, 0.0),
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
        (int64 [n_instances] indices, smallest margin first; float32 [n_instances] margins
        ``p_bar(1) - p_bar(2)``, as modAL returns them).
    """
    return _query(
        "margin",
        -1.0,
        (0.0, 0.0),
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
        (int64 [n_instances] indices, float32 [n_instances] entropies).
    """
    return _query(
        "entropy",
        1.0,
        (0.0, 0.0),
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
        (int64 [n_instances] indices, float32 [n_instances] predictive entropies).
    """
    return _query(
        "predictive_entropy",
        1.0,
        (0.0, 0.0),
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
        1.0,
        None,
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
        1.0,
        None,
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
        1.0,
        None,
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
        -1.0,
        None,
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
        (int64 [n_instances] indices, largest std first; float64 [n_instances] standard
        deviations).

    Raises:
        ValueError: ``n_instances`` larger than the pool, an uncertainty vector of the wrong
            size, a NaN, infinite or negative std or variance.
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
    values = np.asarray(values, dtype=np.float64)
    if values.size != n:
        raise ValueError(
            f"{source} returned {values.size} values (shape {values.shape}) for a pool of {n} samples; "
            "expected one per sample"
        )
    values = values.reshape(n)
    bad = ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        raise ValueError(f"{source} returned a NaN, infinite or negative value for pool sample {int(np.argmax(bad))}")
    std = np.sqrt(values) if variance is not None else values
    if random_tie_break:
        order = np.random.permutation(n)[::-1]
        idx = order[top_k(std[order], k)]
    else:
        idx = top_k(std, k)
    return idx.astype(np.int64), std[idx]
