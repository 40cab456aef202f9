"""The EGNN edge op in plain PyTorch: gather, concat, MLPs and ``index_add_``, with autograd's
backward. The readable specification and the test oracle; it stores O(E * H) activations."""

from __future__ import annotations

import torch

from alkernels.ops.activations import activation_fn
from alkernels.ops.message_passing.graph import EdgeGraph, EdgeWeights


def egnn_edge_torch(
    h: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    graph: EdgeGraph,
    weights: EdgeWeights,
    *,
    eps: float = 0.1,
    detach_norm: bool = False,
    activation: str = "relu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused op in plain PyTorch (the specification and the oracle).

    Args:
        h: [n, F] node features. x: [n, 3] positions. shift: [E, 3] shift vectors
        ``edge_shift @ cell``. All floating tensors share one dtype.
        graph: the edge index. weights: the layer's :class:`EdgeWeights`.
        eps: added to r before normalising d. detach_norm: detach r in the normalisation.
        activation: ``"relu"`` (paper) or ``"silu"``.

    Returns:
        ``m [n, H]`` in the dtype of h and ``dx [n, 3]`` in the dtype of x. Under
        ``torch.autocast`` the MLPs run in the autocast dtype and their outputs are cast back
        before the receiver sums (``index_add_`` takes one dtype).
    """
    act = activation_fn(activation)
    src, dst = graph.src, graph.dst
    w = weights
    d = x[src] + shift - x[dst]
    r2 = (d * d).sum(dim=1, keepdim=True)
    r = torch.linalg.vector_norm(d, dim=1, keepdim=True)
    u = d / ((r.detach() if detach_norm else r) + eps)
    z = torch.cat([h[src], h[dst], r2], dim=1)
    z = act(torch.nn.functional.linear(z, w.w1, w.b1))
    z = act(torch.nn.functional.linear(z, w.w2, w.b2))
    m_e = act(torch.nn.functional.linear(z, w.w3, w.b3))
    p = act(torch.nn.functional.linear(m_e, w.wx1, w.bx1))
    p = act(torch.nn.functional.linear(p, w.wx2, w.bx2))
    gate = torch.tanh(torch.nn.functional.linear(p, w.wx3))
    n = h.shape[0]
    m = h.new_zeros(n, m_e.shape[1]).index_add(0, dst, m_e.to(h.dtype))
    dx = x.new_zeros(n, 3).index_add(0, dst, (u * gate).to(x.dtype))
    return m, dx


#: The earlier name of :func:`egnn_edge_torch` (before the ``<op>_<backend>`` naming), kept as an
#: alias for one release.
egnn_edge_reference = egnn_edge_torch
