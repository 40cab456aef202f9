"""A scikit-activeml query strategy backed by the fused alkernels scoring (extra ``skactiveml``).

Swap the strategy and keep the rest of a scikit-activeml pool loop::

    from alkernels.adapters.skactiveml import FusedUncertaintySampling
    qs = FusedUncertaintySampling(method="entropy")      # was: UncertaintySampling(method="entropy")
    query_idx = qs.query(X, y, clf, batch_size=100)       # clf = SklearnClassifier(...), y has NaN

:class:`FusedUncertaintySampling` is a ``SingleAnnotatorPoolQueryStrategy`` with the
scikit-activeml 1.x ``query(X, y, clf, fit_clf=True, sample_weight=None, utility_weight=None,
candidates=None, batch_size=1, return_utilities=False)`` semantics of ``UncertaintySampling``:
``y`` marks unlabelled samples with ``missing_label`` (NaN by default); ``candidates`` is None
(the unlabelled samples), indices into ``X``, or a feature array of new samples; utilities come
as (batch_size, n_samples) (or (batch_size, n_candidates) for a feature array), with NaN for
non-candidates and, in row ``i``, for the samples picked in rows before ``i``. A ``batch_size``
larger than the candidates is reduced with scikit-activeml's warning.

Methods, named as scikit-activeml names them (utilities as scikit-activeml defines them):

===================  ===========================================================
``least_confident``  ``1 - max_c p``
``margin_sampling``  ``1 - (p(1) - p(2))``
``entropy``          ``-sum_c p_c ln p_c``
``bald``             ``H(p_bar) - mean_t H(p_t)`` over the members or MC samples of an
                     ensemble ``clf``, accepted in every form ``GreedyBALD`` accepts: a
                     fitted ensemble with ``estimators_``, a list of classifiers, or a
                     classifier with a sampling method named by
                     ``sample_predictions_method_name`` returning [T, N, C]
===================  ===========================================================

Differences from ``UncertaintySampling`` and ``GreedyBALD``, all deliberate:

- **Ties.** ``tie_break="index"`` (default) gives equal utilities to the lower sample index, so
  a query is reproducible without a seed. ``tie_break="random"`` breaks ties uniformly at random
  with one permutation drawn from the strategy's ``random_state`` (derived as scikit-activeml
  derives it); the choice among ties then has the same distribution as scikit-activeml's
  ``rand_argmax`` but not the same random stream.
- **Precision.** Scores are computed in float32 by the fused kernel and ranked in float64 after
  ``utility_weight``; utilities that differ below float32 resolution count as tied.
- **BALD.** Exact: zero probabilities count as zero (``GreedyBALD`` clips them to ``eps=1e-7``
  first, which shifts its utilities by up to about ``C * 1.6e-6``).
- **Not offered:** ``cost_matrix`` and ``expected_average_precision``.
- Bad probabilities raise ``ValueError`` naming the first bad sample (NaN, infinite or negative);
  rows must sum to one (scikit-activeml's check, atol 1e-3) for the single-model methods.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from alkernels._extras import missing_extra
from alkernels.adapters._scoring import as_tnc, proba_scores, top_k

try:
    from skactiveml.base import SingleAnnotatorPoolQueryStrategy, SkactivemlClassifier
    from skactiveml.pool import QueryByCommittee
    from skactiveml.pool._query_by_committee import _check_ensemble
    from skactiveml.utils import MISSING_LABEL, check_equal_missing_label, check_type
    from sklearn.base import clone
    from sklearn.utils.validation import check_array
except ImportError as err:
    raise missing_extra("skactiveml", __name__, err) from err

__all__ = ["FusedUncertaintySampling"]

#: scikit-activeml method name -> alkernels strategy.
METHODS: dict[str, str] = {
    "least_confident": "least_confidence",
    "margin_sampling": "margin",
    "entropy": "entropy",
    "bald": "bald",
}


class FusedUncertaintySampling(SingleAnnotatorPoolQueryStrategy):
    """Uncertainty sampling with fused scoring, a drop-in for scikit-activeml's
    ``UncertaintySampling`` (and ``GreedyBALD`` with ``method="bald"``).

    Parameters
    ----------
    method : {'least_confident', 'margin_sampling', 'entropy', 'bald'}, default='least_confident'
        The utility (see the module docstring).
    tie_break : {'index', 'random'}, default='index'
        Equal utilities go to the lower sample index, or are ordered at random by
        ``random_state``.
    sample_predictions_method_name : str or None, default=None
        ``method='bald'`` only: the name of a method of ``clf`` that returns sampled
        probabilities (n_members, n_samples, n_classes), as in ``GreedyBALD``.
    sample_predictions_dict : dict or None, default=None
        Keyword arguments of that method.
    backend : {'auto', 'torch', 'cpu', 'triton'}, default='auto'
        The scoring backend.
    missing_label : scalar or string or np.nan or None, default=np.nan
        The value that marks an unlabelled sample in ``y``.
    random_state : int or np.random.RandomState or None, default=None
        Seeds ``tie_break='random'``; unused with ``tie_break='index'``.
    """

    def __init__(
        self,
        method: str = "least_confident",
        tie_break: Literal["index", "random"] = "index",
        sample_predictions_method_name: str | None = None,
        sample_predictions_dict: dict[str, Any] | None = None,
        backend: str = "auto",
        missing_label: Any = MISSING_LABEL,
        random_state: Any = None,
    ) -> None:
        super().__init__(missing_label=missing_label, random_state=random_state)
        self.method = method
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
            any form ``GreedyBALD`` accepts (see the module docstring).
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
            Indices into ``X`` (into ``candidates`` when it is a feature array), highest utility
            first.
        utilities : numpy.ndarray of shape (batch_size, n_samples) or (batch_size, n_candidates)
            Only with ``return_utilities=True``; row ``i`` holds the utilities used for pick
            ``i``: NaN for non-candidates and for the picks before ``i``.
        """
        X, y, candidates, batch_size, return_utilities = self._validate_data(
            X, y, candidates, batch_size, return_utilities, reset=True
        )
        X_cand, mapping = self._transform_candidates(candidates, X, y)
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(
                f"The given method {self.method!r} is not valid. Supported methods are "
                f"{', '.join(repr(m) for m in METHODS)}."
            )
        if self.tie_break not in ("index", "random"):
            raise ValueError(f"tie_break must be 'index' or 'random', got {self.tie_break!r}")
        check_type(fit_clf, "fit_clf", bool)
        n_total = len(X) if mapping is not None else len(X_cand)
        if utility_weight is None:
            utility_weight = np.ones(n_total)
        utility_weight = check_array(utility_weight, ensure_2d=False)
        if len(utility_weight) != n_total:
            which = "n_samples" if mapping is not None else "n_candidates"
            raise ValueError(f"'utility_weight' must have length '{which}' but {len(utility_weight)} != {n_total}.")
        if len(X_cand) == 0:
            raise ValueError(
                "There are no candidate samples: every sample in 'y' is labelled or 'candidates' is empty."
            )

        probas = self._predict(X, y, clf, fit_clf, sample_weight, X_cand)
        strategy = METHODS[self.method]
        source = "the ensemble's probabilities" if self.method == "bald" else "clf.predict_proba"
        scores = proba_scores(probas, strategy, backend=self.backend, source=source, pool_index=mapping)
        scores = scores.cpu().numpy()
        if self.method != "bald" and not np.allclose(probas.sum(axis=1), 1, rtol=0, atol=1.0e-3):
            raise ValueError("'probas' are invalid. The sum over axis 1 must be one.")
        utilities_cand = scores.astype(np.float64)
        if self.method == "margin_sampling":
            utilities_cand += 1.0  # scikit-activeml's 1 - (p(1) - p(2)); the score is -(p(1) - p(2))

        if mapping is None:
            utilities = utilities_cand
        else:
            utilities = np.full(len(X), np.nan)
            utilities[mapping] = utilities_cand
        utilities *= utility_weight

        # _validate_data already cut batch_size to the candidates, and every candidate has a
        # finite utility (bad probabilities raised, check_array rejects NaN weights).
        if self.tie_break == "random":
            order = self.random_state_.permutation(len(utilities))
            query_indices = order[top_k(utilities[order], batch_size)]
        else:
            query_indices = top_k(utilities, batch_size)
        if not return_utilities:
            return query_indices
        batch_utilities = np.repeat(utilities[None], batch_size, axis=0)
        for i in range(batch_size - 1):
            batch_utilities[i + 1 :, query_indices[i]] = np.nan
        return query_indices, batch_utilities

    def _predict(
        self, X: np.ndarray, y: np.ndarray, clf: Any, fit_clf: bool, sample_weight: Any, X_cand: np.ndarray
    ) -> np.ndarray:
        """Probabilities of the candidates: [n_cand, C], or [T, n_cand, C] for ``bald``."""
        if self.method == "bald":
            ensemble, members, _, sample, sample_kwargs = _check_ensemble(
                ensemble=clf,
                estimator_types=[SkactivemlClassifier],
                X=X,
                y=y,
                sample_weight=sample_weight,
                fit_ensemble=fit_clf,
                missing_label=self.missing_label_,
                sample_predictions_method_name=self.sample_predictions_method_name,
                sample_predictions_dict=self.sample_predictions_dict,
            )
            if sample is None:
                probas = QueryByCommittee()._aggregate_predict_probas(X_cand, ensemble, members)
            else:
                probas = sample(X_cand, **sample_kwargs)
            probas = np.asarray(probas)
            if probas.ndim != 3:
                raise ValueError(
                    f"'probas' should be of shape (n_members, n_samples, n_classes) for method "
                    f"'bald', but shape {probas.shape} was given."
                )
            as_tnc(probas, len(X_cand), "the ensemble's probabilities")
            return probas
        if self.sample_predictions_method_name is not None or self.sample_predictions_dict is not None:
            raise ValueError(
                "'sample_predictions_method_name' and 'sample_predictions_dict' are only used by "
                f"method 'bald', not {self.method!r}."
            )
        check_type(clf, "clf", SkactivemlClassifier)
        check_equal_missing_label(clf.missing_label, self.missing_label_)
        if fit_clf:
            clf = clone(clf).fit(X, y) if sample_weight is None else clone(clf).fit(X, y, sample_weight)
        probas = np.asarray(clf.predict_proba(X_cand))
        if probas.ndim != 2:
            raise ValueError(f"'probas' should be of shape (n_samples, n_classes), but shape {probas.shape} was given.")
        as_tnc(probas, len(X_cand), "clf.predict_proba")
        return probas
