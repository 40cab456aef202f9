"""Launchers of the fused C++ acquisition kernels (``csrc/acquisition``, via ``alkernels._C``).

Tensors cross as zero-copy NumPy views; the kernels release the GIL and run OpenMP over samples.
"""

from __future__ import annotations

import torch

from alkernels.ops.acquisition.op import SCORE_ORDER
from alkernels.ops.dispatch import ext

_KERNEL_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _module():
    mod = ext()
    if mod is None:
        raise RuntimeError("backend 'cpu' needs the compiled extension alkernels._C, which is not built")
    return mod


def score_all_cpu(logits: torch.Tensor, isa: str = "best") -> tuple[torch.Tensor, int]:
    """Fused C++ scores of ``logits`` [T, N, C] (float32/float16/bfloat16, CPU).

    Zero-copy for any strides: chunks sliced along N, and baal's [N, C, T] layout viewed as
    [T, N, C] (``x.permute(2, 0, 1)``), whose strided classes the kernel reads in place (register
    transposes of each sample's passes for float32, a gather per row otherwise) instead of a
    transposed copy of the pool. ``isa`` picks
    the compiled build (``"best"``, ``"avx512"``, ``"avx2"`` or ``"baseline"``).

    Returns:
        (float32 [8, N], index of the first non-finite sample or -1), as the reference.
    """
    if logits.shape[1] == 0:  # an empty pool or chunk: nothing to score
        return torch.empty((len(SCORE_ORDER), 0), dtype=torch.float32), -1
    name = _KERNEL_DTYPES[logits.dtype]
    array = logits.view(torch.int16).numpy() if logits.dtype == torch.bfloat16 else logits.numpy()
    out, first_bad = _module().acq_score_all(array, name, isa)
    return torch.from_numpy(out), int(first_bad)


def topk_cpu(scores: torch.Tensor, k: int, exclude: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """C++ top-k of float32 ``scores`` [N] (CPU) skipping NaN and ``exclude``d (bool [N]) entries.

    Returns:
        (int64 [k'], float32 [k'], number selectable) with k' = min(k, selectable).
    """
    mask = None if exclude is None else exclude.to(torch.uint8).numpy()
    idx, val, valid = _module().acq_topk(scores.contiguous().numpy(), int(k), mask)
    return torch.from_numpy(idx), torch.from_numpy(val), int(valid)
