"""The ``torch.autograd.Function`` shared by the fused backends (C++ and Triton) of the edge op.

Forward saves only its inputs and the weights; backward recomputes the edge activations inside
the kernels instead of storing E x H tensors, then assembles the gradients of the first edge
Linear from the per-node split the kernels return.
"""
from __future__ import annotations

import torch

from alkernels.ops.message_passing.graph import EdgeGraph, EdgeWeights


def _forward(backend: str, precision: str, eps: float, graph: EdgeGraph, h, x, shift, w: EdgeWeights):
    if backend == "cpu":
        from alkernels.ops.message_passing.cpu import cpu_forward

        return cpu_forward(h, x, shift, graph, w, eps)
    from alkernels.ops.message_passing.triton_kernels import triton_edge_forward

    return triton_edge_forward(h, x, shift, graph, w, eps, precision)


def _backward(backend: str, precision: str, eps: float, detach_norm: bool, graph: EdgeGraph,
              h, x, shift, w: EdgeWeights, gm, gdx) -> tuple[torch.Tensor, ...]:
    if backend == "cpu":
        from alkernels.ops.message_passing.cpu import cpu_backward

        return cpu_backward(h, x, shift, graph, w, eps, detach_norm, gm, gdx)
    from alkernels.ops.message_passing.triton_kernels import triton_edge_backward

    return triton_edge_backward(h, x, shift, graph, w, eps, detach_norm, gm, gdx, precision)


class FusedEdgeFunction(torch.autograd.Function):
    """``apply(backend, precision, eps, detach_norm, graph, h, x, shift, *weights) -> (m, dx)``
    with ``backend`` "cpu" or "triton"; gradients flow to h, x and the eleven weights.

    Under CUDA autocast the op takes float32 inputs and runs with autocast off: its own
    ``precision`` decides the matmul inputs of the kernels."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, backend, precision, eps, detach_norm, graph, h, x, shift, *weights):
        m, dx = _forward(backend, precision, eps, graph, h, x, shift, EdgeWeights(*weights))
        ctx.save_for_backward(h, x, shift, *weights)
        ctx.config = (backend, precision, eps, detach_norm, graph)
        return m, dx

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, gm, gdx):
        backend, precision, eps, detach_norm, graph = ctx.config
        h, x, shift, *weights = ctx.saved_tensors
        w = EdgeWeights(*weights)
        grads = _backward(backend, precision, eps, detach_norm, graph, h, x, shift, w, gm, gdx)
        g_b, g_h_send, g_x, g_w1a, g_wr, g_w2, g_b2, g_w3, g_b3, g_wx1, g_bx1, g_wx2, g_bx2, g_wx3 = grads
        f = h.shape[1]
        g_h = torch.addmm(g_h_send, g_b, w.w1[:, f : 2 * f])
        g_w1 = torch.cat([g_w1a, g_b.t() @ h, g_wr[:, None]], dim=1)
        g_b1 = g_b.sum(0)
        return (
            None, None, None, None, None, g_h, g_x, None,
            g_w1, g_b1, g_w2, g_b2, g_w3, g_b3, g_wx1, g_bx1, g_wx2, g_bx2, g_wx3.reshape(1, -1),
        )  # fmt: skip
