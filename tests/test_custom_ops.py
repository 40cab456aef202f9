"""Every fused op is a registered PyTorch operator: opcheck (schema, fake tensors, autograd
registration, AOT dispatch), exact first, second and third derivatives on every backend, force
training equal to the torch backend, torch.func, meta tensors and the auto-backend fallbacks."""

from __future__ import annotations

import logging

import pytest
import torch

from alkernels import acquisition as acq
from alkernels.models import EGNN, EGNNConfig, SpaceGroupClassifier
from alkernels.ops.dispatch import ext
from alkernels.ops.message_passing import EdgeWeights, egnn_edge_op
from alkernels.ops.registry import OPERATORS
from helpers import (
    BACKENDS,
    FUSED,
    HAS_EXT,
    device_of,
    needs_triton,
    op_inputs,
    random_batch,
)

NARROW = EGNNConfig(node_dim=16, edge_hidden=16, coord_hidden=16)
CUDA = torch.cuda.is_available()


def on(device: str, h, x, shift, graph, w):
    """The op inputs on ``device``, differentiable leaves again."""
    if device == "cpu":
        return h, x, shift, graph, w
    leaves = [t.detach().to(device).requires_grad_() for t in (h, x, *w)]
    g = type(graph)(*(t.to(device) for t in (graph.src, graph.dst, graph.rowptr, graph.src_perm, graph.src_ptr)))
    return leaves[0], leaves[1], shift.to(device), g, EdgeWeights(*leaves[2:])


def narrow_inputs(dtype: torch.dtype = torch.float64, device: str = "cpu"):
    h, x, shift, graph, w = op_inputs([3, 2], "periodic", 3.0, dtype, config=NARROW)
    assert graph.num_edges > 0
    return on(device, h, x, shift, graph, w)


def edge_args(backend: str, dtype: torch.dtype = torch.float64) -> tuple:
    h, x, shift, g, w = narrow_inputs(dtype, device_of(backend))
    return (h, x, shift, g.src, g.dst, g.rowptr, g.src_perm, g.src_ptr, *w, 0.1, False, backend, "fp32")


def test_every_operator_is_registered_in_one_namespace() -> None:
    import alkernels.ops  # noqa: F401  (registers every family)

    assert set(OPERATORS) == {
        "alkernels::edge_csr",
        "alkernels::egnn_edge",
        "alkernels::egnn_edge_backward",
        "alkernels::egnn_edge_double_backward",
        "alkernels::check_atomic_numbers",
        "alkernels::score_all",
        "alkernels::topk",
        "alkernels::merge_topk",
    }
    for name in OPERATORS:
        assert hasattr(torch.ops.alkernels, name.split("::")[1]), name


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck_egnn_edge(backend: str) -> None:
    torch.library.opcheck(torch.ops.alkernels.egnn_edge.default, edge_args(backend))


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck_egnn_edge_backward(backend: str) -> None:
    args = edge_args(backend)
    n, dev = args[0].shape[0], args[0].device
    gm = torch.randn(n, 16, dtype=torch.float64, device=dev, requires_grad=True)
    gdx = torch.randn(n, 3, dtype=torch.float64, device=dev, requires_grad=True)
    torch.library.opcheck(torch.ops.alkernels.egnn_edge_backward.default, (gm, gdx, *args))


@pytest.mark.skipif(not HAS_EXT, reason="alkernels._C not built")
def test_opcheck_egnn_edge_double_backward() -> None:
    args = edge_args("cpu")
    n = args[0].shape[0]
    gen = torch.Generator().manual_seed(5)
    gm, gdx = (torch.randn(n, d, generator=gen, dtype=torch.float64) for d in (16, 3))
    v_h, v_x = (torch.randn(n, d, generator=gen, dtype=torch.float64) for d in (16, 3))
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args[:19]]
    torch.library.opcheck(
        torch.ops.alkernels.egnn_edge_double_backward.default, (gm, gdx, *detached, v_h, v_x, 0.1, False, "cpu")
    )


def reference_double_backward(h, x, shift, graph, w, detach_norm, gm, gdx, v_h, v_x) -> list[torch.Tensor]:
    """The VJP of the reference's backward for cotangents (v_h, v_x) on its h and x gradients."""
    gm, gdx = gm.clone().requires_grad_(), gdx.clone().requires_grad_()
    m, dx = egnn_edge_op(h, x, shift, graph, w, backend="torch", detach_norm=detach_norm)
    first = torch.autograd.grad((m, dx), [h, x, *w], (gm, gdx), create_graph=True)
    cot = [v_h, v_x, *(torch.zeros_like(t) for t in w)]
    out = torch.autograd.grad(first, [gm, gdx, h, x, *w], cot, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(out, [gm, gdx, h, x, *w])]


@pytest.mark.skipif(not HAS_EXT, reason="alkernels._C not built")
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
@pytest.mark.parametrize("detach_norm", [False, True])
def test_fused_double_backward_matches_the_reference(isa: str, detach_norm: bool) -> None:
    """The C++ double-backward kernels (every build this CPU runs, two OpenMP threads: >= 2,048
    edges) against autograd through the reference, float64, both graph modes."""
    from alkernels.ops.message_passing.cpu import egnn_edge_double_backward_cpu

    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    for sizes, mode, cutoff in (([9, 7, 8, 6], "periodic", 6.0), ([5, 3], "matsciml", 6.0)):
        h, x, shift, graph, w = op_inputs(sizes, mode, cutoff, torch.float64)
        gen = torch.Generator().manual_seed(3)
        n = h.shape[0]
        gm, gdx, v_h, v_x = (torch.randn(n, d, generator=gen, dtype=torch.float64) for d in (128, 3, 32, 3))
        d_gm, d_gdx, grads = egnn_edge_double_backward_cpu(
            h, x, shift, graph, w, 0.1, detach_norm, gm, gdx, v_h, v_x, isa
        )
        want = reference_double_backward(h, x, shift, graph, w, detach_norm, gm, gdx, v_h, v_x)
        for k, (a, b) in enumerate(zip([d_gm, d_gdx, *grads], want)):
            assert (a - b).abs().max() <= 1e-11 * max(b.abs().max().item(), 1e-30), (mode, k)


@pytest.mark.skipif(not HAS_EXT, reason="alkernels._C not built")
def test_cotangents_on_weight_gradients_take_the_exact_reference_path() -> None:
    """A gradient penalty on the weight gradients (not force training) needs the VJP with
    cotangents on them, which the fused kernel does not take: it must still be exact."""

    def penalty_grads(backend: str) -> list[torch.Tensor]:
        h, x, shift, graph, w = op_inputs([4, 2], "periodic", 3.5, torch.float64)
        m, dx = egnn_edge_op(h, x, shift, graph, w, backend=backend)
        grads = torch.autograd.grad(m.square().sum() + dx.square().sum(), [x, *w], create_graph=True)
        return list(torch.autograd.grad(sum(g.square().sum() for g in grads), [h, *w]))

    for a, b in zip(penalty_grads("cpu"), penalty_grads("torch")):
        assert (a - b).norm() <= 1e-9 * b.norm()


def test_opcheck_graph_and_check_ops() -> None:
    h, _, _, g, _ = narrow_inputs()
    torch.library.opcheck(torch.ops.alkernels.edge_csr.default, (g.src, g.dst, h.shape[0], True))
    torch.library.opcheck(torch.ops.alkernels.check_atomic_numbers.default, (torch.tensor([1, 8, 26]), 100))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_score_all(backend: str, dtype: torch.dtype) -> None:
    logits = torch.randn(3, 40, 7).to(dtype).to(device_of(backend))
    torch.library.opcheck(torch.ops.alkernels.score_all.default, (logits, backend, "raise", 0))
    # a non-finite sample scores NaN, which opcheck's eager-vs-AOT comparison counts as a
    # difference: the other checks only
    logits[1, 5, 2] = float("nan")
    torch.library.opcheck(
        torch.ops.alkernels.score_all.default,
        (logits, backend, "exclude", 0),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


def test_opcheck_score_all_and_topk_float64() -> None:
    """float64 logits on the torch backend: float64 scores, from the op and its fake alike; the
    fused backends refuse them inside the op rather than round them."""
    logits = torch.randn(3, 40, 7, dtype=torch.float64)
    torch.library.opcheck(torch.ops.alkernels.score_all.default, (logits, "torch", "raise", 0))
    assert torch.ops.alkernels.score_all(logits, "torch", "raise", 0).dtype == torch.float64
    scores = torch.randn(50, dtype=torch.float64)
    torch.library.opcheck(torch.ops.alkernels.topk.default, (scores, 6, None, 0, True))
    assert torch.ops.alkernels.topk(scores, 6, None, 0, True)[1].dtype == torch.float64
    with pytest.raises(ValueError, match="float64 logits take backend 'torch'"):
        torch.ops.alkernels.score_all(logits, "cpu", "raise", 0)


def test_opcheck_topk_and_merge() -> None:
    scores = torch.randn(50)
    scores[7] = float("nan")
    for exclude in (None, torch.tensor([1, 2, 60]), torch.arange(50) % 3 == 0):
        torch.library.opcheck(torch.ops.alkernels.topk.default, (scores, 6, exclude, 0, True))
        torch.library.opcheck(torch.ops.alkernels.topk.default, (scores, 6, exclude, 10, False))
    idx = torch.randperm(100)[:30]
    torch.library.opcheck(torch.ops.alkernels.merge_topk.default, (idx, torch.randn(30), 8))
    torch.library.opcheck(torch.ops.alkernels.merge_topk.default, (idx, torch.randn(30), 50))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck_float64(backend: str) -> None:
    """First and second derivatives against finite differences in float64 (the Triton kernels
    in the interpreter with float64 inputs; a random-projection check there, for time)."""
    h, x, shift, graph, w = narrow_inputs(device=device_of(backend))

    def f(h_, x_, *ws):
        return egnn_edge_op(h_, x_, shift, graph, EdgeWeights(*ws), backend=backend)

    fast = backend == "triton"
    assert torch.autograd.gradcheck(f, (h, x, *w), eps=1e-6, atol=1e-6, fast_mode=fast)
    assert torch.autograd.gradgradcheck(f, (h, x, *w), eps=1e-6, atol=1e-5, fast_mode=fast)


def force_training_grads(backend: str, order: int = 2) -> list[torch.Tensor]:
    """Gradients of ``E + |F|^2`` (order 2: forces F = dE/dx with create_graph) or of
    ``|d|F|^2/dh|^2`` (order 3) w.r.t. x and the weights, float64, for one edge op."""
    h, x, shift, graph, w = on(device_of(backend), *op_inputs([4, 2], "periodic", 3.5, torch.float64))
    m, dx = egnn_edge_op(h, x, shift, graph, w, backend=backend)
    energy = 1e-3 * (m.sum(1) ** 2).sum() + (dx**2).sum()
    (forces,) = torch.autograd.grad(energy, x, create_graph=True)
    loss = energy + (forces**2).sum()
    if order == 3:
        (gh,) = torch.autograd.grad((forces**2).sum(), h, create_graph=True)
        loss = (gh**2).sum()
    return [g.cpu() for g in torch.autograd.grad(loss, [x, *w])]


@pytest.mark.parametrize("backend", FUSED)
def test_force_training_gradients_equal_the_torch_backend(backend: str) -> None:
    """The case that used to be 58% off without a word: energy-and-force training."""
    got, want = force_training_grads(backend), force_training_grads("torch")
    for a, b in zip(got, want):
        assert (a - b).norm() <= 1e-9 * b.norm()


@pytest.mark.skipif(not HAS_EXT, reason="alkernels._C not built")
def test_third_order_gradients_are_exact() -> None:
    for a, b in zip(force_training_grads("cpu", 3), force_training_grads("torch", 3)):
        assert (a - b).norm() <= 1e-9 * b.norm()


@pytest.mark.skipif(not HAS_EXT, reason="alkernels._C not built")
def test_torch_func_vmap_and_grad() -> None:
    """vmap runs the op once per batch entry (a registered rule). torch.func.grad through a
    custom op's registered autograd is not supported by PyTorch: it raises, never guesses."""
    h, x, shift, graph, w = narrow_inputs()

    def energy(x_: torch.Tensor, backend: str) -> torch.Tensor:
        m, dx = egnn_edge_op(h.detach(), x_, shift, graph, EdgeWeights(*(t.detach() for t in w)), backend=backend)
        return m.square().sum() + dx.square().sum()

    x0 = x.detach()
    xs = torch.stack([x0, x0 + 0.01, x0 - 0.02])
    batched = torch.func.vmap(lambda xx: energy(xx, "cpu"))(xs)
    torch.testing.assert_close(batched, torch.stack([energy(xx, "torch") for xx in xs]))
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(energy)(x0, "cpu")


@pytest.mark.skipif(not HAS_EXT, reason="alkernels._C not built")
def test_meta_and_fake_tensors_propagate_shapes() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    batch = random_batch([4, 3], mode="periodic", cutoff=3.5)
    model = SpaceGroupClassifier(EGNN(EGNNConfig(num_layers=2), backend="cpu"), dropout=0.0)
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = model(batch)
    assert out.shape == (2, 230)
    meta = torch.ops.alkernels.egnn_edge(
        *(t.to("meta") if isinstance(t, torch.Tensor) else t for t in edge_args("cpu"))
    )
    assert [tuple(t.shape) for t in meta] == [(5, 16), (5, 3)] and meta[0].device.type == "meta"


def test_auto_falls_back_to_torch_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    """Widths the C++ kernels do not tile, a SiLU MLP and a shift gradient go to torch under
    'auto' (logged at debug level), and raise with the reason under an explicit backend."""
    if not HAS_EXT:
        pytest.skip("alkernels._C not built")
    odd = EGNNConfig(node_dim=24, edge_hidden=40, coord_hidden=24)
    h, x, shift, graph, w = op_inputs([3, 2], "periodic", 3.0, torch.float64, config=odd)
    with caplog.at_level(logging.DEBUG, logger="alkernels"):
        m, dx = egnn_edge_op(h, x, shift, graph, w, backend="auto")
    m_ref, dx_ref = egnn_edge_op(h, x, shift, graph, w, backend="torch")
    assert torch.equal(m, m_ref) and torch.equal(dx, dx_ref)
    assert any("multiples of 16" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="multiples of 16"):
        egnn_edge_op(h, x, shift, graph, w, backend="cpu")

    h, x, shift, graph, w = narrow_inputs()
    cell_shift = shift.clone().requires_grad_()
    m, dx = egnn_edge_op(h, x, cell_shift, graph, w, backend="auto")
    (g_auto,) = torch.autograd.grad(dx.sum(), cell_shift)
    m, dx = egnn_edge_op(h, x, cell_shift, graph, w, backend="torch")
    (g_ref,) = torch.autograd.grad(dx.sum(), cell_shift)
    assert torch.equal(g_auto, g_ref) and g_ref.abs().sum() > 0
    with pytest.raises(ValueError, match="shift vectors"):
        egnn_edge_op(h, x, cell_shift, graph, w, backend="cpu")


@needs_triton
def test_auto_fallback_reasons_of_the_triton_backend() -> None:
    from alkernels.ops.message_passing import why_unsupported

    assert why_unsupported("triton", widths=(24, 128, 64)) is not None
    assert why_unsupported("triton", dtype=torch.float16) is not None
    assert why_unsupported("triton", dtype=torch.float64) is None
    assert why_unsupported("triton", activation="silu") is not None
    odd = EGNNConfig(node_dim=24)
    h, x, shift, graph, w = op_inputs([3], "periodic", 3.0, torch.float32, config=odd)
    with pytest.raises(ValueError, match="powers of two"):
        egnn_edge_op(h, x, shift, graph, w, backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_scoring_reads_logits_that_require_grad(backend: str) -> None:
    logits = torch.randn(4, 60, 9, device=device_of(backend), requires_grad=True)
    scores = acq.score_all(logits, backend=backend)
    ref = acq.score_all(logits.detach(), backend=backend)
    assert all(torch.equal(scores[k], ref[k]) and not scores[k].requires_grad for k in acq.STRATEGIES)
    idx, val = acq.select(logits, "bald", 5, exclude=[0, 1], backend=backend)
    assert not val.requires_grad and idx.shape == (5,)
    sel = acq.StreamingSelector("margin", 4, backend=backend)
    sel.update(logits[:, :30])
    sel.update(logits[:, 30:])
    torch.testing.assert_close(sel.result()[0], acq.select(logits.detach(), "margin", 4, backend=backend)[0].cpu())


def test_adapters_read_mc_logits_that_require_grad() -> None:
    pytest.importorskip("modAL")
    import numpy as np

    from alkernels.adapters.modal import bald_sampling

    logits = torch.randn(5, 40, 6, requires_grad=True)

    class Learner:
        estimator = None

    idx, _ = bald_sampling(Learner(), np.zeros((40, 3)), 4, mc=lambda pool: logits)
    want, _ = acq.select(logits.detach(), "bald", 4)
    assert sorted(np.asarray(idx).tolist()) == sorted(want.tolist())


def test_mc_logits_carry_no_graph() -> None:
    batch = random_batch([3, 2], mode="periodic", cutoff=3.5)
    model = SpaceGroupClassifier(EGNN(EGNNConfig(num_layers=1), backend="torch"), dropout=0.2)
    with torch.enable_grad():
        mc = model.mc_logits(batch, T=3)
    assert mc.shape == (3, 2, 230) and not mc.requires_grad and mc.grad_fn is None
    assert model(batch).requires_grad  # the training forward still builds one
