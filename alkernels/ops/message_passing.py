"""Fused EGNN edge work: one op per layer for gather, distance, edge MLP, coordinate MLP, reduce.

For every edge j -> i (``src`` = j sends, ``dst`` = i receives; edges sorted by ``dst``) the op
computes, with the edge MLP ``phi_e`` and coordinate MLP ``phi_x`` of ``shared/spec/egnn.md``::

    d_ij = x_j + s_ij - x_i            s_ij: the fixed periodic shift vector of the edge
    r_ij = |d_ij|,  u_ij = d_ij / (r_ij + eps)        (r detached in u when detach_norm)
    m_ij = phi_e([h_j, h_i, r_ij^2])                  3 x (Linear, ReLU)
    m_i  = sum_j m_ij                                 [n, H]
    dx_i = sum_j u_ij * tanh(phi_x(m_ij))             [n, 3]

and returns ``(m, dx)``. Entry point: :func:`egnn_edge_op`, with ``backend`` one of

* ``"reference"``: plain PyTorch (gather, concat, MLP, ``index_add_``), autograd backward. The
  readable specification and the test oracle; stores O(E * H) activations for backward.
* ``"cpu"``: C++/OpenMP kernels of ``alkernels._C`` (float32 and float64).
* ``"triton"``: Triton kernels (CUDA, or the CPU interpreter under ``TRITON_INTERPRET=1``).
* ``"auto"``: triton on CUDA tensors, cpu on CPU tensors when the extension is built, else
  reference.

The fused backends share one :class:`torch.autograd.Function`. They split the first edge Linear
``W1 [h_j, h_i, r^2] + b1 = A_j + B_i + w r^2`` with per-NODE products ``A = h W1a^T`` and
``B = h W1b^T + b1``; reduce per receiver segment (CSR over ``dst``) and, in backward, per sender
segment (CSR over ``src``) without atomics, so results are deterministic; and save only node-level
tensors for backward, recomputing the edge activations there instead of storing E x H tensors.
The C++ tile GEMMs also skip the zeros of their ReLU inputs (and of ReLU-masked gradients), so
their speed depends on the activation density: about half at initialisation, lower once trained.
Gradients flow to ``h``, ``x`` and all eleven weights; the shift vectors ``s`` are treated as
constants (no gradient to the cell).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from alkernels._ext import ext
from alkernels.ops._triton import triton_usable

BACKENDS = ("auto", "reference", "cpu", "triton")
PRECISIONS = ("fp32", "tf32", "bf16")


class EdgeWeights(NamedTuple):
    """The weights of one layer's edge MLP ``phi_e`` and coordinate MLP ``phi_x``.

    Shapes with node width F, edge width H and coordinate width C (paper: 32, 128, 64):
    ``w1 [H, 2F+1]``, ``b1 [H]``, ``w2 [H, H]``, ``b2 [H]``, ``w3 [H, H]``, ``b3 [H]``,
    ``wx1 [C, H]``, ``bx1 [C]``, ``wx2 [C, C]``, ``bx2 [C]``, ``wx3 [1, C]`` (no bias).
    The input columns of ``w1`` are ordered sender features, receiver features, r^2.
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    wx1: torch.Tensor
    bx1: torch.Tensor
    wx2: torch.Tensor
    bx2: torch.Tensor
    wx3: torch.Tensor


@dataclass(frozen=True)
class EdgeGraph:
    """Edge index of a batch in the two CSR layouts the fused kernels need.

    Attributes:
        src: int64 [E], sender of each edge.
        dst: int64 [E], receiver of each edge, non-decreasing.
        rowptr: int64 [n + 1], edges of receiver i are ``rowptr[i]:rowptr[i+1]``.
        src_perm: int64 [E], edge ids ordered by sender (stable), for the sender reduction.
        src_ptr: int64 [n + 1], the edges of sender j are ``src_perm[src_ptr[j]:src_ptr[j+1]]``.
    """

    src: torch.Tensor
    dst: torch.Tensor
    rowptr: torch.Tensor
    src_perm: torch.Tensor
    src_ptr: torch.Tensor

    @property
    def num_nodes(self) -> int:
        """n, the number of nodes."""
        return int(self.rowptr.numel() - 1)

    @property
    def num_edges(self) -> int:
        """E, the number of edges."""
        return int(self.src.numel())


def build_edge_graph(src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> EdgeGraph:
    """Validate an edge list sorted by receiver and build both CSR layouts.

    Args:
        src: int64 [E] senders in ``[0, num_nodes)``.
        dst: int64 [E] receivers in ``[0, num_nodes)``, non-decreasing.
        num_nodes: n.

    Raises:
        ValueError: wrong dtype or shape, out-of-range indices, or ``dst`` not sorted.
    """
    for name, t in (("edge_src", src), ("edge_dst", dst)):
        if t.dtype != torch.int64 or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D int64 tensor, got {t.dtype} {tuple(t.shape)}")
    if src.numel() != dst.numel():
        raise ValueError(f"edge_src has {src.numel()} edges but edge_dst has {dst.numel()}")
    if src.device != dst.device:
        raise ValueError("edge_src and edge_dst are on different devices")
    if src.numel() > 0:
        lo = torch.minimum(src.min(), dst.min())
        hi = torch.maximum(src.max(), dst.max())
        if int(lo) < 0 or int(hi) >= num_nodes:
            raise ValueError(f"edge indices must lie in [0, {num_nodes}), got [{int(lo)}, {int(hi)}]")
        if bool((dst[1:] < dst[:-1]).any()):
            raise ValueError("edge_dst must be sorted (non-decreasing): edges are CSR by receiver")
    counts_dst = torch.bincount(dst, minlength=num_nodes)
    counts_src = torch.bincount(src, minlength=num_nodes)
    zero = torch.zeros(1, dtype=torch.int64, device=src.device)
    rowptr = torch.cat([zero, counts_dst.cumsum(0)])
    src_ptr = torch.cat([zero, counts_src.cumsum(0)])
    src_perm = torch.sort(src, stable=True).indices
    return EdgeGraph(src.contiguous(), dst.contiguous(), rowptr, src_perm, src_ptr)


def _mlp_act(x: torch.Tensor, act: str) -> torch.Tensor:
    return torch.relu(x) if act == "relu" else torch.nn.functional.silu(x)


def egnn_edge_reference(
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
        ``m [n, H]`` and ``dx [n, 3]``.
    """
    src, dst = graph.src, graph.dst
    w = weights
    d = x[src] + shift - x[dst]
    r2 = (d * d).sum(dim=1, keepdim=True)
    r = torch.linalg.vector_norm(d, dim=1, keepdim=True)
    u = d / ((r.detach() if detach_norm else r) + eps)
    z = torch.cat([h[src], h[dst], r2], dim=1)
    z = _mlp_act(torch.nn.functional.linear(z, w.w1, w.b1), activation)
    z = _mlp_act(torch.nn.functional.linear(z, w.w2, w.b2), activation)
    m_e = _mlp_act(torch.nn.functional.linear(z, w.w3, w.b3), activation)
    p = _mlp_act(torch.nn.functional.linear(m_e, w.wx1, w.bx1), activation)
    p = _mlp_act(torch.nn.functional.linear(p, w.wx2, w.bx2), activation)
    gate = torch.tanh(torch.nn.functional.linear(p, w.wx3))
    n = h.shape[0]
    m = h.new_zeros(n, m_e.shape[1]).index_add_(0, dst, m_e)
    dx = x.new_zeros(n, 3).index_add_(0, dst, u * gate)
    return m, dx


def split_first_layer(
    h: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-node products of the split first edge Linear: ``A = h W1a^T`` [n, H],
    ``B = h W1b^T + b1`` [n, H] and the r^2 column ``w`` [H] of ``w1`` [H, 2F+1]."""
    f = h.shape[1]
    a = h @ w1[:, :f].t()
    b = torch.addmm(b1, h, w1[:, f : 2 * f].t())
    return a.contiguous(), b.contiguous(), w1[:, 2 * f].contiguous()


def _cpu_operands(
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


def _cpu_forward(
    h: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    graph: EdgeGraph,
    w: EdgeWeights,
    eps: float,
    isa: str = "best",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The C++ forward: (m [n, H], dx [n, 3]) in the dtype of h. ``isa``: the compiled variant,
    ``"best"``, ``"avx2"`` or ``"baseline"`` (tests run each)."""
    arrays, weights = _cpu_operands(h, x, shift, graph, w)
    m, dx = ext().egnn_edge_forward(*arrays, weights, eps, isa)
    return torch.from_numpy(m), torch.from_numpy(dx)


def _cpu_backward(
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
) -> tuple[torch.Tensor, ...]:
    """The C++ backward; the 14 gradients listed in ``egnn_edge_backward``'s docstring."""
    arrays, weights = _cpu_operands(h, x, shift, graph, w)
    f = h.shape[1]
    extra = [
        gm.contiguous().numpy(), gdx.contiguous().numpy(), h.detach().numpy(),
        w.w1[:, :f].detach().contiguous().numpy(), graph.src_perm.numpy(), graph.src_ptr.numpy(),
    ]  # fmt: skip
    out = ext().egnn_edge_backward(*arrays, weights, eps, *extra, detach_norm, isa)
    return tuple(torch.from_numpy(o) for o in out)


class _FusedEdgeOp(torch.autograd.Function):
    """Autograd wrapper of the fused kernels; saves only inputs and weights for backward."""

    @staticmethod
    def forward(ctx, backend, precision, eps, detach_norm, graph, h, x, shift, *weights):
        w = EdgeWeights(*weights)
        if backend == "cpu":
            m, dx = _cpu_forward(h, x, shift, graph, w, eps)
        else:
            from alkernels.ops.message_passing_triton import triton_edge_forward

            m, dx = triton_edge_forward(h, x, shift, graph, w, eps, precision)
        ctx.save_for_backward(h, x, shift, *weights)
        ctx.config = (backend, precision, eps, detach_norm, graph)
        return m, dx

    @staticmethod
    def backward(ctx, gm, gdx):
        backend, precision, eps, detach_norm, graph = ctx.config
        h, x, shift, *weights = ctx.saved_tensors
        w = EdgeWeights(*weights)
        if backend == "cpu":
            grads = _cpu_backward(h, x, shift, graph, w, eps, detach_norm, gm, gdx)
        else:
            from alkernels.ops.message_passing_triton import triton_edge_backward

            grads = triton_edge_backward(h, x, shift, graph, w, eps, detach_norm, gm, gdx, precision)
        g_b, g_h_send, g_x, g_w1a, g_wr, g_w2, g_b2, g_w3, g_b3, g_wx1, g_bx1, g_wx2, g_bx2, g_wx3 = grads
        f = h.shape[1]
        g_h = torch.addmm(g_h_send, g_b, w.w1[:, f : 2 * f])
        g_w1 = torch.cat([g_w1a, g_b.t() @ h, g_wr[:, None]], dim=1)
        g_b1 = g_b.sum(0)
        return (
            None, None, None, None, None, g_h, g_x, None,
            g_w1, g_b1, g_w2, g_b2, g_w3, g_b3, g_wx1, g_bx1, g_wx2, g_bx2, g_wx3.reshape(1, -1),
        )  # fmt: skip


def resolve_backend(backend: str, device: torch.device | torch.Tensor, activation: str = "relu") -> str:
    """The concrete backend ``egnn_edge_op`` runs for ``backend`` on tensors like ``device``.

    ``"auto"`` picks ``"triton"`` on CUDA, ``"cpu"`` on CPU when ``alkernels._C`` is built and
    ``"reference"`` otherwise or when ``activation`` is not ReLU (the fused kernels implement the
    paper's ReLU MLPs only).

    Raises:
        ValueError: unknown backend, or a fused backend that cannot run here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    probe = device if isinstance(device, torch.Tensor) else torch.empty(0, device=device)
    if backend == "auto":
        if activation != "relu":
            return "reference"
        if probe.is_cuda and triton_usable(probe):
            return "triton"
        if probe.device.type == "cpu" and ext() is not None:
            return "cpu"
        return "reference"
    if backend != "reference" and activation != "relu":
        raise ValueError(f"backend {backend!r} implements ReLU MLPs only; use 'reference' for {activation}")
    if backend == "cpu" and (probe.device.type != "cpu" or ext() is None):
        raise ValueError("backend 'cpu' needs CPU tensors and the compiled extension alkernels._C")
    if backend == "triton" and not triton_usable(probe):
        raise ValueError("backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)")
    return backend


def _check_inputs(h, x, shift, graph: EdgeGraph, w: EdgeWeights) -> None:
    n, f = h.shape if h.dim() == 2 else (-1, -1)
    if h.dim() != 2 or x.shape != (n, 3) or shift.shape != (graph.num_edges, 3):
        raise ValueError(
            f"expected h [n, F], x [n, 3], shift [E, 3]; got {tuple(h.shape)}, {tuple(x.shape)}, "
            f"{tuple(shift.shape)} with E = {graph.num_edges}"
        )
    if n != graph.num_nodes:
        raise ValueError(f"h has {n} nodes but the edge graph has {graph.num_nodes}")
    dtype = h.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"floating inputs must be float32 or float64, got {dtype}")
    for name, t in [("x", x), ("shift", shift), *zip(EdgeWeights._fields, w)]:
        if t.dtype != dtype or t.device != h.device:
            raise ValueError(f"{name} is {t.dtype} on {t.device}; expected {dtype} on {h.device}")
    hidden, coord = w.w2.shape[0], w.wx1.shape[0]
    expected = {
        "w1": (hidden, 2 * f + 1), "b1": (hidden,), "w2": (hidden, hidden), "b2": (hidden,),
        "w3": (hidden, hidden), "b3": (hidden,), "wx1": (coord, hidden), "bx1": (coord,),
        "wx2": (coord, coord), "bx2": (coord,), "wx3": (1, coord),
    }  # fmt: skip
    for name, shape in expected.items():
        if tuple(getattr(w, name).shape) != shape:
            raise ValueError(f"weight {name} has shape {tuple(getattr(w, name).shape)}, expected {shape}")


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
    """One EGNN layer's edge work: ``(m [n, H], dx [n, 3])`` (see the module docstring).

    Args:
        h: [n, F] node features, float32 or float64.
        x: [n, 3] positions, same dtype. shift: [E, 3] per-edge shift vectors ``edge_shift @ cell``
            (zeros in matsciml mode), same dtype.
        graph: :class:`EdgeGraph` from :func:`build_edge_graph` (edges sorted by receiver).
        weights: :class:`EdgeWeights`.
        eps: added to r before normalising the direction (paper: 0.1).
        detach_norm: detach r in the normalisation (original EGNN).
        activation: ``"relu"`` or ``"silu"`` (``"silu"`` runs on the reference backend only).
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"triton"``.
        precision: Triton matmul inputs: ``"fp32"`` (IEEE), ``"tf32"`` or ``"bf16"``; all with
            fp32 accumulation. Ignored by the other backends, which compute in the input dtype.

    Raises:
        ValueError: bad shapes, dtypes, devices, backend or precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if activation not in ("relu", "silu"):
        raise ValueError(f"activation must be 'relu' or 'silu', got {activation!r}")
    _check_inputs(h, x, shift, graph, weights)
    chosen = resolve_backend(backend, h, activation)
    if chosen == "reference":
        return egnn_edge_reference(
            h, x, shift, graph, weights, eps=eps, detach_norm=detach_norm, activation=activation
        )
    if chosen == "cpu" and any(d % 16 for d in (h.shape[1], weights.w2.shape[0], weights.wx1.shape[0])):
        raise ValueError("backend 'cpu' needs node, edge and coordinate widths that are multiples of 16")
    if chosen == "triton" and h.dtype != torch.float32:
        raise ValueError("backend 'triton' supports float32 inputs only")
    x_in, shift_in = x.contiguous(), shift.contiguous()
    return _FusedEdgeOp.apply(chosen, precision, float(eps), detach_norm, graph, h.contiguous(), x_in, shift_in, *weights)
