"""Triton kernels of the fused EGNN edge op (GPU, or CPU under ``TRITON_INTERPRET=1``).

Layout: program ``p`` owns blocks of ``BLOCK_N`` consecutive receivers (persistent grid); it walks
their edges (sorted by receiver) in chunks of ``BLOCK_E``, computes the whole edge MLP and
coordinate MLP of a chunk on chip with ``tl.dot`` and reduces the chunk into its receivers with a
one-hot ``[BLOCK_N, BLOCK_E]`` matmul, so no atomics are used and results are deterministic.

Backward recomputes the chunk's activations, then back-propagates through both MLPs. Receiver
sums (``gB``, the receiver part of ``gx``) use the same one-hot reduction; the sender parts are
written per edge (``[E, F]`` and ``[E, 4]``, much smaller than E x H) and gathered per sender
through the CSR over ``src`` by a second kernel; weight gradients accumulate in one slice per
program of a ``[P, ...]`` buffer that torch sums at the end.

Precision: ``"fp32"`` runs every matmul in IEEE fp32; ``"tf32"`` uses TF32 tensor-core inputs;
``"bf16"`` casts matmul inputs to bfloat16. All accumulate in fp32, the one-hot receiver sums
always run in IEEE fp32, and the geometry (distances, directions, tanh) is fp32 throughout.
"""
from __future__ import annotations

import torch

import triton
import triton.language as tl

from alkernels.ops.dispatch import interpreting
from alkernels.ops.message_passing.graph import EdgeGraph, EdgeWeights, split_first_layer

_PREC = {"fp32": "ieee", "tf32": "tf32", "bf16": "bf16"}


def _prec(precision: str) -> str:
    if precision == "bf16" and interpreting():
        return "bf16_emulated"
    return _PREC[precision]


@triton.jit
def _mm(a, b, PREC: tl.constexpr):
    """a [M, K] @ b [K, N] with fp32 accumulation at the requested input precision."""
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    elif PREC == "bf16_emulated":
        # same numbers as "bf16" (inputs rounded to bfloat16, fp32 products and sums); used
        # by the CPU interpreter, whose bfloat16 tl.dot returns wrong values
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _load_t(w_ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """The transpose [COLS, ROWS] of a row-major [ROWS, COLS] weight."""
    r = tl.arange(0, ROWS)
    c = tl.arange(0, COLS)
    return tl.load(w_ptr + r[None, :] * COLS + c[:, None])


@triton.jit
def _load_w(w_ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    r = tl.arange(0, ROWS)
    c = tl.arange(0, COLS)
    return tl.load(w_ptr + r[:, None] * COLS + c[None, :])


@triton.jit
def _tanh(s):
    return 1.0 - 2.0 / (tl.exp(2.0 * s) + 1.0)


@triton.jit
def _chunk(
    e, e_end, i0, a_ptr, b_ptr, w_ptr, x_ptr, shift_ptr, src_ptr, dst_ptr,
    w2_ptr, b2_ptr, w3_ptr, b3_ptr, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, wx3_ptr,
    H: tl.constexpr, C: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr,
    PREC: tl.constexpr,
):
    """Geometry and both MLPs of edges e .. e+BLOCK_E-1 (masked past e_end)."""
    offs = e + tl.arange(0, BLOCK_E)
    valid = offs < e_end
    src = tl.load(src_ptr + offs, mask=valid, other=0)
    dst = tl.load(dst_ptr + offs, mask=valid, other=0)
    dx = tl.load(x_ptr + src * 3, mask=valid, other=0.0) + tl.load(shift_ptr + offs * 3, mask=valid, other=0.0) - tl.load(x_ptr + dst * 3, mask=valid, other=0.0)
    dy = tl.load(x_ptr + src * 3 + 1, mask=valid, other=0.0) + tl.load(shift_ptr + offs * 3 + 1, mask=valid, other=0.0) - tl.load(x_ptr + dst * 3 + 1, mask=valid, other=0.0)
    dz = tl.load(x_ptr + src * 3 + 2, mask=valid, other=0.0) + tl.load(shift_ptr + offs * 3 + 2, mask=valid, other=0.0) - tl.load(x_ptr + dst * 3 + 2, mask=valid, other=0.0)
    r2 = dx * dx + dy * dy + dz * dz
    r = tl.sqrt(r2)
    offs_h = tl.arange(0, H)
    offs_c = tl.arange(0, C)
    pre = (
        tl.load(a_ptr + src[:, None] * H + offs_h[None, :], mask=valid[:, None], other=0.0)
        + tl.load(b_ptr + dst[:, None] * H + offs_h[None, :], mask=valid[:, None], other=0.0)
        + tl.load(w_ptr + offs_h)[None, :] * r2[:, None]
    )
    z1 = tl.maximum(pre, 0.0)
    z2 = tl.maximum(_mm(z1, _load_t(w2_ptr, H, H), PREC) + tl.load(b2_ptr + offs_h)[None, :], 0.0)
    m = tl.maximum(_mm(z2, _load_t(w3_ptr, H, H), PREC) + tl.load(b3_ptr + offs_h)[None, :], 0.0)
    p1 = tl.maximum(_mm(m, _load_t(wx1_ptr, C, H), PREC) + tl.load(bx1_ptr + offs_c)[None, :], 0.0)
    p2 = tl.maximum(_mm(p1, _load_t(wx2_ptr, C, C), PREC) + tl.load(bx2_ptr + offs_c)[None, :], 0.0)
    gate = _tanh(tl.sum(p2 * tl.load(wx3_ptr + offs_c)[None, :], axis=1))
    # one-hot [BLOCK_N, BLOCK_E]: which of the block's receivers each edge belongs to
    onehot = ((dst - i0)[None, :] == tl.arange(0, BLOCK_N)[:, None]) & valid[None, :]
    return offs, valid, src, dx, dy, dz, r2, r, z1, z2, m, p1, p2, gate, onehot.to(tl.float32)


@triton.jit
def _block_edges(rowptr_ptr, blk, n, BLOCK_N: tl.constexpr):
    """First receiver of block ``blk`` and the edge range of its BLOCK_N receivers."""
    i0 = blk * BLOCK_N
    return i0, tl.load(rowptr_ptr + i0), tl.load(rowptr_ptr + tl.minimum(i0 + BLOCK_N, n))


@triton.jit
def _store_block(rows_ptr, vec_ptr, node, n, acc, acc_x, acc_y, acc_z, H: tl.constexpr):
    """rows_ptr[node, :H] = acc and vec_ptr[node, :3] = (acc_x, acc_y, acc_z) for node < n."""
    ok = node < n
    tl.store(rows_ptr + node[:, None] * H + tl.arange(0, H)[None, :], acc, mask=ok[:, None])
    tl.store(vec_ptr + node * 3, acc_x, mask=ok)
    tl.store(vec_ptr + node * 3 + 1, acc_y, mask=ok)
    tl.store(vec_ptr + node * 3 + 2, acc_z, mask=ok)


@triton.jit
def _edge_fwd_kernel(
    a_ptr, b_ptr, w_ptr, x_ptr, shift_ptr, src_ptr, dst_ptr, rowptr_ptr,
    w2_ptr, b2_ptr, w3_ptr, b3_ptr, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, wx3_ptr,
    m_ptr, dxo_ptr, n, eps,
    H: tl.constexpr, C: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr,
    PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    num_blocks = tl.cdiv(n, BLOCK_N)
    rows = tl.arange(0, BLOCK_N)
    for blk in range(pid, num_blocks, nprog):
        i0, e_start, e_end = _block_edges(rowptr_ptr, blk, n, BLOCK_N)
        acc_m = tl.zeros((BLOCK_N, H), dtype=tl.float32)
        acc_x = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_y = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_z = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for e in range(e_start, e_end, BLOCK_E):
            offs, valid, src, dx, dy, dz, r2, r, z1, z2, m, p1, p2, gate, onehot = _chunk(
                e, e_end, i0, a_ptr, b_ptr, w_ptr, x_ptr, shift_ptr, src_ptr, dst_ptr,
                w2_ptr, b2_ptr, w3_ptr, b3_ptr, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, wx3_ptr,
                H, C, BLOCK_E, BLOCK_N, PREC,
            )
            acc_m += tl.dot(onehot, m, input_precision="ieee")
            scale = gate / (r + eps)
            acc_x += tl.sum(onehot * (dx * scale)[None, :], axis=1)
            acc_y += tl.sum(onehot * (dy * scale)[None, :], axis=1)
            acc_z += tl.sum(onehot * (dz * scale)[None, :], axis=1)
        _store_block(m_ptr, dxo_ptr, i0 + rows, n, acc_m, acc_x, acc_y, acc_z, H)


@triton.jit
def _acc_slice(ptr, value, ROWS: tl.constexpr, COLS: tl.constexpr):
    """ptr[ROWS, COLS] += value (a program-owned slice of the weight-gradient buffer)."""
    offs = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
    tl.store(ptr + offs, tl.load(ptr + offs) + value)


@triton.jit
def _acc_vec(ptr, value, LEN: tl.constexpr):
    offs = tl.arange(0, LEN)
    tl.store(ptr + offs, tl.load(ptr + offs) + value)


@triton.jit
def _edge_bwd_kernel(
    a_ptr, b_ptr, w_ptr, x_ptr, shift_ptr, src_ptr, dst_ptr, rowptr_ptr,
    w2_ptr, b2_ptr, w3_ptr, b3_ptr, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, wx3_ptr,
    gm_ptr, gdx_ptr, h_ptr, w1a_ptr, gb_ptr, gx_ptr, ghe_ptr, gde_ptr, wg_ptr, n, eps,
    F: tl.constexpr, H: tl.constexpr, C: tl.constexpr, WG: tl.constexpr,
    DETACH: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    num_blocks = tl.cdiv(n, BLOCK_N)
    offs_h = tl.arange(0, H)
    offs_c = tl.arange(0, C)
    offs_f = tl.arange(0, F)
    rows = tl.arange(0, BLOCK_N)
    # this program's weight-gradient slice: gW1a, gw, gW2, gb2, gW3, gb3, gWx1, gbx1, gWx2, gbx2, gwx3
    wg = wg_ptr + pid * WG
    o_w = H * F
    o_w2 = o_w + H
    o_b2 = o_w2 + H * H
    o_w3 = o_b2 + H
    o_b3 = o_w3 + H * H
    o_wx1 = o_b3 + H
    o_bx1 = o_wx1 + C * H
    o_wx2 = o_bx1 + C
    o_bx2 = o_wx2 + C * C
    o_wx3 = o_bx2 + C
    w_r = tl.load(w_ptr + offs_h)
    wx3 = tl.load(wx3_ptr + offs_c)
    for blk in range(pid, num_blocks, nprog):
        i0, e_start, e_end = _block_edges(rowptr_ptr, blk, n, BLOCK_N)
        acc_gb = tl.zeros((BLOCK_N, H), dtype=tl.float32)
        acc_x = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_y = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_z = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for e in range(e_start, e_end, BLOCK_E):
            offs, valid, src, dx, dy, dz, r2, r, z1, z2, m, p1, p2, gate, onehot = _chunk(
                e, e_end, i0, a_ptr, b_ptr, w_ptr, x_ptr, shift_ptr, src_ptr, dst_ptr,
                w2_ptr, b2_ptr, w3_ptr, b3_ptr, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, wx3_ptr,
                H, C, BLOCK_E, BLOCK_N, PREC,
            )
            dst = tl.load(dst_ptr + offs, mask=valid, other=0)
            inv = 1.0 / (r + eps)
            gdx_x = tl.load(gdx_ptr + dst * 3, mask=valid, other=0.0)
            gdx_y = tl.load(gdx_ptr + dst * 3 + 1, mask=valid, other=0.0)
            gdx_z = tl.load(gdx_ptr + dst * 3 + 2, mask=valid, other=0.0)
            g_gate = (gdx_x * dx + gdx_y * dy + gdx_z * dz) * inv
            gs = g_gate * (1.0 - gate * gate)
            # coordinate MLP
            _acc_vec(wg + o_wx3, tl.sum(gs[:, None] * p2, axis=0), C)
            g_p2 = tl.where(p2 > 0, gs[:, None] * wx3[None, :], 0.0)
            _acc_slice(wg + o_wx2, _mm(tl.trans(g_p2), p1, PREC), C, C)
            _acc_vec(wg + o_bx2, tl.sum(g_p2, axis=0), C)
            g_p1 = tl.where(p1 > 0, _mm(g_p2, _load_w(wx2_ptr, C, C), PREC), 0.0)
            _acc_slice(wg + o_wx1, _mm(tl.trans(g_p1), m, PREC), C, H)
            _acc_vec(wg + o_bx1, tl.sum(g_p1, axis=0), C)
            g_m = tl.load(gm_ptr + dst[:, None] * H + offs_h[None, :], mask=valid[:, None], other=0.0)
            g_m = tl.where(m > 0, g_m + _mm(g_p1, _load_w(wx1_ptr, C, H), PREC), 0.0)
            # edge MLP
            _acc_slice(wg + o_w3, _mm(tl.trans(g_m), z2, PREC), H, H)
            _acc_vec(wg + o_b3, tl.sum(g_m, axis=0), H)
            g_z2 = tl.where(z2 > 0, _mm(g_m, _load_w(w3_ptr, H, H), PREC), 0.0)
            _acc_slice(wg + o_w2, _mm(tl.trans(g_z2), z1, PREC), H, H)
            _acc_vec(wg + o_b2, tl.sum(g_z2, axis=0), H)
            g_z1 = tl.where(z1 > 0, _mm(g_z2, _load_w(w2_ptr, H, H), PREC), 0.0)
            h_src = tl.load(h_ptr + src[:, None] * F + offs_f[None, :], mask=valid[:, None], other=0.0)
            _acc_slice(wg, _mm(tl.trans(g_z1), h_src, PREC), H, F)
            _acc_vec(wg + o_w, tl.sum(g_z1 * r2[:, None], axis=0), H)
            acc_gb += tl.dot(onehot, g_z1, input_precision="ieee")
            ghe = _mm(g_z1, _load_w(w1a_ptr, H, F), PREC)
            tl.store(ghe_ptr + offs[:, None] * F + offs_f[None, :], ghe, mask=valid[:, None])
            # geometry: d(r2)/dd = 2d, du/dd = I/(r+eps) - d d^T / (r (r+eps)^2)
            g_r2 = tl.sum(g_z1 * w_r[None, :], axis=1)
            gu_x = gdx_x * gate
            gu_y = gdx_y * gate
            gu_z = gdx_z * gate
            if DETACH:
                radial = tl.zeros_like(r)
            else:
                radial = tl.where(r > 0, (gu_x * dx + gu_y * dy + gu_z * dz) * inv * inv / tl.where(r > 0, r, 1.0), 0.0)
            gd_x = 2.0 * dx * g_r2 + gu_x * inv - dx * radial
            gd_y = 2.0 * dy * g_r2 + gu_y * inv - dy * radial
            gd_z = 2.0 * dz * g_r2 + gu_z * inv - dz * radial
            tl.store(gde_ptr + offs * 4, gd_x, mask=valid)
            tl.store(gde_ptr + offs * 4 + 1, gd_y, mask=valid)
            tl.store(gde_ptr + offs * 4 + 2, gd_z, mask=valid)
            acc_x -= tl.sum(onehot * gd_x[None, :], axis=1)
            acc_y -= tl.sum(onehot * gd_y[None, :], axis=1)
            acc_z -= tl.sum(onehot * gd_z[None, :], axis=1)
        _store_block(gb_ptr, gx_ptr, i0 + rows, n, acc_gb, acc_x, acc_y, acc_z, H)


@triton.jit
def _sender_sum_kernel(
    ghe_ptr, gde_ptr, perm_ptr, sptr_ptr, gh_ptr, gx_ptr, F: tl.constexpr, BLOCK_E: tl.constexpr
):
    """gh[j] = sum of ghe over j's edges; gx[j] += sum of gde (CSR over senders, fixed order)."""
    j = tl.program_id(0)
    start = tl.load(sptr_ptr + j)
    end = tl.load(sptr_ptr + j + 1)
    offs_f = tl.arange(0, F)
    offs_4 = tl.arange(0, 4)
    acc_h = tl.zeros((F,), dtype=tl.float32)
    acc_x = tl.zeros((4,), dtype=tl.float32)
    for p in range(start, end, BLOCK_E):
        offs = p + tl.arange(0, BLOCK_E)
        valid = offs < end
        e = tl.load(perm_ptr + offs, mask=valid, other=0)
        acc_h += tl.sum(tl.load(ghe_ptr + e[:, None] * F + offs_f[None, :], mask=valid[:, None], other=0.0), axis=0)
        acc_x += tl.sum(tl.load(gde_ptr + e[:, None] * 4 + offs_4[None, :], mask=valid[:, None], other=0.0), axis=0)
    tl.store(gh_ptr + j * F + offs_f, acc_h)
    gx = tl.load(gx_ptr + j * 3 + offs_4, mask=offs_4 < 3, other=0.0)
    tl.store(gx_ptr + j * 3 + offs_4, gx + acc_x, mask=offs_4 < 3)


BLOCK_N = 16


def _block_e() -> int:
    return 16 if interpreting() else 32


def _num_programs(n: int, device: torch.device) -> int:
    blocks = triton.cdiv(max(n, 1), BLOCK_N)
    if device.type == "cuda":
        return min(blocks, 2 * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(blocks, 4)


def _check_widths(f: int, h: int, c: int) -> None:
    for name, v in (("node width F", f), ("edge width H", h), ("coordinate width C", c)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"backend 'triton' needs powers of two >= 16; {name} is {v}")


def _common(h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights) -> list[torch.Tensor]:
    """Kernel arguments shared by forward and backward (per-node products, geometry, weights)."""
    a, b, wr = split_first_layer(h, w.w1, w.b1)
    mats = [t.contiguous() for t in (w.w2, w.b2, w.w3, w.b3, w.wx1, w.bx1, w.wx2, w.bx2, w.wx3.reshape(-1))]
    return [a, b, wr, x, shift, graph.src, graph.dst, graph.rowptr, *mats]


def triton_edge_forward(
    h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights, eps: float, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused forward on Triton: (m [n, H], dx [n, 3]) in float32 (inputs float32, see
    :func:`alkernels.ops.message_passing.egnn_edge_op` for the shapes)."""
    n, hidden, coord = h.shape[0], w.w2.shape[0], w.wx1.shape[0]
    _check_widths(h.shape[1], hidden, coord)
    m = torch.empty(n, hidden, device=h.device, dtype=torch.float32)
    dx = torch.empty(n, 3, device=h.device, dtype=torch.float32)
    if n == 0:
        return m, dx
    grid = (_num_programs(n, h.device),)
    _edge_fwd_kernel[grid](
        *_common(h, x, shift, graph, w), m, dx, n, eps,
        H=hidden, C=coord, BLOCK_E=_block_e(), BLOCK_N=BLOCK_N, PREC=_prec(precision),
    )  # fmt: skip
    return m, dx


def triton_edge_backward(
    h: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    graph: EdgeGraph,
    w: EdgeWeights,
    eps: float,
    detach_norm: bool,
    gm: torch.Tensor,
    gdx: torch.Tensor,
    precision: str,
) -> tuple[torch.Tensor, ...]:
    """Fused backward on Triton from the upstream gradients gm [n, H] and gdx [n, 3].

    Returns the 14 tensors of the C++ kernel: gB [n, H] (receiver sums of the first-layer
    pre-activation gradient), gh [n, F] (sender part), gx [n, 3], gW1a [H, F], gw [H], gW2, gb2,
    gW3, gb3, gWx1, gbx1, gWx2, gbx2, gwx3 [C]."""
    n, f, hidden, coord = h.shape[0], h.shape[1], w.w2.shape[0], w.wx1.shape[0]
    _check_widths(f, hidden, coord)
    dev, e = h.device, graph.num_edges
    sizes = [hidden * f, hidden, hidden * hidden, hidden, hidden * hidden, hidden, coord * hidden, coord, coord * coord, coord, coord]
    wg_len = sum(sizes)
    progs = _num_programs(n, dev)
    wg = torch.zeros(progs, wg_len, device=dev, dtype=torch.float32)
    gb = torch.empty(n, hidden, device=dev, dtype=torch.float32)
    gx = torch.empty(n, 3, device=dev, dtype=torch.float32)
    gh = torch.empty(n, f, device=dev, dtype=torch.float32)
    if n > 0:
        ghe = torch.empty(e, f, device=dev, dtype=torch.float32)
        gde = torch.zeros(e, 4, device=dev, dtype=torch.float32)
        _edge_bwd_kernel[(progs,)](
            *_common(h, x, shift, graph, w), gm.contiguous(), gdx.contiguous(), h,
            w.w1[:, :f].contiguous(), gb, gx, ghe, gde, wg, n, eps,
            F=f, H=hidden, C=coord, WG=wg_len, DETACH=detach_norm, BLOCK_E=_block_e(),
            BLOCK_N=BLOCK_N, PREC=_prec(precision),
        )  # fmt: skip
        _sender_sum_kernel[(n,)](ghe, gde, graph.src_perm, graph.src_ptr, gh, gx, F=f, BLOCK_E=_block_e())
    parts = list(wg.sum(0).split(sizes))
    shapes = [(hidden, f), (hidden,), (hidden, hidden), (hidden,), (hidden, hidden), (hidden,), (coord, hidden), (coord,), (coord, coord), (coord,), (coord,)]
    gw1a, gwr, gw2, gb2, gw3, gb3, gwx1, gbx1, gwx2, gbx2, gwx3 = (p.reshape(s) for p, s in zip(parts, shapes))
    return gb, gh, gx, gw1a, gwr, gw2, gb2, gw3, gb3, gwx1, gbx1, gwx2, gbx2, gwx3
