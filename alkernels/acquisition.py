"""Acquisition scores and query selection for pool-based active learning.

Logits are [T, N, C] (T MC-dropout passes, N pool samples, C classes) or [N, C] (T = 1) in
float32, float16 or bfloat16, scored in float32 on every backend, or in float64, scored in float64
by the ``"torch"`` backend: ``"auto"`` picks it, while ``"cpu"`` and ``"triton"`` (float32
kernels) raise ``ValueError`` instead of rounding, and scores and selected values are then float64
too. The eight strategies follow
``docs/acquisition.md`` (the Energizer 0.2.0 definitions the paper used):

==========================  =========================================================
entropy                     H(p_bar)
least_confidence            1 - max_c p_bar
margin                      -(p_bar(1) - p_bar(2))
predictive_entropy          H(p_bar) (same as entropy, kept as its own name)
expected_entropy            mean_t H(p_t)
bald                        H(p_bar) - mean_t H(p_t)
expected_least_confidence   1 - mean_t max_c p_t
expected_margin             -mean_t (p_t(1) - p_t(2))
==========================  =========================================================

A query takes the k LARGEST scores. Deliberate differences from the paper's framework:

- Ties are broken by the lower pool index on every backend (the paper left them to
  ``torch.topk``, whose order among equal values is unspecified).
- ``random_indices`` draws without replacement (the paper's framework drew with replacement and
  silently labelled fewer samples than asked).

Non-finite logits raise ``ValueError`` naming the first bad sample, unless ``nonfinite="exclude"``
is passed: then those samples get NaN scores and are never selected.

Logits that require grad are accepted on every backend: they are read, and the scores carry no
gradient. :func:`score_all`, :func:`score`, :func:`select` and :func:`topk` compile with
``torch.compile(fullgraph=True)`` and no graph break (the kernels, the non-finite check, the
exclusion and the top-k run as registered operators, ``alkernels::score_all`` and
``alkernels::topk``); :class:`StreamingSelector` keeps its running top-k in Python.

Backends: ``"torch"`` (reference), ``"cpu"`` (fused C++ kernel), ``"triton"`` (fused GPU kernel),
``"auto"`` (triton for CUDA tensors, cpu when the extension is built, else torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from alkernels.ops import acquisition as _ops
from alkernels.ops.dispatch import normalize_backend

__all__ = [
    "NonFiniteLogitsError",
    "STRATEGIES",
    "score",
    "score_all",
    "topk",
    "select",
    "StreamingSelector",
    "random_indices",
]

#: The eight strategy names, in the order of :func:`score_all`'s dict and ``docs/acquisition.md``.
STRATEGIES: tuple[str, ...] = _ops.SCORE_ORDER
NonFiniteLogitsError = _ops.NonFiniteLogitsError

Backend = Literal["auto", "torch", "cpu", "triton"]
NonFinite = Literal["raise", "exclude"]
Exclude = torch.Tensor | Sequence[int] | None

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
#: Largest pool position a selector can hold (int64 indices).
_MAX_POSITION = torch.iinfo(torch.int64).max


def _as_tnc(logits: torch.Tensor) -> torch.Tensor:
    """Validate ``logits`` and view them as [T, N, C]."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in _DTYPES:
        raise ValueError(f"unsupported logits dtype {logits.dtype}; expected float32, float16, bfloat16 or float64")
    if logits.ndim == 2:
        logits = logits.unsqueeze(0)
    elif logits.ndim != 3:
        raise ValueError(f"logits must be [N, C] or [T, N, C], got {logits.ndim} dims with shape {tuple(logits.shape)}")
    if logits.shape[0] < 1:
        raise ValueError("logits have T = 0 MC passes")
    if logits.shape[2] < 2:
        raise ValueError(f"logits need C >= 2 classes, got C = {logits.shape[2]}")
    return logits


def _check_strategy(strategy: str) -> int:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return STRATEGIES.index(strategy)


def _score_matrix(logits: torch.Tensor, backend: str, nonfinite: str, offset: int = 0) -> torch.Tensor:
    """float32 [8, N] scores (float64 for float64 logits) of validated [T, N, C] logits; handles
    non-finite samples."""
    return _ops.score_all(logits, backend, nonfinite, offset)


def score(
    logits: torch.Tensor, strategy: str, *, backend: Backend = "auto", nonfinite: NonFinite = "raise"
) -> torch.Tensor:
    """Score every pool sample with one strategy.

    Args:
        logits: [N, C] or [T, N, C], float32/float16/bfloat16 (scored in float32) or float64
            (scored in float64 on the torch backend).
        strategy: one of ``STRATEGIES``.
        backend: ``"auto"``, ``"torch"``, ``"cpu"`` or ``"triton"``.
        nonfinite: ``"raise"`` or ``"exclude"`` (NaN score for samples with non-finite logits).

    Returns:
        float32 [N] (float64 for float64 logits) on the logits' device; larger means more
        informative.
    """
    row = _check_strategy(strategy)
    return _score_matrix(_as_tnc(logits), backend, nonfinite)[row]


def score_all(
    logits: torch.Tensor, *, backend: Backend = "auto", nonfinite: NonFinite = "raise"
) -> dict[str, torch.Tensor]:
    """All eight strategies from ONE pass over ``logits`` ([N, C] or [T, N, C]).

    Returns a dict strategy name -> float32 [N] scores (float64 for float64 logits; views of one
    [8, N] buffer).
    """
    scores = _score_matrix(_as_tnc(logits), backend, nonfinite)
    return {name: scores[i] for i, name in enumerate(STRATEGIES)}


def _exclude_indices(exclude: Exclude) -> torch.Tensor | None:
    """Validate ``exclude`` (a bool mask over the pool or a list/tensor of global pool indices)
    and return the excluded global indices as a sorted int64 tensor on the CPU (or None)."""
    ex = _exclude_tensor(exclude)
    if ex is None:
        return None
    if ex.dtype == torch.bool:
        return torch.nonzero(ex.cpu()).flatten()
    ex = ex.cpu()
    if ex.numel() and int(ex.min()) < 0:
        raise ValueError(f"exclude has a negative index {int(ex.min())}")
    return torch.sort(ex).values


def _exclude_tensor(exclude: Exclude) -> torch.Tensor | None:
    """``exclude`` as a 1-D bool mask or int64 index tensor (values are checked by the top-k op)."""
    if exclude is None:
        return None
    ex = exclude if isinstance(exclude, torch.Tensor) else torch.as_tensor(exclude)
    if ex.dtype == torch.bool:
        if ex.ndim != 1:
            raise ValueError(f"exclude mask must be 1-D, got shape {tuple(ex.shape)}")
        return ex
    if ex.numel() == 0:  # an empty list arrives as float32
        return torch.empty(0, dtype=torch.long)
    if ex.dtype.is_floating_point or ex.dtype.is_complex:
        raise ValueError(f"exclude must be a bool mask or integer indices, got dtype {ex.dtype}")
    return ex.flatten().long()


def _chunk_mask(excluded: torch.Tensor | None, n: int, device: torch.device, offset: int = 0) -> torch.Tensor | None:
    """bool [n] mask of the sorted global indices ``excluded`` that fall in [offset, offset + n)."""
    if excluded is None:
        return None
    lo, hi = torch.searchsorted(excluded, torch.tensor([offset, offset + n])).tolist()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[excluded[lo:hi] - offset] = True
    return mask.to(device)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    return k


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest ``scores`` [N], descending, ties broken by the lower index.

    NaN scores (samples excluded for non-finite logits) are never selected. Deterministic and
    identical on CPU and GPU. float64 scores are ranked in float64; other dtypes in float32.

    Returns:
        (indices int64 [k], values float32 [k], float64 for float64 scores).
    """
    _check_k(k)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D [N], got shape {tuple(scores.shape)}")
    idx, val, _ = _ops.topk(scores if scores.dtype == torch.float64 else scores.float(), k, strict=True)
    return idx, val


def select(
    logits: torch.Tensor,
    strategy: str,
    k: int,
    *,
    exclude: Exclude = None,
    backend: Backend = "auto",
    nonfinite: NonFinite = "raise",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused scoring and selection: the ``k`` most informative pool samples.

    Args:
        logits: [N, C] or [T, N, C], float32/float16/bfloat16 (scored in float32) or float64
            (scored in float64 on the torch backend).
        strategy: one of ``STRATEGIES``.
        k: query size, at most the pool size after exclusion.
        exclude: already-labelled samples, as a bool mask [N] or a list/tensor of indices.
        backend, nonfinite: as in :func:`score`.

    Returns:
        (indices int64 [k], scores float32 [k], float64 for float64 logits), scores descending,
        ties to the lower index.
    """
    _check_k(k)
    row = _check_strategy(strategy)
    tnc = _as_tnc(logits)
    scores = _score_matrix(tnc, backend, nonfinite)[row]
    idx, val, _ = _ops.topk(scores, k, _exclude_tensor(exclude), strict=True)
    return idx, val


class StreamingSelector:
    """Running top-k over a pool that arrives in chunks along N.

    ``update`` scores each chunk with the fused kernel and merges its best ``k`` into the running
    set, so memory is O(k + chunk) and the full [T, N, C] logits never exist. ``result()`` equals
    :func:`select` on the concatenated logits (same indices, same order). Scores are float32,
    and float64 once a float64 chunk has been scored (the running set is then kept in float64).

    Args:
        strategy: one of ``STRATEGIES``.
        k: query size.
        exclude: global pool indices (or a bool mask over the pool) that may not be selected.
        backend, nonfinite: as in :func:`score`.
    """

    def __init__(
        self,
        strategy: str,
        k: int,
        *,
        exclude: Exclude = None,
        backend: Backend = "auto",
        nonfinite: NonFinite = "raise",
    ) -> None:
        self._row = _check_strategy(strategy)
        self.strategy = strategy
        self.k = _check_k(k)
        self._excluded = _exclude_indices(exclude)
        self._backend = normalize_backend(backend)
        self._nonfinite = _ops.check_nonfinite(nonfinite)
        self._spans: list[tuple[int, int]] = []
        self._layout: tuple[int, int, int] | None = None  # (ndim, T, C) of the first chunk
        self._next = 0
        self._selectable = 0
        self._idx = torch.empty(0, dtype=torch.long)
        self._val = torch.empty(0, dtype=torch.float32)

    def update(self, logits_chunk: torch.Tensor, offset: int | None = None) -> None:
        """Score a chunk ([n, C] or [T, n, C]) of pool rows ``[offset, offset + n)``.

        ``offset`` defaults to the end of the previous chunk. Chunks may come in any order but
        must not overlap."""
        tnc = _as_tnc(logits_chunk)
        n = tnc.shape[1]
        layout = (logits_chunk.ndim, tnc.shape[0], tnc.shape[2])
        if self._layout is None:
            self._layout = layout
        elif layout != self._layout:
            first = "[n, C] with C = {2}" if self._layout[0] == 2 else "[T, n, C] with T = {1}, C = {2}"
            raise ValueError(
                f"chunk shape {tuple(logits_chunk.shape)} does not match the first chunk's layout "
                + first.format(*self._layout)
            )
        off = self._next if offset is None else int(offset)
        if off < 0:
            raise ValueError(f"offset must be non-negative, got {off}")
        if off + n > _MAX_POSITION:
            raise ValueError(f"chunk rows [{off}, {off + n}) pass the largest pool position {_MAX_POSITION}")
        for a, b in self._spans:
            if off < b and a < off + n:
                raise ValueError(f"chunk rows [{off}, {off + n}) overlap rows [{a}, {b}) already seen")
        scores = _score_matrix(tnc, self._backend, self._nonfinite, offset=off)[self._row]
        mask = _chunk_mask(self._excluded, n, scores.device, offset=off)
        idx, val, valid = _ops.topk(scores, self.k, mask)
        self._spans.append((off, off + n))
        self._next = off + n
        self._selectable += int(valid)
        self._idx, self._val = self._merge(torch.cat([self._idx, idx.cpu() + off]), torch.cat([self._val, val.cpu()]))

    def _merge(self, idx: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        by_index = torch.argsort(idx)
        idx, val = idx[by_index], val[by_index]
        order = torch.sort(val, descending=True, stable=True).indices[: self.k]
        return idx[order], val[order]

    def candidates(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The running best without requiring ``k`` of them: (indices int64 [k'], scores float32
        [k'] (float64 after float64 chunks), number of selectable rows seen), k' = min(k, selectable), on the CPU, in
        :func:`select`'s order. ``alkernels.distributed`` merges these across ranks."""
        return self._idx.clone(), self._val.clone(), self._selectable

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices int64 [k], scores float32 [k], float64 after float64 chunks) over all chunks
        seen, on the CPU."""
        if self._selectable < self.k:
            raise ValueError(
                f"k = {self.k} is larger than the pool seen so far after exclusion ({self._selectable} samples)"
            )
        return self._idx.clone(), self._val.clone()


def random_indices(n: int, k: int, seed: int) -> torch.Tensor:
    """``k`` distinct indices in ``[0, n)`` drawn without replacement, int64 [k], seeded."""
    _check_k(k)
    if k > n:
        raise ValueError(f"cannot draw k = {k} distinct indices from a pool of n = {n}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:k]
