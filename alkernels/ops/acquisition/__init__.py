"""Acquisition scoring: all eight strategies of ``docs/acquisition.md`` per pool sample, and a
deterministic top-k.

Every backend computes the same float32 [8, N] score matrix (rows in ``SCORE_ORDER``) and
reports the first sample with a non-finite logit (those samples score NaN); float64 logits are
scored in float64, by the reference only:

- ``reference``: plain PyTorch, the specification and test oracle;
- ``cpu``: the fused C++ kernel (one read of the logits, OpenMP over samples);
- ``triton_kernels``: the fused Triton kernel.

Both run as registered operators (``alkernels::score_all``, ``alkernels::topk``; see
:mod:`alkernels.ops.acquisition.op`), so ``torch.compile`` and ``torch.export`` trace through them.
Scores carry no gradient, so this family has no autograd formula. The public API with
validation, exclusion and streaming is ``alkernels.acquisition``.
"""

from __future__ import annotations

import torch

from alkernels.ops.acquisition.op import (
    NONFINITE_MODES,
    SCORE_ORDER,
    NonFiniteLogitsError,
    check_nonfinite,
    score_all_op,
    topk_op,
)
from alkernels.ops.dispatch import resolve_backend

#: Most classes the Triton kernel takes; backend "auto" uses torch on CUDA above it.
TRITON_MAX_C = 8192

__all__ = [
    "NONFINITE_MODES",
    "SCORE_ORDER",
    "TRITON_MAX_C",
    "NonFiniteLogitsError",
    "check_nonfinite",
    "score_all",
    "scoring_backend",
    "topk",
]


def scoring_backend(backend: str, logits: torch.Tensor) -> str:
    """The concrete backend that scores ``logits`` [T, N, C] for ``backend`` (see
    :func:`alkernels.ops.dispatch.resolve_backend`): float64 logits only on ``"torch"``
    (``"auto"`` picks it; ``"cpu"`` and ``"triton"`` raise ValueError)."""

    def why(name: str) -> str | None:
        if logits.dtype == torch.float64:
            return "the fused kernels score in float32; float64 logits are scored in float64 by 'torch'"
        if name == "triton" and logits.device.type == "cuda" and logits.shape[-1] > TRITON_MAX_C:
            return f"the Triton kernel takes C <= {TRITON_MAX_C} classes, got C = {logits.shape[-1]}"
        return None

    return resolve_backend(backend, logits, op="acquisition scoring", unsupported=why)


def score_all(logits: torch.Tensor, backend: str = "auto", nonfinite: str = "raise", offset: int = 0) -> torch.Tensor:
    """All eight scores of ``logits`` [T, N, C] (float32/float16/bfloat16, or float64 computed in
    float64 on the torch backend) on ``backend``.

    Logits that require grad are read, not differentiated (the scores carry no gradient).

    Args:
        nonfinite: ``"raise"`` (:class:`NonFiniteLogitsError` naming pool position ``offset`` +
            the first bad row) or ``"exclude"`` (such samples score NaN).

    Returns:
        float32 [8, N] (float64 for float64 logits) on the logits' device, rows in
        :data:`SCORE_ORDER`.
    """
    check_nonfinite(nonfinite)
    return score_all_op(logits.detach(), scoring_backend(backend, logits), nonfinite, offset)


def topk(
    scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None, *, offset: int = 0, strict: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest of ``scores`` [N] over entries that are neither NaN nor in ``exclude``
    (see :func:`alkernels.ops.acquisition.op.topk_op`).

    Returns:
        (int64 [k'], float32 [k'] (float64 for float64 scores), int64 [] number of selectable
        entries), k' = min(k, selectable); descending, ties to the lower index, on every device.
    """
    return topk_op(scores.detach(), k, exclude, offset, strict)
