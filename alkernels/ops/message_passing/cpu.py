"""Launchers of the fused C++ EGNN edge kernels (``csrc/message_passing``, via ``alkernels._C``).

Arrays cross as zero-copy NumPy views; float32 and float64 are supported.

``precision`` of the forward and backward: ``"fp32"`` computes in the input dtype; ``"bf16"``
(float32 inputs) rounds the inputs of the per-edge tile GEMMs (the edge and coordinate MLPs'
Linears, their recomputation and the backward's input- and weight-gradient products) to bfloat16
and sums in float32: VDPBF16PS where the CPU has AVX512_BF16 (``isa="avx512bf16"``, chosen by
``"best"``), an emulation with the same roundings elsewhere or when ``isa`` names another build
(results agree to float32 rounding of the sums). ``"tf32"`` is a Triton mode (ValueError). The
double backward always computes in the input dtype.
"""

from __future__ import annotations

import numpy as np
import torch

from alkernels.ops.dispatch import ext
from alkernels.ops.message_passing.graph import (
    EdgeGrads,
    EdgeGraph,
    EdgeWeights,
    KernelGrads,
    assemble_grads,
    split_first_layer,
)


def _module():
    mod = ext()
    if mod is None:
        raise RuntimeError("backend 'cpu' needs the compiled extension alkernels._C, which is not built")
    return mod


def _operands(
    h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The arrays both C++ kernels take, as zero-copy NumPy views: ``A, B, w, x, shift, src, dst,
    rowptr`` (the first edge Linear split per node) and the nine weights ``W2, b2, W3, b3, Wx1,
    bx1, Wx2, bx2, wx3`` in torch.nn.Linear's [out, in] layout."""
    a, b, wr = split_first_layer(h, w.w1, w.b1)
    arrays = [a, b, wr, x, shift, graph.src, graph.dst, graph.rowptr]
    weights = [w.w2, w.b2, w.w3, w.b3, w.wx1, w.bx1, w.wx2, w.bx2, w.wx3.reshape(-1)]
    views = [t.detach().contiguous().numpy() for t in (*arrays, *weights)]
    return views[: len(arrays)], views[len(arrays) :]


def egnn_edge_cpu(
    h: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    graph: EdgeGraph,
    w: EdgeWeights,
    eps: float,
    isa: str = "best",
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The C++ forward: (m [n, H], dx [n, 3]) in the dtype of h. ``isa``: the compiled build,
    one of :data:`alkernels.ops.dispatch.ISAS` (tests run every one the CPU supports);
    ``precision``: ``"fp32"`` or ``"bf16"`` (see the module docstring)."""
    arrays, weights = _operands(h, x, shift, graph, w)
    m, dx = _module().egnn_edge_forward(*arrays, weights, eps, isa, precision)
    return torch.from_numpy(m), torch.from_numpy(dx)


def _backward_operands(
    h: torch.Tensor, graph: EdgeGraph, w: EdgeWeights, gm: torch.Tensor, gdx: torch.Tensor
) -> list[np.ndarray]:
    """The arrays the C++ backward and double backward take beyond the forward's: the upstream
    gradients gm [n, H] and gdx [n, 3], h [n, F], the sender block of w1 [H, F] and the sender CSR."""
    f = h.shape[1]
    return [
        gm.detach().contiguous().numpy(),
        gdx.detach().contiguous().numpy(),
        h.detach().contiguous().numpy(),
        w.w1[:, :f].detach().contiguous().numpy(),
        graph.src_perm.numpy(),
        graph.src_ptr.numpy(),
    ]


def egnn_edge_backward_cpu(
    h: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    graph: EdgeGraph,
    w: EdgeWeights,
    eps: float,
    detach_norm: bool,
    gm: torch.Tensor,
    gdx: torch.Tensor,
    isa: str = "best",
    precision: str = "fp32",
) -> EdgeGrads:
    """The C++ backward from the upstream gradients gm [n, H] and gdx [n, 3]: the gradients of h,
    x and the eleven weights, in the input dtype (the kernel's :class:`KernelGrads`, assembled).
    ``isa`` and ``precision`` as for :func:`egnn_edge_cpu`."""
    arrays, weights = _operands(h, x, shift, graph, w)
    extra = _backward_operands(h, graph, w, gm, gdx)
    out = _module().egnn_edge_backward(*arrays, weights, eps, *extra, detach_norm, isa, precision)
    return assemble_grads(KernelGrads(*(torch.from_numpy(o) for o in out)), h.detach(), w)


def egnn_edge_double_backward_cpu(
    h: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    graph: EdgeGraph,
    w: EdgeWeights,
    eps: float,
    detach_norm: bool,
    gm: torch.Tensor,
    gdx: torch.Tensor,
    v_h: torch.Tensor,
    v_x: torch.Tensor,
    isa: str = "best",
) -> tuple[torch.Tensor, torch.Tensor, EdgeGrads]:
    """The C++ double backward: the VJP of :func:`egnn_edge_backward_cpu` for the cotangents ``v_h`` [n, F]
    and ``v_x`` [n, 3] on its gradients of h and x (zero cotangents on the weight gradients, the
    case of force training).

    Returns:
        ``(grad_gm [n, H], grad_gdx [n, 3], grads)``: the gradients w.r.t. the upstream gradients
        (the forward's tangent ``J v``) and :class:`EdgeGrads` w.r.t. h, x and the weights, in
        the input dtype.
    """
    arrays, weights = _operands(h, x, shift, graph, w)
    f = h.shape[1]
    w1a, w1b = w.w1[:, :f].detach(), w.w1[:, f : 2 * f].detach()
    v_h, v_x = v_h.detach().contiguous(), v_x.detach().contiguous()
    d_a, d_b = (v_h @ w1a.t()).contiguous(), (v_h @ w1b.t()).contiguous()
    extra = _backward_operands(h, graph, w, gm, gdx)
    tangents = [d_a.numpy(), d_b.numpy(), v_h.numpy(), v_x.numpy()]
    out = [
        torch.from_numpy(o)
        for o in _module().egnn_edge_double_backward(*arrays, weights, eps, *extra, detach_norm, *tangents, isa)
    ]
    dm, ddx, bp, bt, gh_send, gx, gw1a, gwr, *rest = out
    hd = h.detach()
    g_h = torch.addmm(gh_send, bp, w1b)
    g_w1 = torch.cat([gw1a, bp.t() @ hd + bt.t() @ v_h, gwr[:, None]], dim=1)
    grads = EdgeGrads(g_h, gx, g_w1, bp.sum(0), *rest[:-1], rest[-1].reshape(1, -1))
    return dm, ddx, grads
