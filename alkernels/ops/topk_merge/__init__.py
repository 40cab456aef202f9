"""Exact merge of top-k candidate lists: the reduction step of sharded selection.

Each rank keeps its shard's best ``k`` (global index, score) pairs; the merge picks the best
``k`` of all of them in the selection order of ``alkernels.acquisition`` (score descending, ties
to the lower global index), so a sharded query equals the single-process one bit for bit.

- ``reference``: two stable sorts in plain PyTorch, the specification and test oracle;
- ``packed``: one order-preserving 64-bit key per candidate and one ``torch.topk`` (CPU and GPU),
  the implementation; the keys are also what crosses the network.

The op is a few torch calls on at most ``ranks x k`` candidates, on whatever device the gathered
candidates live on, so it has no C++ or Triton kernel and no ``backend=`` argument. It is the
registered operator ``alkernels::merge_topk`` (fake implementation included), so compiled and
exported code traces through it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alkernels.ops.registry import qualname
from alkernels.ops.topk_merge.packed import MAX_INDEX, merge_topk_keys, pack_keys, unpack_keys
from alkernels.ops.topk_merge.reference import merge_topk_torch

__all__ = ["MAX_INDEX", "merge_topk", "merge_topk_keys", "merge_topk_torch", "pack_keys", "unpack_keys"]


@torch.library.custom_op(qualname("merge_topk"), mutates_args=())
def merge_topk(indices: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best candidates, score descending, ties to the lower index.

    Args:
        indices: int64 [M], distinct global pool indices (any order).
        values: float32 [M], their scores; NaN is not allowed (excluded samples never become
            candidates).
        k: how many to keep; fewer come back when M < k.

    Returns:
        (int64 [min(k, M)], float32 [min(k, M)]) on the inputs' device. Uses the packed keys
        when every index is below 2**31, else the reference.
    """
    if indices.shape != values.shape or indices.ndim != 1:
        raise ValueError(
            f"indices and values must be 1-D of one length, got {tuple(indices.shape)} and {tuple(values.shape)}"
        )
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    if torch.isnan(values).any():
        raise ValueError("top-k merge candidates contain NaN scores")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) > MAX_INDEX):
        if int(indices.min()) < 0:
            raise ValueError(f"top-k merge candidates have a negative index {int(indices.min())}")
        idx, val = merge_topk_torch(indices, values.float(), k)
        return idx.clone(), val.clone()
    return unpack_keys(merge_topk_keys(pack_keys(indices, values), k))


@merge_topk.register_fake
def _merge_topk_fake(indices: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    size = torch.sym_min(k, indices.shape[0])
    return indices.new_empty(size), values.new_empty(size, dtype=torch.float32)
