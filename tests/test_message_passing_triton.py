"""Triton kernels of the fused edge op, run by the CPU interpreter (TRITON_INTERPRET=1) or a GPU."""

from __future__ import annotations

import pytest
import torch

from alkernels.models import EGNN, EGNNConfig
from alkernels.ops.dispatch import triton_usable
from alkernels.ops.message_passing import egnn_edge_op
from helpers import assert_close_all, op_inputs, random_batch, run

pytestmark = pytest.mark.skipif(
    not triton_usable(torch.zeros(0)) and not torch.cuda.is_available(),
    reason="needs TRITON_INTERPRET=1 or a CUDA device",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CASES = [([3, 2], "periodic", 3.0), ([4, 1, 3], "matsciml", 6.0), ([2, 3], "periodic", 1.0), ([1], "matsciml", 6.0)]


def on_device(args):
    h, x, shift, graph, weights = args
    if DEVICE == "cpu":
        return args
    moved = [t.detach().to(DEVICE).requires_grad_() for t in (h, x, *weights)]
    g = type(graph)(*(t.to(DEVICE) for t in (graph.src, graph.dst, graph.rowptr, graph.src_perm, graph.src_ptr)))
    return moved[0], moved[1], shift.to(DEVICE), g, type(weights)(*moved[2:])


@pytest.mark.parametrize("sizes,mode,cutoff", CASES)
@pytest.mark.parametrize("detach_norm", [False, True])
def test_triton_matches_reference_float32(sizes, mode, cutoff, detach_norm):
    args = on_device(op_inputs(sizes, mode, cutoff, torch.float32))
    assert_close_all(run("triton", *args, detach_norm), run("torch", *args, detach_norm), 1e-5)


def test_triton_is_deterministic():
    args = on_device(op_inputs([5, 4], "periodic", 3.5, torch.float32))
    for a, b in zip(run("triton", *args), run("triton", *args)):
        assert torch.equal(a, b)


def test_bf16_forward_within_documented_bound():
    """bf16 matmul inputs, fp32 accumulation: max-norm relative error of m <= 5e-2, dx <= 1e-1."""
    h, x, shift, graph, w = on_device(op_inputs([6, 5], "periodic", 3.5, torch.float32))
    with torch.no_grad():
        m_ref, dx_ref = egnn_edge_op(h, x, shift, graph, w, backend="torch")
        m, dx = egnn_edge_op(h, x, shift, graph, w, backend="triton", precision="bf16")
    assert (m - m_ref).abs().max() <= 5e-2 * m_ref.abs().max()
    assert (dx - dx_ref).abs().max() <= 1e-1 * dx_ref.abs().max()
    assert (m - m_ref).abs().max() > 0  # the bf16 path really rounds


def test_triton_float64_matches_reference_and_odd_widths_raise():
    """float64 inputs run the kernels in IEEE float64 (exact gradient checks); widths that are not
    powers of two >= 16, and tf32/bf16 with float64, raise."""
    args = on_device(op_inputs([3, 2], "periodic", 3.0, torch.float64))
    assert_close_all(run("triton", *args), run("torch", *args), 1e-10)
    h, x, shift, graph, w = args
    with pytest.raises(ValueError, match="needs float32 inputs"):
        egnn_edge_op(h, x, shift, graph, w, backend="triton", precision="bf16")
    narrow = EGNNConfig(node_dim=24)
    h, x, shift, graph, w = on_device(op_inputs([3], "periodic", 3.0, torch.float32, config=narrow))
    with pytest.raises(ValueError, match="powers of two"):
        egnn_edge_op(h, x, shift, graph, w, backend="triton")


def test_encoder_on_triton_matches_reference():
    batch = random_batch([3, 2], mode="periodic", cutoff=3.0).to(DEVICE)
    torch.manual_seed(0)
    fused = EGNN(backend="triton").to(DEVICE)
    ref = EGNN(backend="torch").to(DEVICE)
    ref.load_state_dict(fused.state_dict())
    emb_f, emb_r = fused(batch), ref(batch)
    torch.testing.assert_close(emb_f, emb_r, rtol=1e-5, atol=1e-5 * emb_r.abs().max().item())
    emb_f.square().sum().backward()
    emb_r.square().sum().backward()
    for (name, pf), pr in zip(fused.named_parameters(), ref.parameters()):
        # the last layer's coordinate MLP: no gradient in autograd, zeros from the fused op
        if pr.grad is None:
            assert pf.grad is None or not pf.grad.any(), name
            continue
        scale = pr.grad.abs().max().item()
        assert (pf.grad - pr.grad).abs().max().item() <= 1e-4 * scale + 1e-12, name


def test_triton_other_widths_match_reference():
    """Narrower layers than the paper's: the matmul tile K drops to 16 (min of 32, H and C)."""
    cfg = EGNNConfig(node_dim=16, edge_hidden=64, coord_hidden=16)
    args = on_device(op_inputs([3, 2], "periodic", 3.0, torch.float32, config=cfg))
    assert_close_all(run("triton", *args), run("torch", *args), 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the paper's batch size runs on a GPU only")
@pytest.mark.parametrize(
    "precision,fwd_rel,grad_rel", [("fp32", 1e-4, 1e-4), ("tf32", 2e-2, None), ("bf16", 5e-2, None)]
)
def test_paper_size_batch_on_gpu(precision, fwd_rel, grad_rel):
    """One layer on 256 random MP-20-sized crystals (matsciml mode, cutoff 20 A, about 40k edges)
    against the torch reference on the same GPU (fp32 matmuls); gradients checked in fp32 mode,
    finite in the others."""
    from alkernels.data import GraphDataset, collate, random_graphs
    from alkernels.models import EGNNLayer
    from alkernels.models.egnn import edge_shift_vectors
    from alkernels.ops.message_passing import EdgeWeights, build_edge_graph

    torch.backends.cuda.matmul.allow_tf32 = False
    data = GraphDataset(random_graphs(256, atoms=(4, 20), seed=5))
    batch = collate([data[i] for i in range(256)]).to("cuda")
    torch.manual_seed(0)
    layer = EGNNLayer(EGNNConfig()).cuda()
    weights = EdgeWeights(*(w.detach().clone().requires_grad_() for w in layer.edge_weights()))
    h = torch.randn(batch.num_nodes, 32, device="cuda", requires_grad=True)
    x = batch.pos.float().clone().requires_grad_()
    args = (
        h,
        x,
        edge_shift_vectors(batch, torch.float32),
        build_edge_graph(batch.edge_src, batch.edge_dst, batch.num_nodes),
        weights,
    )

    def outputs(backend, prec):
        m, dx = egnn_edge_op(*args, backend=backend, precision=prec)
        gen = torch.Generator(device="cuda").manual_seed(1)
        loss = (m * torch.randn(m.shape, device="cuda", generator=gen)).sum() + (
            dx * torch.randn(dx.shape, device="cuda", generator=gen)
        ).sum()
        return [m, dx, *torch.autograd.grad(loss, [h, x, *weights], allow_unused=True)]

    got, want = outputs("triton", precision), outputs("torch", "fp32")
    for i, (a, b) in enumerate(zip(got, want)):
        if b is None:
            continue
        assert torch.isfinite(a).all(), i
        rel = fwd_rel if i < 2 else grad_rel
        if rel is not None:
            err = (a - b).abs().max().item()
            assert err <= rel * b.abs().max().item(), f"output {i}: max error {err:.3e}"
