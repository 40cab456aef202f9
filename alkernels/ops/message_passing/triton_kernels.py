"""Triton kernels of the fused EGNN edge op (GPU, or CPU under ``TRITON_INTERPRET=1``).

Layout: program ``p`` owns blocks of ``BLOCK_N`` consecutive receivers (persistent grid); it walks
their edges (sorted by receiver) in chunks of ``BLOCK_E``, computes the whole edge MLP and
coordinate MLP of a chunk on chip with ``tl.dot`` and reduces the chunk into its receivers with a
one-hot ``[BLOCK_N, BLOCK_E]`` matmul, so no atomics are used and results are deterministic.

Shaped for the register file: no ``[H, H]`` weight or weight-gradient tile is ever live. Each
hidden layer is processed in column chunks of ``KH`` (``KX`` for the coordinate MLP): the chunk
``z2[:, j]`` of the second layer is computed from ``z1`` and at once multiplied into the third
layer's accumulator, so a chunk of weights (``[H, KH]``, 32 registers per thread at H = 128,
KH = 32 and 4 warps) and a ``[BLOCK_E, KH]`` activation are the only transient tiles. Backward
walks the same chunks: it recomputes ``z2[:, j]`` (``p1[:, j]``), adds its weight-gradient tile
(``[H, KH]`` and ``[KH, H]``) to the program's slice and accumulates the gradient of the layer
below, so the live state is a handful of ``[BLOCK_E, H]`` tiles. ``python -m alkernels.ops.aot``
reports registers, local memory and tensor-core instructions of every configuration.

Backward recomputes the chunk's activations, then back-propagates through both MLPs. Receiver
sums (``gB``, the receiver part of ``gx``) use the same one-hot reduction; the sender parts are
written per edge (``[E, F]`` and ``[E, 4]``, much smaller than E x H) and gathered per sender
through the CSR over ``src`` by a second kernel; weight gradients accumulate in one slice per
program of a ``[P, ...]`` buffer that torch sums at the end.

Precision (``precision=`` of the launchers; every matmul accumulates in fp32, and the geometry,
distances, directions and tanh, is fp32 throughout):

* ``"fp32"``: fp32 results. On sm_80 and newer the matmuls run on tensor cores as 3xTF32 (each
  fp32 operand split into a TF32 high and low part, three TF32 products), which keeps fp32
  accuracy without the register cost of Triton's FMA matmul; below sm_80 and in the interpreter
  they are IEEE fp32 FMAs.
* ``"tf32"``: TF32 tensor-core inputs (sm_80+).
* ``"bf16"``: bfloat16 matmul inputs (sm_80+).

The one-hot receiver sums always keep fp32 accuracy (3xTF32 on sm_80+, IEEE otherwise). The
launchers refuse tf32 and bf16 below sm_80 before anything is compiled
(:func:`alkernels.ops.arch.check_device`).

The interpreter runs the same block sizes as a GPU (``BLOCK_E``, ``BLOCK_N``, ``KH``, ``KX``), so
the tests exercise the GPU configuration; only the matmul precision mapping differs (the
interpreter's ``tl.dot`` ignores input precision, and bf16 inputs are rounded explicitly
because its bfloat16 ``tl.dot`` is wrong).
"""
from __future__ import annotations

import torch

import triton
import triton.language as tl

from alkernels.ops.arch import KernelConfig, arch_of, check_device
from alkernels.ops.message_passing.graph import PRECISIONS, EdgeGraph, EdgeWeights, split_first_layer

#: Receivers per block, edges per chunk, and the column chunks of the hidden layers.
BLOCK_N = 16
BLOCK_E = 32
CHUNK = 32
#: Warps per program of the forward, backward and sender-reduction kernels.
FWD_WARPS = 4
BWD_WARPS = 8
SENDER_WARPS = 4
SENDER_BLOCK = 32


def matmul_modes(precision: str, device: torch.device) -> tuple[str, str]:
    """``(PREC, EXACT)`` constexprs of the kernels for ``precision`` on ``device``: the matmul
    input precision, and the one used for the fp32-accurate one-hot receiver sums."""
    if device.type != "cuda":  # the interpreter: plain fp32 matmuls, bf16 rounded explicitly
        return {"fp32": "ieee", "tf32": "tf32", "bf16": "bf16_emulated"}[precision], "ieee"
    if arch_of(device) >= 80:
        return {"fp32": "tf32x3", "tf32": "tf32", "bf16": "bf16"}[precision], "tf32x3"
    return "ieee", "ieee"


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
def _tile(ptr, R: tl.constexpr, K: tl.constexpr, RS: tl.constexpr, CS: tl.constexpr):
    """The [R, K] tile with element [r, k] at ``ptr[r * RS + k * CS]``."""
    r = tl.arange(0, R)
    k = tl.arange(0, K)
    return tl.load(ptr + r[:, None] * RS + k[None, :] * CS)


@triton.jit
def _acc_tile(ptr, value, R: tl.constexpr, K: tl.constexpr, RS: tl.constexpr):
    """ptr[r * RS + k] += value[r, k] (a tile of the program's weight-gradient slice)."""
    offs = tl.arange(0, R)[:, None] * RS + tl.arange(0, K)[None, :]
    tl.store(ptr + offs, tl.load(ptr + offs) + value)


@triton.jit
def _acc_vec(ptr, value, LEN: tl.constexpr):
    offs = tl.arange(0, LEN)
    tl.store(ptr + offs, tl.load(ptr + offs) + value)


@triton.jit
def _tanh(s):
    return 1.0 - 2.0 / (tl.exp(2.0 * s) + 1.0)


@triton.jit
def _geometry(e, e_end, x_ptr, shift_ptr, src_ptr, dst_ptr, BLOCK_E: tl.constexpr):
    """Edges e .. e+BLOCK_E-1 (masked past e_end): ids, validity, ends, d = x_j + s - x_i, r^2, r."""
    offs = e + tl.arange(0, BLOCK_E)
    valid = offs < e_end
    src = tl.load(src_ptr + offs, mask=valid, other=0)
    dst = tl.load(dst_ptr + offs, mask=valid, other=0)
    dx = tl.load(x_ptr + src * 3, mask=valid, other=0.0) + tl.load(shift_ptr + offs * 3, mask=valid, other=0.0) - tl.load(x_ptr + dst * 3, mask=valid, other=0.0)
    dy = tl.load(x_ptr + src * 3 + 1, mask=valid, other=0.0) + tl.load(shift_ptr + offs * 3 + 1, mask=valid, other=0.0) - tl.load(x_ptr + dst * 3 + 1, mask=valid, other=0.0)
    dz = tl.load(x_ptr + src * 3 + 2, mask=valid, other=0.0) + tl.load(shift_ptr + offs * 3 + 2, mask=valid, other=0.0) - tl.load(x_ptr + dst * 3 + 2, mask=valid, other=0.0)
    r2 = dx * dx + dy * dy + dz * dz
    return offs, valid, src, dst, dx, dy, dz, r2, tl.sqrt(r2)


@triton.jit
def _first_layer(src, dst, valid, r2, a_ptr, b_ptr, w_ptr, H: tl.constexpr):
    """z1 = relu(A[src] + B[dst] + w r^2), [BLOCK_E, H]."""
    offs_h = tl.arange(0, H)
    pre = (
        tl.load(a_ptr + src[:, None] * H + offs_h[None, :], mask=valid[:, None], other=0.0)
        + tl.load(b_ptr + dst[:, None] * H + offs_h[None, :], mask=valid[:, None], other=0.0)
        + tl.load(w_ptr + offs_h)[None, :] * r2[:, None]
    )
    return tl.maximum(pre, 0.0)


@triton.jit
def _two_layers(x, w_a, b_a, w_b, b_b, IN: tl.constexpr, MID: tl.constexpr, OUT: tl.constexpr,
                K: tl.constexpr, PREC: tl.constexpr):
    """relu(relu(x @ Wa^T + ba) @ Wb^T + bb) for x [BLOCK_E, IN], Wa [MID, IN], Wb [OUT, MID],
    over column chunks of K of the middle layer (one [IN, K] and one [K, OUT] weight tile live)."""
    acc = tl.zeros((x.shape[0], OUT), dtype=tl.float32)
    for j in range(MID // K):
        mid = tl.maximum(_mm(x, _tile(w_a + j * K * IN, IN, K, 1, IN), PREC)
                         + tl.load(b_a + j * K + tl.arange(0, K))[None, :], 0.0)
        acc += _mm(mid, _tile(w_b + j * K, K, OUT, 1, MID), PREC)
    return tl.maximum(acc + tl.load(b_b + tl.arange(0, OUT))[None, :], 0.0)


@triton.jit
def _block_edges(rowptr_ptr, blk, n, BLOCK_N: tl.constexpr):
    """First receiver of block ``blk`` and the edge range of its BLOCK_N receivers."""
    i0 = blk * BLOCK_N
    return i0, tl.load(rowptr_ptr + i0), tl.load(rowptr_ptr + tl.minimum(i0 + BLOCK_N, n))


@triton.jit
def _onehot(dst, valid, i0, BLOCK_N: tl.constexpr):
    """[BLOCK_N, BLOCK_E] float: which of the block's receivers each edge belongs to."""
    return (((dst - i0)[None, :] == tl.arange(0, BLOCK_N)[:, None]) & valid[None, :]).to(tl.float32)


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
    KH: tl.constexpr, KX: tl.constexpr, PREC: tl.constexpr, EXACT: tl.constexpr,
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
            offs, valid, src, dst, dx, dy, dz, r2, r = _geometry(e, e_end, x_ptr, shift_ptr, src_ptr, dst_ptr, BLOCK_E)
            z1 = _first_layer(src, dst, valid, r2, a_ptr, b_ptr, w_ptr, H)
            m = _two_layers(z1, w2_ptr, b2_ptr, w3_ptr, b3_ptr, H, H, H, KH, PREC)
            p2 = _two_layers(m, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, H, C, C, KX, PREC)
            gate = _tanh(tl.sum(p2 * tl.load(wx3_ptr + tl.arange(0, C))[None, :], axis=1))
            onehot = _onehot(dst, valid, i0, BLOCK_N)
            acc_m += tl.dot(onehot, m, input_precision=EXACT)
            scale = gate / (r + eps)
            acc_x += tl.sum(onehot * (dx * scale)[None, :], axis=1)
            acc_y += tl.sum(onehot * (dy * scale)[None, :], axis=1)
            acc_z += tl.sum(onehot * (dz * scale)[None, :], axis=1)
        _store_block(m_ptr, dxo_ptr, i0 + rows, n, acc_m, acc_x, acc_y, acc_z, H)


@triton.jit
def _edge_bwd_kernel(
    a_ptr, b_ptr, w_ptr, x_ptr, shift_ptr, src_ptr, dst_ptr, rowptr_ptr,
    w2_ptr, b2_ptr, w3_ptr, b3_ptr, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, wx3_ptr,
    gm_ptr, gdx_ptr, h_ptr, w1a_ptr, gb_ptr, gx_ptr, ghe_ptr, gde_ptr, wg_ptr, n, eps,
    F: tl.constexpr, H: tl.constexpr, C: tl.constexpr, WG: tl.constexpr, DETACH: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, KH: tl.constexpr, KX: tl.constexpr,
    PREC: tl.constexpr, EXACT: tl.constexpr,
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
    for blk in range(pid, num_blocks, nprog):
        i0, e_start, e_end = _block_edges(rowptr_ptr, blk, n, BLOCK_N)
        acc_gb = tl.zeros((BLOCK_N, H), dtype=tl.float32)
        acc_x = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_y = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc_z = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for e in range(e_start, e_end, BLOCK_E):
            offs, valid, src, dst, dx, dy, dz, r2, r = _geometry(e, e_end, x_ptr, shift_ptr, src_ptr, dst_ptr, BLOCK_E)
            z1 = _first_layer(src, dst, valid, r2, a_ptr, b_ptr, w_ptr, H)
            m = _two_layers(z1, w2_ptr, b2_ptr, w3_ptr, b3_ptr, H, H, H, KH, PREC)
            p2 = _two_layers(m, wx1_ptr, bx1_ptr, wx2_ptr, bx2_ptr, H, C, C, KX, PREC)
            wx3 = tl.load(wx3_ptr + offs_c)
            gate = _tanh(tl.sum(p2 * wx3[None, :], axis=1))
            inv = 1.0 / (r + eps)
            gdx_x = tl.load(gdx_ptr + dst * 3, mask=valid, other=0.0)
            gdx_y = tl.load(gdx_ptr + dst * 3 + 1, mask=valid, other=0.0)
            gdx_z = tl.load(gdx_ptr + dst * 3 + 2, mask=valid, other=0.0)
            gs = (gdx_x * dx + gdx_y * dy + gdx_z * dz) * inv * (1.0 - gate * gate)
            # coordinate MLP, over column chunks j of its hidden layer p1
            _acc_vec(wg + o_wx3, tl.sum(gs[:, None] * p2, axis=0), C)
            g_p2 = tl.where(p2 > 0, gs[:, None] * wx3[None, :], 0.0)
            _acc_vec(wg + o_bx2, tl.sum(g_p2, axis=0), C)
            g_m = tl.zeros((BLOCK_E, H), dtype=tl.float32)
            for j in range(C // KX):
                p1 = tl.maximum(_mm(m, _tile(wx1_ptr + j * KX * H, H, KX, 1, H), PREC)
                                + tl.load(bx1_ptr + j * KX + tl.arange(0, KX))[None, :], 0.0)
                _acc_tile(wg + o_wx2 + j * KX, _mm(tl.trans(g_p2), p1, PREC), C, KX, C)
                g_p1 = tl.where(p1 > 0, _mm(g_p2, _tile(wx2_ptr + j * KX, C, KX, C, 1), PREC), 0.0)
                _acc_vec(wg + o_bx1 + j * KX, tl.sum(g_p1, axis=0), KX)
                _acc_tile(wg + o_wx1 + j * KX * H, _mm(tl.trans(g_p1), m, PREC), KX, H, H)
                g_m += _mm(g_p1, _tile(wx1_ptr + j * KX * H, KX, H, H, 1), PREC)
            g_m += tl.load(gm_ptr + dst[:, None] * H + offs_h[None, :], mask=valid[:, None], other=0.0)
            g_m = tl.where(m > 0, g_m, 0.0)
            # edge MLP layers 3 and 2, over column chunks j of the hidden layer z2
            _acc_vec(wg + o_b3, tl.sum(g_m, axis=0), H)
            g_z1 = tl.zeros((BLOCK_E, H), dtype=tl.float32)
            for j in range(H // KH):
                z2 = tl.maximum(_mm(z1, _tile(w2_ptr + j * KH * H, H, KH, 1, H), PREC)
                                + tl.load(b2_ptr + j * KH + tl.arange(0, KH))[None, :], 0.0)
                _acc_tile(wg + o_w3 + j * KH, _mm(tl.trans(g_m), z2, PREC), H, KH, H)
                g_z2 = tl.where(z2 > 0, _mm(g_m, _tile(w3_ptr + j * KH, H, KH, H, 1), PREC), 0.0)
                _acc_vec(wg + o_b2 + j * KH, tl.sum(g_z2, axis=0), KH)
                _acc_tile(wg + o_w2 + j * KH * H, _mm(tl.trans(g_z2), z1, PREC), KH, H, H)
                g_z1 += _mm(g_z2, _tile(w2_ptr + j * KH * H, KH, H, H, 1), PREC)
            g_z1 = tl.where(z1 > 0, g_z1, 0.0)
            # first layer: per-node split A[src] + B[dst] + w r^2
            h_src = tl.load(h_ptr + src[:, None] * F + offs_f[None, :], mask=valid[:, None], other=0.0)
            _acc_tile(wg, _mm(tl.trans(g_z1), h_src, PREC), H, F, F)
            _acc_vec(wg + o_w, tl.sum(g_z1 * r2[:, None], axis=0), H)
            onehot = _onehot(dst, valid, i0, BLOCK_N)
            acc_gb += tl.dot(onehot, g_z1, input_precision=EXACT)
            ghe = _mm(g_z1, _tile(w1a_ptr, H, F, F, 1), PREC)
            tl.store(ghe_ptr + offs[:, None] * F + offs_f[None, :], ghe, mask=valid[:, None])
            # geometry: d(r2)/dd = 2d, du/dd = I/(r+eps) - d d^T / (r (r+eps)^2)
            g_r2 = tl.sum(g_z1 * tl.load(w_ptr + offs_h)[None, :], axis=1)
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


def _wg_len(f: int, h: int, c: int) -> int:
    """Floats in one program's weight-gradient slice."""
    return h * f + h + 2 * (h * h + h) + c * h + c + c * c + c + c


def _num_programs(n: int, device: torch.device) -> int:
    blocks = triton.cdiv(max(n, 1), BLOCK_N)
    if device.type == "cuda":
        return min(blocks, 2 * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(blocks, 4)


def _check_widths(f: int, h: int, c: int) -> None:
    for name, v in (("node width F", f), ("edge width H", h), ("coordinate width C", c)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"backend 'triton' needs powers of two >= 16; {name} is {v}")


def _features(precision: str) -> tuple[str, ...]:
    return (precision,) if precision in ("tf32", "bf16") else ()


def _constexprs(precision: str, device: torch.device, h: int, c: int) -> dict:
    """Block sizes and precision modes shared by forward and backward."""
    check_device(_features(precision), device, f"egnn_edge_op precision={precision!r} on backend 'triton'")
    prec, exact = matmul_modes(precision, device)
    return {"H": h, "C": c, "BLOCK_E": BLOCK_E, "BLOCK_N": BLOCK_N, "KH": min(CHUNK, h), "KX": min(CHUNK, c),
            "PREC": prec, "EXACT": exact}  # fmt: skip


def _common(h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights) -> list[torch.Tensor]:
    """Kernel arguments shared by forward and backward (per-node products, geometry, weights)."""
    a, b, wr = split_first_layer(h, w.w1, w.b1)
    mats = [t.contiguous() for t in (w.w2, w.b2, w.w3, w.b3, w.wx1, w.bx1, w.wx2, w.bx2, w.wx3.reshape(-1))]
    return [a, b, wr, x, shift, graph.src, graph.dst, graph.rowptr, *mats]


def triton_edge_forward(
    h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights, eps: float, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused forward on Triton: (m [n, H], dx [n, 3]) in float32 (inputs float32, see
    :func:`alkernels.ops.message_passing.egnn_edge_op` for the shapes).

    Raises:
        ValueError: widths that are not powers of two >= 16, or tf32/bf16 below sm_80.
    """
    n, hidden, coord = h.shape[0], w.w2.shape[0], w.wx1.shape[0]
    _check_widths(h.shape[1], hidden, coord)
    meta = _constexprs(precision, h.device, hidden, coord)
    m = torch.empty(n, hidden, device=h.device, dtype=torch.float32)
    dx = torch.empty(n, 3, device=h.device, dtype=torch.float32)
    if n == 0:
        return m, dx
    grid = (_num_programs(n, h.device),)
    _edge_fwd_kernel[grid](*_common(h, x, shift, graph, w), m, dx, n, eps, **meta, num_warps=FWD_WARPS, num_stages=1)
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
    meta = _constexprs(precision, h.device, hidden, coord)
    dev, e = h.device, graph.num_edges
    sizes = [hidden * f, hidden, hidden * hidden, hidden, hidden * hidden, hidden, coord * hidden, coord, coord * coord, coord, coord]
    wg_len = _wg_len(f, hidden, coord)
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
            F=f, WG=wg_len, DETACH=detach_norm, **meta, num_warps=BWD_WARPS, num_stages=1,
        )  # fmt: skip
        _sender_sum_kernel[(n,)](ghe, gde, graph.src_perm, graph.src_ptr, gh, gx, F=f, BLOCK_E=SENDER_BLOCK,
                                 num_warps=SENDER_WARPS, num_stages=1)  # fmt: skip
    parts = list(wg.sum(0).split(sizes))
    shapes = [(hidden, f), (hidden,), (hidden, hidden), (hidden,), (hidden, hidden), (hidden,), (coord, hidden), (coord,), (coord, coord), (coord,), (coord,)]
    gw1a, gwr, gw2, gb2, gw3, gb3, gwx1, gbx1, gwx2, gbx2, gwx3 = (p.reshape(s) for p, s in zip(parts, shapes))
    return gb, gh, gx, gw1a, gwr, gw2, gb2, gw3, gb3, gwx1, gbx1, gwx2, gbx2, gwx3


#: Node, edge and coordinate widths the AOT check compiles: the paper's model (docs/model.md).
PAPER_WIDTHS = {"F": 32, "H": 128, "C": 64}
_INT_PTRS = ("src_ptr", "dst_ptr", "rowptr_ptr", "perm_ptr", "sptr_ptr")
#: GPU modes of each precision: (label, PREC, EXACT, from arch, below arch), as matmul_modes.
_GPU_MODES = {
    "fp32": [("3xTF32", "tf32x3", "tf32x3", 80, None), ("IEEE", "ieee", "ieee", 0, 80)],
    "tf32": [("TF32", "tf32", "tf32x3", 80, None)],
    "bf16": [("BF16", "bf16", "tf32x3", 80, None)],
}


def _signature(fn, constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*i64" if name in _INT_PTRS else "*fp32"
        else:
            sig[name] = "fp32" if name == "eps" else "i32"
    return sig


def aot_configs() -> list[KernelConfig]:
    """Every configuration the launchers choose on a GPU for the paper's widths: forward and
    backward (with and without ``detach_norm``) in each precision and its GPU mode, and the sender
    reduction. The widths are model hyper-parameters; the block sizes are the launchers'."""
    f, h, c = PAPER_WIDTHS["F"], PAPER_WIDTHS["H"], PAPER_WIDTHS["C"]
    aligned = ("a_ptr", "b_ptr", "w_ptr", "x_ptr", "src_ptr", "dst_ptr", "rowptr_ptr", "m_ptr", "dxo_ptr")
    configs = []
    for precision in PRECISIONS:
        for mode, prec, exact, lo, below in _GPU_MODES[precision]:
            meta = {"H": h, "C": c, "BLOCK_E": BLOCK_E, "BLOCK_N": BLOCK_N, "KH": min(CHUNK, h),
                    "KX": min(CHUNK, c), "PREC": prec, "EXACT": exact}  # fmt: skip
            common = dict(family="message_passing", features=_features(precision), tensor_cores=prec != "ieee",
                          from_arch=lo, below_arch=below)  # fmt: skip
            label = f"{precision} ({mode}) F={f} H={h} C={c}"
            configs.append(KernelConfig(
                kernel="_edge_fwd_kernel", label=label, fn=_edge_fwd_kernel,
                signature=_signature(_edge_fwd_kernel, meta), constexprs=meta, num_warps=FWD_WARPS,
                aligned=tuple(a for a in aligned if a in _edge_fwd_kernel.arg_names), **common,
            ))  # fmt: skip
            for detach in (False, True):
                bwd = {"F": f, "WG": _wg_len(f, h, c), "DETACH": detach, **meta}
                configs.append(KernelConfig(
                    kernel="_edge_bwd_kernel", label=f"{label} detach={detach}", fn=_edge_bwd_kernel,
                    signature=_signature(_edge_bwd_kernel, bwd), constexprs=bwd, num_warps=BWD_WARPS,
                    aligned=tuple(a for a in aligned if a in _edge_bwd_kernel.arg_names), **common,
                ))  # fmt: skip
    snd = {"F": f, "BLOCK_E": SENDER_BLOCK}
    configs.append(KernelConfig(
        family="message_passing", kernel="_sender_sum_kernel", label=f"F={f}", fn=_sender_sum_kernel,
        signature=_signature(_sender_sum_kernel, snd), constexprs=snd, num_warps=SENDER_WARPS,
    ))  # fmt: skip
    return configs
