"""The kernels of alkernels, one package per op family, with one backend vocabulary.

Every family holds its torch reference (the specification and test oracle), the launcher of its
C++ kernels (``csrc/<family>``), its Triton kernels and, where it is differentiable, its
``torch.autograd.Function``; :mod:`alkernels.ops.dispatch` resolves ``backend=`` for all of them.

Families:
    acquisition      all eight uncertainty scores in one pass over [T, N, C] logits; top-k
    message_passing  the fused EGNN edge op (forward and backward)
    topk_merge       exact merge of per-rank top-k candidates (sharded selection)
"""
from __future__ import annotations

from alkernels.ops.acquisition import SCORE_ORDER, score_all, topk
from alkernels.ops.activations import ACTIVATIONS
from alkernels.ops.dispatch import BACKENDS, ISAS, has_ext, normalize_backend, resolve_backend
from alkernels.ops.message_passing import (
    PRECISIONS,
    EdgeGraph,
    EdgeWeights,
    build_edge_graph,
    edge_op_backend,
    egnn_edge_op,
    egnn_edge_reference,
)

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "ISAS",
    "PRECISIONS",
    "SCORE_ORDER",
    "EdgeGraph",
    "EdgeWeights",
    "build_edge_graph",
    "edge_op_backend",
    "egnn_edge_op",
    "egnn_edge_reference",
    "has_ext",
    "normalize_backend",
    "resolve_backend",
    "score_all",
    "topk",
]
