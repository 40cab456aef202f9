"""The fused Triton acquisition kernel (GPU, or CPU under ``TRITON_INTERPRET=1``).

One program scores ``BLOCK_N`` samples: it loops over the T passes with the running p_bar of its
rows in registers, so the logits are read exactly once. Rows with a non-finite logit get NaN.

Shape for the register file: a program's tile is ``[BLOCK_N, BLOCK_C]`` (``BLOCK_C`` = C rounded
up to a power of two) spread over ``num_warps`` warps, and :func:`block_config` picks
``BLOCK_N`` and ``num_warps`` per ``BLOCK_C`` from a fixed table so that each thread holds only 2
to 8 elements of a tile (one warp or less per row at C = 230). The kernel keeps about five such
tiles live (the logits of the pass, their exponentials, masks and the running p_bar), which
stays under 64 registers per thread from C = 2 to 8192 and so at 50% theoretical occupancy or
more on sm_80 and sm_90 (``python -m alkernels.ops.aot`` prints the figures). Why not chunks of
C with an online max: p_bar needs each pass's softmax normaliser before it can add that pass's
probabilities, so a chunked kernel must either hold the whole row anyway or read the logits
twice; holding the row with few elements per thread keeps the single read.

Configurations are chosen by this table, not by runtime autotuning, so that every one of them is
compiled and checked ahead of time (:func:`aot_configs`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from alkernels.ops.acquisition import TRITON_MAX_C as MAX_C
from alkernels.ops.acquisition.op import SCORE_ORDER
from alkernels.ops.acquisition.reference import BALD_ZERO
from alkernels.ops.arch import KernelConfig, check_device

# BLOCK_C -> (BLOCK_N, num_warps): 256 elements per 4 warps up to BLOCK_C = 64, then one or two
# rows per program with more warps as rows widen. Every entry is compiled by aot_configs().
_BLOCK_TABLE: dict[int, tuple[int, int]] = {
    2: (128, 4),
    4: (64, 4),
    8: (32, 4),
    16: (16, 4),
    32: (8, 4),
    64: (4, 4),
    128: (2, 4),
    256: (2, 4),
    512: (1, 4),
    1024: (1, 8),
    2048: (1, 16),
    4096: (1, 16),
    8192: (1, 32),
}
_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_BALD_ZERO = tl.constexpr(BALD_ZERO)


@triton.jit
def _score_all_kernel(
    x_ptr,
    out_ptr,
    bad_ptr,
    T,
    N,
    C,
    stride_t,
    stride_n,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program scores BLOCK_N samples; loops over the T passes with p_bar in registers."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_C)
    row_ok = rows < N
    mask = row_ok[:, None] & (cols[None, :] < C)
    offs = rows[:, None].to(tl.int64) * stride_n + cols[None, :]
    neg_inf = float("-inf")
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    h_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    pmax_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    margin_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    nonfinite = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for t in range(0, T):
        x = tl.load(x_ptr + t * stride_t + offs, mask=mask, other=0.0).to(tl.float32)
        valid = mask & (tl.abs(x) < float("inf"))  # False for NaN and +-inf
        nonfinite += tl.sum(tl.where(mask & ~valid, 1, 0), axis=1)
        m = tl.max(tl.where(valid, x, neg_inf), axis=1)
        m = tl.where(m == neg_inf, 0.0, m)
        d = tl.where(valid, x - m[:, None], 0.0)
        e = tl.where(valid, tl.exp(d), 0.0)
        s = tl.sum(e, axis=1)
        s = tl.where(s > 0.0, s, 1.0)  # rows past N, or all non-finite: keep the math finite
        # e d -> 0 as d -> -inf; clamping d keeps 0 * (-inf) out when a finite span overflows
        sx = tl.sum(e * tl.maximum(d, -88.0), axis=1)
        inv = 1.0 / s
        ties = tl.sum(tl.where(valid & (d == 0.0), 1, 0), axis=1)
        e2 = tl.max(tl.where(valid & (d < 0.0), e, 0.0), axis=1)
        e2 = tl.where(ties > 1, 1.0, e2)
        h_sum += tl.log(s) - sx * inv
        pmax_sum += inv
        margin_sum += (1.0 - e2) * inv
        acc += e * inv[:, None]
    inv_t = 1.0 / T
    p = acc * inv_t
    h_bar = -tl.sum(tl.where(p > 0.0, p * tl.log(tl.maximum(p, 1e-38)), 0.0), axis=1)
    p1 = tl.max(p, axis=1)
    ties = tl.sum(tl.where(mask & (p == p1[:, None]), 1, 0), axis=1)
    p2 = tl.max(tl.where(mask & (p < p1[:, None]), p, 0.0), axis=1)
    p2 = tl.where(ties > 1, p1, p2)
    h_exp = h_sum * inv_t
    bald = h_bar - h_exp
    # rounding-level differences are exactly 0, as on the other backends (reference.BALD_ZERO)
    bald = tl.where((T == 1) | (bald <= _BALD_ZERO * (1.0 + h_bar)), 0.0, bald)
    h_bar = tl.where(T == 1, h_exp, h_bar)
    nan = float("nan")
    bad = nonfinite > 0
    base = out_ptr + rows
    tl.store(base + 0 * N, tl.where(bad, nan, h_bar), mask=row_ok)
    tl.store(base + 1 * N, tl.where(bad, nan, 1.0 - p1), mask=row_ok)
    tl.store(base + 2 * N, tl.where(bad, nan, -(p1 - p2)), mask=row_ok)
    tl.store(base + 3 * N, tl.where(bad, nan, h_bar), mask=row_ok)
    tl.store(base + 4 * N, tl.where(bad, nan, h_exp), mask=row_ok)
    tl.store(base + 5 * N, tl.where(bad, nan, bald), mask=row_ok)
    tl.store(base + 6 * N, tl.where(bad, nan, 1.0 - pmax_sum * inv_t), mask=row_ok)
    tl.store(base + 7 * N, tl.where(bad, nan, -margin_sum * inv_t), mask=row_ok)
    tl.store(bad_ptr + rows, bad.to(tl.int8), mask=row_ok)


def block_config(C: int) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_C, num_warps)`` the launcher uses for ``C`` classes (2 <= C <= MAX_C)."""
    if not 2 <= C <= MAX_C:
        raise ValueError(f"the Triton acquisition kernel takes 2 <= C <= {MAX_C} classes, got C = {C}")
    block_c = triton.next_power_of_2(C)
    block_n, warps = _BLOCK_TABLE[block_c]
    return block_n, block_c, warps


def _features(dtype: torch.dtype) -> tuple[str, ...]:
    return ("bf16",) if dtype == torch.bfloat16 else ()


def score_all_triton(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Fused Triton scores: ``logits`` [T, N, C] fp32/fp16/bf16 -> (float32 [8, N], first_bad).

    Raises:
        ValueError: C outside [2, MAX_C], or bfloat16 logits on a GPU older than sm_80.
    """
    if logits.stride(2) != 1:
        logits = logits.contiguous()
    T, N, C = logits.shape
    block_n, block_c, warps = block_config(C)
    check_device(_features(logits.dtype), logits.device, "acquisition scoring on backend 'triton'")
    out = torch.empty((len(SCORE_ORDER), N), dtype=torch.float32, device=logits.device)
    bad = torch.empty((N,), dtype=torch.int8, device=logits.device)
    if N == 0:
        return out, -1
    grid = (triton.cdiv(N, block_n),)
    _score_all_kernel[grid](
        logits,
        out,
        bad,
        T,
        N,
        C,
        logits.stride(0),
        logits.stride(1),
        BLOCK_N=block_n,
        BLOCK_C=block_c,
        num_warps=warps,
    )
    bad_idx = torch.nonzero(bad)
    return out, (int(bad_idx[0, 0]) if bad_idx.numel() else -1)


def aot_configs() -> list[KernelConfig]:
    """Every configuration :func:`score_all_triton` can launch: each row of the block table in
    each logits dtype. Occupancy must reach 50% (the kernel is bandwidth-bound)."""
    configs = []
    for dtype, name in _DTYPES.items():
        for block_c, (block_n, warps) in _BLOCK_TABLE.items():
            sig = {
                "x_ptr": f"*{name}",
                "out_ptr": "*fp32",
                "bad_ptr": "*i8",
                "T": "i32",
                "N": "i32",
                "C": "i32",
                "stride_t": "i64",
                "stride_n": "i64",
                "BLOCK_N": "constexpr",
                "BLOCK_C": "constexpr",
            }
            configs.append(
                KernelConfig(
                    family="acquisition",
                    kernel="_score_all_kernel",
                    label=f"C<={block_c} {str(dtype).removeprefix('torch.')}",
                    fn=_score_all_kernel,
                    signature=sig,
                    constexprs={"BLOCK_N": block_n, "BLOCK_C": block_c},
                    num_warps=warps,
                    features=_features(dtype),
                    min_occupancy=0.5,
                    aligned=("x_ptr", "out_ptr", "bad_ptr"),
                )
            )
    return configs
