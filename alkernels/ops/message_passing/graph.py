"""The types the EGNN edge op shares across its backends: the edge index in its two CSR layouts,
the layer weights and their gradients, input checks, and the per-node split of the first edge
Linear. The CSR layouts are built by the registered operator ``alkernels::edge_csr``, which also
checks the index values, so a compiled model validates its batches without a graph break."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from alkernels.ops.registry import qualname

#: Matmul input precisions of the Triton kernels (all accumulate in float32).
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


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


class EdgeGrads(NamedTuple):
    """Gradients of the edge op's differentiable inputs, each shaped and typed as its input: ``h``
    [n, F], ``x`` [n, 3] and the eleven :class:`EdgeWeights` (the shift vectors are constants)."""

    h: torch.Tensor
    x: torch.Tensor
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


class KernelGrads(NamedTuple):
    """What the fused backward kernels (C++ and Triton) return, before :func:`assemble_grads`:
    the gradient of the first edge Linear stays split per node as in the forward.

    ``b`` [n, H]: receiver sums of the gradient of the first layer's pre-activation (the gradient
    of ``B = h W1b^T + b1``); ``h_send`` [n, F]: the sender part of the gradient of h (through
    ``A``); ``x`` [n, 3]; ``w1a`` [H, F] (sender block of w1); ``wr`` [H] (its r^2 column); then
    ``w2`` .. ``bx2`` as the weights and ``wx3`` [C]."""

    b: torch.Tensor
    h_send: torch.Tensor
    x: torch.Tensor
    w1a: torch.Tensor
    wr: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    wx1: torch.Tensor
    bx1: torch.Tensor
    wx2: torch.Tensor
    bx2: torch.Tensor
    wx3: torch.Tensor


def assemble_grads(g: KernelGrads, h: torch.Tensor, w: EdgeWeights) -> EdgeGrads:
    """The gradients of h, x and every weight from the kernels' per-node split (a few node-level
    GEMMs: ``gh = gh_send + gB W1b``, ``gW1 = [gW1a, gB^T h, gw]``, ``gb1 = sum gB``)."""
    f = h.shape[1]
    g_h = torch.addmm(g.h_send, g.b, w.w1[:, f : 2 * f])
    g_w1 = torch.cat([g.w1a, g.b.t() @ h, g.wr[:, None]], dim=1)
    return EdgeGrads(
        g_h, g.x, g_w1, g.b.sum(0), g.w2, g.b2, g.w3, g.b3, g.wx1, g.bx1, g.wx2, g.bx2, g.wx3.reshape(1, -1)
    )


@dataclass(frozen=True)
class EdgeGraph:
    """Edge index of a batch in the two CSR layouts the fused kernels need.

    Attributes:
        src: int64 [E], sender of each edge.
        dst: int64 [E], receiver of each edge, non-decreasing.
        rowptr: int64 [n + 1], edges of receiver i are ``rowptr[i]:rowptr[i+1]``.
        src_perm: int64 [E], edge ids ordered by sender (stable), for the sender reduction.
        src_ptr: int64 [n + 1], the edges of sender j are ``src_perm[src_ptr[j]:src_ptr[j+1]]``.
        checked: True when :func:`build_edge_graph` made it (the layouts are consistent by
            construction and the indices were checked, or the caller vouched for them with
            ``validate=False``). A graph built by hand is checked by :func:`egnn_edge_op` on every
            backend before a kernel reads it (:func:`check_edge_graph`).
    """

    src: torch.Tensor
    dst: torch.Tensor
    rowptr: torch.Tensor
    src_perm: torch.Tensor
    src_ptr: torch.Tensor
    checked: bool = False

    @property
    def num_nodes(self) -> int:
        """n, the number of nodes (a symbolic int while tracing)."""
        return self.rowptr.shape[0] - 1

    @property
    def num_edges(self) -> int:
        """E, the number of edges (a symbolic int while tracing)."""
        return self.src.shape[0]


def check_edge_graph(graph: EdgeGraph) -> None:
    """Raise ValueError unless the five index tensors of ``graph`` are consistent: ``rowptr`` and
    ``src_ptr`` run from 0 to E without decreasing, the edges of receiver i's segment have
    ``dst == i``, every sender lies in ``[0, n)``, ``src_perm`` is a permutation of the edges and
    sender j's segment holds exactly j's edges. O(n + E), reading values back from the device
    (the C++ binding runs the same checks on every call)."""
    n, e = graph.num_nodes, graph.num_edges
    for name, t, length in (
        ("src", graph.src, e),
        ("dst", graph.dst, e),
        ("rowptr", graph.rowptr, n + 1),
        ("src_perm", graph.src_perm, e),
        ("src_ptr", graph.src_ptr, n + 1),
    ):
        if t.dtype != torch.int64 or t.shape != (length,):
            raise ValueError(f"EdgeGraph.{name} must be int64 [{length}], got {t.dtype} {tuple(t.shape)}")
    nodes = torch.arange(n, device=graph.src.device)
    for ptr, name in ((graph.rowptr, "rowptr"), (graph.src_ptr, "src_ptr")):
        if int(ptr[0]) != 0 or int(ptr[-1]) != e or bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError(f"EdgeGraph.{name} must run from 0 to E = {e} without decreasing")
    if not torch.equal(graph.dst, nodes.repeat_interleave(graph.rowptr.diff(), output_size=e)):
        raise ValueError("EdgeGraph.dst does not match rowptr: edges must be sorted by receiver")
    if e and (int(graph.src.min()) < 0 or int(graph.src.max()) >= n):
        raise ValueError(
            f"EdgeGraph.src holds senders outside [0, {n}): [{int(graph.src.min())}, {int(graph.src.max())}]"
        )
    if not torch.equal(torch.sort(graph.src_perm).values, torch.arange(e, device=graph.src.device)):
        raise ValueError("EdgeGraph.src_perm must be a permutation of the edges")
    if not torch.equal(graph.src[graph.src_perm], nodes.repeat_interleave(graph.src_ptr.diff(), output_size=e)):
        raise ValueError("EdgeGraph.src_perm and src_ptr do not group the edges by sender")


def check_edge_values(src: Tensor, dst: Tensor, num_nodes: int) -> None:
    """Raise ValueError unless every index of ``src`` and ``dst`` (int64 [E]) lies in
    ``[0, num_nodes)`` and ``dst`` is non-decreasing. Reads values back from the device."""
    if src.numel() == 0:
        return
    lo = int(torch.minimum(src.min(), dst.min()))
    hi = int(torch.maximum(src.max(), dst.max()))
    if lo < 0 or hi >= num_nodes:
        raise ValueError(f"edge indices must lie in [0, {num_nodes}), got [{lo}, {hi}]")
    if bool((dst[1:] < dst[:-1]).any()):
        raise ValueError("edge_dst must be sorted (non-decreasing): edges are CSR by receiver")


@torch.library.custom_op(qualname("edge_csr"), mutates_args=())
def edge_csr(src: Tensor, dst: Tensor, num_nodes: int, validate: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(rowptr [n + 1], src_perm [E], src_ptr [n + 1])``, int64, of the edges ``src``, ``dst``
    (int64 [E], sorted by ``dst``); with ``validate`` the values are checked first
    (:func:`check_edge_values`). Registered as ``alkernels::edge_csr``.

    The layouts come from ``searchsorted`` and a stable sort, whose output sizes depend on the
    input shapes only, so without ``validate`` nothing waits for a GPU."""
    if validate:
        check_edge_values(src, dst, num_nodes)
    nodes = torch.arange(num_nodes + 1, dtype=torch.int64, device=src.device)
    rowptr = torch.searchsorted(dst.contiguous(), nodes)
    sorted_src, src_perm = torch.sort(src, stable=True)
    return rowptr, src_perm, torch.searchsorted(sorted_src, nodes)


@edge_csr.register_fake
def _edge_csr_fake(src: Tensor, dst: Tensor, num_nodes: int, validate: bool) -> tuple[Tensor, Tensor, Tensor]:
    return src.new_empty(num_nodes + 1), src.new_empty(src.shape[0]), src.new_empty(num_nodes + 1)


def build_edge_graph(src: torch.Tensor, dst: torch.Tensor, num_nodes: int, *, validate: bool = True) -> EdgeGraph:
    """Validate an edge list sorted by receiver and build both CSR layouts (``alkernels::edge_csr``).

    The layouts are built with ``searchsorted`` and a stable sort, whose output sizes depend on
    the input shapes only, so on a GPU nothing waits for the device. The value checks (index
    range, sorted receivers) do read values back; ``validate=False`` skips them, for batches that
    were checked when they were built (a captured training step). Inside ``torch.compile`` the
    checks run in the registered op, so they cause no graph break.

    Args:
        src: int64 [E] senders in ``[0, num_nodes)``.
        dst: int64 [E] receivers in ``[0, num_nodes)``, non-decreasing.
        num_nodes: n.
        validate: check index range and order (dtype and shape are always checked).

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
    rowptr, src_perm, src_ptr = edge_csr(src, dst, num_nodes, validate)
    return EdgeGraph(src.contiguous(), dst.contiguous(), rowptr, src_perm, src_ptr, checked=True)


def split_first_layer(
    h: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-node products of the split first edge Linear: ``A = h W1a^T`` [n, H],
    ``B = h W1b^T + b1`` [n, H] and the r^2 column ``w`` [H] of ``w1`` [H, 2F+1]."""
    f = h.shape[1]
    a = h @ w1[:, :f].t()
    b = torch.addmm(b1, h, w1[:, f : 2 * f].t())
    return a.contiguous(), b.contiguous(), w1[:, 2 * f].contiguous()


def check_inputs(h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights) -> None:
    """Raise ValueError unless h [n, F], x [n, 3], shift [E, 3] and the weights agree in shape,
    dtype (float32 or float64) and device with each other and with ``graph``."""
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
        "w1": (hidden, 2 * f + 1),
        "b1": (hidden,),
        "w2": (hidden, hidden),
        "b2": (hidden,),
        "w3": (hidden, hidden),
        "b3": (hidden,),
        "wx1": (coord, hidden),
        "bx1": (coord,),
        "wx2": (coord, coord),
        "bx2": (coord,),
        "wx3": (1, coord),
    }
    for name, shape in expected.items():
        if tuple(getattr(w, name).shape) != shape:
            raise ValueError(f"weight {name} has shape {tuple(getattr(w, name).shape)}, expected {shape}")
