"""Fused scoring of framework outputs, shared by the adapters (core dependencies only).

Frameworks built on scikit-learn hand over class *probabilities*; deep-learning users hand
over *logits*. Both arrive here as NumPy arrays or torch tensors in the layout
``[N, C]`` (one pass) or ``[T, N, C]`` (T MC passes or ensemble members), and leave as one
float32 [N] score vector of an :mod:`alkernels.acquisition` strategy.

Probabilities become logits by ``log`` chunk by chunk along N, so the float32 copy of a large
MC pool never exists in full and each chunk is scored by the fused kernel while it is still in
cache. ``softmax(log p) = p / sum_c p``, so every score is the one of the probabilities
themselves (rows that do not sum to one are renormalised). A zero probability is clamped to
the smallest normal float32 (its log is about -87.3; its weight in any score is below float32
resolution). ``least_confidence`` on a single pass is ``1 - max_c p`` directly: there is
nothing to fuse in one max.

Bad input raises ``ValueError`` naming the producer (``source``) and the first bad pool sample:
NaN, infinite or negative probabilities, non-finite logits.

The adapters answer with the framework's own values: the fused float32 scores only *screen*
the pool (:func:`screen`, with the error bound of :func:`fused_bound`), and the few samples
that can still be selected are scored again by the framework's own function, in its precision.
Where the fused path does not apply at all, the framework's function scores the whole pool and
a :class:`DelegationWarning` says so.
"""

from __future__ import annotations

import numpy as np
import torch

from alkernels import acquisition as acq

__all__ = [
    "DelegationWarning",
    "FrameworkAssertionError",
    "FrameworkIndexError",
    "as_tnc",
    "first_bad_probability",
    "fused_bound",
    "logit_scores",
    "proba_scores",
    "screen",
    "top_k",
]

#: Elements (T x rows x C) converted and scored per chunk: 8 MiB of float32.
CHUNK_ELEMENTS = 1 << 21
_TINY = torch.finfo(torch.float32).tiny
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Bound on |fused float32 score - exact float64 score| per (1 + ln C), for probabilities whose
#: rows sum to one. Measured worst cases (Dirichlet rows with alpha 0.01 to 1000, entries down
#: to 1e-30, C = 2 to 4000, float32 and float64 input): 1.5e-7 (entropy family) and 3e-7
#: (BALD, a difference of two entropies); the bounds hold a factor of at least 30 in reserve.
_FUSED_ERROR = {"entropy": 1e-5, "predictive_entropy": 1e-5, "bald": 2e-5}


class DelegationWarning(UserWarning):
    """A call the fused path does not cover (a parameter, a method or an input) was answered by
    the framework's own implementation, so its result is the framework's; at most one per call."""


class FrameworkAssertionError(ValueError, AssertionError):
    """Input that the framework rejects with an ``assert``: an ``AssertionError`` as there, and a
    ``ValueError`` with a message naming the problem."""


class FrameworkIndexError(ValueError, IndexError):
    """Input on which the framework fails indexing a missing axis or class: an ``IndexError`` as
    there, and a ``ValueError`` with a message naming the problem."""


def as_tnc(values: np.ndarray | torch.Tensor, n: int | None, source: str, min_classes: int = 2) -> torch.Tensor:
    """``values`` ([N, C] or [T, N, C], NumPy or torch) as a [T, N, C] tensor, zero-copy
    (detached: a tensor that requires grad is read, and no gradient flows back).

    Args:
        values: a model's output for the pool.
        n: the pool size the output must cover, or None to accept any N.
        source: what produced ``values``, for error messages (e.g. ``"predict_proba"``).
        min_classes: the fewest class columns accepted.

    Raises:
        ValueError: wrong number of dims, N different from ``n`` (with a hint when the array
            looks like baal's [N, C, T] layout), fewer than ``min_classes`` classes, or a
            non-numeric dtype.
    """
    tensor = torch.as_tensor(values).detach()  # values are read; scores carry no gradient
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"{source} returned dtype {tensor.dtype}; expected floating point values")
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.ndim != 3:
        raise ValueError(f"{source} must return [N, C] or [T, N, C] values, got shape {tuple(tensor.shape)}")
    t, rows, c = tensor.shape
    if n is not None and rows != n:
        hint = ""
        if t == n:
            hint = " (this looks like baal's [N, C, T] layout: transpose it to [T, N, C])"
        raise ValueError(
            f"{source} returned shape {tuple(tensor.shape)} for a pool of {n} samples; "
            f"expected [T, {n}, C] or [{n}, C]{hint}"
        )
    if t < 1:
        raise ValueError(f"{source} returned T = 0 passes")
    if c < min_classes:
        raise ValueError(f"{source} returned {c} class column(s); scoring needs at least {min_classes} classes")
    return tensor


def fused_bound(strategy: str, c: int) -> float:
    """Bound on the difference between the fused float32 score of ``strategy`` (``entropy``,
    ``predictive_entropy`` or ``bald``) and its exact value, for probabilities over ``c``
    classes whose rows sum to one."""
    return _FUSED_ERROR[strategy] * (1.0 + float(np.log(c)))


def first_bad_probability(proba: torch.Tensor) -> int | None:
    """The first row of ``proba`` [..., N, C] with a NaN, infinite or negative entry, or None.

    One ``aminmax`` pass when every entry is fine; the row is searched for only on failure.
    """
    if proba.numel() == 0:
        return None
    lo, hi = torch.aminmax(proba) if proba.dtype.is_floating_point else (proba.min(), proba.max())
    if bool(lo >= 0) and bool(hi < float("inf")):  # NaN fails both comparisons
        return None
    bad = ~((proba >= 0) & (proba < float("inf")))
    return _first_bad_sample(bad.reshape(-1, *proba.shape[-2:]).any(-1).any(0))


def screen(key: np.ndarray, bound: np.ndarray | float, k: int) -> np.ndarray:
    """Positions that can be among the ``k`` largest exact keys, given approximations.

    Args:
        key: float64 [N] approximations of the exact keys; NaN marks a position that is never
            selected.
        bound: float64 [N] or a scalar, with ``|key - exact| <= bound`` at every position.
        k: how many positions are selected.

    Returns:
        int64 [M] ascending positions: every position whose exact key can reach the ``k``-th
        largest exact key (so all of the selection and every tie with its last member); all
        the selectable positions when ``k`` reaches their number.
    """
    valid = ~np.isnan(key)
    n_valid = int(valid.sum())
    if k >= n_valid:
        return np.flatnonzero(valid)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    # the k-th largest lower bound: k positions have an exact key at least that large
    kth = np.partition((key - bound)[valid], n_valid - k)[n_valid - k]
    return np.flatnonzero(valid & (key + bound >= kth))


def _check_strategy(strategy: str) -> None:
    if strategy not in acq.STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(acq.STRATEGIES)}")


def _chunk_rows(t: int, c: int) -> int:
    return max(1, CHUNK_ELEMENTS // (t * c))


def _first_bad_sample(bad_rows: torch.Tensor) -> int:
    return int(torch.nonzero(bad_rows).flatten()[0])


def proba_scores(
    proba: np.ndarray | torch.Tensor,
    strategy: str,
    *,
    backend: str = "auto",
    source: str = "predict_proba",
) -> torch.Tensor:
    """One strategy's scores of class probabilities.

    Args:
        proba: [N, C] or [T, N, C] probabilities, any float dtype, NumPy or torch (any device).
        strategy: one of ``alkernels.acquisition.STRATEGIES``.
        backend: as in :func:`alkernels.acquisition.score`.
        source: the producer's name for error messages.

    Returns:
        float32 [N] on the input's device; larger means more informative.

    Raises:
        ValueError: layout errors of :func:`as_tnc`; a NaN, infinite or negative probability.
    """
    tnc = as_tnc(proba, None, source)
    if not tnc.dtype.is_floating_point:
        tnc = tnc.float()
    t, n, c = tnc.shape
    _check_strategy(strategy)
    direct = strategy == "least_confidence" and t == 1
    out = torch.empty(n, dtype=torch.float32, device=tnc.device)
    rows = _chunk_rows(t, c)
    for a in range(0, n, rows):
        chunk = tnc[:, a : a + rows]
        if not bool(chunk.amin() >= 0):  # NaN fails the comparison too
            bad = (~(chunk >= 0)).any(-1).any(0)
            raise ValueError(
                f"{source} returned a NaN or negative probability for pool sample {a + _first_bad_sample(bad)}"
            )
        if direct:
            out[a : a + rows] = 1 - chunk[0].amax(-1)
        else:
            # clamp out of place: for float32 input ``to`` returns the caller's own memory
            logits = chunk.to(torch.float32).clamp(min=_TINY).log_()
            out[a : a + rows] = acq.score(logits, strategy, backend=backend, nonfinite="exclude")
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        raise ValueError(f"{source} returned an infinite probability for pool sample {_first_bad_sample(bad)}")
    return out


def logit_scores(
    logits: np.ndarray | torch.Tensor, strategy: str, *, backend: str = "auto", source: str = "logits"
) -> torch.Tensor:
    """One strategy's scores of logits.

    Args:
        logits: [N, C] or [T, N, C], NumPy or torch (any device). float32, float16 and bfloat16
            go to the kernel as they are (zero-copy); other dtypes are converted to float32
            chunk by chunk.
        strategy, backend, source: as in :func:`proba_scores`.

    Returns:
        float32 [N] on the input's device.

    Raises:
        ValueError: layout errors of :func:`as_tnc`; a NaN or infinite logit.
    """
    _check_strategy(strategy)
    tnc = as_tnc(logits, None, source)
    if tnc.dtype in _KERNEL_DTYPES:
        out = acq.score(tnc, strategy, backend=backend, nonfinite="exclude")
    else:
        t, n, c = tnc.shape
        out = torch.empty(n, dtype=torch.float32, device=tnc.device)
        rows = _chunk_rows(t, c)
        for a in range(0, n, rows):
            chunk = tnc[:, a : a + rows].to(torch.float32)
            out[a : a + rows] = acq.score(chunk, strategy, backend=backend, nonfinite="exclude")
    bad = torch.isnan(out)
    if bool(bad.any()):
        raise ValueError(f"{source} returned a NaN or infinite logit for pool sample {_first_bad_sample(bad)}")
    return out


def top_k(key: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest non-NaN entries of a float64 ``key`` [N].

    The same rule as :func:`alkernels.acquisition.topk` (descending, ties to the lower index,
    NaN never selected) at float64 resolution, in O(N): utilities that carry a float64 weight or
    offset must not be rounded to float32 before ranking.

    Raises:
        ValueError: when fewer than ``k`` entries are not NaN.
    """
    if k == 0:
        return np.empty(0, dtype=np.int64)
    valid = np.flatnonzero(~np.isnan(key))
    if k > valid.size:
        raise ValueError(f"k = {k} is larger than the number of selectable samples ({valid.size})")
    vals = key[valid]
    if k < valid.size:
        kth = np.partition(vals, valid.size - k)[valid.size - k]  # the k-th largest value
        above = vals > kth
        at = vals == kth
        keep = above | (at & (np.cumsum(at) <= k - int(above.sum())))
        valid, vals = valid[keep], vals[keep]
    return valid[np.lexsort((valid, -vals))]
