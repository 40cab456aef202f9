"""The kernels of alkernels, one package per op family, with one backend vocabulary.

Every family holds its torch reference (the specification and test oracle), the launcher of its
C++ kernels (``csrc/<family>``), its Triton kernels and, where it is differentiable, its
``torch.autograd.Function``; :mod:`alkernels.ops.dispatch` resolves ``backend=`` for all of them.

Families:
    acquisition      all eight uncertainty scores in one pass over [T, N, C] logits; top-k
    message_passing  the fused EGNN edge op (forward and backward)
    topk_merge       exact merge of per-rank top-k candidates (sharded selection)
    gp               Gaussian-process posteriors (torch only, no registered op)

Every fused op is a registered PyTorch operator in the ``alkernels`` namespace
(:mod:`alkernels.ops.registry`); importing this package registers all of them, which is what
``torch.export.load`` of a program that uses them needs.
"""

from __future__ import annotations

from alkernels.ops import checks, topk_merge
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
    egnn_edge_torch,
)
from alkernels.ops.registry import OPERATORS

__all__ = [
    "ACTIVATIONS",
    "OPERATORS",
    "BACKENDS",
    "ISAS",
    "PRECISIONS",
    "SCORE_ORDER",
    "EdgeGraph",
    "EdgeWeights",
    "build_edge_graph",
    "checks",
    "edge_op_backend",
    "egnn_edge_op",
    "egnn_edge_reference",
    "egnn_edge_torch",
    "has_ext",
    "normalize_backend",
    "resolve_backend",
    "score_all",
    "topk",
    "topk_merge",
]
