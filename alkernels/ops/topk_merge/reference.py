"""Merging top-k candidate lists in plain PyTorch: the specification and test oracle.

The candidates are (global index, score) pairs gathered from every rank's local top-k; the
merged result is the ``k`` best by score descending, ties broken by the lower global index,
exactly the order of ``alkernels.acquisition.topk`` on the whole pool.
"""

from __future__ import annotations

import torch


def merge_topk_torch(indices: torch.Tensor, values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of the candidates (``indices`` int64 [M], distinct; ``values`` float32 [M],
    no NaN): sort by index, then a stable sort by score descending.

    Returns:
        (int64 [min(k, M)], float32 [min(k, M)]), scores descending, ties to the lower index.
    """
    by_index = torch.argsort(indices)
    indices, values = indices[by_index], values[by_index]
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return indices[order], values[order]
