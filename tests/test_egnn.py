"""The EGNN encoder and its heads: layout, backends, invariances, taps, MC dropout, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alkernels.models import EGNN, EGNNConfig, PropertyRegressor, SpaceGroupClassifier
from alkernels.ops.dispatch import ext
from helpers import build_batch, random_batch, random_structures

MP20 = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp20_sample.csv.gz"
CPU_BACKENDS = ["torch"] + (["cpu"] if ext() is not None else [])


def test_parameter_count_and_layout():
    model = EGNN()
    assert sum(p.numel() for p in model.parameters()) == 600_064
    assert all(sum(p.numel() for p in layer.parameters()) == 111_712 for layer in model.layers)
    layer = model.layers[0]
    assert [m.in_features for m in layer.edge_mlp if isinstance(m, torch.nn.Linear)] == [65, 128, 128]
    assert isinstance(layer.edge_mlp[-1], torch.nn.ReLU)  # ReLU after the last edge Linear too
    last = layer.coord_mlp[-1]
    assert last.bias is None and last.weight.shape == (1, 64)
    assert last.weight.abs().max() <= 0.001 * math.sqrt(6.0 / 65)  # xavier bound with gain 0.001
    assert [m.out_features for m in layer.node_mlp if isinstance(m, torch.nn.Linear)] == [128, 128, 128, 32]
    assert not model.embedding.weight[0].any()
    assert [m.out_features for m in model.projection if isinstance(m, torch.nn.Linear)] == [128, 128, 128]


@pytest.mark.parametrize("mode", ["periodic", "matsciml"])
def test_cpu_backend_matches_reference_float64(mode):
    if ext() is None:
        pytest.skip("alkernels._C not built")
    batch = random_batch([4, 1, 6], mode=mode, cutoff=3.5 if mode == "periodic" else 8.0)
    torch.manual_seed(0)
    fused, ref = EGNN(backend="cpu").double(), EGNN(backend="torch").double()
    ref.load_state_dict(fused.state_dict())
    emb_f, emb_r = fused(batch), ref(batch)
    assert (emb_f - emb_r).abs().max() <= 1e-10 * emb_r.abs().max()
    emb_f.square().sum().backward()
    emb_r.square().sum().backward()
    for (name, pf), pr in zip(fused.named_parameters(), ref.parameters()):
        if pr.grad is None:  # last layer's coordinate MLP: final coordinates are discarded
            assert pf.grad is None or not pf.grad.any(), name
            continue
        assert (pf.grad - pr.grad).abs().max() <= 1e-10 * pr.grad.abs().max() + 1e-300, name


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ["periodic", "matsciml"])
def test_logits_are_invariant(backend, mode):
    torch.manual_seed(0)
    model = SpaceGroupClassifier(EGNN(backend=backend), dropout=0.0).double().eval()
    cutoff = 3.5 if mode == "periodic" else 8.0
    structures = random_structures([5, 3], seed=3)

    def logits(structs):
        return model(build_batch(structs, mode, cutoff))

    base = logits(structures)
    q = _rotation(1)
    rotated = [(z, p @ q.T, c @ q.T) for z, p, c in structures]
    shifted = [(z, p + torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64), c) for z, p, c in structures]
    perms = [torch.randperm(z.numel(), generator=torch.Generator().manual_seed(7)) for z, _, _ in structures]
    permuted = [(z[k], p[k], c) for (z, p, c), k in zip(structures, perms)]
    tol = dict(rtol=1e-4, atol=1e-4 * base.abs().max().item())
    for variant in (rotated, shifted, permuted):
        torch.testing.assert_close(logits(variant), base, **tol)
    if mode == "periodic":  # shifting the cell origin: move fractional coordinates, wrap into the cell
        moved = []
        for z, p, c in structures:
            frac = torch.remainder(p @ torch.linalg.inv(c) + torch.tensor([0.31, 0.52, 0.77], dtype=torch.float64), 1.0)
            moved.append((z, frac @ c, c))
        torch.testing.assert_close(logits(moved), base, **tol)


def test_taps_for_learning_loss():
    model = EGNN()
    batch = random_batch([3, 2, 4], mode="periodic", cutoff=3.0)
    emb, taps = model(batch, return_taps=True)
    assert emb.shape == (3, 128)
    assert [tuple(t.shape) for t in taps] == [(3, 32)] * 5 + [(3, 128)]
    torch.testing.assert_close(taps[-1], emb)
    torch.testing.assert_close(model(batch), emb)
    assert all(bool((t >= 0).all()) for t in taps[:4])  # ReLU between layers 1-4


def test_option_flags_run_and_differ():
    batch = random_batch([4, 3], mode="periodic", cutoff=3.0)
    torch.manual_seed(0)
    paper = EGNN()
    torch.manual_seed(0)
    original = EGNN(EGNNConfig.original())
    assert original.config.coord_aggregation == "mean" and original.config.detach_norm
    assert isinstance(original.act, torch.nn.SiLU)
    e_p, e_o = paper(batch), original(batch)
    assert torch.isfinite(e_o).all() and not torch.allclose(e_p, e_o)
    with pytest.raises(ValueError, match="activation"):
        EGNNConfig(activation="gelu")
    with pytest.raises(ValueError, match="backend"):
        EGNN(backend="gpu")


def test_mc_logits_dropout_zero_gives_identical_copies():
    model = SpaceGroupClassifier(EGNN(), dropout=0.0).eval()
    batch = random_batch([3, 5], mode="periodic", cutoff=3.0)
    mc = model.mc_logits(batch, T=4)
    assert mc.shape == (4, 2, 230)
    plain = model(batch)
    for t in range(4):
        torch.testing.assert_close(mc[t], plain, rtol=0, atol=0)


def test_mc_logits_samples_differ_and_modes_are_restored():
    model = SpaceGroupClassifier(EGNN(), dropout=0.5).eval()
    batch = random_batch([3, 5], mode="periodic", cutoff=3.0)
    mc = model.mc_logits(batch, T=3)
    assert not torch.equal(mc[0], mc[1])
    assert not any(m.training for m in model.modules())
    assert torch.equal(model(batch), model(batch))  # eval: deterministic again
    with pytest.raises(ValueError):
        model.mc_logits(batch, T=0)


def test_encoder_dropout_variant_is_sampled_per_pass_and_off_by_default():
    """Encoder dropout (a variant) makes the MC passes differ even with no head dropout, is off
    in eval mode, and leaves the identity of the paper's model (no ``dropout`` key) unchanged."""
    assert "dropout" not in EGNN().settings() and "dropout" not in EGNNConfig().record()
    assert EGNNConfig(dropout=0.2).record()["dropout"] == 0.2
    from alkernels.experiments.transfer.study import StudySettings

    # the transfer study's settings (and so its pre-training cache keys) are those of before
    assert "dropout" not in StudySettings(sources=(("a",),), pretrain_data=("x",), finetune="b", finetune_data="y").egnn
    batch = random_batch([3, 5], mode="periodic", cutoff=3.0)
    torch.manual_seed(0)
    model = SpaceGroupClassifier(EGNN(EGNNConfig(dropout=0.5)), dropout=0.0).eval()
    assert model.encoder.settings()["dropout"] == 0.5
    mc = model.mc_logits(batch, T=3)
    assert mc.shape == (3, 2, 230) and not torch.equal(mc[0], mc[1])
    assert not any(m.training for m in model.modules())
    assert torch.equal(model(batch), model(batch))
    model.train()
    assert not torch.equal(model.encoder(batch), model.encoder(batch))
    with pytest.raises(ValueError, match="dropout"):
        EGNNConfig(dropout=1.0)


def test_property_regressor_masked_loss():
    model = PropertyRegressor(EGNN(), targets=["e_form", "gap"])
    batch = random_batch([3, 2, 4], mode="periodic", cutoff=3.0)
    pred = model(batch)
    assert pred.shape == (3, 2)
    y = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")], [0.5, 2.0]])
    loss = model.loss(pred, y)
    keep = torch.isfinite(y)
    torch.testing.assert_close(loss, ((pred - y)[keep] ** 2).mean())
    loss.backward()
    assert torch.isfinite(model.heads["gap"][0].weight.grad).all()
    assert model.loss(pred, torch.full_like(y, float("nan"))).item() == 0.0
    with pytest.raises(ValueError):
        PropertyRegressor(EGNN(), targets=["a", "a"])


def test_bad_batch_raises_value_error():
    model = EGNN()
    batch = random_batch([3, 2], mode="periodic", cutoff=3.0)
    from dataclasses import replace

    with pytest.raises(ValueError, match="sorted"):
        model(replace(batch, edge_dst=batch.edge_dst.flip(0), edge_src=batch.edge_src.flip(0)))
    with pytest.raises(ValueError, match="atomic numbers"):
        model(replace(batch, z=batch.z + 200))
    with pytest.raises(ValueError, match="cell"):
        model(replace(batch, cell=batch.cell[:1]))


@pytest.mark.skipif(not MP20.exists(), reason="shared mp20 sample not present")
def test_training_lowers_the_loss_on_mp20_sample():
    from alkernels.data import GraphDataset, build_graphs, collate, read_structures

    structures = read_structures(MP20, label="spacegroup.number").subset(list(range(48)))
    dataset = GraphDataset(build_graphs(structures, cutoff=4.0, workers=1), y=structures.labels - 1)
    torch.manual_seed(0)
    model = SpaceGroupClassifier(EGNN(), dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    batches = [collate([dataset[i] for i in range(k, k + 24)]) for k in range(0, 48, 24)]

    def mean_loss() -> float:
        with torch.no_grad():
            return sum(torch.nn.functional.cross_entropy(model(b), b.y).item() for b in batches) / len(batches)

    before = mean_loss()
    for _ in range(4):
        for b in batches:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(b), b.y).backward()
            opt.step()
    assert mean_loss() < 0.8 * before
