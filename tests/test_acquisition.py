"""Acquisition kernels against an independent float64 implementation of the spec formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alkernels import acquisition as acq
from alkernels.ops.dispatch import HAS_TRITON, has_ext, interpreting

BACKENDS = ["torch"]
if has_ext():
    BACKENDS.append("cpu")
if HAS_TRITON and (interpreting() or torch.cuda.is_available()):
    BACKENDS.append("triton")
#: The Triton backend runs on CUDA tensors when a GPU is present (the device check), else on CPU
#: tensors in the interpreter (CI).
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def on(backend: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` on the device that ``backend`` runs on."""
    return t.to(TRITON_DEVICE) if backend == "triton" else t


HALF_TYPES = (torch.float16, torch.bfloat16)


def spec_scores(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The formulas of docs/acquisition.md in float64, written independently of the library."""
    x = logits.double()
    if x.ndim == 2:
        x = x[None]
    p = torch.exp(x - torch.logsumexp(x, dim=-1, keepdim=True))  # [T, N, C]

    def entropy(q: torch.Tensor) -> torch.Tensor:
        return -torch.where(q > 0, q * torch.log(q), torch.zeros_like(q)).sum(-1)

    p_bar = p.mean(0)
    sorted_bar = torch.sort(p_bar, dim=-1, descending=True).values
    sorted_t = torch.sort(p, dim=-1, descending=True).values
    h_bar = entropy(p_bar)
    h_t = entropy(p).mean(0)
    return {
        "entropy": h_bar,
        "least_confidence": 1 - sorted_bar[:, 0],
        "margin": -(sorted_bar[:, 0] - sorted_bar[:, 1]),
        "predictive_entropy": h_bar,
        "expected_entropy": h_t,
        "bald": h_bar - h_t,
        "expected_least_confidence": 1 - sorted_t[..., 0].mean(0),
        "expected_margin": -(sorted_t[..., 0] - sorted_t[..., 1]).mean(0),
    }


def random_logits(shape: tuple[int, ...], seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs error over the pool relative to the largest reference magnitude (norm-wise)."""
    want = want.cpu()
    scale = max(float(want.abs().max()), 1e-12)
    return float((got.double().cpu() - want).abs().max()) / scale


def sizes(backend: str) -> list[tuple[int, ...]]:
    # N = 37 and 101 are not multiples of any block size; C = 8 and 64 fill whole SIMD vectors
    # (no padded tail); C = 1000 and 5000 take the wide rows of the Triton block table. The
    # interpreter gets small inputs only; a GPU gets the paper's pool size too.
    base = [(37, 230), (1, 37, 230), (5, 37, 2), (4, 101, 230), (3, 29, 7), (3, 50, 8), (2, 33, 64)]
    full = base + [(10, 1003, 230), (2, 515, 17), (2, 97, 1000), (2, 13, 5000)]
    if backend != "triton" or TRITON_DEVICE == "cpu":
        return base if backend == "triton" else full
    return full + [(10, 100_000, 230)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_all_strategies_match_float64_spec(backend: str, dtype: torch.dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 1e-4
    for i, shape in enumerate(sizes(backend)):
        logits = random_logits(shape, seed=i).to(dtype)
        # the reference sees exactly the stored (rounded) values (float64 on the GPU when the
        # backend runs there: the full-size pool is 230M logits)
        want = spec_scores(on(backend, logits).float())
        got = acq.score_all(on(backend, logits), backend=backend)
        assert set(got) == set(acq.STRATEGIES)
        for name in acq.STRATEGIES:
            assert got[name].dtype == torch.float32 and got[name].shape == (shape[-2],)
            err = rel_error(got[name], want[name])
            assert err < tol, f"{backend} {dtype} {shape} {name}: rel error {err:.2e}"


def test_float64_logits_are_scored_in_float64() -> None:
    """float64 logits take the torch path in float64 (backend "auto" picks it): float64 scores
    that match the float64 spec to rounding, and rankings at float64 resolution."""
    for i, shape in enumerate([(37, 230), (4, 101, 230), (5, 37, 2)]):
        logits = random_logits(shape, seed=i).double()
        want = spec_scores(logits)
        for backend in ("auto", "torch"):
            got = acq.score_all(logits, backend=backend)
            for name in acq.STRATEGIES:
                assert got[name].dtype == torch.float64 and got[name].shape == (shape[-2],)
                err = rel_error(got[name], want[name])
                assert err < 1e-12, f"{backend} {shape} {name}: rel error {err:.2e}"
        assert acq.score(logits, "bald").dtype == torch.float64
    # identical MC passes: BALD is exactly 0 in float64 too, so such samples tie
    same = random_logits((1, 50, 230), seed=5).double().expand(4, 50, 230)
    assert torch.equal(acq.score(same, "bald"), torch.zeros(50, dtype=torch.float64))
    # margins -tanh(d / 2) of -1e-9 and -5e-10: float32 rounds both probabilities to 0.5
    close = torch.tensor([[0.0, 2e-9], [0.0, 1e-9], [0.0, 3e-9]], dtype=torch.float64)
    margin = acq.score(close, "margin")
    assert torch.allclose(margin, -torch.tanh(close[:, 1] / 2), rtol=1e-6, atol=0)
    idx, val = acq.select(close, "margin", 2)
    assert idx.tolist() == [1, 0] and val.dtype == torch.float64 and val[0] == margin[1]
    # streaming float64 chunks equals select on the whole pool, in float64
    logits = random_logits((3, 60, 9), seed=7).double()
    sel = acq.StreamingSelector("bald", 10, exclude=[3, 41])
    for a in range(0, 60, 25):
        sel.update(logits[:, a : a + 25])
    want_idx, want_val = acq.select(logits, "bald", 10, exclude=[3, 41])
    got_idx, got_val = sel.result()
    assert got_idx.tolist() == want_idx.tolist() and torch.equal(got_val, want_val)
    assert got_val.dtype == torch.float64
    # topk of float64 scores ranks them in float64
    idx, val = acq.topk(torch.tensor([1.0, 1.0 + 1e-12, float("nan")], dtype=torch.float64), 2)
    assert idx.tolist() == [1, 0] and val.dtype == torch.float64 and val[0] == 1.0 + 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_pass_identities(backend: str) -> None:
    logits = on(backend, random_logits((1, 64, 230), seed=3))
    s = acq.score_all(logits, backend=backend)
    torch.testing.assert_close(s["expected_entropy"], s["entropy"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s["expected_least_confidence"], s["least_confidence"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s["expected_margin"], s["margin"], rtol=1e-5, atol=1e-6)
    assert torch.all(s["bald"] == 0)
    # a 2-D input is the same as T = 1
    s2 = acq.score_all(logits[0], backend=backend)
    for name in acq.STRATEGIES:
        torch.testing.assert_close(s2[name], s[name])


@pytest.mark.parametrize("backend", BACKENDS)
def test_score_is_the_row_of_score_all(backend: str) -> None:
    logits = on(backend, random_logits((3, 50, 230), seed=4))
    every = acq.score_all(logits, backend=backend)
    for name in acq.STRATEGIES:
        torch.testing.assert_close(acq.score(logits, name, backend=backend), every[name])
    assert torch.all(every["bald"] >= -1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_in_logits(backend: str) -> None:
    # two equal top logits: margin is exactly 0 and least confidence is exact
    logits = torch.zeros(2, 5, 4)
    logits[:, :, 0] = logits[:, :, 1] = 2.0
    s = acq.score_all(on(backend, logits), backend=backend)
    assert torch.all(s["margin"].abs() < 1e-7) and torch.all(s["expected_margin"].abs() < 1e-7)
    p1 = np.exp(2) / (2 * np.exp(2) + 2)
    torch.testing.assert_close(s["least_confidence"].cpu(), torch.full((5,), 1 - p1, dtype=torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the Triton interpreter's numpy
def test_finite_logits_with_extreme_spans(backend: str) -> None:
    # finite but far apart: x - max underflows exp, or overflows float32 (span > FLT_MAX)
    logits = random_logits((3, 6, 10), seed=11)
    logits[0, 1, :2] = torch.tensor([1e38, -1e38])
    logits[1, 2, 4:6] = torch.tensor([3e38, -3e38])
    logits[2, 4, :3] = torch.tensor([100.0, -100.0, -3e38])
    logits[:, 5] = torch.tensor([-3e38] * 9 + [3e38])
    want = spec_scores(logits)
    got = acq.score_all(on(backend, logits), backend=backend)
    for name in acq.STRATEGIES:
        assert torch.isfinite(got[name]).all(), f"{backend} {name}"
        assert rel_error(got[name], want[name]) < 1e-5, f"{backend} {name}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [1e3, -3e4])
def test_large_common_offset(backend: str, offset: float) -> None:
    # softmax is shift-invariant: a large common offset must not cost accuracy beyond the
    # rounding of the stored logits themselves (the reference sees the same stored values)
    logits = random_logits((4, 101, 230), seed=12) + offset
    want = spec_scores(logits)
    got = acq.score_all(on(backend, logits), backend=backend)
    for name in acq.STRATEGIES:
        err = rel_error(got[name], want[name])
        assert err < 1e-5, f"{backend} offset {offset} {name}: rel error {err:.2e}"


@pytest.mark.skipif(not has_ext(), reason="needs the compiled extension")
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_builds_match_spec(isa: str, dtype: torch.dtype) -> None:
    """Every build of the C++ kernel this CPU runs, the portable one included (which the default
    dispatch skips on an AVX2 machine), against the float64 spec."""
    from alkernels.ops.dispatch import ext

    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    tol = 1e-5 if dtype == torch.float32 else 1e-4
    for i, shape in enumerate([(4, 101, 230), (1, 37, 230), (5, 37, 2), (2, 515, 17), (3, 50, 64)]):
        logits = random_logits(shape, seed=20 + i).to(dtype)
        logits[0, 7, 1] = float("nan")
        want = spec_scores(logits.float())
        bits = logits.view(torch.int16) if dtype == torch.bfloat16 else logits
        out, first_bad = ext().acq_score_all(bits.numpy(), str(dtype).removeprefix("torch."), isa=isa)
        assert first_bad == 7
        out = torch.from_numpy(out)
        assert torch.isnan(out[:, 7]).all()
        keep = torch.arange(shape[1]) != 7
        for j, name in enumerate(acq.STRATEGIES):
            err = rel_error(out[j][keep], want[name][keep])
            assert err < tol, f"{isa} {dtype} {shape} {name}: rel error {err:.2e}"
    with pytest.raises(ValueError, match="isa must be"):
        ext().acq_score_all(random_logits((1, 2, 3)).numpy(), "float32", isa="avx9")


def test_topk_descending_ties_to_lower_index() -> None:
    scores = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.1, 0.5])
    idx, val = acq.topk(scores, 4)
    assert idx.tolist() == [1, 3, 0, 2]
    assert val.tolist() == pytest.approx([0.9, 0.9, 0.5, 0.5])
    assert idx.dtype == torch.int64
    assert acq.topk(scores, 1)[0].tolist() == [1]
    assert acq.topk(scores, 6)[0].tolist() == [1, 3, 0, 2, 5, 4]
    with pytest.raises(ValueError, match="larger than the pool"):
        acq.topk(scores, 7)
    with pytest.raises(ValueError, match="non-negative"):
        acq.topk(scores, -1)


def test_topk_large_pool_matches_stable_sort() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 50, (20011,), generator=g).float()  # many exact ties
    idx, val = acq.topk(scores, 5000)
    order = torch.sort(scores, descending=True, stable=True).indices[:5000]
    assert torch.equal(idx, order)
    assert torch.equal(val, scores[order])


def test_topk_skips_nan_scores() -> None:
    scores = torch.tensor([float("nan"), 0.2, 0.7, float("nan")])
    assert acq.topk(scores, 2)[0].tolist() == [2, 1]
    with pytest.raises(ValueError, match="2 selectable"):
        acq.topk(scores, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_select_identical_rows_break_ties_by_index(backend: str) -> None:
    row = random_logits((3, 1, 230), seed=5)
    logits = row.repeat(1, 12, 1)
    logits[:, 4] = 0.0  # uniform: the most uncertain sample under every strategy
    logits = on(backend, logits)
    for name in acq.STRATEGIES:
        if name == "bald":
            continue  # uniform passes agree, so BALD is 0 for it
        idx, _ = acq.select(logits, name, 5, backend=backend)
        assert idx.tolist() == [4, 0, 1, 2, 3], name


@pytest.mark.parametrize("backend", BACKENDS)
def test_select_with_exclusion(backend: str) -> None:
    logits = on(backend, random_logits((4, 60, 230), seed=6))
    scores = acq.score(logits, "bald", backend=backend)
    full = torch.sort(scores, descending=True, stable=True).indices
    labelled = full[:7].tolist()
    idx, val = acq.select(logits, "bald", 10, exclude=labelled, backend=backend)
    assert idx.tolist() == full[7:17].tolist()
    mask = torch.zeros(60, dtype=torch.bool, device=logits.device)
    mask[labelled] = True
    idx2, _ = acq.select(logits, "bald", 10, exclude=mask, backend=backend)
    assert torch.equal(idx, idx2)
    assert torch.equal(val, scores[idx])
    idx_all, _ = acq.select(logits, "bald", 53, exclude=labelled, backend=backend)
    assert sorted(idx_all.tolist()) == sorted(set(range(60)) - set(labelled))
    with pytest.raises(ValueError, match="after exclusion"):
        acq.select(logits, "bald", 54, exclude=labelled, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_equal_pool_and_k_one(backend: str) -> None:
    logits = on(backend, random_logits((2, 33, 230), seed=7))
    idx, val = acq.select(logits, "margin", 33, backend=backend)
    assert sorted(idx.tolist()) == list(range(33))
    assert torch.all(val[:-1] >= val[1:])
    one, _ = acq.select(logits, "margin", 1, backend=backend)
    assert one.tolist() == idx[:1].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_logits_raise_or_exclude(backend: str, bad: float) -> None:
    logits = random_logits((3, 40, 230), seed=8)
    logits[1, 17, 3] = bad
    logits[2, 30, 0] = bad
    logits = on(backend, logits)
    with pytest.raises(ValueError, match="pool sample 17"):
        acq.score_all(logits, backend=backend)
    with pytest.raises(ValueError, match="pool sample 17"):
        acq.select(logits, "entropy", 3, backend=backend)
    s = acq.score(logits, "entropy", backend=backend, nonfinite="exclude")
    assert torch.isnan(s[17]) and torch.isnan(s[30])
    assert torch.isfinite(torch.cat([s[:17], s[18:30], s[31:]])).all()
    idx, _ = acq.select(logits, "entropy", 38, backend=backend, nonfinite="exclude")
    assert 17 not in idx.tolist() and 30 not in idx.tolist()
    with pytest.raises(ValueError, match="after exclusion"):
        acq.select(logits, "entropy", 39, backend=backend, nonfinite="exclude")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_errors(backend: str) -> None:
    good = on(backend, random_logits((2, 8, 5)))
    if backend != "torch":  # the fused kernels are float32: float64 is refused, never rounded
        with pytest.raises(ValueError, match="float64 logits are scored in float64 by 'torch'"):
            acq.score_all(good.double(), backend=backend)
    with pytest.raises(ValueError, match="dtype"):
        acq.score_all(good.to(torch.int32), backend=backend)
    with pytest.raises(ValueError, match="dims"):
        acq.score_all(good[0, 0], backend=backend)
    with pytest.raises(ValueError, match="dims"):
        acq.score_all(good[None], backend=backend)
    with pytest.raises(ValueError, match="C >= 2"):
        acq.score_all(good[..., :1], backend=backend)
    with pytest.raises(ValueError, match="unknown strategy"):
        acq.score(good, "varratio", backend=backend)
    with pytest.raises(ValueError, match="k must be"):
        acq.select(good, "bald", 1.5, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="larger than the pool"):
        acq.select(good, "bald", 9, backend=backend)
    with pytest.raises(ValueError, match="negative index"):
        acq.select(good, "bald", 2, exclude=[-1], backend=backend)
    with pytest.raises(ValueError, match="nonfinite"):
        acq.score_all(good, backend=backend, nonfinite="ignore")  # type: ignore[arg-type]


def test_unknown_backend_and_unavailable_backend() -> None:
    good = random_logits((2, 8, 5))
    with pytest.raises(ValueError, match="unknown backend"):
        acq.score_all(good, backend="cuda")  # type: ignore[arg-type]
    if not interpreting():
        with pytest.raises(ValueError, match="triton"):
            acq.score_all(good, backend="triton")


def test_noncontiguous_chunks_are_scored_in_place() -> None:
    logits = random_logits((3, 90, 230), seed=9)
    chunk = logits[:, 20:50]  # a strided view along N
    assert not chunk.is_contiguous()
    for backend in BACKENDS:
        view = on(backend, logits)[:, 20:50]
        torch.testing.assert_close(
            acq.score_all(view, backend=backend)["bald"],
            acq.score_all(view.contiguous(), backend=backend)["bald"],
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strategy", ["bald", "margin", "expected_least_confidence"])
def test_streaming_selector_equals_select(backend: str, strategy: str) -> None:
    n = 90 if backend == "triton" and TRITON_DEVICE == "cpu" else 700
    logits = random_logits((3, n, 230), seed=10)
    logits[:, 50:60] = logits[:, 40:41]  # ties across a chunk boundary
    logits = on(backend, logits)
    labelled = list(range(0, n, 13))
    k = 25
    want_idx, want_val = acq.select(logits, strategy, k, exclude=labelled, backend=backend)
    rng = np.random.default_rng(0)
    for _ in range(3):
        cuts = np.sort(rng.choice(np.arange(1, n), size=5, replace=False)).tolist()
        bounds = [0, *cuts, n]
        sel = acq.StreamingSelector(strategy, k, exclude=labelled, backend=backend)
        spans = list(zip(bounds[:-1], bounds[1:]))
        rng.shuffle(spans)  # chunks may arrive in any order when offsets are given
        for a, b in spans:
            sel.update(logits[:, a:b], offset=a)
        idx, val = sel.result()
        assert torch.equal(idx, want_idx.cpu())
        assert torch.equal(val, want_val.cpu())


def test_streaming_selector_default_offsets_and_errors() -> None:
    logits = random_logits((2, 100, 230), seed=11)
    sel = acq.StreamingSelector("entropy", 10)
    for a in range(0, 100, 30):
        sel.update(logits[:, a : a + 30])
    assert torch.equal(sel.result()[0], acq.select(logits, "entropy", 10)[0])
    with pytest.raises(ValueError, match="overlap"):
        sel.update(logits[:, :5], offset=95)
    bad = logits.clone()
    bad[0, 42, 0] = float("nan")
    sel = acq.StreamingSelector("entropy", 10)
    sel.update(bad[:, :40])
    with pytest.raises(ValueError, match="pool sample 42"):
        sel.update(bad[:, 40:])
    small = acq.StreamingSelector("entropy", 50)
    small.update(logits[:, :20])
    with pytest.raises(ValueError, match="larger than the pool seen"):
        small.result()


def test_random_indices() -> None:
    a = acq.random_indices(1000, 100, seed=3)
    assert a.dtype == torch.int64 and a.shape == (100,)
    assert len(set(a.tolist())) == 100 and 0 <= int(a.min()) and int(a.max()) < 1000
    assert torch.equal(a, acq.random_indices(1000, 100, seed=3))
    assert not torch.equal(a, acq.random_indices(1000, 100, seed=4))
    assert sorted(acq.random_indices(10, 10, seed=0).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="distinct"):
        acq.random_indices(10, 11, seed=0)


def test_ranks_agree_with_baal() -> None:
    heuristics = pytest.importorskip("baal.active.heuristics")
    logits = random_logits((8, 400, 230), seed=12)
    probs = torch.softmax(logits.double(), -1).permute(1, 2, 0).numpy()  # baal's [N, C, T]
    ours = acq.score_all(logits)
    for ours_name, heuristic in (("bald", heuristics.BALD()), ("entropy", heuristics.Entropy())):
        theirs = np.asarray(heuristic.compute_score(probs)).reshape(-1)
        np.testing.assert_allclose(ours[ours_name].numpy(), theirs, rtol=1e-4, atol=1e-5)
        ours_rank = np.argsort(-ours[ours_name].numpy(), kind="stable")
        baal_rank = np.asarray(heuristic.get_ranks(probs)[0])
        # same order up to swaps of near-equal neighbours: top-50 sets agree and ranks correlate
        assert len(set(ours_rank[:50]) & set(baal_rank[:50])) >= 48
        pos_ours = np.empty(400, int)
        pos_ours[ours_rank] = np.arange(400)
        pos_baal = np.empty(400, int)
        pos_baal[baal_rank] = np.arange(400)
        assert np.corrcoef(pos_ours, pos_baal)[0, 1] > 0.999
