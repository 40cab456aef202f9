"""Triton kernels of the fused edge op, run by the CPU interpreter (TRITON_INTERPRET=1) or a GPU."""
from __future__ import annotations

import pytest
import torch
from test_egnn_fixtures import random_batch
from test_message_passing import assert_close_all, op_inputs, run

from alkernels.models import EGNN, EGNNConfig
from alkernels.ops.dispatch import triton_usable
from alkernels.ops.message_passing import egnn_edge_op

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


def test_triton_rejects_float64_and_odd_widths():
    h, x, shift, graph, w = on_device(op_inputs([3], "periodic", 3.0, torch.float64))
    with pytest.raises(ValueError, match="float32"):
        egnn_edge_op(h, x, shift, graph, w, backend="triton")
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
