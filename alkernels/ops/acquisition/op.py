"""Acquisition scoring and top-k as registered PyTorch operators.

* ``alkernels::score_all`` (:func:`score_all_op`): the eight scores of ``[T, N, C]`` logits on a
  concrete backend (``"torch"``, ``"cpu"``, ``"triton"``), float32 ``[8, N]`` (float64 for
  float64 logits, which only the torch backend takes). Non-finite logits either raise
  :class:`NonFiniteLogitsError` from inside the op or score NaN, so a compiled caller keeps that
  check without a graph break.
* ``alkernels::topk`` (:func:`topk_op`): the ``k`` largest scores, descending, ties to the lower
  index, skipping NaN and excluded entries; ``strict`` raises when fewer than ``k`` are
  selectable, so that the output has exactly ``k`` entries (a static shape for the compiler).

Scores carry no gradient: the public API detaches the logits before calling the op, so logits
that require grad are read, never differentiated (no autograd formula is registered).
"""

from __future__ import annotations

import torch
from torch import Tensor

from alkernels.ops.acquisition.reference import score_all_torch, score_dtype, topk_torch
from alkernels.ops.dispatch import ext
from alkernels.ops.registry import qualname, register_vmap_by_loop

#: Rows of the score matrix, in order.
SCORE_ORDER: tuple[str, ...] = (
    "entropy",
    "least_confidence",
    "margin",
    "predictive_entropy",
    "expected_entropy",
    "bald",
    "expected_least_confidence",
    "expected_margin",
)
#: What to do with samples whose logits are not finite.
NONFINITE_MODES: tuple[str, ...] = ("raise", "exclude")


class NonFiniteLogitsError(ValueError):
    """Logits with NaN or inf. ``position`` is the pool position of the first such sample (in a
    :class:`~alkernels.acquisition.StreamingSelector`, counted from the start of the pool), so
    callers can name the dataset item behind it."""

    def __init__(self, position: int) -> None:
        self.position = position
        super().__init__(
            f"non-finite logits (NaN or inf) for pool sample {position}; pass nonfinite='exclude' to skip such samples"
        )

    def __reduce__(self) -> tuple:  # crosses process boundaries (workers, ranks) intact
        return type(self), (self.position,)


def check_nonfinite(mode: str) -> str:
    """``mode`` if it is one of :data:`NONFINITE_MODES`; ValueError otherwise."""
    if mode not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be 'raise' or 'exclude', got {mode!r}")
    return mode


@torch.library.custom_op(qualname("score_all"), mutates_args=())
def score_all_op(logits: Tensor, backend: str, nonfinite: str, offset: int) -> Tensor:
    """Scores of ``logits`` [T, N, C] (float32/float16/bfloat16, or float64 on the torch
    backend) on the concrete ``backend``: float32 [8, N] (float64 for float64 logits, computed in
    float64) in :data:`SCORE_ORDER` on the logits' device.

    Args:
        nonfinite: ``"raise"``: :class:`NonFiniteLogitsError` naming the first sample with a
            non-finite logit, at position ``offset + its row``; ``"exclude"``: such samples score
            NaN in every row.

    Raises:
        ValueError: float64 logits on a fused backend (``"cpu"``, ``"triton"``), whose kernels
            compute in float32.
    """
    if logits.dtype == torch.float64 and backend != "torch":
        raise ValueError(f"backend {backend!r} scores in float32; float64 logits take backend 'torch'")
    if logits.shape[1] == 0:  # an empty chunk or shard: nothing to launch a kernel for
        return torch.empty(len(SCORE_ORDER), 0, dtype=score_dtype(logits.dtype), device=logits.device)
    if backend == "cpu":
        from alkernels.ops.acquisition.cpu import score_all_cpu

        scores, first_bad = score_all_cpu(logits)
    elif backend == "triton":
        from alkernels.ops.acquisition.triton_kernels import score_all_triton

        scores, first_bad = score_all_triton(logits)
    else:
        scores, first_bad = score_all_torch(logits)
    if first_bad >= 0 and nonfinite == "raise":
        raise NonFiniteLogitsError(first_bad + offset)
    return scores


@score_all_op.register_fake
def _score_all_fake(logits: Tensor, backend: str, nonfinite: str, offset: int) -> Tensor:
    return logits.new_empty(len(SCORE_ORDER), logits.shape[1], dtype=score_dtype(logits.dtype))


def _exclusion_mask(exclude: Tensor, n: int, offset: int) -> Tensor:
    """bool [n] on the CPU: which of rows ``offset .. offset + n`` ``exclude`` names (a bool mask
    over the pool, or int64 pool indices; entries outside the rows are ignored)."""
    ex = exclude.cpu()
    if ex.dtype == torch.bool:
        mask = torch.zeros(n, dtype=torch.bool)
        part = ex[offset : offset + n]
        mask[: part.numel()] = part
        return mask
    if ex.numel() and int(ex.min()) < 0:
        raise ValueError(f"exclude has a negative index {int(ex.min())}")
    inside = ex[(ex >= offset) & (ex < offset + n)] - offset
    mask = torch.zeros(n, dtype=torch.bool)
    mask[inside] = True
    return mask


@torch.library.custom_op(qualname("topk"), mutates_args=())
def topk_op(scores: Tensor, k: int, exclude: Tensor | None, offset: int, strict: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` largest of ``scores`` [N] over entries that are neither NaN nor excluded.

    Args:
        scores: float [N], any device (float64 scores are ranked and returned in float64).
        k: how many to return at most.
        exclude: None, a bool mask over the pool, or int64 pool indices; row ``i`` of ``scores``
            is pool position ``offset + i``.
        strict: raise ValueError when fewer than ``k`` entries are selectable.

    Returns:
        (int64 [k'], float32 [k'] (float64 for float64 scores), int64 [] number of selectable
        entries) on the scores' device, k' = min(k, selectable) (= k when ``strict``);
        descending, ties to the lower index (the C++ kernel on float32 CPU scores when the
        extension is built).

    Raises:
        ValueError: a negative excluded index; with ``strict``, fewer than ``k`` selectable.
    """
    n = scores.shape[0]
    mask = None if exclude is None else _exclusion_mask(exclude, n, offset).to(scores.device)
    if scores.device.type == "cpu" and scores.dtype == torch.float32 and ext() is not None:
        from alkernels.ops.acquisition.cpu import topk_cpu

        idx, val, valid = topk_cpu(scores, k, mask)
    else:
        idx, val, valid = topk_torch(scores, k, mask)
    if strict and valid < k:
        raise ValueError(f"k = {k} is larger than the pool after exclusion ({valid} selectable samples)")
    return idx, val.to(score_dtype(scores.dtype)), torch.tensor(valid, dtype=torch.int64, device=scores.device)


@topk_op.register_fake
def _topk_fake(
    scores: Tensor, k: int, exclude: Tensor | None, offset: int, strict: bool
) -> tuple[Tensor, Tensor, Tensor]:
    size = k if strict else torch.library.get_ctx().new_dynamic_size(max=k)
    return (
        scores.new_empty(size, dtype=torch.int64),
        scores.new_empty(size, dtype=score_dtype(scores.dtype)),
        scores.new_empty((), dtype=torch.int64),
    )


register_vmap_by_loop(score_all_op, None)
