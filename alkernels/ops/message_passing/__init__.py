"""Fused EGNN edge work: one op per layer for gather, distance, edge MLP, coordinate MLP, reduce.

For every edge j -> i (``src`` = j sends, ``dst`` = i receives; edges sorted by ``dst``) the op
computes, with the edge MLP ``phi_e`` and coordinate MLP ``phi_x`` of ``docs/model.md``::

    d_ij = x_j + s_ij - x_i            s_ij: the fixed periodic shift vector of the edge
    r_ij = |d_ij|,  u_ij = d_ij / (r_ij + eps)        (r detached in u when detach_norm)
    m_ij = phi_e([h_j, h_i, r_ij^2])                  3 x (Linear, ReLU)
    m_i  = sum_j m_ij                                 [n, H]
    dx_i = sum_j u_ij * tanh(phi_x(m_ij))             [n, 3]

and returns ``(m, dx)``. Entry point: :func:`egnn_edge_op`; the backends (``alkernels.ops.dispatch``)
live in this package:

* ``reference`` (backend ``"torch"``): plain PyTorch with autograd; stores O(E * H) activations.
* ``cpu`` (backend ``"cpu"``): C++/OpenMP kernels of ``alkernels._C`` (float32 and float64;
  ``precision="bf16"``: bfloat16 tile-GEMM inputs, AVX512_BF16 where the CPU has it).
* ``triton_kernels`` (backend ``"triton"``): Triton kernels (CUDA, or the CPU interpreter).
* ``op``: the registered operators ``alkernels::egnn_edge`` and ``alkernels::egnn_edge_backward``
  of both fused backends, with their fake implementations and autograd (double backward included).

The fused backends split the first edge Linear ``W1 [h_j, h_i, r^2] + b1 = A_j + B_i + w r^2``
with per-NODE products ``A = h W1a^T`` and ``B = h W1b^T + b1``; reduce per receiver segment (CSR
over ``dst``) and, in backward, per sender segment (CSR over ``src``) without atomics, so results
are deterministic; and save only node-level tensors for backward, recomputing the edge
activations there (the Triton backward recomputes them into per-edge buffers that live for the
backward call only, and takes the weight gradients as GEMMs over edges). The C++ tile GEMMs also
skip the zeros of their ReLU inputs (and of ReLU-masked gradients), so their speed depends on the
activation density: about half at initialisation, lower once trained. Gradients of every order
flow to ``h``, ``x`` and all eleven weights (see :mod:`alkernels.ops.message_passing.op`); the
fused kernels give no gradient to the shift vectors (the cell), so a call that needs one runs on
the torch backend.
"""

from __future__ import annotations

import torch

from alkernels.ops.activations import check_activation
from alkernels.ops.dispatch import resolve_backend
from alkernels.ops.message_passing.graph import (
    PRECISIONS,
    EdgeGrads,
    EdgeGraph,
    EdgeWeights,
    build_edge_graph,
    check_edge_graph,
    check_inputs,
    check_precision,
    split_first_layer,
)
from alkernels.ops.message_passing.op import egnn_edge_fused, egnn_edge_fused_backward
from alkernels.ops.message_passing.reference import egnn_edge_reference, egnn_edge_torch

__all__ = [
    "PRECISIONS",
    "EdgeGrads",
    "EdgeGraph",
    "EdgeWeights",
    "build_edge_graph",
    "check_edge_graph",
    "check_precision",
    "edge_op_backend",
    "egnn_edge_fused",
    "egnn_edge_fused_backward",
    "egnn_edge_op",
    "egnn_edge_reference",
    "egnn_edge_torch",
    "split_first_layer",
    "why_unsupported",
]


def _is_pow2_16(v: int) -> bool:
    return v >= 16 and v & (v - 1) == 0


def why_unsupported(
    backend: str,
    *,
    activation: str = "relu",
    dtype: torch.dtype = torch.float32,
    widths: tuple[int, int, int] = (32, 128, 64),
    shift_grad: bool = False,
) -> str | None:
    """Why the fused ``backend`` (``"cpu"`` or ``"triton"``) cannot run an edge-op call, or None.

    Args:
        activation: the MLPs' activation (the kernels implement ReLU only).
        dtype: the floating dtype of the inputs.
        widths: node width F, edge width H and coordinate width C.
        shift_grad: whether a gradient w.r.t. the shift vectors (the cell) is needed.
    """
    if activation != "relu":
        return f"the fused kernels implement ReLU MLPs only, not {activation}"
    if shift_grad:
        return "the fused kernels give no gradient for the shift vectors (the cell)"
    if backend == "cpu" and any(d % 16 for d in widths):
        return f"backend 'cpu' needs node, edge and coordinate widths that are multiples of 16, got {widths}"
    if backend == "triton":
        if dtype not in (torch.float32, torch.float64):
            return f"backend 'triton' takes float32 or float64 inputs, got {dtype}"
        if not all(_is_pow2_16(d) for d in widths):
            return f"backend 'triton' needs widths that are powers of two >= 16, got {widths}"
    return None


def edge_op_backend(
    backend: str,
    device: torch.device | torch.Tensor,
    activation: str = "relu",
    *,
    dtype: torch.dtype = torch.float32,
    widths: tuple[int, int, int] = (32, 128, 64),
    shift_grad: bool = False,
) -> str:
    """The concrete backend :func:`egnn_edge_op` runs for ``backend`` on ``device``.

    ``"auto"`` falls back to ``"torch"`` when the fused kernels cannot run the call (see
    :func:`why_unsupported`), and an explicit fused backend raises with the reason (see
    :func:`alkernels.ops.dispatch.resolve_backend`).
    """
    check_activation(activation)
    return resolve_backend(
        backend,
        device,
        op="egnn_edge_op",
        unsupported=lambda name: why_unsupported(
            name, activation=activation, dtype=dtype, widths=widths, shift_grad=shift_grad
        ),
    )


def egnn_edge_op(
    h: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    graph: EdgeGraph,
    weights: EdgeWeights,
    *,
    eps: float = 0.1,
    detach_norm: bool = False,
    activation: str = "relu",
    backend: str = "auto",
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EGNN layer's edge work: ``(m [n, H], dx [n, 3])`` (see the package docstring).

    The fused backends run the registered operator ``alkernels::egnn_edge`` (C++ or Triton
    kernels; differentiable twice, see :mod:`alkernels.ops.message_passing.op`); ``"torch"`` runs
    :func:`egnn_edge_torch`. Under ``torch.autocast`` the node features, positions and shifts
    are cast to the weights' dtype first: the op decides its own precision (``precision`` on
    Triton, the input dtype elsewhere).

    Args:
        h: [n, F] node features, float32 or float64.
        x: [n, 3] positions, same dtype. shift: [E, 3] per-edge shift vectors ``edge_shift @ cell``
            (zeros in matsciml mode), same dtype.
        graph: :class:`EdgeGraph` from :func:`build_edge_graph` (edges sorted by receiver).
        weights: :class:`EdgeWeights`.
        eps: added to r before normalising the direction (paper: 0.1).
        detach_norm: detach r in the normalisation (original EGNN).
        activation: ``"relu"`` or ``"silu"`` (``"silu"`` runs on the torch backend only).
        backend: ``"auto"``, ``"torch"``, ``"cpu"`` or ``"triton"``.
        precision: matmul inputs of the fused kernels: ``"fp32"`` (IEEE), ``"tf32"`` (Triton
            only) or ``"bf16"`` (float32 inputs); all with fp32 accumulation. On ``"cpu"``,
            ``"bf16"`` rounds the inputs of the per-edge GEMMs (edge and coordinate MLPs, forward
            and backward) to bfloat16: VDPBF16PS where the CPU has AVX512_BF16, an emulation with
            the same roundings elsewhere (see ``docs/kernels.md``); ``"tf32"`` raises there, or
            runs as ``"fp32"`` when ``"auto"`` chose the CPU kernels (presets set it for GPUs).
            The second order computes in the input dtype. Ignored by ``"torch"``, which
            computes in the input dtype.

    Raises:
        ValueError: bad shapes, dtypes, devices, backend or precision; an explicit fused backend
            that cannot run the call (the message says why); index values out of range or
            inconsistent layouts in a graph not made by :func:`build_edge_graph` (on every backend).
    """
    check_precision(precision)
    if torch.is_autocast_enabled(h.device.type):
        dtype = weights.w1.dtype
        h, x, shift = h.to(dtype), x.to(dtype), shift.to(dtype)
    check_inputs(h, x, shift, graph, weights)
    widths = (h.shape[1], weights.w2.shape[0], weights.wx1.shape[0])
    chosen = edge_op_backend(
        backend, h, activation, dtype=h.dtype, widths=widths, shift_grad=shift.requires_grad and torch.is_grad_enabled()
    )
    if not graph.checked and chosen != "cpu" and not (h.is_cuda and torch.cuda.is_current_stream_capturing()):
        check_edge_graph(graph)  # the C++ binding checks every call itself
    if chosen == "cpu" and precision == "tf32":
        if backend == "cpu":
            raise ValueError("precision='tf32' is a Triton (GPU) mode; backend 'cpu' runs 'fp32' or 'bf16'")
        precision = "fp32"
    if chosen == "torch":
        return egnn_edge_torch(h, x, shift, graph, weights, eps=eps, detach_norm=detach_norm, activation=activation)
    return egnn_edge_fused(
        h,
        x,
        shift,
        graph.src,
        graph.dst,
        graph.rowptr,
        graph.src_perm,
        graph.src_ptr,
        *weights,
        float(eps),
        bool(detach_norm),
        chosen,
        precision,
    )
