"""baal heuristics scored by alkernels' fused acquisition kernel.

Swap one import and keep the rest of a baal script::

    from baal.active.heuristics import BALD       # before
    from alkernels.adapters.baal import BALD      # after

    loop = ActiveLearningLoop(dataset, wrapper.predict_on_dataset, heuristic=BALD(), query_size=100, iterations=20)

Every class subclasses baal's ``AbstractHeuristic`` and keeps its interface: ``__call__``,
``get_ranks``, ``get_uncertainties``, ``get_uncertainties_generator``, ``compute_score``,
``reorder_indices``, and the ``shuffle_prop``, ``reverse`` and ``reduction`` semantics. So
``ActiveLearningLoop``, ``get_heuristic``-style factories and baal's stochastic wrappers
(``PowerSampling(BALD(), query_size)``) accept them.

Input
    baal's layout: ``[n_sample, n_classes, ..., n_iterations]`` (the last axis holds the MC
    iterations whenever there are three or more axes) or ``[n_sample, n_classes]``, as a NumPy
    array or a torch tensor (float32, float16 or bfloat16 are read as they are; float64 and
    integer input is converted to float32), or a one-element list holding one. A generator of
    such batches (``ModelWrapper.predict_on_dataset_generator``) is scored batch by batch as it
    arrives: the pool's predictions are never stacked, only its ``N`` scores are kept. Like
    baal, each array is read as probabilities when all values lie in [0, 1] and sum to one
    over the classes, and as logits otherwise.

Layout and cost
    The kernel reads ``[N, C, T]`` in place as a ``[T, N, C]`` view whose classes lie ``T``
    elements apart, transposing eight passes of a sample at a time in registers instead of
    making a transposed copy of the pool (about a tenth more CPU time than a contiguous
    ``[T, N, C]`` pool). Logit input is scored in one read of the pool. Probability input costs one ``log`` per element
    on top (done in row chunks, so memory stays bounded). Extra axes (``[N, C, H, W, T]``) are
    flattened into the pool, which copies the predictions once.

Scores and ranks
    The scores are baal's, in baal's sign convention (``Margin`` returns the positive margin
    and ranks it ascending), as float32. Each class lists its formula below; these are the
    definitions of ``baal.active.heuristics`` 2.1 (where baal has the heuristic) or of
    ``docs/acquisition.md`` (the variants baal lacks). Ranks are ordered by score, most
    informative first, and equal scores go to the lower pool index (the intended difference:
    baal's ``np.argsort`` leaves their order unspecified). baal scores in the input's NumPy
    dtype (float64 input in float64), the kernel in float32: two samples whose scores agree to
    about 1e-6 (relative) may swap places; identical predictions always tie.

Mapping of alkernels' eight strategies (``alkernels.acquisition.STRATEGIES``)
    =============================  ==============================================
    ``entropy``                    ``PredictiveEntropy`` (``Entropy`` when T = 1)
    ``least_confidence``           ``PredictiveCertainty``
    ``margin``                     ``PredictiveMargin`` (``Margin`` when T = 1)
    ``predictive_entropy``         ``PredictiveEntropy``
    ``expected_entropy``           ``ExpectedEntropy``
    ``bald``                       ``BALD``
    ``expected_least_confidence``  ``ExpectedCertainty``
    ``expected_margin``            ``ExpectedMargin``
    =============================  ==============================================

    Note that baal's ``Entropy`` and ``Margin`` average their input over the iterations
    *before* the softmax: on MC logits they score ``softmax(mean_t logits)``, not the mean
    predictive distribution ``p_bar``. The drop-ins keep that definition, so a swapped script
    selects what it selected before; ``PredictiveEntropy`` and ``PredictiveMargin`` score
    ``p_bar`` (the two agree on probability input and when T = 1). baal's ``Certainty`` applies
    no softmax at all (the largest averaged input value); ``PredictiveCertainty`` is the
    largest entry of ``p_bar``.

One class
    A single class column (one sigmoid or probability output per sample) is outside the fused
    kernel: ``BALD`` and ``Entropy`` hand it to baal's own heuristic (its scores and dtype, with
    a :class:`~alkernels.adapters._scoring.DelegationWarning` once per call), ``Certainty`` and
    ``Variance`` score it themselves, ``Margin`` raises an ``IndexError`` as baal's does (no
    second class), and the variants baal lacks raise ``ValueError``.

Bad input
    A wrong layout raises ``ValueError`` naming the expected shape; where baal's heuristic fails
    on the same input with an ``AssertionError`` (``BALD`` and ``Variance`` without iterations,
    an unknown reduction, ``Variance(reduction="none")``) or an ``IndexError`` (fewer than two
    axes), the error is that type too. A ``-inf`` logit is a class of probability 0, as in
    baal's softmax. A sample whose score baal could not compute (a NaN or ``+inf`` prediction,
    or a pass whose logits are all ``-inf``) raises ``ValueError`` naming its pool index (the
    global one across a generator's batches), where baal warns: a remaining difference, since
    such predictions are a broken model more often than a wanted input. With
    ``nonfinite="exclude"`` they get baal's treatment: baal's non-finite scores (per pixel for
    extra axes) go through the reduction, and where the result is not finite a ``UserWarning``
    and the score baal puts there (0 for heuristics ranked descending, 10000 for ascending
    ones) rank the sample last.

``ActiveLearningLoop`` labels ``ranks[:query_size]``, so a ``query_size`` beyond the pool labels
what is left, exactly as with baal's own heuristics; the heuristics take no query size.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from alkernels import acquisition as acq
from alkernels._extras import missing_extra
from alkernels.adapters._scoring import DelegationWarning, FrameworkAssertionError, FrameworkIndexError
from alkernels.ops.acquisition import check_nonfinite
from alkernels.ops.dispatch import normalize_backend

try:
    from baal.active import get_heuristic as _baal_get_heuristic
    from baal.active import heuristics as _baal_heuristics
    from baal.active.heuristics import AbstractHeuristic
    from baal.active.heuristics.heuristics import DEPRECATED, available_reductions
except ImportError as err:
    raise missing_extra("baal", __name__, err) from err

__all__ = [
    "BALD",
    "Certainty",
    "Entropy",
    "ExpectedCertainty",
    "ExpectedEntropy",
    "ExpectedMargin",
    "Margin",
    "PredictiveCertainty",
    "PredictiveEntropy",
    "PredictiveMargin",
    "Variance",
    "get_heuristic",
]

Reduction = str | Callable[[np.ndarray], np.ndarray]
NonFinite = Literal["raise", "exclude"]

_LAYOUT = "[n_sample, n_classes, ..., n_iterations] or [n_sample, n_classes]"
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Elements converted per step where the input must be transformed (probabilities to logits,
# half types to float32 for a reduction): bounds the extra memory to ~16 MB.
_CHUNK_ELEMENTS = 1 << 22
_TINY = torch.finfo(torch.float32).tiny


# ---- input ----------------------------------------------------------------------------------
def _single_output(predictions: Any, owner: str) -> Any:
    """The one output of ``predictions`` (an array or tensor, or a one-element list of one)."""
    if isinstance(predictions, (list, tuple)):
        if len(predictions) != 1:
            raise ValueError(
                f"{owner} scores one output of shape {_LAYOUT}, got a list of "
                f"{len(predictions)} outputs; combine heuristics over several outputs with "
                "baal.active.heuristics.CombineHeuristics"
            )
        return predictions[0]
    return predictions


def _as_tensor(predictions: Any, owner: str, shape_error: type[ValueError]) -> torch.Tensor:
    """``predictions`` (array, tensor or a one-element list of one) as a tensor, no copy when
    the dtype is a kernel dtype; validated to have at least two axes (else ``shape_error``, the
    error type baal's own heuristic fails with, which is also a ValueError)."""
    predictions = _single_output(predictions, owner)
    if isinstance(predictions, torch.Tensor):
        x = predictions.detach()
    elif isinstance(predictions, np.ndarray):
        if any(s < 0 for s in predictions.strides):
            predictions = np.ascontiguousarray(predictions)
        with warnings.catch_warnings():  # read-only arrays are only ever read
            warnings.simplefilter("ignore", UserWarning)
            try:
                x = torch.from_numpy(predictions)
            except TypeError as err:
                raise ValueError(f"{owner}: unsupported predictions dtype {predictions.dtype}") from err
    else:
        raise TypeError(
            f"{owner} expects a NumPy array or torch tensor {_LAYOUT}, or a generator of them; "
            f"got {type(predictions).__name__}"
        )
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{owner}: unsupported predictions dtype {x.dtype}")
    if x.dtype not in _KERNEL_DTYPES:
        x = x.float()
    if x.ndim < 2:
        raise shape_error(f"{owner} expects predictions {_LAYOUT}, got shape {tuple(x.shape)}")
    return x


def _row_chunks(x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, rows) chunks of ``x`` along the pool axis, about ``_CHUNK_ELEMENTS`` each."""
    per_row = max(1, x[0].numel()) if x.shape[0] else 1
    rows = max(1, _CHUNK_ELEMENTS // per_row)
    for start in range(0, x.shape[0], rows):
        yield start, x[start : start + rows]


def _probability_check(x: torch.Tensor) -> bool:
    """baal's rule (``to_prob``): values in [0, 1] that sum to one over axis 1 (``np.allclose``
    tolerances) are probabilities; anything else is logits."""
    if x.numel() == 0:
        return False
    lo, hi = x.min(), x.max()
    if not bool(lo >= 0) or not bool(hi <= 1):  # NaN fails both: logits, as in baal
        return False
    sums = x.sum(1, dtype=torch.float32)
    return bool(((sums - 1).abs() <= 1e-8 + 1e-5).all())


def _are_probabilities(x: torch.Tensor) -> bool:
    """:func:`_probability_check` over ``x``, deciding from the first sample when it already
    shows logits (the usual case), so logits cost no extra read of the pool."""
    return _probability_check(x[:1]) and _probability_check(x)


def _as_tnc(x: torch.Tensor) -> torch.Tensor:
    """baal's [N, C, *S, T] as alkernels' [T, N * prod(S), C]; a view when S is empty."""
    if x.ndim == 3:
        return x.permute(2, 0, 1)
    return x.permute(-1, 0, *range(2, x.ndim - 1), 1).reshape(x.shape[-1], -1, x.shape[1])


def _check_reduction(reduction: Reduction) -> Reduction:
    if not (callable(reduction) or reduction in available_reductions):
        raise FrameworkAssertionError(
            f"reduction must be one of {', '.join(map(repr, available_reductions))} or a callable, got {reduction!r}"
        )
    return reduction


# ---- the common base ------------------------------------------------------------------------
class _Heuristic(AbstractHeuristic):
    """baal's heuristic contract on top of :meth:`_scores` (float32 [N, *S] in baal's sign
    convention, non-finite where baal's score is, so that the reduction and baal's fill see it).

    ``_baal_one_class`` names the baal heuristic that scores one-class input (a single sigmoid
    or probability column), which the fused kernel does not cover; ``_shape_error`` is the
    error for input with fewer than two axes (the type baal's heuristic fails with, and a
    ValueError).
    """

    _reverse: ClassVar[bool] = True
    _baal_one_class: ClassVar[str | None] = None
    _shape_error: ClassVar[type[ValueError]] = FrameworkIndexError

    def __init__(
        self,
        shuffle_prop: float | str = DEPRECATED,
        reduction: Reduction = "none",
        *,
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(shuffle_prop=shuffle_prop, reverse=self._reverse, reduction=_check_reduction(reduction))
        self.nonfinite = check_nonfinite(nonfinite)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _raise_nonfinite(self, bad: np.ndarray, offset: int) -> None:
        """Raise naming the first sample of ``bad`` (bool [N]: no finite score), if any."""
        if bad.any():
            first = int(np.flatnonzero(bad)[0]) + offset
            raise ValueError(
                f"{type(self).__name__}: non-finite predictions for pool sample {first} (a NaN or +inf, or a "
                "pass of all -inf logits: baal cannot score it); pass nonfinite='exclude' to give such "
                "samples baal's fill score and rank them last"
            )

    def _checked_scores(self, predictions: Any, offset: int = 0) -> tuple[np.ndarray, int, bool]:
        """(scores [N, *S] before the reduction, N, whether baal's own heuristic scored them);
        unless ``nonfinite="exclude"``, raises for a sample without a finite score (with a NaN or
        ``+inf`` prediction where baal scores it: a probability of 0 may score NaN there)."""
        name = type(self).__name__
        x = _as_tensor(predictions, name, self._shape_error)
        n = x.shape[0]
        if self._baal_one_class is not None and x.shape[1] == 1:
            native = _single_output(predictions, name)
            if isinstance(native, torch.Tensor):
                native = native.detach().cpu().numpy()
            if n and self.nonfinite == "raise":
                broken = np.isnan(native) | np.isposinf(native)
                self._raise_nonfinite(broken.reshape(n, -1).any(1), offset)
            return np.asarray(getattr(_baal_heuristics, self._baal_one_class)().compute_score(native)), n, True
        scores = self._scores(x)
        if n and self.nonfinite == "raise":
            self._raise_nonfinite((~torch.isfinite(scores.reshape(n, -1))).any(1).cpu().numpy(), offset)
        return scores.cpu().numpy(), n, False

    def _warn_delegated(self) -> None:
        name = type(self).__name__
        warnings.warn(
            f"{name}: one class column is outside the fused kernel; the scores are baal's own {name}'s",
            DelegationWarning,
            stacklevel=3,
        )

    def _reduce(self, scores: np.ndarray) -> np.ndarray:
        """The reduction, then baal's treatment of non-finite scores (warn, fill, rank last)."""
        scores = np.asarray(self.reduction(scores))
        bad = ~np.isfinite(scores)
        if bad.any():
            fill = 0.0 if self.reversed else 10000.0
            warnings.warn(
                f"{type(self).__name__}: {int(bad.sum())} non-finite score(s) set to {fill}, as baal does",
                UserWarning,
                stacklevel=3,
            )
            scores = scores.copy()
            scores[bad] = fill
        return scores

    def compute_score(self, predictions: Any, target_predictions: Any = None) -> np.ndarray:
        """Scores of every sample before the reduction, float32 ``[n_sample, ...]`` (baal's
        dtype for one-class input, which baal's heuristic scores).

        ``target_predictions`` is accepted for baal's signature and ignored (only EPIG uses it).
        """
        scores, _, delegated = self._checked_scores(predictions)
        if delegated:
            self._warn_delegated()
        return scores

    def get_uncertainties(self, predictions: Any, target_predictions: Any = None) -> np.ndarray:
        """Reduced scores, float32 ``[n_sample]`` for the default reductions (dtypes as
        :meth:`compute_score`)."""
        scores, _, delegated = self._checked_scores(predictions)
        if delegated:
            self._warn_delegated()
        return self._reduce(scores)

    def get_uncertainties_generator(self, predictions: Any, target_predictions: Any = None) -> np.ndarray:
        """Scores of a stream of batches, concatenated; each batch is scored when it arrives and
        dropped, so memory is one batch plus the pool's scores."""
        parts, offset, delegated = [], 0, False
        for batch in predictions:
            scores, n, by_baal = self._checked_scores(batch, offset)
            parts.append(self._reduce(scores))
            offset += n
            delegated |= by_baal
        if not parts:
            raise ValueError(f"{type(self).__name__}: the generator yielded no predictions to rank")
        if delegated:
            self._warn_delegated()
        return np.concatenate(parts)

    def get_ranks(self, predictions: Any, target_predictions: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(pool indices, most informative first; the scores of :meth:`get_uncertainties`).

        Accepts an array, a tensor, or any iterator of batches (baal accepts generators only).
        """
        if isinstance(predictions, (types.GeneratorType, Iterator)):
            scores = self.get_uncertainties_generator(predictions, target_predictions)
        else:
            scores = self.get_uncertainties(predictions, target_predictions)
        return self.reorder_indices(scores), scores

    def reorder_indices(self, scores: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Pool indices ordered most informative first (descending scores when ``reversed``,
        else ascending); equal scores go to the lower index. ``shuffle_prop`` then permutes a
        random subset of positions, with baal's draws from ``np.random``."""
        if isinstance(scores, Sequence):
            scores = np.concatenate(scores)
        scores = np.asarray(scores)
        if scores.ndim != 1:
            raise ValueError(
                f"{type(self).__name__} ranks one score per sample, got scores of shape "
                f"{scores.shape}; set a reduction (reduction={self._reduction_name!r}) that "
                "maps each sample's scores to one value"
            )
        key = -scores if self.reversed else scores
        ranks = np.argsort(key)
        ordered = key[ranks]
        if np.any(ordered[1:] == ordered[:-1]):  # rare exact ties: impose the lower-index rule
            ranks = np.argsort(key, kind="stable")
        # The same draws from NumPy's global generator as baal, shuffle_prop = 0 included, so a
        # seeded script (e.g. ActiveLearningLoop's max_sample subsets) keeps its random stream.
        moved = np.flatnonzero(np.random.rand(len(ranks)) < self.shuffle_prop)
        ranks[moved] = ranks[np.random.permutation(moved)]
        return ranks

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(reduction={self._reduction_name!r}, nonfinite={self.nonfinite!r})"


class _Fused(_Heuristic):
    """A heuristic that is one row of the fused kernel's scores.

    ``_strategy`` is the alkernels strategy; ``_to_baal`` maps its score (larger = more
    informative) to baal's convention: ``"same"``, ``"negate"`` (margins) or ``"one_minus"``
    (certainties); ``_average_inputs`` mirrors baal's single-pass heuristics, which average the
    input over the iterations before the softmax; ``_needs_iterations`` rejects 2-D input (as
    baal's ``assert``); ``_one_class_error`` is raised for one class column where nothing
    delegates it (an IndexError too where baal's heuristic indexes a second class).
    """

    _strategy: ClassVar[str]
    _to_baal: ClassVar[str] = "same"
    _average_inputs: ClassVar[bool] = False
    _needs_iterations: ClassVar[bool] = False
    _one_class_error: ClassVar[type[ValueError]] = ValueError

    def __init__(
        self,
        shuffle_prop: float | str = DEPRECATED,
        reduction: Reduction = "none",
        *,
        backend: acq.Backend = "auto",
        nonfinite: NonFinite = "raise",
    ) -> None:
        super().__init__(shuffle_prop=shuffle_prop, reduction=reduction, nonfinite=nonfinite)
        self.backend = normalize_backend(backend)

    @property
    def strategy(self) -> str:
        """The ``alkernels.acquisition`` strategy whose kernel row this heuristic reports."""
        return self._strategy

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        if x.shape[1] < 2:
            raise self._one_class_error(
                f"{name} needs at least 2 classes on axis 1 of {_LAYOUT}, got shape "
                f"{tuple(x.shape)}; for one sigmoid output pass two-class logits [0, z]"
            )
        if x.ndim < 3:
            if self._needs_iterations:
                raise FrameworkAssertionError(
                    f"{name} needs MC predictions [n_sample, n_classes, ..., n_iterations], got shape {tuple(x.shape)}"
                )
            x = x.unsqueeze(-1)
        elif self._average_inputs:
            x = x.mean(-1, dtype=torch.float32).unsqueeze(-1)
        spatial = x.shape[2:-1]
        if _are_probabilities(x):
            parts = [self._kernel(_as_tnc(torch.log(rows.float().clamp_min(_TINY)))) for _, rows in _row_chunks(x)]
            scores = torch.cat(parts) if parts else torch.empty(0)
        else:
            tnc = _as_tnc(x)
            scores = self._with_zero_probabilities(tnc, self._kernel(tnc))
        return scores.reshape(x.shape[0], *spatial)

    def _kernel(self, tnc: torch.Tensor) -> torch.Tensor:
        """baal-convention float32 scores [M] of logits [T, M, C] (NaN where one is not finite)."""
        s = acq.score(tnc, self._strategy, backend=self.backend, nonfinite="exclude")
        if self._to_baal == "negate":
            return -s
        if self._to_baal == "one_minus":
            return 1 - s
        return s

    def _with_zero_probabilities(self, tnc: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` [M] of logits ``tnc`` [T, M, C], where the kernel excluded a row for a
        ``-inf`` logit, scored again as baal scores it: its softmax gives that class probability
        0, which the dtype's lowest finite logit gives too. A pass whose logits are all ``-inf``,
        a NaN or a ``+inf`` keeps the row NaN (baal's score is NaN there as well)."""
        excluded = torch.isnan(scores)
        if not bool(excluded.any()):
            return scores
        rows = tnc[:, excluded]
        zero = torch.isneginf(rows)
        zero &= ~zero.all(-1, keepdim=True)
        if not bool(zero.any()):
            return scores
        scores[excluded] = self._kernel(torch.where(zero, torch.finfo(rows.dtype).min, rows))
        return scores

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(reduction={self._reduction_name!r}, "
            f"backend={self.backend!r}, nonfinite={self.nonfinite!r})"
        )


# ---- baal's heuristics ----------------------------------------------------------------------
class BALD(_Fused):
    """Mutual information between the prediction and the model (Houlsby et al. 2011):
    ``H(p_bar) - mean_t H(p_t)`` with ``p_t`` the softmax of iteration ``t``. Ranked descending.
    Needs ``[n_sample, n_classes, ..., n_iterations]``.

    Args:
        shuffle_prop: baal's deprecated ranking noise (proportion of positions shuffled).
        reduction: ``"none"``, ``"mean"``, ``"sum"``, ``"max"``, ``"min"`` or a callable, applied
            to the per-sample scores (matters for extra axes such as pixels).
        backend: ``"auto"``, ``"cpu"``, ``"torch"`` or ``"triton"`` (CUDA tensors).
        nonfinite: ``"raise"`` (default) or ``"exclude"`` (baal's warn-and-fill).
    """

    _strategy = "bald"
    _needs_iterations = True
    _baal_one_class = "BALD"


class Entropy(_Fused):
    """baal's entropy: ``H(softmax(mean_t x))``, the input averaged over iterations first (on
    probability input that is ``H(p_bar)``). Ranked descending. Arguments as :class:`BALD`."""

    _strategy = "entropy"
    _average_inputs = True
    _baal_one_class = "Entropy"


class Margin(_Fused):
    """baal's margin: ``top1 - top2`` of ``softmax(mean_t x)``, the input averaged over
    iterations first. Ranked ascending (smallest margin first). Arguments as :class:`BALD`."""

    _strategy = "margin"
    _to_baal = "negate"
    _average_inputs = True
    _reverse = False
    _one_class_error = FrameworkIndexError


class Certainty(_Heuristic):
    """baal's certainty: the largest entry of ``mean_t x`` over the classes, with no softmax (on
    logits that is the largest averaged logit). Ranked ascending. For the largest probability
    of ``p_bar`` use :class:`PredictiveCertainty`.

    Args:
        shuffle_prop, reduction, nonfinite: as :class:`BALD`.
    """

    _reverse = False

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for _, rows in _row_chunks(x):
            mean = rows.float().mean(-1) if rows.ndim >= 3 else rows.float()
            parts.append(mean.amax(1))  # NaN and infinities as baal's, for its reduction and fill
        return torch.cat(parts) if parts else torch.empty(0, *x.shape[2:-1])


class Variance(_Heuristic):
    """Regression: the variance over the iterations (``ddof = 0``) of each target, reduced over
    the targets (default ``"mean"``). Input ``[n_sample, n_targets, ..., n_iterations]``, any
    values. Ranked descending.

    Args:
        shuffle_prop, nonfinite: as :class:`BALD`.
        reduction: how to combine the targets' variances; ``"none"`` is not allowed (one score
            per sample is needed to rank).
    """

    _shape_error = FrameworkAssertionError

    def __init__(
        self,
        shuffle_prop: float | str = DEPRECATED,
        reduction: Reduction = "mean",
        *,
        nonfinite: NonFinite = "raise",
    ) -> None:
        if reduction == "none":
            raise FrameworkAssertionError(
                "Variance needs a reduction over the targets ('mean', 'sum', 'max', 'min' or a "
                "callable) to give one score per sample, got 'none'"
            )
        super().__init__(shuffle_prop=shuffle_prop, reduction=reduction, nonfinite=nonfinite)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 3:
            raise FrameworkAssertionError(
                f"Variance needs MC predictions [n_sample, n_targets, ..., n_iterations], got shape {tuple(x.shape)}"
            )
        parts = []
        for _, rows in _row_chunks(x):
            parts.append(rows.float().var(-1, correction=0))  # NaN and infinities as baal's
        return torch.cat(parts) if parts else torch.empty(0, *x.shape[1:-1])


# ---- the variants baal lacks (docs/acquisition.md) ------------------------------------------
class PredictiveEntropy(_Fused):
    """``H(p_bar)``, the entropy of the mean of the per-iteration softmaxes (alkernels'
    ``predictive_entropy``, equal to its ``entropy``). Ranked descending. Arguments as
    :class:`BALD`."""

    _strategy = "predictive_entropy"


class PredictiveMargin(_Fused):
    """``top1(p_bar) - top2(p_bar)`` (alkernels' ``margin``). Ranked ascending. Arguments as
    :class:`BALD`."""

    _strategy = "margin"
    _to_baal = "negate"
    _reverse = False


class PredictiveCertainty(_Fused):
    """``top1(p_bar)``, the largest mean probability (alkernels' ``least_confidence`` is one
    minus this). Ranked ascending. Arguments as :class:`BALD`."""

    _strategy = "least_confidence"
    _to_baal = "one_minus"
    _reverse = False


class ExpectedEntropy(_Fused):
    """``mean_t H(p_t)``, the expected entropy of one iteration (alkernels'
    ``expected_entropy``). Ranked descending. Arguments as :class:`BALD`."""

    _strategy = "expected_entropy"


class ExpectedMargin(_Fused):
    """``mean_t (top1(p_t) - top2(p_t))`` (alkernels' ``expected_margin``, negated). Ranked
    ascending. Arguments as :class:`BALD`."""

    _strategy = "expected_margin"
    _to_baal = "negate"
    _reverse = False


class ExpectedCertainty(_Fused):
    """``mean_t top1(p_t)`` (alkernels' ``expected_least_confidence`` is one minus this). Ranked
    ascending. Arguments as :class:`BALD`."""

    _strategy = "expected_least_confidence"
    _to_baal = "one_minus"
    _reverse = False


_BY_NAME: dict[str, type[_Heuristic]] = {
    "bald": BALD,
    "entropy": Entropy,
    "margin": Margin,
    "certainty": Certainty,
    "variance": Variance,
    "predictive_entropy": PredictiveEntropy,
    "predictive_margin": PredictiveMargin,
    "predictive_certainty": PredictiveCertainty,
    "expected_entropy": ExpectedEntropy,
    "expected_margin": ExpectedMargin,
    "expected_certainty": ExpectedCertainty,
}
# baal's names this module leaves to baal (no score to fuse, or a sequential algorithm).
_BAAL_ONLY = ("random", "precomputed", "batch_bald", "epig")


def get_heuristic(
    name: str,
    shuffle_prop: float | str = DEPRECATED,
    reduction: Reduction | None = None,
    **kwargs: Any,
) -> AbstractHeuristic:
    """``baal.active.get_heuristic`` with the fused heuristics of this module.

    ``name`` is one of baal's names (``bald``, ``entropy``, ``margin``, ``certainty``,
    ``variance``) or of the variants (``predictive_entropy``, ``predictive_margin``,
    ``predictive_certainty``, ``expected_entropy``, ``expected_margin``, ``expected_certainty``).
    baal's ``random``, ``precomputed``, ``batch_bald`` and ``epig`` come from baal itself.
    ``reduction=None`` takes the class's default (``"mean"`` for ``variance``, else ``"none"``).
    ``kwargs`` go to the class (``backend=``, ``nonfinite=``).
    """
    if name in _BAAL_ONLY:
        return _baal_get_heuristic(name, shuffle_prop=shuffle_prop, reduction=reduction or "none", **kwargs)
    if name not in _BY_NAME:
        raise ValueError(f"unknown heuristic {name!r}; expected one of {', '.join((*_BY_NAME, *_BAAL_ONLY))}")
    if reduction is not None:
        kwargs["reduction"] = reduction
    return _BY_NAME[name](shuffle_prop=shuffle_prop, **kwargs)
