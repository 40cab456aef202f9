"""Every model runs under torch.autocast on every backend: the periodic shifts stay exact float32,
the fused op decides its own precision, and the torch reference casts where autocast would mix
dtypes. CPU bfloat16 autocast here; CUDA autocast goes through the same code."""

from __future__ import annotations

import pytest
import torch

from alkernels.models import EGNN, EGNNConfig, SpaceGroupClassifier
from alkernels.models.egnn import edge_shift_vectors
from alkernels.ops.dispatch import ext
from alkernels.ops.message_passing import egnn_edge_op
from helpers import BACKENDS, op_inputs, random_batch


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_shift_vectors_stay_exact_float32_under_autocast() -> None:
    batch = random_batch([4, 3], mode="periodic", cutoff=5.0)
    assert batch.edge_shift.abs().sum() > 0
    plain = edge_shift_vectors(batch, torch.float32)
    with autocast():
        cast = edge_shift_vectors(batch, torch.float32)
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_fused_op_keeps_its_own_precision_under_autocast(backend: str) -> None:
    """bf16 node features from an autocast Linear are cast back; the kernels run in float32 and
    give the float32 results."""
    h, x, shift, graph, w = op_inputs([4, 3], "periodic", 3.5, torch.float32)
    want = egnn_edge_op(h, x, shift, graph, w, backend=backend)
    with autocast():
        got = egnn_edge_op(h.bfloat16(), x, shift, graph, w, backend=backend)
    h_rounded = h.bfloat16().float()
    want_rounded = egnn_edge_op(h_rounded, x, shift, graph, w, backend=backend)
    for a, b in zip(got, want_rounded):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert got[0].shape == want[0].shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_classifier_trains_one_step_under_autocast(backend: str) -> None:
    """What TrainStep(amp=True) does on a GPU, on the CPU: forward under bf16 autocast, float32
    cross-entropy, backward, AdamW step; finite loss and gradients, parameters move."""
    torch.manual_seed(0)
    batch = random_batch([4, 3, 5], mode="periodic", cutoff=3.5)
    y = torch.tensor([3, 17, 200])
    model = SpaceGroupClassifier(EGNN(EGNNConfig(num_layers=2), backend=backend), dropout=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    with autocast():
        logits = model(batch)
    assert logits.dtype == torch.bfloat16
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_torch_and_fused_backends_agree_under_autocast() -> None:
    if ext() is None:
        pytest.skip("alkernels._C not built")
    batch = random_batch([4, 3], mode="periodic", cutoff=3.5)
    torch.manual_seed(0)
    fused = EGNN(EGNNConfig(num_layers=2), backend="cpu")
    ref = EGNN(EGNNConfig(num_layers=2), backend="torch")
    ref.load_state_dict(fused.state_dict())
    with autocast():
        a, b = fused(batch), ref(batch)
    # the torch reference runs its edge MLPs in bf16 under autocast, the fused op in float32
    assert (a.float() - b.float()).abs().max() <= 5e-2 * b.float().abs().max()
