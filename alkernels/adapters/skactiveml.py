"""scikit-activeml query strategies backed by the fused alkernels scoring (extra ``skactiveml``).

Swap the class and keep the rest of a scikit-activeml pool loop::

    from alkernels.adapters.skactiveml import FusedUncertaintySampling as UncertaintySampling
    from alkernels.adapters.skactiveml import FusedGreedyBALD as GreedyBALD

    qs = UncertaintySampling(method="entropy", random_state=0)
    query_idx = qs.query(X, y, clf, batch_size=100)       # clf = SklearnClassifier(...), y has NaN

:class:`FusedUncertaintySampling` takes ``UncertaintySampling``'s parameters
(``method, cost_matrix, missing_label, random_state``) and :class:`FusedGreedyBALD` those of
``GreedyBALD`` (``n_MC_samples, eps, sample_predictions_method_name, sample_predictions_dict,
missing_label, random_state``), in the same order; both ``query`` methods keep scikit-activeml
1.x's signature and semantics: ``y`` marks unlabelled samples with ``missing_label``;
``candidates`` is None (the unlabelled samples), indices into ``X``, or a feature array of new
samples; utilities come as (batch_size, n_samples) (or (batch_size, n_candidates) for a feature
array), NaN for non-candidates and, in row ``i``, for the samples picked before ``i``.

The answer is scikit-activeml's own. The fused kernel (entropy, BALD) or one exact torch pass
(least confident, margin) screens the candidates; the few that can still be selected are scored
again by scikit-activeml's ``uncertainty_scores`` or ``batch_bald`` in its own precision (BALD
scores every candidate when two of them tie to the last bits, since ``batch_bald``'s sums
depend on the pool size), and the batch is picked as ``simple_batch`` picks it: ties are broken
with ``rand_argmax``'s draws from the same ``random_state_`` stream, so the same
``random_state`` selects the same samples. With ``return_utilities=True`` every candidate's
utility is scikit-activeml's value.

Delegated to scikit-activeml (its result by construction, with a
:class:`~alkernels.adapters._scoring.DelegationWarning`): ``cost_matrix``,
``method="expected_average_precision"``, entropy of probabilities with negative entries, and BALD
of members whose probabilities leave [0, 1], do not sum to one or are not float32/float64. One
class column, probabilities that scikit-activeml rejects (its own error is raised) and entropy of
a non-C-contiguous array are scored by scikit-activeml's functions on every candidate too,
without a warning.

Differences, all optional or outside the selection:

- ``tie_break="index"`` gives equal utilities to the lower sample index instead (reproducible
  without a seed); the default ``"random"`` is scikit-activeml's rule.
- With a seeded ``random_state`` only the ``rand_argmax`` draws that decide a tie are made, so
  the fitted ``random_state_`` ends elsewhere than scikit-activeml's (the selection is the same;
  an unseeded strategy draws from NumPy's global generator exactly as many numbers as
  scikit-activeml does).
- ``GreedyBALD`` clips the ensemble's probability array in place (``np.clip(..., out=...)``),
  which changes it for its owner when the sampling method returns a stored array; the fused
  strategies only read it.
- ``FusedUncertaintySampling`` also takes ``method="bald"`` (``GreedyBALD`` with its defaults,
  plus ``utility_weight``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from alkernels._extras import missing_extra
from alkernels.adapters._scoring import DelegationWarning, as_tnc, fused_bound, proba_scores, screen

try:
    from skactiveml.base import SingleAnnotatorPoolQueryStrategy, SkactivemlClassifier
    from skactiveml.pool import QueryByCommittee, batch_bald, expected_average_precision, uncertainty_scores
    from skactiveml.pool._query_by_committee import _check_ensemble
    from skactiveml.utils import MISSING_LABEL, check_equal_missing_label, check_scalar, check_type
    from sklearn.base import clone
    from sklearn.utils.validation import check_array
except ImportError as err:
    raise missing_extra("skactiveml", __name__, err) from err

__all__ = ["FusedGreedyBALD", "FusedUncertaintySampling"]

#: ``FusedUncertaintySampling``'s methods: scikit-activeml's four and ``bald``.
METHODS: tuple[str, ...] = ("least_confident", "margin_sampling", "entropy", "expected_average_precision", "bald")
TieBreak = Literal["random", "index"]
#: (float64 [n_cand] approximate utilities, their error bound), or None: score every candidate
#: with the framework's function.
Screened = tuple[np.ndarray, np.ndarray] | None
#: The framework's utilities of candidate rows (all of them for None), before weighting.
Exact = Callable[[np.ndarray | None], np.ndarray]
#: For a framework function whose arithmetic depends on how many rows it is given (BALD's
#: conditional entropy sums in a pool-size-dependent order): whether two candidate rows have
#: bitwise-identical input (then they get identical utilities at any pool size), and the bound
#: on the last-bit differences per unit of utility.
OrderSensitive = tuple[Callable[[int, int], bool], float] | None

#: Relative slack on an approximation: scikit-activeml keeps float32 utilities in float32.
_RELATIVE = 2.0**-20
#: scikit-activeml's tolerance on the row sums of probabilities (``uncertainty_scores``), less
#: a margin that keeps rows at the edge away from the fused path (the framework decides there).
_ROW_SUM_ATOL = 1e-3 * (1 - 1e-6)


def _rand_argmax_batch(
    values: np.ndarray, positions: np.ndarray, n: int, batch_size: int, random_state: np.random.RandomState
) -> np.ndarray:
    """scikit-activeml's ``simple_batch`` picks from exact utilities.

    Args:
        values: float64 [M] utilities, sorted descending.
        positions: int64 [M] their positions in the utility vector of length ``n``, ascending
            within equal values; every position whose utility can be picked is among them.
        n: the utility vector's length (each ``rand_argmax`` draws ``n`` uniforms).
        batch_size: the picks to make.
        random_state: the strategy's ``random_state_``.

    Returns:
        int64 [batch_size] positions in pick order. Pick ``i`` takes the largest remaining
        utility; among equal ones the position whose ``i``-th block of ``n`` uniforms is largest
        (the first such position), as ``rand_argmax`` does. Blocks are drawn only for picks with a
        tie, and all ``batch_size`` of them when ``random_state`` is NumPy's global generator.
    """
    picks: list[int] = []
    drawn = 0
    start = 0
    while len(picks) < batch_size:
        rest = values[start:] != values[start]
        end = start + (int(np.argmax(rest)) if rest.any() else len(rest))
        group = list(positions[start:end])
        while group and len(picks) < batch_size:
            if len(group) == 1:
                picks.append(group.pop())
                continue
            for _ in range(drawn, len(picks)):  # the blocks of picks that had no tie
                random_state.random(n)
            uniforms = random_state.random(n)
            drawn = len(picks) + 1
            picks.append(group.pop(int(np.argmax(uniforms[group]))))
        start = end
    if random_state is np.random.mtrand._rand:  # the caller's global stream advances as with skactiveml
        for _ in range(drawn, batch_size):
            random_state.random(n)
    return np.asarray(picks, dtype=np.int64)


def _unresolved_near_tie(
    values: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    weight: np.ndarray | None,
    same_input: Callable[[int, int], bool],
    delta: float,
) -> bool:
    """Whether utilities ``values`` [M] of candidate ``rows`` [M], computed on a subset, may
    order or tie differently in the framework's computation on all candidates: two of them that
    reach the ``batch_size``-th largest (within the bound) lie within ``delta * (|w| + |value|)``
    of each other without identical input rows and weights."""
    order = np.argsort(-values, kind="stable")
    v, r = values[order], rows[order]
    w = np.ones(len(v)) if weight is None else np.abs(weight[r].astype(np.float64))
    tol = delta * (w + np.abs(v))
    last = min(batch_size, len(v)) - 1
    keep = v >= v[last] - 2 * tol[last]
    v, r, tol = v[keep], r[keep], tol[keep]
    for i in np.flatnonzero(v[:-1] - v[1:] <= np.maximum(tol[:-1], tol[1:])):
        a, b = int(r[i]), int(r[i + 1])
        if not same_input(a, b) or (weight is not None and weight[a] != weight[b]):
            return True
    return False


def _bald_screen(probas: np.ndarray, eps: float, backend: str) -> Screened:
    """Fused BALD of [T, n_cand, C] ensemble probabilities with its bound against
    ``batch_bald``'s utilities (which clip to ``[eps, 1]`` and do not renormalise), or None where
    the kernel's assumptions fail (one class, entries outside [0, 1], rows that do not sum to
    one, non-float dtypes)."""
    if probas.dtype not in (np.float32, np.float64) or probas.shape[1] == 0 or probas.shape[2] < 2:
        return None
    p = torch.from_numpy(probas)
    lo, hi = torch.aminmax(p)
    if not (bool(lo >= 0) and bool(hi <= 1)):  # NaN fails too
        return None
    deviation = (p.sum(2, dtype=torch.float64) - 1).abs().amax(0).numpy()  # [n_cand]
    if not bool((deviation <= 1e-3).all()):
        return None
    c = probas.shape[2]
    approx = proba_scores(p, "bald", backend=backend, source="the ensemble's probabilities").double().numpy()
    clipping = 4 * c * eps * (np.log(1 / eps) + 1)  # each of the two entropies moves <= 2 C eps (ln 1/eps + 1)
    renormalising = 3 * deviation * (np.log(c) + 2)
    return approx, fused_bound("bald", c) + clipping + renormalising + _RELATIVE * (1 + np.abs(approx))


def _single_screen(probas: np.ndarray, method: str, backend: str) -> Screened:
    """Approximate ``uncertainty_scores`` of [n_cand, C] probabilities with a bound, or None
    where scikit-activeml decides (one class, anything its checks reject, negative entries or a
    layout other than C-contiguous for the entropy). ``1 - max p`` and ``1 - |p(1) - p(2)|``
    are exact in the input's dtype; the entropy is ``s H(p / s) - s ln s`` (``s`` the row sum)
    from the fused float32 ``H``."""
    if not isinstance(probas, np.ndarray) or probas.ndim != 2 or probas.dtype not in (np.float32, np.float64):
        return None
    if method == "entropy" and not probas.flags.c_contiguous:
        return None  # NumPy sums a row subset of another layout in another order: score every row
    if probas.shape[0] == 0 or probas.shape[1] < 2:
        return None
    p = torch.from_numpy(probas)
    lo, hi = torch.aminmax(p)
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        return None
    sums = p.sum(1, dtype=torch.float64)
    if not bool(((sums - 1).abs() <= _ROW_SUM_ATOL).all()):
        return None
    if method == "least_confident":
        approx = (1 - p.amax(1)).double()
    elif method == "margin_sampling":
        top2 = p.topk(2, dim=1).values
        approx = (1 - (top2[:, 0] - top2[:, 1]).abs()).double()
    else:
        if not bool(lo >= 0):
            warnings.warn(
                "FusedUncertaintySampling: probabilities with negative entries; the entropy is "
                "scikit-activeml's uncertainty_scores on every candidate",
                DelegationWarning,
                stacklevel=4,
            )
            return None
        entropy = proba_scores(p, "entropy", backend=backend, source="clf.predict_proba").double()
        approx = sums * entropy - sums * sums.log()
        bound = sums.numpy() * fused_bound("entropy", p.shape[1])
        approx = approx.numpy()
        return approx, bound + _RELATIVE * (1 + np.abs(approx))
    approx = approx.numpy()
    return approx, _RELATIVE * (1 + np.abs(approx))


class _FusedPoolStrategy(SingleAnnotatorPoolQueryStrategy):
    """Selection shared by the fused strategies: screened candidates, the framework's
    utilities for them, and ``simple_batch``'s picks."""

    tie_break: TieBreak
    backend: str

    def _check_tie_break(self) -> None:
        if self.tie_break not in ("random", "index"):
            raise ValueError(f"tie_break must be 'random' or 'index', got {self.tie_break!r}")

    def _select(
        self,
        screened: Screened,
        exact: Exact,
        positions: np.ndarray,
        n: int,
        weight: np.ndarray | None,
        in_place_weight: bool,
        batch_size: int,
        return_utilities: bool,
        order_sensitive: OrderSensitive = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The query's result from the candidates' utilities.

        Args:
            screened: approximations of the unweighted utilities of the candidate rows, or None.
            exact: the framework's unweighted utilities of candidate rows.
            positions: int64 [n_cand], each candidate row's position in the utility vector.
            n: the utility vector's length (n_samples, or n_candidates for a feature array).
            weight: ``utility_weight`` [n] or None.
            in_place_weight: multiply in the utilities' own dtype, as scikit-activeml does when
                ``candidates`` is a feature array (``utilities *= utility_weight``).
            batch_size, return_utilities: the query's (already checked).
            order_sensitive: see :data:`OrderSensitive`; None when ``exact`` gives every row the
                same bits at any pool size. When set and two screened candidates that decide the
                picks have utilities within that bound without identical input, every candidate
                is scored by ``exact`` at once, so that ties are the framework's.
        """

        def weighted(rows: np.ndarray | None) -> np.ndarray:
            utilities = exact(rows)
            if weight is None:
                return np.asarray(utilities, dtype=np.float64)
            w = weight[positions if rows is None else positions[rows]]
            if in_place_weight:
                utilities = np.array(utilities, copy=True)
                utilities *= w
                return utilities.astype(np.float64)
            return utilities.astype(np.float64) * w

        if screened is None or return_utilities:
            rows = np.arange(len(positions))
            values = weighted(None)
        else:
            approx, bound = screened
            if weight is not None:
                w = weight[positions].astype(np.float64)
                approx, bound = approx * w, bound * np.abs(w)
            rows = screen(approx, bound, batch_size)
            values = weighted(rows)
            if order_sensitive is not None and _unresolved_near_tie(
                values, rows, batch_size, weight if weight is None else weight[positions], *order_sensitive
            ):
                rows = np.arange(len(positions))
                values = weighted(None)
        order = np.lexsort((positions[rows], -values))  # best first, equal values by position
        if self.tie_break == "index":
            picks = positions[rows][order[:batch_size]]
        else:
            picks = _rand_argmax_batch(values[order], positions[rows][order], n, batch_size, self.random_state_)
        picks = picks.astype(np.int64)
        if not return_utilities:
            return picks
        utilities = np.full(n, np.nan)
        utilities[positions[rows]] = values
        batch_utilities = np.repeat(utilities[None], batch_size, axis=0)
        for i in range(1, batch_size):
            batch_utilities[i:, picks[i - 1]] = np.nan
        return picks, batch_utilities

    def _bald(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_cand: np.ndarray,
        ensemble: Any,
        fit_ensemble: bool,
        sample_weight: Any,
        n_mc_samples: int | None,
        eps: float,
        fused: bool,
    ) -> tuple[Screened, Exact, OrderSensitive]:
        """GreedyBALD's utilities: the ensemble's probabilities, screened by the fused BALD
        unless not ``fused`` (every utility is needed)."""
        check_type(fit_ensemble, "fit_ensemble", bool)
        ensemble, members, _, sample, sample_kwargs = _check_ensemble(
            ensemble=ensemble,
            estimator_types=[SkactivemlClassifier],
            X=X,
            y=y,
            sample_weight=sample_weight,
            fit_ensemble=fit_ensemble,
            missing_label=self.missing_label_,
            sample_predictions_method_name=self.sample_predictions_method_name,
            sample_predictions_dict=self.sample_predictions_dict,
        )
        if sample is None:
            probas = QueryByCommittee()._aggregate_predict_probas(X_cand, ensemble, members)
        else:
            probas = sample(X_cand, **sample_kwargs)
        probas = np.asarray(probas)
        n_mc = len(probas) if n_mc_samples is None else n_mc_samples
        check_scalar(n_mc, "n_MC_samples", int, min_val=1)
        check_scalar(eps, "eps", min_val=0, max_val=0.1, target_type=(float, int), min_inclusive=False)
        if probas.ndim != 3:
            raise ValueError(
                f"'probas' should be of shape (n_members, n_samples, n_classes) for BALD, but shape "
                f"{probas.shape} was given."
            )
        as_tnc(probas, len(X_cand), "the ensemble's probabilities", min_classes=1)
        probas = check_array(probas, ensure_2d=False, allow_nd=True)

        def exact(rows: np.ndarray | None) -> np.ndarray:
            # batch_bald clips its input in place: hand it a copy (C-ordered, as ensembles return
            # their probabilities; NumPy lays out probas[:, rows] otherwise)
            taken = np.array(probas, copy=True) if rows is None else np.ascontiguousarray(probas[:, rows])
            return batch_bald(taken, batch_size=1, n_MC_samples=n_mc, eps=eps, random_state=self.random_state_)[0]

        def same_input(a: int, b: int) -> bool:
            return np.array_equal(probas[:, a], probas[:, b])

        # the conditional entropy sums T * C terms below 0.4 each in a pool-size-dependent order
        order_sensitive = (same_input, 16 * np.finfo(np.float64).eps * probas.shape[0] * probas.shape[2])
        if not fused:
            return None, exact, order_sensitive
        screened = _bald_screen(probas, eps, self.backend)
        if screened is None and probas.shape[2] >= 2:
            warnings.warn(
                "BALD of probabilities the fused kernel does not take (entries outside [0, 1], rows "
                "not summing to one, or not float32/float64): the utilities are scikit-activeml's "
                "batch_bald on every candidate",
                DelegationWarning,
                stacklevel=3,
            )
        return screened, exact, order_sensitive


class FusedUncertaintySampling(_FusedPoolStrategy):
    """Uncertainty sampling with fused scoring: scikit-activeml's ``UncertaintySampling`` (and
    ``GreedyBALD`` with ``method="bald"``) with the same answers.

    Parameters
    ----------
    method : {'least_confident', 'margin_sampling', 'entropy', 'expected_average_precision', \
'bald'}, default='least_confident'
        The utility, as scikit-activeml defines it; ``'bald'`` is ``GreedyBALD``'s (eps 1e-7).
    cost_matrix : array-like of shape (n_classes, n_classes), default=None
        scikit-activeml's cost-sensitive variants of ``least_confident`` and ``margin_sampling``
        (delegated to scikit-activeml).
    missing_label : scalar or string or np.nan or None, default=np.nan
        The value that marks an unlabelled sample in ``y``.
    random_state : int or np.random.RandomState or None, default=None
        As scikit-activeml's: seeds the tie-breaking draws.
    tie_break : {'random', 'index'}, default='random'
        scikit-activeml's random tie-breaking, or equal utilities to the lower sample index.
    sample_predictions_method_name : str or None, default=None
        ``method='bald'`` only: the name of a method of ``clf`` that returns sampled
        probabilities (n_members, n_samples, n_classes), as in ``GreedyBALD``.
    sample_predictions_dict : dict or None, default=None
        Keyword arguments of that method.
    backend : {'auto', 'torch', 'cpu', 'triton'}, default='auto'
        The scoring backend.
    """

    def __init__(
        self,
        method: str = "least_confident",
        cost_matrix: Any = None,
        missing_label: Any = MISSING_LABEL,
        random_state: Any = None,
        *,
        tie_break: TieBreak = "random",
        sample_predictions_method_name: str | None = None,
        sample_predictions_dict: dict[str, Any] | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(missing_label=missing_label, random_state=random_state)
        self.method = method
        self.cost_matrix = cost_matrix
        self.tie_break = tie_break
        self.sample_predictions_method_name = sample_predictions_method_name
        self.sample_predictions_dict = sample_predictions_dict
        self.backend = backend

    def query(
        self,
        X: Any,
        y: Any,
        clf: Any,
        fit_clf: bool = True,
        sample_weight: Any = None,
        utility_weight: Any = None,
        candidates: Any = None,
        batch_size: int = 1,
        return_utilities: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Determine the samples whose labels to query.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            All samples, labelled and unlabelled.
        y : array-like of shape (n_samples,)
            Labels, ``missing_label`` for unlabelled samples.
        clf : SkactivemlClassifier
            A classifier with ``fit`` and ``predict_proba``; for ``method='bald'`` an ensemble in
            any form ``GreedyBALD`` accepts.
        fit_clf : bool, default=True
            Fit a clone of ``clf`` on ``(X, y, sample_weight)`` first.
        sample_weight : array-like of shape (n_samples,), default=None
            Training weights for that fit.
        utility_weight : array-like, default=None
            Multiplies the utilities: length n_samples, or n_candidates when ``candidates`` is a
            feature array.
        candidates : None, int array-like of shape (n_candidates,), or array-like of shape
                (n_candidates, n_features), default=None
            None: the unlabelled samples; indices into ``X``; or new samples.
        batch_size : int, default=1
            How many samples to query.
        return_utilities : bool, default=False
            Also return the utilities.

        Returns
        -------
        query_indices : numpy.ndarray of shape (batch_size,)
            Indices into ``X`` (into ``candidates`` when it is a feature array), in pick order.
        utilities : numpy.ndarray of shape (batch_size, n_samples) or (batch_size, n_candidates)
            Only with ``return_utilities=True``; row ``i`` holds the float64 utilities used for
            pick ``i``: NaN for non-candidates and for the picks before ``i``.
        """
        X, y, candidates, batch_size, return_utilities = self._validate_data(
            X, y, candidates, batch_size, return_utilities, reset=True
        )
        X_cand, mapping = self._transform_candidates(candidates, X, y)
        if self.method == "bald":
            check_type(fit_clf, "fit_clf", bool)
        else:
            check_type(clf, "clf", SkactivemlClassifier)
            check_equal_missing_label(clf.missing_label, self.missing_label_)
            check_type(fit_clf, "fit_clf", bool)
        n = len(X) if mapping is not None else len(X_cand)
        weight = check_array(np.ones(n) if utility_weight is None else utility_weight, ensure_2d=False)
        if len(weight) != n:
            which = "n_samples" if mapping is not None else "n_candidates"
            raise ValueError(f"'utility_weight' must have length '{which}' but {len(weight)} != {n}.")
        if not isinstance(self.method, str):
            raise TypeError(f"{type(self.method)} is an invalid type for method. Type {str} is expected")
        if self.method not in METHODS:
            raise ValueError(
                f"The given method {self.method!r} is not valid. Supported methods are "
                f"{', '.join(repr(m) for m in METHODS)}."
            )
        self._check_tie_break()
        if self.method != "bald" and (
            self.sample_predictions_method_name is not None or self.sample_predictions_dict is not None
        ):
            raise ValueError(
                "'sample_predictions_method_name' and 'sample_predictions_dict' are only used by "
                f"method 'bald', not {self.method!r}."
            )
        if len(X_cand) == 0:
            raise ValueError(
                "There are no candidate samples: every sample in 'y' is labelled or 'candidates' is empty."
            )

        if self.method == "bald":
            screened, exact, order_sensitive = self._bald(
                X, y, X_cand, clf, fit_clf, sample_weight, None, 1e-7, not return_utilities
            )
        else:
            if fit_clf:
                clf = clone(clf).fit(X, y) if sample_weight is None else clone(clf).fit(X, y, sample_weight)
            (screened, exact), order_sensitive = self._single(clf, X_cand, not return_utilities), None
        positions = mapping if mapping is not None else np.arange(len(X_cand))
        return self._select(
            screened, exact, positions, n, weight, mapping is None, batch_size, return_utilities, order_sensitive
        )

    def _single(self, clf: Any, X_cand: np.ndarray, fused: bool) -> tuple[Screened, Exact]:
        """The single-model methods' utilities: ``clf``'s probabilities of the candidates,
        screened unless not ``fused`` (every utility is needed)."""
        probas = clf.predict_proba(X_cand)
        if self.method == "expected_average_precision" or self.cost_matrix is not None:
            what = "cost matrices" if self.cost_matrix is not None else "expected average precision"
            warnings.warn(
                f"FusedUncertaintySampling: the fused kernel does not cover {what}; the utilities "
                "are scikit-activeml's on every candidate",
                DelegationWarning,
                stacklevel=3,
            )

        def exact(rows: np.ndarray | None) -> np.ndarray:
            # rows is None whenever nothing was screened (always for cost matrices and EAP)
            with np.errstate(divide="ignore"):  # as UncertaintySampling.query
                if self.method == "expected_average_precision":  # every utility depends on the whole pool
                    return expected_average_precision(clf.classes_, probas)
                taken = probas if rows is None else probas[rows]
                return uncertainty_scores(taken, cost_matrix=self.cost_matrix, method=self.method)

        if self.method == "expected_average_precision" or self.cost_matrix is not None or not fused:
            return None, exact
        return _single_screen(probas, self.method, self.backend), exact


class FusedGreedyBALD(_FusedPoolStrategy):
    """Greedy BALD with fused scoring: scikit-activeml's ``GreedyBALD`` with the same answers.

    Parameters
    ----------
    n_MC_samples : int or None, default=None
        As ``GreedyBALD``'s (checked; the greedy top-k selection does not sample).
    eps : float in (0, 0.1], default=1e-7
        ``GreedyBALD``'s clipping of the probabilities before the logarithms.
    sample_predictions_method_name : str or None, default=None
        The name of a method of ``ensemble`` that returns sampled probabilities
        (n_members, n_samples, n_classes).
    sample_predictions_dict : dict or None, default=None
        Keyword arguments of that method.
    missing_label : scalar or string or np.nan or None, default=np.nan
        The value that marks an unlabelled sample in ``y``.
    random_state : int or np.random.RandomState or None, default=None
        As scikit-activeml's: seeds the tie-breaking draws.
    tie_break : {'random', 'index'}, default='random'
        scikit-activeml's random tie-breaking, or equal utilities to the lower sample index.
    backend : {'auto', 'torch', 'cpu', 'triton'}, default='auto'
        The scoring backend.
    """

    def __init__(
        self,
        n_MC_samples: int | None = None,
        eps: float = 1e-7,
        sample_predictions_method_name: str | None = None,
        sample_predictions_dict: dict[str, Any] | None = None,
        missing_label: Any = MISSING_LABEL,
        random_state: Any = None,
        *,
        tie_break: TieBreak = "random",
        backend: str = "auto",
    ) -> None:
        super().__init__(missing_label=missing_label, random_state=random_state)
        self.n_MC_samples = n_MC_samples
        self.eps = eps
        self.sample_predictions_method_name = sample_predictions_method_name
        self.sample_predictions_dict = sample_predictions_dict
        self.tie_break = tie_break
        self.backend = backend

    def query(
        self,
        X: Any,
        y: Any,
        ensemble: Any,
        fit_ensemble: bool = True,
        sample_weight: Any = None,
        candidates: Any = None,
        batch_size: int = 1,
        return_utilities: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Determine the samples whose labels to query (``GreedyBALD.query``'s parameters and
        results; ``ensemble`` in any form ``GreedyBALD`` accepts: a fitted ensemble with
        ``estimators_``, a list of classifiers, or a classifier with the sampling method named
        by ``sample_predictions_method_name``)."""
        X, y, candidates, batch_size, return_utilities = self._validate_data(
            X, y, candidates, batch_size, return_utilities, reset=True
        )
        X_cand, mapping = self._transform_candidates(candidates, X, y)
        self._check_tie_break()
        screened, exact, order_sensitive = self._bald(
            X, y, X_cand, ensemble, fit_ensemble, sample_weight, self.n_MC_samples, self.eps, not return_utilities
        )
        n = len(X) if mapping is not None else len(X_cand)
        positions = mapping if mapping is not None else np.arange(len(X_cand))
        return self._select(screened, exact, positions, n, None, False, batch_size, return_utilities, order_sensitive)
