"""The fused edge op as registered PyTorch operators, shared by the C++ and Triton backends.

* ``alkernels::egnn_edge`` (:func:`egnn_edge_fused`): forward, ``(m [n, H], dx [n, 3])``. It
  saves only its inputs; its backward is
* ``alkernels::egnn_edge_backward`` (:func:`egnn_edge_fused_backward`): the fused first-order
  backward, which recomputes the edge activations inside the kernels instead of storing E x H
  tensors. It is itself differentiable (double backward, e.g. training on forces
  ``F = -dE/dx``):

  - on backend ``"cpu"``, when the cotangents reach only its gradients of h and x (force
    training) and no higher order is asked for, by
    ``alkernels::egnn_edge_double_backward`` (:func:`egnn_edge_fused_double_backward`), fused C++
    kernels that differentiate the forward's tangent in reverse mode, recomputing activations
    and tangents tile by tile (no E x H tensor stored);
  - otherwise (Triton, cotangents on the weight gradients, ``create_graph`` at second order)
    through the torch reference of the op: exact and differentiable to any order, storing the
    reference's O(E x H) activations while it runs.

Both take the edge index as its five tensors (:class:`EdgeGraph`) and the weights as eleven
tensors (:class:`EdgeWeights`), plus ``eps``, ``detach_norm``, the concrete ``backend``
(``"cpu"`` or ``"triton"``) and the ``precision`` of the kernels' matmuls (``"fp32"``,
``"tf32"`` on Triton only, ``"bf16"``; see :func:`alkernels.ops.message_passing.egnn_edge_op`).
The double backward computes in the input dtype whatever the precision: the fused C++ kernel in
float32 for a ``"bf16"`` forward, as the Triton backend's second order goes through the float32
reference. Fake implementations give the output shapes, so FakeTensor,
``torch.compile(fullgraph=True)`` and ``torch.export`` trace through them.
The kernels run with autocast off: the op decides its own precision (the inputs arrive in the
weights' dtype, see :func:`alkernels.ops.message_passing.egnn_edge_op`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from alkernels.ops.message_passing.graph import EdgeGrads, EdgeGraph, EdgeWeights
from alkernels.ops.message_passing.reference import egnn_edge_torch
from alkernels.ops.registry import qualname, register_vmap_by_loop


@contextmanager
def _autocast_off(device: torch.device) -> Iterator[None]:
    with torch.autocast(device.type, enabled=False):
        yield


def _graph(src: Tensor, dst: Tensor, rowptr: Tensor, src_perm: Tensor, src_ptr: Tensor) -> EdgeGraph:
    return EdgeGraph(src, dst, rowptr, src_perm, src_ptr)


@torch.library.custom_op(qualname("egnn_edge"), mutates_args=())
def egnn_edge_fused(
    h: Tensor,
    x: Tensor,
    shift: Tensor,
    src: Tensor,
    dst: Tensor,
    rowptr: Tensor,
    src_perm: Tensor,
    src_ptr: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    b3: Tensor,
    wx1: Tensor,
    bx1: Tensor,
    wx2: Tensor,
    bx2: Tensor,
    wx3: Tensor,
    eps: float,
    detach_norm: bool,
    backend: str,
    precision: str,
) -> tuple[Tensor, Tensor]:
    """The fused forward on ``backend`` (``"cpu"`` or ``"triton"``): ``(m [n, H], dx [n, 3])`` in
    the dtype of h. Shapes as in :func:`alkernels.ops.message_passing.egnn_edge_op`; all inputs
    already checked. ``detach_norm`` only matters to the backward."""
    graph = _graph(src, dst, rowptr, src_perm, src_ptr)
    w = EdgeWeights(w1, b1, w2, b2, w3, b3, wx1, bx1, wx2, bx2, wx3)
    with _autocast_off(h.device):
        if backend == "cpu":
            from alkernels.ops.message_passing.cpu import egnn_edge_cpu

            return egnn_edge_cpu(h, x, shift, graph, w, eps, precision=precision)
        if backend == "triton":
            from alkernels.ops.message_passing.triton_kernels import egnn_edge_triton

            return egnn_edge_triton(h, x, shift, graph, w, eps, precision)
    raise ValueError(f"alkernels::egnn_edge runs the fused backends 'cpu' and 'triton', got {backend!r}")


@egnn_edge_fused.register_fake
def _egnn_edge_fake(h: Tensor, x: Tensor, shift: Tensor, src: Tensor, *rest: object) -> tuple[Tensor, Tensor]:
    w2 = rest[6]
    assert isinstance(w2, Tensor)
    return h.new_empty(h.shape[0], w2.shape[0]), h.new_empty(h.shape[0], 3)


@torch.library.custom_op(qualname("egnn_edge_backward"), mutates_args=())
def egnn_edge_fused_backward(
    gm: Tensor,
    gdx: Tensor,
    h: Tensor,
    x: Tensor,
    shift: Tensor,
    src: Tensor,
    dst: Tensor,
    rowptr: Tensor,
    src_perm: Tensor,
    src_ptr: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    b3: Tensor,
    wx1: Tensor,
    bx1: Tensor,
    wx2: Tensor,
    bx2: Tensor,
    wx3: Tensor,
    eps: float,
    detach_norm: bool,
    backend: str,
    precision: str,
) -> list[Tensor]:
    """The fused backward from the upstream gradients ``gm`` [n, H] and ``gdx`` [n, 3]: the 13
    tensors of :class:`EdgeGrads` (gradients of h, x and the eleven weights)."""
    graph = _graph(src, dst, rowptr, src_perm, src_ptr)
    w = EdgeWeights(w1, b1, w2, b2, w3, b3, wx1, bx1, wx2, bx2, wx3)
    gm, gdx = gm.contiguous(), gdx.contiguous()
    with _autocast_off(h.device):
        if backend == "cpu":
            from alkernels.ops.message_passing.cpu import egnn_edge_backward_cpu

            grads = egnn_edge_backward_cpu(h, x, shift, graph, w, eps, detach_norm, gm, gdx, precision=precision)
        elif backend == "triton":
            from alkernels.ops.message_passing.triton_kernels import egnn_edge_backward_triton

            grads = egnn_edge_backward_triton(h, x, shift, graph, w, eps, detach_norm, gm, gdx, precision)
        else:
            raise ValueError(f"alkernels::egnn_edge_backward runs 'cpu' and 'triton', got {backend!r}")
    return list(grads)


@egnn_edge_fused_backward.register_fake
def _egnn_edge_backward_fake(gm: Tensor, gdx: Tensor, h: Tensor, x: Tensor, *rest: object) -> list[Tensor]:
    weights = rest[6:17]
    return [torch.empty_like(t) for t in (h, x, *weights)]  # type: ignore[arg-type]


# ---- autograd ------------------------------------------------------------------------------


def _setup_forward(ctx: object, inputs: tuple, output: object) -> None:
    ctx.save_for_backward(*inputs[:19])  # type: ignore[attr-defined]
    ctx.eps, ctx.detach_norm, ctx.backend, ctx.precision = inputs[19:]  # type: ignore[attr-defined]


def _backward(ctx: object, gm: Tensor, gdx: Tensor) -> tuple:
    saved = ctx.saved_tensors  # type: ignore[attr-defined]
    if ctx.needs_input_grad[2]:  # type: ignore[attr-defined]
        raise RuntimeError(
            "the fused edge op has no gradient for the shift vectors (the cell); "
            "egnn_edge_op routes such calls to backend 'torch'"
        )
    grads = EdgeGrads(
        *egnn_edge_fused_backward(
            gm,
            gdx,
            *saved,
            ctx.eps,
            ctx.detach_norm,
            ctx.backend,
            ctx.precision,  # type: ignore[attr-defined]
        )
    )
    return (grads.h, grads.x, None, None, None, None, None, None, *grads[2:], None, None, None, None)


torch.library.register_autograd(qualname("egnn_edge"), _backward, setup_context=_setup_forward)


def _setup_backward(ctx: object, inputs: tuple, output: object) -> None:
    ctx.save_for_backward(*inputs[:21])  # type: ignore[attr-defined]
    ctx.eps, ctx.detach_norm, ctx.backend = inputs[21], inputs[22], inputs[23]  # type: ignore[attr-defined]


@torch.library.custom_op(qualname("egnn_edge_double_backward"), mutates_args=())
def egnn_edge_fused_double_backward(
    gm: Tensor,
    gdx: Tensor,
    h: Tensor,
    x: Tensor,
    shift: Tensor,
    src: Tensor,
    dst: Tensor,
    rowptr: Tensor,
    src_perm: Tensor,
    src_ptr: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    b3: Tensor,
    wx1: Tensor,
    bx1: Tensor,
    wx2: Tensor,
    bx2: Tensor,
    wx3: Tensor,
    v_h: Tensor,
    v_x: Tensor,
    eps: float,
    detach_norm: bool,
    backend: str,
) -> list[Tensor]:
    """The fused double backward: the VJP of :func:`egnn_edge_fused_backward` for the cotangents
    ``v_h`` [n, F] and ``v_x`` [n, 3] on its gradients of h and x (none on the weight
    gradients). Returns 15 tensors: the gradients w.r.t. ``gm`` [n, H] and ``gdx`` [n, 3], then
    the 13 of :class:`EdgeGrads`. Backend ``"cpu"`` only; not differentiable itself (higher
    orders go through the reference, see :func:`_double_backward`)."""
    if backend != "cpu":
        raise ValueError(f"alkernels::egnn_edge_double_backward runs backend 'cpu' only, got {backend!r}")
    from alkernels.ops.message_passing.cpu import egnn_edge_double_backward_cpu

    graph = _graph(src, dst, rowptr, src_perm, src_ptr)
    w = EdgeWeights(w1, b1, w2, b2, w3, b3, wx1, bx1, wx2, bx2, wx3)
    with _autocast_off(h.device):
        d_gm, d_gdx, grads = egnn_edge_double_backward_cpu(h, x, shift, graph, w, eps, detach_norm, gm, gdx, v_h, v_x)
    return [d_gm, d_gdx, *grads]


@egnn_edge_fused_double_backward.register_fake
def _egnn_edge_double_backward_fake(gm: Tensor, gdx: Tensor, h: Tensor, x: Tensor, *rest: object) -> list[Tensor]:
    weights = rest[6:17]
    return [torch.empty_like(t) for t in (gm, gdx, h, x, *weights)]  # type: ignore[arg-type]


def _traced(tensors: list[Tensor]) -> bool:
    """Whether a compiler is tracing (dynamo, or AOT autograd over fake tensors): a branch on
    tensor values cannot be taken then."""
    from torch._guards import detect_fake_mode

    return torch.compiler.is_compiling() or detect_fake_mode(tensors) is not None


def _double_backward(ctx: object, cotangents: list[Tensor]) -> tuple:
    """Vector-Jacobian product of the first-order backward (13 cotangents, one list, as the op
    returns one).

    The fused C++ kernel serves the force-training case in eager mode: backend ``"cpu"``,
    cotangents on the gradients of h and x only (a check that reads them), no ``create_graph``.
    Every other case, and a traced one (``torch.compile``, whose graph cannot branch on those
    values), takes the exact reference path: the first-order backward is
    ``g(gm, gdx, h, x, W) = J(h, x, W)^T (gm, gdx)``, and its
    VJP is ``torch.func.vjp`` of the reference's own VJP. ``torch.func`` composes with autograd,
    so with ``create_graph`` the result is itself differentiable (third and higher orders stay
    exact)."""
    gm, gdx, h, x, shift, *rest = ctx.saved_tensors  # type: ignore[attr-defined]
    graph = _graph(*rest[:5])
    eps, detach_norm = ctx.eps, ctx.detach_norm  # type: ignore[attr-defined]
    weights = rest[5:]
    if (
        ctx.backend == "cpu"
        and not torch.is_grad_enabled()  # type: ignore[attr-defined]
        and not _traced(cotangents)
        and not any(bool(c.any()) for c in cotangents[2:])
    ):
        grads = egnn_edge_fused_double_backward(
            gm, gdx, h, x, shift, *rest[:5], *weights, cotangents[0], cotangents[1], eps, detach_norm, "cpu"
        )
    else:
        grads = _reference_double_backward(gm, gdx, h, x, shift, graph, weights, cotangents, eps, detach_norm)
    return (*grads[:4], None, None, None, None, None, None, *grads[4:], None, None, None, None)


def _reference_double_backward(
    gm: Tensor,
    gdx: Tensor,
    h: Tensor,
    x: Tensor,
    shift: Tensor,
    graph: EdgeGraph,
    weights: list[Tensor],
    cotangents: list[Tensor],
    eps: float,
    detach_norm: bool,
) -> tuple[Tensor, ...]:
    """The VJP of the first-order backward through the torch reference (15 gradients: gm, gdx,
    then h, x and the weights)."""

    def first_order(gm_: Tensor, gdx_: Tensor, h_: Tensor, x_: Tensor, *w_: Tensor) -> tuple[Tensor, ...]:
        def forward(hh: Tensor, xx: Tensor, *ww: Tensor) -> tuple[Tensor, Tensor]:
            return egnn_edge_torch(hh, xx, shift, graph, EdgeWeights(*ww), eps=eps, detach_norm=detach_norm)

        _, vjp = torch.func.vjp(forward, h_, x_, *w_)
        return vjp((gm_, gdx_))

    with _autocast_off(h.device):
        _, vjp2 = torch.func.vjp(first_order, gm, gdx, h, x, *weights)
        return vjp2(tuple(cotangents))


torch.library.register_autograd(qualname("egnn_edge_backward"), _double_backward, setup_context=_setup_backward)
register_vmap_by_loop(egnn_edge_fused, 2)
register_vmap_by_loop(egnn_edge_fused_backward, 13)
register_vmap_by_loop(egnn_edge_fused_double_backward, 15)
