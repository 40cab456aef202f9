"""torch.compile(fullgraph=True) and torch.export through the registered ops: no graph breaks,
results equal to eager mode, the same clear errors on bad input, and an exported classifier
that round-trips through save and load."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch

from alkernels import acquisition as acq
from alkernels.models import (
    EGNN,
    EGNNConfig,
    EnergyForceModel,
    PropertyRegressor,
    SpaceGroupClassifier,
)
from helpers import random_batch

pytestmark = pytest.mark.timeout(300)
CONFIG = EGNNConfig(num_layers=2)


def batch_with_labels():
    torch.manual_seed(0)
    batch = random_batch([4, 3, 5], mode="periodic", cutoff=3.5)
    return replace(batch, y=torch.randn(3, 1), forces=torch.randn(batch.num_nodes, 3))


def graph_breaks(fn, *args) -> int:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    torch._dynamo.reset()
    assert explanation.graph_count == 1, [b.reason for b in explanation.break_reasons]
    return explanation.graph_break_count


def assert_grads_equal(model: torch.nn.Module, compiled_loss: torch.Tensor, eager_loss: torch.Tensor) -> None:
    compiled_loss.backward()
    first = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager_loss.backward()
    for a, p in zip(first, model.parameters()):
        if p.grad is None:
            assert a is None or not a.any()
            continue
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5 * max(p.grad.abs().max().item(), 1e-6))


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_models_compile_fullgraph_with_no_graph_break(kind: str) -> None:
    batch = batch_with_labels()
    encoder = EGNN(CONFIG, backend="auto")
    if kind == "classifier":
        model = SpaceGroupClassifier(encoder, dropout=0.0)
    else:
        model = PropertyRegressor(encoder, ["energy"])
    assert graph_breaks(model, batch) == 0
    compiled = torch.compile(model, fullgraph=True)
    out, ref = compiled(batch), model(batch)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert_grads_equal(model, out.square().sum(), model(batch).square().sum())


def test_force_model_compiles_fullgraph_with_no_graph_break() -> None:
    batch = batch_with_labels()
    batch.pos.requires_grad_()
    model = EnergyForceModel(EGNN(CONFIG, backend="auto"))
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        assert graph_breaks(model, batch) == 0
        energy, forces = torch.compile(model, fullgraph=True)(batch)
    ref_e, ref_f = model(batch)
    torch.testing.assert_close(energy, ref_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(forces, ref_f, rtol=1e-4, atol=1e-5 * ref_f.abs().max().item())
    assert_grads_equal(model, EnergyForceModel.loss(energy, forces, batch), EnergyForceModel.loss(ref_e, ref_f, batch))


def test_compiled_model_raises_the_same_errors_on_bad_input() -> None:
    batch = random_batch([4, 3], mode="periodic", cutoff=3.5)
    model = SpaceGroupClassifier(EGNN(CONFIG, backend="auto"), dropout=0.0)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(batch)
    bad_z = replace(batch, z=batch.z.clone().index_fill_(0, torch.tensor([2]), 150))
    with pytest.raises(ValueError, match=r"atomic numbers must lie in \[0, 100\)"):
        compiled(bad_z)
    bad_edges = replace(batch, edge_src=batch.edge_src.clone().index_fill_(0, torch.tensor([0]), 99))
    with pytest.raises(ValueError, match="edge indices must lie in"):
        compiled(bad_edges)


def test_scoring_compiles_fullgraph_with_no_graph_break() -> None:
    logits = torch.randn(6, 300, 20)
    assert graph_breaks(acq.score_all, logits) == 0

    def query(x: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return acq.select(x, "bald", 12, exclude=exclude)

    for exclude in (torch.tensor([3, 4, 250]), torch.arange(300) % 5 == 0):
        assert graph_breaks(query, logits, exclude) == 0
        got, want = torch.compile(query, fullgraph=True)(logits, exclude), query(logits, exclude)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    scores = torch.compile(acq.score_all, fullgraph=True)(logits)
    ref = acq.score_all(logits)
    assert all(torch.equal(scores[k], ref[k]) for k in acq.STRATEGIES)
    bad = logits.clone()
    bad[2, 77, 1] = float("inf")
    with pytest.raises(acq.NonFiniteLogitsError, match="pool sample 77"):
        torch.compile(acq.score_all, fullgraph=True)(bad)


def test_export_round_trips_the_classifier() -> None:
    batch = random_batch([4, 3, 5], mode="periodic", cutoff=3.5)
    torch.manual_seed(1)
    model = SpaceGroupClassifier(EGNN(CONFIG, backend="auto"), dropout=0.0).eval()
    program = torch.export.export(model, (batch,))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("alkernels" in op for op in ops), ops
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    torch.testing.assert_close(loaded.module()(batch), model(batch))
