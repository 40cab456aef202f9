"""The fused EGNN edge op against the reference backend: values, gradients, errors, determinism."""

from __future__ import annotations

import pytest
import torch

from alkernels.models import EGNNConfig
from alkernels.ops.dispatch import ext
from alkernels.ops.message_passing import (
    EdgeWeights,
    build_edge_graph,
    edge_op_backend,
    egnn_edge_op,
    egnn_edge_torch,
)
from helpers import assert_close_all, needs_ext, op_inputs, run

# (sizes, mode, cutoff): both modes; a zero-edge one-atom cell, isolated atoms, a batch of one.
CASES = [
    ([5, 1, 7, 3], "matsciml", 6.0),
    ([4, 6], "periodic", 3.2),
    ([3, 2], "periodic", 1.0),  # small cutoff: isolated atoms, maybe no edges at all
    ([6], "periodic", 3.0),
    ([1], "matsciml", 6.0),  # a single one-atom cell: E = 0
]


@needs_ext
@pytest.mark.parametrize("sizes,mode,cutoff", CASES)
@pytest.mark.parametrize("detach_norm", [False, True])
def test_cpu_matches_reference_float64(sizes, mode, cutoff, detach_norm):
    args = op_inputs(sizes, mode, cutoff, torch.float64)
    assert_close_all(run("cpu", *args, detach_norm), run("torch", *args, detach_norm), 1e-10)


@needs_ext
@pytest.mark.parametrize("sizes,mode,cutoff", CASES)
def test_cpu_matches_reference_float32(sizes, mode, cutoff):
    args = op_inputs(sizes, mode, cutoff, torch.float32)
    assert_close_all(run("cpu", *args), run("torch", *args), 1e-5)


@needs_ext
def test_cpu_matches_reference_float64_several_threads():
    # >= 2,048 edges: the kernels split receivers over two OpenMP threads on a 2-core machine and
    # sum the threads' weight-gradient buffers
    args = op_inputs([9, 7, 8, 6], "periodic", 6.0, torch.float64)
    assert args[3].num_edges >= 2048
    assert_close_all(run("cpu", *args), run("torch", *args), 1e-10)


def cpu_variant_outputs(isa, h, x, shift, graph, w, detach_norm=False):
    """Forward outputs and all backward gradients of one compiled variant of the C++ kernels,
    for the same fixed random upstream gradients as ``run``."""
    from alkernels.ops.message_passing.cpu import egnn_edge_backward_cpu, egnn_edge_cpu

    with torch.no_grad():
        m, dx = egnn_edge_cpu(h, x, shift, graph, w, 0.1, isa)
        gen = torch.Generator().manual_seed(1)
        gm = torch.randn(m.shape, generator=gen, dtype=m.dtype)
        gdx = 100.0 * torch.randn(dx.shape, generator=gen, dtype=dx.dtype)
        return [m, dx, *egnn_edge_backward_cpu(h, x, shift, graph, w, 0.1, detach_norm, gm, gdx, isa)]


@needs_ext
@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
@pytest.mark.parametrize("dtype,rel", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_cpu_variants_agree(isa, dtype, rel):
    """Every compiled instruction-set build this CPU runs (AVX-512, AVX2, the baseline build)
    gives the outputs and gradients of the best one, which the tests above hold to the
    reference."""
    if not ext().isa_supported(isa):
        pytest.skip(f"this CPU lacks {isa}")
    args = op_inputs([9, 7, 8, 6], "periodic", 6.0, dtype)
    got = cpu_variant_outputs(isa, *args)
    want = cpu_variant_outputs("best", *args)
    for k, (a, b) in enumerate(zip(got, want)):
        scale = b.abs().max().item() if b.numel() else 0.0
        assert (a - b).abs().max().item() <= rel * max(scale, 1e-30), f"output {k}"


@needs_ext
@pytest.mark.parametrize("bias", [-50.0, 50.0])
def test_cpu_all_zero_and_all_dense_activations(bias):
    """The tile GEMMs skip the zeros of their ReLU inputs: edge MLP layers whose outputs are all
    zero (bias -50) or all positive (bias +50) must still match the reference."""
    h, x, shift, graph, w = op_inputs([5, 4, 6], "periodic", 4.0, torch.float64)
    with torch.no_grad():
        for b in (w.b2, w.bx1):
            b.fill_(bias)
    assert_close_all(run("cpu", h, x, shift, graph, w), run("torch", h, x, shift, graph, w), 1e-10)


@needs_ext
@pytest.mark.parametrize("where", ["w2", "h"])
def test_cpu_propagates_nan(where):
    """A NaN in a weight (a diverged step) or a feature reaches the outputs and the loss as in the
    reference, although the fused ReLUs and zero-skipping GEMMs touch only nonzero terms."""
    h, x, shift, graph, w = op_inputs([5, 4, 6], "periodic", 4.0, torch.float32)
    with torch.no_grad():
        (w.w2 if where == "w2" else h)[3, 5] = float("nan")
    for backend in ("cpu", "torch"):
        m, dx = egnn_edge_op(h, x, shift, graph, w, backend=backend)
        assert torch.isnan(m).any() and torch.isnan(m.sum() + dx.sum()), backend


@needs_ext
def test_cpu_gradcheck_tiny_graph():
    narrow = EGNNConfig(node_dim=16, edge_hidden=16, coord_hidden=16)
    h, x, shift, graph, weights = op_inputs([3, 2], "periodic", 3.0, torch.float64, config=narrow)

    def f(h_, x_, *w):
        return egnn_edge_op(h_, x_, shift, graph, EdgeWeights(*w), backend="cpu")

    assert graph.num_edges > 0
    assert torch.autograd.gradcheck(f, (h, x, *weights), eps=1e-6, atol=1e-6)


@needs_ext
def test_cpu_is_deterministic():
    args = op_inputs([8, 5, 7], "periodic", 3.5, torch.float32)
    first, second = run("cpu", *args), run("cpu", *args)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_reference_sums_over_receivers():
    """A two-atom hand check: m_i is the edge MLP of the single incoming edge, dx_i = u tanh(.)."""
    h, x, shift, graph, w = op_inputs([2], "matsciml", 10.0, torch.float64)
    m, dx = egnn_edge_torch(h, x, shift, graph, w)
    d = x[1] - x[0]
    for i, j, dij in ((0, 1, d), (1, 0, -d)):
        z = torch.cat([h[j], h[i], (dij * dij).sum()[None]])
        for lin_w, lin_b in ((w.w1, w.b1), (w.w2, w.b2), (w.w3, w.b3)):
            z = torch.relu(lin_w @ z + lin_b)
        p = torch.relu(w.wx2 @ torch.relu(w.wx1 @ z + w.bx1) + w.bx2)
        torch.testing.assert_close(m[i], z)
        torch.testing.assert_close(dx[i], dij / (dij.norm() + 0.1) * torch.tanh(w.wx3 @ p))


def test_bad_inputs_raise_value_error():
    h, x, shift, graph, w = op_inputs([4, 3], "periodic", 3.5, torch.float32)
    with pytest.raises(ValueError, match="sorted"):
        build_edge_graph(graph.src, graph.dst.flip(0), graph.num_nodes)
    with pytest.raises(ValueError, match="int64"):
        build_edge_graph(graph.src.int(), graph.dst, graph.num_nodes)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        build_edge_graph(graph.src, graph.dst, 3)
    with pytest.raises(ValueError, match="expected h"):
        egnn_edge_op(h, x[:, :2], shift, graph, w)
    with pytest.raises(ValueError, match="float32 or float64"):
        egnn_edge_op(h.half(), x, shift, graph, w)
    with pytest.raises(ValueError, match="expected torch.float32"):
        egnn_edge_op(h, x.double(), shift, graph, w)
    with pytest.raises(ValueError, match="weight w2"):
        egnn_edge_op(h, x, shift, graph, w._replace(w2=w.w2[:, :64]))
    with pytest.raises(ValueError, match="backend"):
        egnn_edge_op(h, x, shift, graph, w, backend="cuda")
    with pytest.raises(ValueError, match="ReLU"):
        egnn_edge_op(h, x, shift, graph, w, backend="cpu", activation="silu")
    if ext() is not None:
        with pytest.raises(ValueError, match="float32 and float64"):
            ext().egnn_edge_forward(
                *(t.detach().half().numpy() for t in (h, h, h[0], x, shift)),
                graph.src.numpy(),
                graph.dst.numpy(),
                graph.rowptr.numpy(),
                [],
                0.1,
            )
        with pytest.raises(ValueError, match="isa must be"):
            ext().egnn_edge_forward(
                *(t.detach().numpy() for t in (h, h, h[0], x, shift)),
                graph.src.numpy(),
                graph.dst.numpy(),
                graph.rowptr.numpy(),
                [],
                0.1,
                "sse9",
            )


def test_auto_backend_choice():
    probe = torch.zeros(1)
    assert edge_op_backend("auto", probe) == ("cpu" if ext() is not None else "torch")
    assert edge_op_backend("auto", probe, activation="silu") == "torch"
    assert edge_op_backend("reference", probe) == "torch"  # the old name stays an alias
    with pytest.raises(ValueError, match="ReLU MLPs only"):
        edge_op_backend("cpu", probe, activation="silu")
    with pytest.raises(ValueError, match="unknown backend"):
        edge_op_backend("fast", probe)
