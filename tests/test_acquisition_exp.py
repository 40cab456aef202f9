"""The acquisition kernel's vectorised exp, and every C++ build on inputs that stress it.

``simd::exp_le0`` (csrc/common/simd.h) is a polynomial e^d for d = x - max(x) <= 0: its error
bound is documented in docs/performance.md (measured exhaustively by benchmarks/exp_accuracy.py);
here a dense sample of the float32 arguments checks it on every build this CPU has.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_acquisition import random_logits, rel_error, spec_scores

from alkernels import acquisition as acq
from alkernels.ops.dispatch import ext, has_ext

pytestmark = pytest.mark.skipif(not has_ext(), reason="the C++ extension is not built")

ISAS = ("avx512", "avx2", "baseline")
#: The documented bounds (docs/performance.md, measured over every float32 argument): the max
#: relative error down to the build's smallest normal result, and over d >= -16 (there the FMA
#: builds' one-step range reduction adds at most 16 * 1.9e-9).
EXP_REL_BOUND = 4.2e-7
EXP_REL_BOUND_NEAR = 2.3e-7


def builds() -> list[str]:
    return [isa for isa in ISAS if ext().isa_supported(isa)]


def lowest(isa: str) -> np.float32:
    """The lowest argument whose result is a normal float32 in this build."""
    if isa == "avx512":
        return np.nextafter(np.float32(-126 * math.log(2)), np.float32(0))
    return np.float32(-125 * math.log(2))  # the clamp of the builds that scale by exponent bits


@pytest.mark.parametrize("isa", ISAS)
def test_exp_relative_error_on_a_dense_sample(isa: str) -> None:
    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    last = int(np.array([lowest(isa)]).view(np.uint32)[0])
    # every 997th float32 from -0 down to the lowest normal result (~1.1M values), plus the
    # neighbourhood of 0 where the results are closest to 1
    bits = np.concatenate(
        [np.arange(0x80000000, last + 1, 997, dtype=np.uint64), np.arange(0xB3000000, 0xB4000000, 16, dtype=np.uint64)]
    ).astype(np.uint32)
    d = bits.view(np.float32)
    got = ext().acq_exp(d, isa).astype(np.float64)
    want = np.exp(d.astype(np.float64))
    rel = np.abs(got - want) / want
    assert rel.max() < EXP_REL_BOUND, f"{isa}: {rel.max():.3e} at d = {d[np.argmax(rel)]}"
    near = d >= -16
    assert rel[near].max() < EXP_REL_BOUND_NEAR, f"{isa}: {rel[near].max():.3e} at d = {d[near][np.argmax(rel[near])]}"


@pytest.mark.parametrize("isa", ISAS)
def test_exp_special_values(isa: str) -> None:
    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    d = np.array([0.0, -0.0, np.nan, -np.inf, -1e30, -200.0, -100.0, -88.0], dtype=np.float32)
    got = ext().acq_exp(d, isa)
    assert got[0] == 1.0 and got[1] == 1.0  # e^0 is exactly 1: the top class of a row gives p = 1 / s
    assert np.isnan(got[2])
    if isa == "avx512":  # float32's own underflow: subnormals, then exactly 0
        assert np.all(got[3:6] == 0.0)
        np.testing.assert_allclose(got[6:], np.exp(d[6:].astype(np.float64)), rtol=1e-6, atol=2.0**-149)
    else:  # clamped at -125 ln 2: the smallest result, still normal
        assert np.all(got[3:] == got[3]) and 2.3e-38 < got[3] < 2.4e-38
    # lengths that are not a multiple of the lanes take the masked remainder
    for n in (1, 7, 15, 17):
        x = -np.linspace(0, 20, n, dtype=np.float32)
        np.testing.assert_array_equal(ext().acq_exp(x, isa), ext().acq_exp(np.tile(x, 16), isa)[:n])


def kernel(logits: torch.Tensor, isa: str) -> tuple[torch.Tensor, int]:
    out, first_bad = ext().acq_score_all(logits.numpy(), "float32", isa=isa)
    return torch.from_numpy(out), int(first_bad)


@pytest.mark.parametrize("isa", ISAS)
def test_every_build_on_extreme_spans_and_infinities(isa: str) -> None:
    """Spans past the exp floor (e = 0 or clamped), spans that overflow float32 (the exact path) and
    +-inf / NaN (the non-finite check: sum of d, or sum of e d in the AVX-512 build) per build."""
    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    logits = random_logits((3, 12, 37), seed=5)
    logits[0, 1, :2] = torch.tensor([1e38, -1e38])
    logits[1, 2, 4:6] = torch.tensor([3e38, -3e38])
    logits[2, 4, :3] = torch.tensor([100.0, -100.0, -3e38])
    logits[:, 5] = torch.tensor([-3e38] * 36 + [3e38])
    logits[:, 6, 1:] = -150.0  # every class but one far below the floor
    logits[:, 7, 36] = 200.0  # the padded tail holds the maximum
    want = spec_scores(logits)
    got, bad = kernel(logits, isa)
    assert bad == -1
    for j, name in enumerate(acq.STRATEGIES):
        assert torch.isfinite(got[j]).all(), f"{isa} {name}"
        assert rel_error(got[j], want[name]) < 1e-5, f"{isa} {name}"
    for n, value in ((3, float("inf")), (8, -float("inf")), (10, float("nan"))):
        bad_logits = logits.clone()
        bad_logits[2, n, 36] = value  # in the padded tail vector of the last pass
        got, bad = kernel(bad_logits, isa)
        assert bad == n and torch.isnan(got[:, n]).all()
        keep = torch.arange(12) != n
        assert torch.isfinite(got[:, keep]).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(3, 700, 37), (4, 300, 230), (2, 40, 1000)])
def test_every_build_across_chunks_and_thread_blocks(isa: str, shape: tuple[int, int, int]) -> None:
    """Pools longer than one chunk of samples (read pass by pass) and one 256-sample thread block:
    every sample matches the float64 spec, non-finite samples in later chunks are NaN and the lowest
    one is reported, and the [N, C, T] layout gives the same bits."""
    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    T, N, C = shape
    logits = random_logits(shape, seed=N)
    bad = [N - 3, N // 2 + 1]
    logits[T - 1, bad[0], C - 1] = float("nan")
    logits[0, bad[1], 0] = -float("inf")
    got, first_bad = kernel(logits, isa)
    assert first_bad == min(bad)
    keep = torch.ones(N, dtype=torch.bool)
    keep[bad] = False
    assert torch.isnan(got[:, ~keep]).all() and torch.isfinite(got[:, keep]).all()
    want = spec_scores(logits[:, keep])
    for j, name in enumerate(acq.STRATEGIES):
        assert rel_error(got[j][keep], want[name]) < 1e-5, f"{isa} {shape} {name}"
    nct = logits.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # [T, N, C] view of an [N, C, T] pool
    got_nct, first_bad_nct = kernel(nct, isa)
    assert first_bad_nct == first_bad and torch.equal(got_nct.view(torch.int32), got.view(torch.int32))  # NaN too
