"""Acquisition scoring: all eight strategies of ``docs/acquisition.md`` per pool sample, and a
deterministic top-k.

Every backend computes the same float32 [8, N] score matrix (rows in ``SCORE_ORDER``) and
reports the first sample with a non-finite logit (those samples score NaN):

- ``reference``: plain PyTorch, the specification and test oracle;
- ``cpu``: the fused C++ kernel (one read of the logits, OpenMP over samples);
- ``triton_kernels``: the fused Triton kernel.

Scores carry no gradient, so this family has no ``autograd.Function``. The public API with
validation, exclusion and streaming is ``alkernels.acquisition``.
"""
from __future__ import annotations

import torch

from alkernels.ops.acquisition.reference import score_all_torch, topk_torch
from alkernels.ops.dispatch import ext, resolve_backend

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

#: Most classes the Triton kernel takes; backend "auto" uses torch on CUDA above it.
TRITON_MAX_C = 8192

__all__ = ["SCORE_ORDER", "TRITON_MAX_C", "score_all", "topk"]


def score_all(logits: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, int]:
    """All eight scores of ``logits`` [T, N, C] (float32/float16/bfloat16) on ``backend``.

    Returns:
        (float32 [8, N] on the logits' device, index of the first sample with a non-finite
        logit or -1).
    """
    too_wide = logits.shape[-1] > TRITON_MAX_C and logits.device.type == "cuda"
    why = f"the Triton kernel takes C <= {TRITON_MAX_C} classes, got C = {logits.shape[-1]}" if too_wide else None
    chosen = resolve_backend(backend, logits, op="acquisition scoring", unsupported=why)
    if logits.shape[1] == 0:  # an empty chunk or shard: nothing to launch a kernel for
        return torch.empty(len(SCORE_ORDER), 0, dtype=torch.float32, device=logits.device), -1
    if chosen == "cpu":
        from alkernels.ops.acquisition.cpu import score_all_cpu

        return score_all_cpu(logits)
    if chosen == "triton":
        from alkernels.ops.acquisition.triton_kernels import score_all_triton

        return score_all_triton(logits)
    return score_all_torch(logits)


def topk(scores: torch.Tensor, k: int, exclude: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The ``k`` largest of ``scores`` [N] over entries that are neither NaN nor ``exclude``d.

    Args:
        scores: float [N] on any device.
        k: how many to return at most.
        exclude: bool [N] on the scores' device, or None.

    Returns:
        (int64 [k'], float32 [k'], number of selectable entries), k' = min(k, selectable);
        descending, ties to the lower index, on every device (the C++ kernel on float32 CPU
        scores when the extension is built).
    """
    if scores.device.type == "cpu" and scores.dtype == torch.float32 and ext() is not None:
        from alkernels.ops.acquisition.cpu import topk_cpu

        return topk_cpu(scores, k, exclude)
    return topk_torch(scores, k, exclude)
