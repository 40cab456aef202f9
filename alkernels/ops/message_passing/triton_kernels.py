"""Triton kernels of the fused EGNN edge op (GPU, or CPU under ``TRITON_INTERPRET=1``).

Layout: program ``p`` owns blocks of ``BLOCK_N`` consecutive receivers (persistent grid); it walks
their edges (sorted by receiver) in chunks of ``BLOCK_E`` and computes the edge MLP and the
coordinate MLP of a chunk with ``tl.dot``. Receiver sums use a one-hot ``[BLOCK_N, BLOCK_E]``
matmul into the block's own output rows, so no atomics are used and results are deterministic.

Shaped for the register file: every matmul is a ``[BLOCK_E, K] @ [K, K]`` tile product (``K`` =
32 at the paper's widths). Triton keeps both operands of a ``tl.dot`` in registers, so one
``[32, 128] @ [128, 128]`` product needs hundreds of registers per thread (what the first
version of these kernels did: 255 registers and kilobytes of local memory). Here a layer's input
is instead written once to a scratch buffer, read back in ``[BLOCK_E, K]`` column tiles (from L1)
and multiplied by ``[K, K]`` weight tiles, accumulating one ``[BLOCK_E, K]`` output tile at a
time; a barrier orders the layers. Live state is a few ``[BLOCK_E, K]`` tiles: no spills, and
every product runs on tensor cores in tf32/bf16 (``python -m alkernels.ops.aot`` reports
registers, local memory and HMMA counts per configuration).

Forward: the scratch is ``BLOCK_E`` rows per program, so memory stays O(programs) and nothing per
edge is saved for backward. Backward recomputes the activations into per-EDGE buffers (``[E, H]``
and ``[E, C]``, allocated for the duration of one backward call), back-propagates through both
MLPs into per-edge gradient buffers, and leaves the weight gradients to torch: each is one
``G^T @ X`` GEMM over all edges (cuBLAS on a GPU), deterministic, instead of read-modify-writes
of per-program slices. The sender parts of ``gh`` and ``gx`` are gathered per sender through the
CSR over ``src`` by a second kernel.

Precision (``precision=`` of the launchers; every matmul accumulates in fp32, and the geometry,
distances, directions and tanh, is fp32 throughout):

* ``"fp32"``: fp32 results. On sm_80 and newer the matmuls run on tensor cores as 3xTF32 (each
  fp32 operand split into a TF32 high and low part, three TF32 products), about as accurate as
  fp32 FMAs; below sm_80 and in the interpreter they are IEEE fp32.
* ``"tf32"``: TF32 tensor-core inputs (sm_80+).
* ``"bf16"``: bfloat16 matmul inputs (sm_80+); the weight-gradient GEMMs take bf16 inputs too.

The one-hot receiver sums keep fp32 accuracy in every mode (3xTF32 on sm_80+, IEEE otherwise).
The launchers refuse tf32 and bf16 below sm_80 before anything is compiled
(:func:`alkernels.ops.arch.check_device`).

The interpreter runs the same block sizes as a GPU (``BLOCK_E``, ``BLOCK_N``, ``K``), so the tests
exercise the GPU configuration; only the matmul precision mapping differs (the interpreter's
``tl.dot`` ignores input precision, and bf16 inputs are rounded explicitly because its bfloat16
``tl.dot`` is wrong).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alkernels.ops.arch import KernelConfig, arch_of, check_device
from alkernels.ops.message_passing.graph import (
    EdgeGrads,
    EdgeGraph,
    EdgeWeights,
    KernelGrads,
    assemble_grads,
    split_first_layer,
)

#: Receivers per block, edges per chunk, and the largest matmul tile width.
BLOCK_N = 16
BLOCK_E = 32
CHUNK = 32
#: Warps per program of the forward, backward and sender-reduction kernels.
FWD_WARPS = 8
ACT_WARPS = 8
#: Backward warps per precision (``"fp64"``: float64 inputs) as (from arch, below arch, warps):
#: ptxas spills a few bytes in bf16 with 8 warps on sm_90 and with 4 on sm_80, and in float64
#: with 8 warps on sm_80 (see ``python -m alkernels.ops.aot``).
BWD_WARPS: dict[str, list[tuple[int, int | None, int]]] = {
    "fp32": [(0, None, 8)],
    "tf32": [(0, None, 8)],
    "bf16": [(0, 90, 8), (90, None, 4)],
    "fp64": [(0, None, 4)],
}


def bwd_warps(precision: str, device: torch.device, dtype: torch.dtype = torch.float32) -> int:
    """Warps of the backward kernel for ``precision`` and ``dtype`` on ``device`` (from
    :data:`BWD_WARPS`)."""
    arch = arch_of(device) if device.type == "cuda" else 0
    key = "fp64" if dtype == torch.float64 else precision
    return next(w for lo, below, w in BWD_WARPS[key] if lo <= arch and (below is None or arch < below))


SENDER_WARPS = 4
SENDER_BLOCK = 32
#: Columns of the backward's per-edge ``aux`` rows (AUX_WIDTH floats, 32 bytes in float32): r^2,
#: the gradient of the coordinate MLP's output (gs), the displacement d (3 columns) and the gate.
AUX_WIDTH, AUX_R2, AUX_GS, AUX_D, AUX_GATE = 8, 0, 1, 2, 5
_AUX_WIDTH, _AUX_R2, _AUX_GS, _AUX_D, _AUX_GATE = (
    tl.constexpr(v) for v in (AUX_WIDTH, AUX_R2, AUX_GS, AUX_D, AUX_GATE)
)


#: GPU modes of each precision: (label, PREC, EXACT, from arch, below arch), where PREC is the
#: matmul input precision and EXACT the one of the fp32-accurate one-hot receiver sums. The
#: launchers pick by the GPU's arch (:func:`matmul_modes`) and the AOT check compiles each entry.
_GPU_MODES: dict[str, list[tuple[str, str, str, int, int | None]]] = {
    "fp32": [("3xTF32", "tf32x3", "tf32x3", 80, None), ("IEEE", "ieee", "ieee", 0, 80)],
    "tf32": [("TF32", "tf32", "tf32x3", 80, None)],
    "bf16": [("BF16", "bf16", "tf32x3", 80, None)],
}
#: The interpreter's modes: plain fp32 matmuls, bf16 inputs rounded explicitly.
_INTERPRETER_MODES = {"fp32": "ieee", "tf32": "tf32", "bf16": "bf16_emulated"}


def matmul_modes(precision: str, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[str, str]:
    """``(PREC, EXACT)`` constexprs of the kernels for ``precision`` on ``device`` (see
    :data:`_GPU_MODES`); float64 inputs always multiply in IEEE float64. tf32 and bf16 below
    sm_80 are refused before this by :func:`alkernels.ops.arch.check_device`."""
    if dtype == torch.float64:
        return "ieee", "ieee"
    if device.type != "cuda":
        return _INTERPRETER_MODES[precision], "ieee"
    arch = arch_of(device)
    return next(
        (prec, exact)
        for _, prec, exact, lo, below in _GPU_MODES[precision]
        if lo <= arch and (below is None or arch < below)
    )


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
def _tile(ptr, R: tl.constexpr, K: tl.constexpr, RS, CS):
    """The [R, K] tile with element [r, k] at ``ptr[r * RS + k * CS]``."""
    return tl.load(ptr + tl.arange(0, R)[:, None] * RS + tl.arange(0, K)[None, :] * CS)


@triton.jit
def _load_cols(base, LD: tl.constexpr, j0, valid, K: tl.constexpr):
    """Columns j0 .. j0+K-1 of the row-major [BLOCK_E, LD] buffer at ``base`` (0 past ``valid``)."""
    r = tl.arange(0, valid.shape[0])
    return tl.load(base + r[:, None] * LD + j0 + tl.arange(0, K)[None, :], mask=valid[:, None], other=0.0)


@triton.jit
def _store_cols(base, LD: tl.constexpr, j0, tile, valid, K: tl.constexpr):
    r = tl.arange(0, valid.shape[0])
    tl.store(base + r[:, None] * LD + j0 + tl.arange(0, K)[None, :], tile, mask=valid[:, None])


@triton.jit
def _linear_relu(
    in_base, IN: tl.constexpr, w_ptr, b_ptr, OUT: tl.constexpr, out_base, valid, K: tl.constexpr, PREC: tl.constexpr
):
    """out = relu(in @ W^T + b) for the [BLOCK_E, IN] rows at ``in_base``, W [OUT, IN] row-major,
    one [BLOCK_E, K] output tile at a time; ends with a barrier (out is read by other threads)."""
    for j in range(OUT // K):
        acc = tl.zeros((valid.shape[0], K), dtype=out_base.dtype.element_ty)
        for k in range(IN // K):
            w = _tile(w_ptr + j * K * IN + k * K, K, K, 1, IN)  # [kk, jj] = W[j K + jj, k K + kk]
            acc += _mm(_load_cols(in_base, IN, k * K, valid, K), w, PREC)
        acc = tl.maximum(acc + tl.load(b_ptr + j * K + tl.arange(0, K))[None, :], 0.0)
        _store_cols(out_base, OUT, j * K, acc, valid, K)
    tl.debug_barrier()


@triton.jit
def _linear_relu_bwd(
    gout_base,
    OUT: tl.constexpr,
    w_ptr,
    IN: tl.constexpr,
    in_base,
    gin_base,
    valid,
    extra_ptr,
    rows,
    HAS_EXTRA: tl.constexpr,
    K: tl.constexpr,
    PREC: tl.constexpr,
):
    """gin = (gout @ W [+ extra_ptr[rows]]) where in > 0, the gradient through ``relu(in)`` feeding
    a Linear with weight W [OUT, IN]; one [BLOCK_E, K] tile at a time; ends with a barrier."""
    for k in range(IN // K):
        acc = tl.zeros((valid.shape[0], K), dtype=gin_base.dtype.element_ty)
        for j in range(OUT // K):
            w = _tile(w_ptr + j * K * IN + k * K, K, K, IN, 1)  # [jj, kk] = W[j K + jj, k K + kk]
            acc += _mm(_load_cols(gout_base, OUT, j * K, valid, K), w, PREC)
        if HAS_EXTRA:
            acc += tl.load(
                extra_ptr + rows[:, None] * IN + k * K + tl.arange(0, K)[None, :], mask=valid[:, None], other=0.0
            )
        acc = tl.where(_load_cols(in_base, IN, k * K, valid, K) > 0, acc, 0.0)
        _store_cols(gin_base, IN, k * K, acc, valid, K)
    tl.debug_barrier()


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
    dx = (
        tl.load(x_ptr + src * 3, mask=valid, other=0.0)
        + tl.load(shift_ptr + offs * 3, mask=valid, other=0.0)
        - tl.load(x_ptr + dst * 3, mask=valid, other=0.0)
    )
    dy = (
        tl.load(x_ptr + src * 3 + 1, mask=valid, other=0.0)
        + tl.load(shift_ptr + offs * 3 + 1, mask=valid, other=0.0)
        - tl.load(x_ptr + dst * 3 + 1, mask=valid, other=0.0)
    )
    dz = (
        tl.load(x_ptr + src * 3 + 2, mask=valid, other=0.0)
        + tl.load(shift_ptr + offs * 3 + 2, mask=valid, other=0.0)
        - tl.load(x_ptr + dst * 3 + 2, mask=valid, other=0.0)
    )
    r2 = dx * dx + dy * dy + dz * dz
    return offs, valid, src, dst, dx, dy, dz, r2, tl.sqrt(r2)


@triton.jit
def _activations(
    valid,
    src,
    dst,
    r2,
    a_ptr,
    b_ptr,
    w_ptr,
    w2_ptr,
    b2_ptr,
    w3_ptr,
    b3_ptr,
    wx1_ptr,
    bx1_ptr,
    wx2_ptr,
    bx2_ptr,
    wx3_ptr,
    z1_s,
    z2_s,
    m_s,
    p1_s,
    p2_s,
    H: tl.constexpr,
    C: tl.constexpr,
    K: tl.constexpr,
    PREC: tl.constexpr,
):
    """Both MLPs of one edge chunk into the scratch rows z1_s, z2_s, m_s [BLOCK_E, H] and
    p1_s, p2_s [BLOCK_E, C]; returns the coordinate gate tanh(phi_x(m)) [BLOCK_E]."""
    for j in range(H // K):  # z1 = relu(A[src] + B[dst] + w r^2), the per-node split first layer
        cols = j * K + tl.arange(0, K)
        pre = (
            tl.load(a_ptr + src[:, None] * H + cols[None, :], mask=valid[:, None], other=0.0)
            + tl.load(b_ptr + dst[:, None] * H + cols[None, :], mask=valid[:, None], other=0.0)
            + tl.load(w_ptr + cols)[None, :] * r2[:, None]
        )
        _store_cols(z1_s, H, j * K, tl.maximum(pre, 0.0), valid, K)
    tl.debug_barrier()
    _linear_relu(z1_s, H, w2_ptr, b2_ptr, H, z2_s, valid, K, PREC)
    _linear_relu(z2_s, H, w3_ptr, b3_ptr, H, m_s, valid, K, PREC)
    _linear_relu(m_s, H, wx1_ptr, bx1_ptr, C, p1_s, valid, K, PREC)
    _linear_relu(p1_s, C, wx2_ptr, bx2_ptr, C, p2_s, valid, K, PREC)
    s = tl.zeros((valid.shape[0],), dtype=p2_s.dtype.element_ty)
    for j in range(C // K):
        s += tl.sum(_load_cols(p2_s, C, j * K, valid, K) * tl.load(wx3_ptr + j * K + tl.arange(0, K))[None, :], axis=1)
    return _tanh(s)


@triton.jit
def _block_edges(rowptr_ptr, blk, n, BLOCK_N: tl.constexpr):
    """First receiver of block ``blk`` and the edge range of its BLOCK_N receivers."""
    i0 = blk * BLOCK_N
    return i0, tl.load(rowptr_ptr + i0), tl.load(rowptr_ptr + tl.minimum(i0 + BLOCK_N, n))


@triton.jit
def _onehot(dst, valid, i0, BLOCK_N: tl.constexpr, DT: tl.constexpr):
    """[BLOCK_N, BLOCK_E] of dtype DT: which of the block's receivers each edge belongs to."""
    return (((dst - i0)[None, :] == tl.arange(0, BLOCK_N)[:, None]) & valid[None, :]).to(DT)


@triton.jit
def _reduce_rows(out_ptr, node, n, onehot, src_base, valid, H: tl.constexpr, K: tl.constexpr, EXACT: tl.constexpr):
    """out[node, :] += onehot @ src (the [BLOCK_E, H] scratch rows), one column tile at a time;
    the block's receiver rows belong to this program alone."""
    ok = (node < n)[:, None]
    for j in range(H // K):
        ptrs = out_ptr + node[:, None] * H + j * K + tl.arange(0, K)[None, :]
        part = tl.dot(onehot, _load_cols(src_base, H, j * K, valid, K), input_precision=EXACT)
        tl.store(ptrs, tl.load(ptrs, mask=ok, other=0.0) + part, mask=ok)


@triton.jit
def _store_vec(vec_ptr, node, n, acc_x, acc_y, acc_z):
    """vec_ptr[node, :3] = (acc_x, acc_y, acc_z) for node < n."""
    ok = node < n
    tl.store(vec_ptr + node * 3, acc_x, mask=ok)
    tl.store(vec_ptr + node * 3 + 1, acc_y, mask=ok)
    tl.store(vec_ptr + node * 3 + 2, acc_z, mask=ok)


@triton.jit
def _edge_fwd_kernel(
    a_ptr,
    b_ptr,
    w_ptr,
    x_ptr,
    shift_ptr,
    src_ptr,
    dst_ptr,
    rowptr_ptr,
    w2_ptr,
    b2_ptr,
    w3_ptr,
    b3_ptr,
    wx1_ptr,
    bx1_ptr,
    wx2_ptr,
    bx2_ptr,
    wx3_ptr,
    m_ptr,
    dxo_ptr,
    scratch_ptr,
    n,
    eps,
    H: tl.constexpr,
    C: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
    K: tl.constexpr,
    PREC: tl.constexpr,
    EXACT: tl.constexpr,
):
    """m [n, H] (zero on entry) += receiver sums of phi_e; dx [n, 3] = sums of u tanh(phi_x)."""
    DT: tl.constexpr = m_ptr.dtype.element_ty
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    num_blocks = tl.cdiv(n, BLOCK_N)
    rows = tl.arange(0, BLOCK_N)
    # this program's scratch rows: z1, z2, m [BLOCK_E, H] and p1, p2 [BLOCK_E, C]
    z1_s = scratch_ptr + pid * BLOCK_E * (3 * H + 2 * C)
    z2_s = z1_s + BLOCK_E * H
    m_s = z2_s + BLOCK_E * H
    p1_s = m_s + BLOCK_E * H
    p2_s = p1_s + BLOCK_E * C
    for blk in range(pid, num_blocks, nprog):
        i0, e_start, e_end = _block_edges(rowptr_ptr, blk, n, BLOCK_N)
        acc_x = tl.zeros((BLOCK_N,), dtype=DT)
        acc_y = tl.zeros((BLOCK_N,), dtype=DT)
        acc_z = tl.zeros((BLOCK_N,), dtype=DT)
        for e in range(e_start, e_end, BLOCK_E):
            offs, valid, src, dst, dx, dy, dz, r2, r = _geometry(e, e_end, x_ptr, shift_ptr, src_ptr, dst_ptr, BLOCK_E)
            gate = _activations(
                valid,
                src,
                dst,
                r2,
                a_ptr,
                b_ptr,
                w_ptr,
                w2_ptr,
                b2_ptr,
                w3_ptr,
                b3_ptr,
                wx1_ptr,
                bx1_ptr,
                wx2_ptr,
                bx2_ptr,
                wx3_ptr,
                z1_s,
                z2_s,
                m_s,
                p1_s,
                p2_s,
                H,
                C,
                K,
                PREC,
            )
            onehot = _onehot(dst, valid, i0, BLOCK_N, DT)
            _reduce_rows(m_ptr, i0 + rows, n, onehot, m_s, valid, H, K, EXACT)
            scale = gate / (r + eps)
            acc_x += tl.sum(onehot * (dx * scale)[None, :], axis=1)
            acc_y += tl.sum(onehot * (dy * scale)[None, :], axis=1)
            acc_z += tl.sum(onehot * (dz * scale)[None, :], axis=1)
            tl.debug_barrier()  # the next chunk overwrites the scratch rows
        _store_vec(dxo_ptr, i0 + rows, n, acc_x, acc_y, acc_z)


@triton.jit
def _edge_act_kernel(
    a_ptr,
    b_ptr,
    w_ptr,
    x_ptr,
    shift_ptr,
    src_ptr,
    dst_ptr,
    w2_ptr,
    b2_ptr,
    w3_ptr,
    b3_ptr,
    wx1_ptr,
    bx1_ptr,
    wx2_ptr,
    bx2_ptr,
    wx3_ptr,
    gdx_ptr,
    aux_ptr,
    z1_ptr,
    z2_ptr,
    m_ptr,
    p1_ptr,
    p2_ptr,
    num_edges,
    eps,
    H: tl.constexpr,
    C: tl.constexpr,
    BLOCK_E: tl.constexpr,
    K: tl.constexpr,
    PREC: tl.constexpr,
):
    """Backward, part 1: every edge's activations z1, z2, m [E, H] and p1, p2 [E, C] (recomputed
    as in forward) and aux [E, AUX_WIDTH] = (r^2, d loss / d phi_x output, d, gate, 2 unused). Edges are
    independent here, so programs take chunks of BLOCK_E consecutive edges."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    for c in range(pid, tl.cdiv(num_edges, BLOCK_E), nprog):
        e = c * BLOCK_E
        offs, valid, src, dst, dx, dy, dz, r2, r = _geometry(e, num_edges, x_ptr, shift_ptr, src_ptr, dst_ptr, BLOCK_E)
        gate = _activations(
            valid,
            src,
            dst,
            r2,
            a_ptr,
            b_ptr,
            w_ptr,
            w2_ptr,
            b2_ptr,
            w3_ptr,
            b3_ptr,
            wx1_ptr,
            bx1_ptr,
            wx2_ptr,
            bx2_ptr,
            wx3_ptr,
            z1_ptr + e * H,
            z2_ptr + e * H,
            m_ptr + e * H,
            p1_ptr + e * C,
            p2_ptr + e * C,
            H,
            C,
            K,
            PREC,
        )
        gdx_x = tl.load(gdx_ptr + dst * 3, mask=valid, other=0.0)
        gdx_y = tl.load(gdx_ptr + dst * 3 + 1, mask=valid, other=0.0)
        gdx_z = tl.load(gdx_ptr + dst * 3 + 2, mask=valid, other=0.0)
        gs = (gdx_x * dx + gdx_y * dy + gdx_z * dz) / (r + eps) * (1.0 - gate * gate)
        tl.store(aux_ptr + offs * _AUX_WIDTH + _AUX_R2, r2, mask=valid)
        tl.store(aux_ptr + offs * _AUX_WIDTH + _AUX_GS, gs, mask=valid)
        tl.store(aux_ptr + offs * _AUX_WIDTH + _AUX_D, dx, mask=valid)
        tl.store(aux_ptr + offs * _AUX_WIDTH + _AUX_D + 1, dy, mask=valid)
        tl.store(aux_ptr + offs * _AUX_WIDTH + _AUX_D + 2, dz, mask=valid)
        tl.store(aux_ptr + offs * _AUX_WIDTH + _AUX_GATE, gate, mask=valid)
        tl.debug_barrier()  # the next chunk's scratch rows differ, but keep warps in step


@triton.jit
def _edge_bwd_kernel(
    w_ptr,
    dst_ptr,
    rowptr_ptr,
    w2_ptr,
    w3_ptr,
    wx1_ptr,
    wx2_ptr,
    wx3_ptr,
    gm_ptr,
    gdx_ptr,
    gb_ptr,
    gx_ptr,
    gde_ptr,
    aux_ptr,
    z1_ptr,
    z2_ptr,
    m_ptr,
    p1_ptr,
    p2_ptr,
    gz1_ptr,
    gz2_ptr,
    gmm_ptr,
    gp1_ptr,
    gp2_ptr,
    n,
    eps,
    H: tl.constexpr,
    C: tl.constexpr,
    DETACH: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
    K: tl.constexpr,
    PREC: tl.constexpr,
    EXACT: tl.constexpr,
):
    """Backward, part 2, from the activations of :func:`_edge_act_kernel`: the gradients
    g_p2, g_p1 [E, C] and g_m, g_z2, g_z1 [E, H] of the layers' pre-activations; gB [n, H] (zero on
    entry) += receiver sums of g_z1; gx [n, 3] = receiver part of the position gradient;
    gde [E, 4] = per-edge d-gradient (sender part)."""
    DT: tl.constexpr = gb_ptr.dtype.element_ty
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    num_blocks = tl.cdiv(n, BLOCK_N)
    rows = tl.arange(0, BLOCK_N)
    for blk in range(pid, num_blocks, nprog):
        i0, e_start, e_end = _block_edges(rowptr_ptr, blk, n, BLOCK_N)
        acc_x = tl.zeros((BLOCK_N,), dtype=DT)
        acc_y = tl.zeros((BLOCK_N,), dtype=DT)
        acc_z = tl.zeros((BLOCK_N,), dtype=DT)
        for e in range(e_start, e_end, BLOCK_E):
            offs = e + tl.arange(0, BLOCK_E)
            valid = offs < e_end
            dst = tl.load(dst_ptr + offs, mask=valid, other=0)
            p1_s = p1_ptr + e * C
            p2_s = p2_ptr + e * C
            gs = tl.load(aux_ptr + offs * _AUX_WIDTH + _AUX_GS, mask=valid, other=0.0)
            # coordinate MLP: g_p2 = gs wx3 where p2 > 0, then back through Wx2 and Wx1
            gp2_s = gp2_ptr + e * C
            for j in range(C // K):
                cols = j * K + tl.arange(0, K)
                g = gs[:, None] * tl.load(wx3_ptr + cols)[None, :]
                _store_cols(gp2_s, C, j * K, tl.where(_load_cols(p2_s, C, j * K, valid, K) > 0, g, 0.0), valid, K)
            tl.debug_barrier()
            _linear_relu_bwd(gp2_s, C, wx2_ptr, C, p1_s, gp1_ptr + e * C, valid, gm_ptr, dst, False, K, PREC)
            # g_m also receives the upstream gradient of the message, gm[dst]
            _linear_relu_bwd(
                gp1_ptr + e * C, C, wx1_ptr, H, m_ptr + e * H, gmm_ptr + e * H, valid, gm_ptr, dst, True, K, PREC
            )
            _linear_relu_bwd(
                gmm_ptr + e * H, H, w3_ptr, H, z2_ptr + e * H, gz2_ptr + e * H, valid, gm_ptr, dst, False, K, PREC
            )
            _linear_relu_bwd(
                gz2_ptr + e * H, H, w2_ptr, H, z1_ptr + e * H, gz1_ptr + e * H, valid, gm_ptr, dst, False, K, PREC
            )
            onehot = _onehot(dst, valid, i0, BLOCK_N, DT)
            _reduce_rows(gb_ptr, i0 + rows, n, onehot, gz1_ptr + e * H, valid, H, K, EXACT)
            # geometry: d(r2)/dd = 2d, du/dd = I/(r+eps) - d d^T / (r (r+eps)^2)
            g_r2 = tl.zeros((BLOCK_E,), dtype=DT)
            for j in range(H // K):
                g_r2 += tl.sum(
                    _load_cols(gz1_ptr + e * H, H, j * K, valid, K) * tl.load(w_ptr + j * K + tl.arange(0, K))[None, :],
                    axis=1,
                )
            r2 = tl.load(aux_ptr + offs * _AUX_WIDTH + _AUX_R2, mask=valid, other=0.0)
            dx = tl.load(aux_ptr + offs * _AUX_WIDTH + _AUX_D, mask=valid, other=0.0)
            dy = tl.load(aux_ptr + offs * _AUX_WIDTH + _AUX_D + 1, mask=valid, other=0.0)
            dz = tl.load(aux_ptr + offs * _AUX_WIDTH + _AUX_D + 2, mask=valid, other=0.0)
            gate = tl.load(aux_ptr + offs * _AUX_WIDTH + _AUX_GATE, mask=valid, other=0.0)
            gdx_x = tl.load(gdx_ptr + dst * 3, mask=valid, other=0.0)
            gdx_y = tl.load(gdx_ptr + dst * 3 + 1, mask=valid, other=0.0)
            gdx_z = tl.load(gdx_ptr + dst * 3 + 2, mask=valid, other=0.0)
            r = tl.sqrt(r2)
            inv = 1.0 / (r + eps)
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
        _store_vec(gx_ptr, i0 + rows, n, acc_x, acc_y, acc_z)


@triton.jit
def _sender_sum_kernel(ghe_ptr, gde_ptr, perm_ptr, sptr_ptr, gh_ptr, gx_ptr, F: tl.constexpr, BLOCK_E: tl.constexpr):
    """gh[j] = sum of ghe over j's edges; gx[j] += sum of gde (CSR over senders, fixed order)."""
    j = tl.program_id(0)
    start = tl.load(sptr_ptr + j)
    end = tl.load(sptr_ptr + j + 1)
    offs_f = tl.arange(0, F)
    offs_4 = tl.arange(0, 4)
    acc_h = tl.zeros((F,), dtype=gh_ptr.dtype.element_ty)
    acc_x = tl.zeros((4,), dtype=gh_ptr.dtype.element_ty)
    for p in range(start, end, BLOCK_E):
        offs = p + tl.arange(0, BLOCK_E)
        valid = offs < end
        e = tl.load(perm_ptr + offs, mask=valid, other=0)
        acc_h += tl.sum(tl.load(ghe_ptr + e[:, None] * F + offs_f[None, :], mask=valid[:, None], other=0.0), axis=0)
        acc_x += tl.sum(tl.load(gde_ptr + e[:, None] * 4 + offs_4[None, :], mask=valid[:, None], other=0.0), axis=0)
    tl.store(gh_ptr + j * F + offs_f, acc_h)
    gx = tl.load(gx_ptr + j * 3 + offs_4, mask=offs_4 < 3, other=0.0)
    tl.store(gx_ptr + j * 3 + offs_4, gx + acc_x, mask=offs_4 < 3)


def _num_programs(n: int, device: torch.device) -> int:
    blocks = triton.cdiv(max(n, 1), BLOCK_N)
    if device.type == "cuda":
        return min(blocks, 2 * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(blocks, 4)


def _num_edge_programs(e: int, device: torch.device) -> int:
    chunks = triton.cdiv(max(e, 1), BLOCK_E)
    if device.type == "cuda":
        return min(chunks, 4 * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(chunks, 4)


#: Input dtypes of the kernels: float32 (every precision), float64 (IEEE only; exact gradient
#: checks, and users who train in double precision).
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)


def _check_call(f: int, h: int, c: int, dtype: torch.dtype, precision: str) -> None:
    for name, v in (("node width F", f), ("edge width H", h), ("coordinate width C", c)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"backend 'triton' needs powers of two >= 16; {name} is {v}")
    if dtype not in DTYPES:
        raise ValueError(f"backend 'triton' takes float32 or float64 inputs, got {dtype}")
    if dtype == torch.float64 and precision != "fp32":
        raise ValueError(f"precision={precision!r} needs float32 inputs; float64 runs with precision='fp32'")


def _features(precision: str) -> tuple[str, ...]:
    return (precision,) if precision in ("tf32", "bf16") else ()


def _constexprs(precision: str, device: torch.device, h: int, c: int, dtype: torch.dtype) -> dict:
    """Block sizes and precision modes shared by forward and backward."""
    check_device(_features(precision), device, f"egnn_edge_op precision={precision!r} on backend 'triton'")
    prec, exact = matmul_modes(precision, device, dtype)
    return {"H": h, "C": c, "BLOCK_E": BLOCK_E, "BLOCK_N": BLOCK_N, "K": min(CHUNK, h, c), "PREC": prec, "EXACT": exact}


def _common(
    h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights
) -> list[torch.Tensor]:
    """Kernel arguments shared by forward and backward (per-node products, geometry, weights)."""
    a, b, wr = split_first_layer(h, w.w1, w.b1)
    mats = [t.contiguous() for t in (w.w2, w.b2, w.w3, w.b3, w.wx1, w.bx1, w.wx2, w.bx2, w.wx3.reshape(-1))]
    return [a, b, wr, x, shift, graph.src, graph.dst, graph.rowptr, *mats]


def egnn_edge_triton(
    h: torch.Tensor, x: torch.Tensor, shift: torch.Tensor, graph: EdgeGraph, w: EdgeWeights, eps: float, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused forward on Triton: (m [n, H], dx [n, 3]) in the inputs' dtype (float32, or float64
    with ``precision="fp32"``; see :func:`alkernels.ops.message_passing.egnn_edge_op` for the
    shapes).

    Raises:
        ValueError: widths that are not powers of two >= 16, another dtype, or tf32/bf16 below
            sm_80 or with float64.
    """
    n, hidden, coord = h.shape[0], w.w2.shape[0], w.wx1.shape[0]
    _check_call(h.shape[1], hidden, coord, h.dtype, precision)
    meta = _constexprs(precision, h.device, hidden, coord, h.dtype)
    m = torch.zeros(n, hidden, device=h.device, dtype=h.dtype)
    dx = torch.empty(n, 3, device=h.device, dtype=h.dtype)
    if n == 0:
        return m, dx
    progs = _num_programs(n, h.device)
    scratch = torch.empty(progs * BLOCK_E * (3 * hidden + 2 * coord), device=h.device, dtype=h.dtype)
    _edge_fwd_kernel[(progs,)](
        *_common(h, x, shift, graph, w), m, dx, scratch, n, eps, **meta, num_warps=FWD_WARPS, num_stages=1
    )
    return m, dx


def _weight_grad(g: torch.Tensor, x: torch.Tensor, precision: str) -> torch.Tensor:
    """g^T @ x over all edges (in the inputs' dtype; bfloat16 inputs and float32 out in bf16 mode)."""
    if precision == "bf16":
        return (g.t().to(torch.bfloat16) @ x.to(torch.bfloat16)).float()
    return g.t() @ x


def egnn_edge_backward_triton(
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
) -> EdgeGrads:
    """Fused backward on Triton from the upstream gradients gm [n, H] and gdx [n, 3]: the
    gradients of h, x and the eleven weights (the kernels' :class:`KernelGrads`, assembled).
    Allocates per-edge buffers of (6 H + 4 C + 12) floats per edge for the duration of the call."""
    n, f, hidden, coord = h.shape[0], h.shape[1], w.w2.shape[0], w.wx1.shape[0]
    _check_call(f, hidden, coord, h.dtype, precision)
    meta = _constexprs(precision, h.device, hidden, coord, h.dtype)
    dev, e, dt = h.device, graph.num_edges, h.dtype
    gb = torch.zeros(n, hidden, device=dev, dtype=dt)
    gx = torch.zeros(n, 3, device=dev, dtype=dt)
    gh = torch.zeros(n, f, device=dev, dtype=dt)
    hbuf = torch.empty(6, e, hidden, device=dev, dtype=dt)  # z1 z2 m g_z1 g_z2 g_m
    cbuf = torch.empty(4, e, coord, device=dev, dtype=dt)  # p1 p2 g_p1 g_p2
    aux = torch.zeros(e, AUX_WIDTH, device=dev, dtype=dt)  # r^2, gs, d, gate
    gde = torch.zeros(e, 4, device=dev, dtype=dt)
    if n > 0:
        common = _common(h, x, shift, graph, w)
        gdx = gdx.contiguous()
        if e > 0:
            act_meta = {k: meta[k] for k in ("H", "C", "BLOCK_E", "K", "PREC")}
            _edge_act_kernel[(_num_edge_programs(e, dev),)](
                *common[:7],
                *common[8:],
                gdx,
                aux,
                *hbuf[:3],
                *cbuf[:2],
                e,
                eps,
                **act_meta,
                num_warps=ACT_WARPS,
                num_stages=1,
            )
        wr, w2, w3, wx1, wx2, wx3 = common[2], common[8], common[10], common[12], common[14], common[16]
        _edge_bwd_kernel[(_num_programs(n, dev),)](
            wr,
            graph.dst,
            graph.rowptr,
            w2,
            w3,
            wx1,
            wx2,
            wx3,
            gm.contiguous(),
            gdx,
            gb,
            gx,
            gde,
            aux,
            *hbuf[:3],
            *cbuf[:2],
            *hbuf[3:],
            *cbuf[2:],
            n,
            eps,
            DETACH=detach_norm,
            **meta,
            num_warps=bwd_warps(precision, dev, dt),
            num_stages=1,
        )
    z1, z2, m, g_z1, g_z2, g_m = hbuf
    p1, p2, g_p1, g_p2 = cbuf
    r2, gs = aux[:, AUX_R2], aux[:, AUX_GS]
    w1a = w.w1[:, :f]
    ghe = _weight_grad(g_z1.t(), w1a, precision)  # g_z1 @ W1a, [E, F]
    if n > 0:
        _sender_sum_kernel[(n,)](
            ghe.contiguous(),
            gde,
            graph.src_perm,
            graph.src_ptr,
            gh,
            gx,
            F=f,
            BLOCK_E=SENDER_BLOCK,
            num_warps=SENDER_WARPS,
            num_stages=1,
        )
    raw = KernelGrads(
        b=gb,
        h_send=gh,
        x=gx,
        w1a=_weight_grad(g_z1, h[graph.src], precision),
        wr=(g_z1 * r2[:, None]).sum(0),
        w2=_weight_grad(g_z2, z1, precision),
        b2=g_z2.sum(0),
        w3=_weight_grad(g_m, z2, precision),
        b3=g_m.sum(0),
        wx1=_weight_grad(g_p1, m, precision),
        bx1=g_p1.sum(0),
        wx2=_weight_grad(g_p2, p1, precision),
        bx2=g_p2.sum(0),
        wx3=(gs[:, None] * p2).sum(0),
    )
    return assemble_grads(raw, h, w)


#: Node, edge and coordinate widths the AOT check compiles: the paper's model (docs/model.md).
PAPER_WIDTHS = {"F": 32, "H": 128, "C": 64}
_INT_PTRS = ("src_ptr", "dst_ptr", "rowptr_ptr", "perm_ptr", "sptr_ptr")
#: The (dtype name, precision) pairs the launchers accept, with the GPU modes of each.
_DTYPE_MODES = [("fp32", p, modes) for p, modes in _GPU_MODES.items()] + [
    ("fp64", "fp32", [("IEEE", "ieee", "ieee", 0, None)])
]


def _signature(fn, constexprs: dict, dtype: str) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*i64" if name in _INT_PTRS else f"*{dtype}"
        else:
            sig[name] = "fp32" if name == "eps" else "i32"
    return sig


def _aligned(fn) -> tuple[str, ...]:
    """Pointer arguments compiled with the 16-byte divisibility hint, as the runtime specialises
    them for freshly allocated tensors: all of them (the per-edge buffer views start at multiples
    of H or C floats, 64 bytes or more, into their allocation)."""
    return tuple(a for a in fn.arg_names if a.endswith("_ptr"))


def aot_configs() -> list[KernelConfig]:
    """Every configuration the launchers choose on a GPU for the paper's widths: forward and
    backward (with and without ``detach_norm``) in each precision and its GPU mode, in float32
    and (IEEE only) float64, and the sender reduction. The widths are model hyper-parameters;
    the block sizes are the launchers'."""
    f, h, c = PAPER_WIDTHS["F"], PAPER_WIDTHS["H"], PAPER_WIDTHS["C"]
    configs = []
    for dtype, precision, modes in _DTYPE_MODES:
        for mode, prec, exact, lo, below in modes:
            meta = {
                "H": h,
                "C": c,
                "BLOCK_E": BLOCK_E,
                "BLOCK_N": BLOCK_N,
                "K": min(CHUNK, h, c),
                "PREC": prec,
                "EXACT": exact,
            }
            common = dict(
                family="message_passing",
                features=_features(precision),
                tensor_cores=prec != "ieee",
                from_arch=lo,
                below_arch=below,
            )
            label = f"{precision} ({mode}) H={h} C={c}" if dtype == "fp32" else f"{dtype} ({mode}) H={h} C={c}"
            configs.append(
                KernelConfig(
                    kernel="_edge_fwd_kernel",
                    label=label,
                    fn=_edge_fwd_kernel,
                    signature=_signature(_edge_fwd_kernel, meta, dtype),
                    constexprs=meta,
                    num_warps=FWD_WARPS,
                    aligned=_aligned(_edge_fwd_kernel),
                    **common,
                )
            )
            act = {k: meta[k] for k in ("H", "C", "BLOCK_E", "K", "PREC")}
            configs.append(
                KernelConfig(
                    kernel="_edge_act_kernel",
                    label=label,
                    fn=_edge_act_kernel,
                    signature=_signature(_edge_act_kernel, act, dtype),
                    constexprs=act,
                    num_warps=ACT_WARPS,
                    aligned=_aligned(_edge_act_kernel),
                    **common,
                )
            )
            for lo_w, below_w, warps in BWD_WARPS[precision if dtype == "fp32" else dtype]:
                lo_b = max(lo, lo_w)
                below_b = min(x for x in (below, below_w, 10**6) if x is not None)
                if lo_b >= below_b:
                    continue
                for detach in (False, True):
                    bwd = {"DETACH": detach, **meta}
                    configs.append(
                        KernelConfig(
                            kernel="_edge_bwd_kernel",
                            label=f"{label} detach={detach}",
                            fn=_edge_bwd_kernel,
                            signature=_signature(_edge_bwd_kernel, bwd, dtype),
                            constexprs=bwd,
                            num_warps=warps,
                            aligned=_aligned(_edge_bwd_kernel),
                            **{**common, "from_arch": lo_b, "below_arch": None if below_b == 10**6 else below_b},
                        )
                    )
    snd = {"F": f, "BLOCK_E": SENDER_BLOCK}
    for dtype in ("fp32", "fp64"):
        configs.append(
            KernelConfig(
                family="message_passing",
                kernel="_sender_sum_kernel",
                label=f"{dtype} F={f}",
                fn=_sender_sum_kernel,
                signature=_signature(_sender_sum_kernel, snd, dtype),
                constexprs=snd,
                num_warps=SENDER_WARPS,
                aligned=_aligned(_sender_sum_kernel),
            )
        )
    return configs
