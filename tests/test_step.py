"""The GPU-path training step: padding to buckets leaves the real graphs' results unchanged, the
sync-free CSR build equals the checked one, and TrainStep on the CPU is the plain AdamW step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alkernels.data import GraphDataset, collate, random_graphs
from alkernels.loop.step import IGNORE_INDEX, TrainStep, bucket_for, pad_batch
from alkernels.models import paper_classifier
from alkernels.ops.message_passing import build_edge_graph

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def small_batch(n: int = 5, seed: int = 0):
    data = GraphDataset(random_graphs(n, atoms=(3, 6), seed=seed), y=np.arange(n) % 7)
    return collate([data[i] for i in range(n)])


def test_padding_leaves_real_graphs_unchanged() -> None:
    batch = small_batch()
    key = bucket_for(batch, node_step=16, edge_step=64)
    nodes, edges, graphs = key
    assert nodes > batch.num_nodes and nodes % 16 == 0 and edges >= batch.num_edges and edges % 64 == 0
    assert graphs == batch.num_graphs + 1
    padded = pad_batch(batch, *key)
    assert (padded.num_nodes, padded.num_edges, padded.num_graphs) == key
    assert bool((padded.edge_dst[1:] >= padded.edge_dst[:-1]).all())
    assert padded.y[-1] == IGNORE_INDEX
    torch.manual_seed(0)
    model = paper_classifier(backend="torch", dropout=0.0).eval()
    with torch.no_grad():
        want = model(batch)
        got = model(padded)
    assert torch.equal(got[: batch.num_graphs], want)
    loss = torch.nn.functional.cross_entropy(got, padded.y, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(want, batch.y))


def test_padding_rejects_small_buckets() -> None:
    batch = small_batch()
    with pytest.raises(ValueError, match="must exceed"):
        pad_batch(batch, batch.num_nodes, batch.num_edges, batch.num_graphs + 1)
    with pytest.raises(ValueError, match="must exceed"):
        pad_batch(batch, batch.num_nodes + 1, batch.num_edges - 1, batch.num_graphs + 1)


def test_unchecked_csr_build_equals_checked() -> None:
    batch = small_batch(seed=3)
    a = build_edge_graph(batch.edge_src, batch.edge_dst, batch.num_nodes)
    b = build_edge_graph(batch.edge_src, batch.edge_dst, batch.num_nodes, validate=False)
    for x, y in zip((a.src, a.dst, a.rowptr, a.src_perm, a.src_ptr), (b.src, b.dst, b.rowptr, b.src_perm, b.src_ptr)):
        assert torch.equal(x, y)
    counts = torch.bincount(batch.edge_dst, minlength=batch.num_nodes)
    assert torch.equal(a.rowptr[1:] - a.rowptr[:-1], counts)
    # an isolated last node and no edges at all
    empty = build_edge_graph(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), 3)
    assert empty.rowptr.tolist() == [0, 0, 0, 0] and empty.src_ptr.tolist() == [0, 0, 0, 0]


def test_train_step_is_the_adamw_step() -> None:
    batch = small_batch(6, seed=1)
    torch.manual_seed(0)
    model = paper_classifier(backend="torch", dropout=0.0).to(DEVICE)
    ref = paper_classifier(backend="torch", dropout=0.0).to(DEVICE)
    ref.load_state_dict(model.state_dict())
    step = TrainStep(model, lr=1e-3, amp=False)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(2):
        loss = step(batch)
        b = batch.to(DEVICE)
        opt.zero_grad()
        want = torch.nn.functional.cross_entropy(ref(b), b.y)
        want.backward()
        opt.step()
        assert loss.dim() == 0 and loss.device.type == DEVICE
        torch.testing.assert_close(loss, want.detach(), rtol=1e-4, atol=1e-5)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no labels"):
        step(type(batch)(**{**vars(batch), "y": None}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and autocast need a GPU")
@pytest.mark.parametrize("graphs", [False, True])
def test_gpu_step_trains(graphs: bool) -> None:
    """The GPU path (Triton edge op in bf16, bf16 autocast, padded buckets, fused AdamW, CUDA
    graphs) lowers the loss on a fixed batch like the plain step does."""
    batch = small_batch(24, seed=2)
    torch.manual_seed(0)
    step = TrainStep(paper_classifier(backend="triton", precision="bf16", dropout=0.0).cuda(), lr=1e-3, graphs=graphs)
    losses = [float(step(batch)) for _ in range(30)]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_step_equals_eager_step() -> None:
    """Capturing a bucket (with its warm-up) makes exactly one optimiser step per call: after
    three calls the weights match the eager padded step's."""
    batch = small_batch(8, seed=4)
    steps = []
    for graphs in (False, True):
        torch.manual_seed(0)
        model = paper_classifier(backend="triton", precision="fp32", dropout=0.0).cuda()
        step = TrainStep(model, lr=1e-3, amp=False, graphs=graphs)
        losses = [step(batch) for _ in range(3)]
        steps.append((model, torch.stack(losses)))
    (eager, l_eager), (graphed, l_graphed) = steps
    torch.testing.assert_close(l_graphed, l_eager, rtol=1e-4, atol=1e-5)
    for p, q in zip(graphed.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
