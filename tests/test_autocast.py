"""Every model runs under torch.autocast on every backend: the periodic shifts stay exact float32,
the fused op decides its own precision, and the torch reference casts where autocast would mix
dtypes. CPU bfloat16 autocast here; CUDA autocast goes through the same code."""

from __future__ import annotations

import pytest
import torch

from alkernels.models import EGNN, EGNNConfig, EnergyForceModel, PropertyRegressor, SpaceGroupClassifier
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


def build_model(kind: str, backend: str) -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = EGNN(EGNNConfig(num_layers=2), backend=backend)
    if kind == "classifier":
        return SpaceGroupClassifier(encoder, dropout=0.1).eval()  # eval: the same dropout-free forward twice
    if kind == "regressor":
        return PropertyRegressor(encoder, ["band_gap", "formation_energy"]).eval()
    return EnergyForceModel(encoder).eval()


def forward_backward(model: torch.nn.Module, batch, amp: bool) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs (as float32) and parameter gradients of a float32 loss on every output."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model(batch)
    outs = list(out) if isinstance(out, tuple) else [out]
    sum(o.float().square().mean() for o in outs).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return [o.detach().float() for o in outs], grads


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["classifier", "regressor", "force"])
def test_every_model_forward_and_backward_under_autocast(kind: str, backend: str) -> None:
    """Classifier, regressor and energy/force model under CPU bf16 autocast: finite outputs close to
    float32 (bf16 node MLPs: ~1% of the norm; the forces of an untrained model are small
    differences of larger pair terms, ~17% on every backend, the torch reference included), and
    gradients that reach the same parameters as in float32, finite and close to them."""
    batch = random_batch([4, 3, 5], mode="periodic", cutoff=3.5)
    model = build_model(kind, backend)
    want, want_grads = forward_backward(model, batch, amp=False)
    got, grads = forward_backward(model, batch, amp=True)
    if kind == "force":  # energies and forces stay in the parameters' dtype under autocast
        with autocast():
            energy, forces = model(batch)
        assert energy.dtype == forces.dtype == torch.float32
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.isfinite(a).all()
        limit = 0.3 if kind == "force" and i == 1 else 3e-2
        assert rel(a, b) < limit, f"{kind} {backend} output {i}: {rel(a, b):.3e}"
    assert grads.keys() == want_grads.keys() and grads
    assert all(torch.isfinite(g).all() for g in grads.values())
    flat = torch.cat([grads[k].flatten() for k in want_grads])
    flat_want = torch.cat([want_grads[k].flatten() for k in want_grads])
    assert rel(flat, flat_want) < 5e-2, f"{kind} {backend} gradients: {rel(flat, flat_want):.3e}"
