"""The implementations alkernels is compared against (``docs/performance.md``, "Peers").

- Acquisition: the paper framework's score definitions as eager PyTorch, one strategy at a time
  (:func:`eager_select`), and baal's NumPy heuristics (:data:`BAAL_HEURISTICS`).
- EGNN: the same encoder with every layer's edge work written as a torch_geometric
  ``MessagePassing`` (in :mod:`benchmarks.pyg_peer`, which needs torch_geometric).
- Graph building: a builder on ``ase.neighborlist`` producing the arrays of ``build_graphs``
  (:func:`ase_build`).

baal and ase are imported on first use, so each peer needs only its own package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ase import Atoms

#: Our strategy name -> the baal 2.x heuristic class computing the same ranking.
BAAL_HEURISTICS: dict[str, str] = {
    "bald": "BALD",
    "entropy": "Entropy",
    "margin": "Margin",
    "least_confidence": "Certainty",
}


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy over the last axis."""
    return torch.special.entr(p).sum(-1)


def _top2(p: torch.Tensor) -> torch.Tensor:
    """The two largest values over the last axis, descending."""
    return torch.topk(p, 2, dim=-1).values


def eager_scores(logits: torch.Tensor, strategy: str) -> torch.Tensor:
    """Scores [N] of one strategy from logits [T, N, C], one PyTorch op per step (softmax,
    mean over T, entropy or top-2), as the paper's framework computes them."""
    p = torch.softmax(logits, dim=-1)
    if strategy in ("entropy", "predictive_entropy"):
        return _entropy(p.mean(0))
    if strategy == "least_confidence":
        return 1 - p.mean(0).max(-1).values
    if strategy == "margin":
        top = _top2(p.mean(0))
        return -(top[..., 0] - top[..., 1])
    if strategy == "expected_entropy":
        return _entropy(p).mean(0)
    if strategy == "bald":
        return _entropy(p.mean(0)) - _entropy(p).mean(0)
    if strategy == "expected_least_confidence":
        return 1 - p.max(-1).values.mean(0)
    if strategy == "expected_margin":
        top = _top2(p)
        return -(top[..., 0] - top[..., 1]).mean(0)
    raise ValueError(f"unknown strategy {strategy!r}")


def eager_select(strategy: str) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A function ``(logits [T, N, C], k) -> indices [k]`` of the eager peer for ``strategy``
    (a closure per strategy, so that ``torch.compile`` specialises each one)."""

    def select(logits: torch.Tensor, k: int) -> torch.Tensor:
        return torch.topk(eager_scores(logits, strategy), k).indices

    return select


def baal_heuristic(strategy: str) -> Callable[[np.ndarray], np.ndarray]:
    """baal's ``compute_score`` for ``strategy`` (scores only, no ranking) on NumPy logits laid
    out [N, C, T] as baal expects; baal applies the softmax itself."""
    from baal.active import heuristics

    return getattr(heuristics, BAAL_HEURISTICS[strategy])().compute_score


def ase_build(structures: Sequence[Atoms], cutoff: float) -> tuple[np.ndarray, ...]:
    """The periodic-mode arrays of ``build_graphs`` (sender, receiver, image shift, edge vector,
    edge pointer; edges sorted by receiver) from ``ase.neighborlist.neighbor_list``."""
    from ase.neighborlist import neighbor_list

    src, dst, shifts, vecs, counts = [], [], [], [], []
    offset = 0
    for atoms in structures:
        i, j, shift, vec = neighbor_list("ijSD", atoms, cutoff)
        order = np.argsort(i, kind="stable")
        src.append(j[order] + offset)
        dst.append(i[order] + offset)
        shifts.append(shift[order].astype(np.int16))
        vecs.append(vec[order].astype(np.float32))
        counts.append(len(i))
        offset += len(atoms)
    edge_ptr = np.concatenate([[0], np.cumsum(counts)])
    return np.concatenate(src), np.concatenate(dst), np.concatenate(shifts), np.concatenate(vecs), edge_ptr
