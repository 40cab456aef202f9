"""The fused acquisition kernel reads any stride layout in place, baal's [N, C, T] included.

The C++ kernel gathers rows whose classes are not contiguous instead of asking for a transposed
copy of the pool; the result must be bit-identical to scoring a contiguous copy, on every build
and storage type, and non-finite samples must still be reported by their pool index.
"""

from __future__ import annotations

import pytest
import torch

from alkernels import acquisition as acq
from alkernels.ops.dispatch import ext, has_ext

pytestmark = pytest.mark.skipif(not has_ext(), reason="the C++ extension is not built")

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernel(logits: torch.Tensor, isa: str) -> tuple[torch.Tensor, int]:
    """The raw kernel on a [T, N, C] view of any strides (bfloat16 crosses as its int16 bits)."""
    name = str(logits.dtype).removeprefix("torch.")
    array = logits.view(torch.int16).numpy() if logits.dtype == torch.bfloat16 else logits.numpy()
    out, first_bad = ext().acq_score_all(array, name, isa=isa)
    return torch.from_numpy(out), int(first_bad)


def nct(n: int, c: int, t: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n, c, t), generator=g) * 3).to(dtype)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape",
    [(37, 230, 10), (40, 64, 3), (9, 7, 1), (300, 17, 5), (50, 64, 16), (20, 230, 8), (11, 9, 25)],
)
def test_nct_view_equals_contiguous_copy(isa: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    x = nct(*shape, seed=sum(shape), dtype=dtype)
    view = x.permute(2, 0, 1)  # [T, N, C] with classes T elements apart
    assert view.stride(2) == shape[2] or shape[2] == 1
    got, bad = kernel(view, isa)
    want, want_bad = kernel(view.contiguous(), isa)
    assert bad == want_bad == -1
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_other_class_strides(dtype: torch.dtype) -> None:
    x = (torch.randn(3, 50, 460) * 3).to(dtype)[..., ::2]  # [3, 50, 230], classes 2 apart
    assert x.stride(2) == 2
    torch.testing.assert_close(acq.score_all(x)["bald"], acq.score_all(x.contiguous())["bald"], rtol=0, atol=0)
    flat = torch.randn(4, 20, 1).to(dtype).expand(4, 20, 230)  # class stride 0: uniform softmax
    assert flat.stride(2) == 0
    scores = acq.score_all(flat)
    torch.testing.assert_close(scores["entropy"], torch.full((20,), float(torch.log(torch.tensor(230.0)))))
    assert torch.equal(scores["bald"], acq.score_all(flat.contiguous())["bald"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_sample_in_nct_layout(bad: float) -> None:
    x = nct(300, 230, 10, seed=2, dtype=torch.float32)
    x[42, 17, 3] = bad
    x[250, 0, 9] = bad
    view = x.permute(2, 0, 1)
    with pytest.raises(ValueError, match="pool sample 42"):
        acq.score_all(view)
    scores = acq.score_all(view, nonfinite="exclude")
    for name in acq.STRATEGIES:
        assert torch.isnan(scores[name][[42, 250]]).all()
        assert not torch.isnan(scores[name][:42]).any()
    idx, _ = acq.select(view, "bald", 298, nonfinite="exclude")
    assert 42 not in idx.tolist() and 250 not in idx.tolist()


def test_nct_view_matches_reference_backend() -> None:
    x = nct(101, 230, 10, seed=3, dtype=torch.float32).permute(2, 0, 1)
    fused = acq.score_all(x, backend="cpu")
    ref = acq.score_all(x, backend="torch")
    for name in acq.STRATEGIES:
        torch.testing.assert_close(fused[name], ref[name], rtol=1e-5, atol=1e-5)
    chunk = x[:, 20:70]  # a chunk of the pool, still strided classes
    assert torch.equal(acq.score_all(chunk)["margin"], fused["margin"][20:70])
