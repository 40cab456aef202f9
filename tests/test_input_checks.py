"""Inputs that used to be accepted silently or fail with a misleading message (issue 17, items
8-10 and 12): chunk layouts, empty pools, exactly-zero BALD, stale order caches, diverged
loss-prediction modules, non-finite logits named by dataset index, and MC passes that must not
touch BatchNorm statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alkernels import acquisition as acq
from alkernels import strategies
from alkernels.ops.dispatch import HAS_TRITON, has_ext, interpreting
from alkernels.strategies import Pool
from helpers import RNG, LookupModel, TapModel, make_pool, toy_collate, umap_items

BACKENDS = ["torch"] + (["cpu"] if has_ext() else []) + (["triton"] if HAS_TRITON and interpreting() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming_selector_rejects_chunks_of_another_layout(backend: str) -> None:
    sel = acq.StreamingSelector("bald", 3, backend=backend)
    sel.update(torch.randn(4, 5, 7))
    with pytest.raises(ValueError, match=r"first chunk's layout \[T, n, C\] with T = 4, C = 7"):
        sel.update(torch.randn(4, 5, 8))  # another number of classes
    with pytest.raises(ValueError, match="T = 4"):
        sel.update(torch.randn(3, 5, 7))  # another number of passes
    with pytest.raises(ValueError, match="does not match"):
        sel.update(torch.randn(5, 7))  # a 2-D chunk after 3-D ones
    two_d = acq.StreamingSelector("margin", 2, backend=backend)
    two_d.update(torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"\[n, C\] with C = 7"):
        two_d.update(torch.randn(1, 5, 7))  # [1, n, C] is the same data but another layout
    sel.update(torch.randn(4, 2, 7))  # the right layout still works after the errors
    assert sel.result()[0].shape == (3,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_pool_and_empty_chunks(backend: str) -> None:
    empty = torch.zeros(3, 0, 5)
    scores = acq.score_all(empty, backend=backend)
    assert all(v.shape == (0,) for v in scores.values())
    idx, val = acq.select(empty, "bald", 0, backend=backend)
    assert idx.numel() == val.numel() == 0
    with pytest.raises(ValueError, match="larger than the pool"):
        acq.select(empty, "bald", 1, backend=backend)
    sel = acq.StreamingSelector("entropy", 2, backend=backend)
    sel.update(torch.randn(3, 4, 5))
    sel.update(empty)  # an empty chunk changes nothing
    sel.update(torch.randn(3, 0, 5), offset=100)
    ref, _ = acq.select(torch.randn(3, 4, 5), "entropy", 2, backend="torch")
    assert sel.result()[0].shape == ref.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_passes_give_exactly_zero_bald_on_every_backend(backend: str) -> None:
    g = torch.Generator().manual_seed(3)
    per_scale = 6 if backend == "triton" else 30  # the interpreter runs one program at a time
    scales = torch.tensor([0.1, 1.0, 3.0, 10.0]).repeat_interleave(per_scale)
    one = torch.randn(1, len(scales), 230, generator=g) * scales[None, :, None]
    logits = one.expand(10, -1, -1).contiguous()
    bald = acq.score(logits, "bald", backend=backend)
    assert torch.all(bald == 0.0)  # clamped at 0, no +-1e-6 rounding noise
    idx, _ = acq.select(logits, "bald", 20, backend=backend)
    assert idx.tolist() == list(range(20))  # all tied at 0: the lowest indices, on every backend
    # real disagreement between passes is untouched
    mixed = logits.clone()
    mixed[:, 7] = torch.randn(10, 230, generator=g) * 3
    assert acq.select(mixed, "bald", 1, backend=backend)[0].item() == 7


def test_umap_order_cache_is_keyed_by_its_settings(tmp_path, monkeypatch) -> None:
    import umap

    class Settled:  # stands in for UMAP: the embedding depends on the settings, as UMAP's does
        def __init__(self, n_neighbors, random_state, **kwargs):
            self.scale = (
                np.array([1.0, 1.0]) if random_state else np.array([1.0, 0.01] if n_neighbors < 6 else [0.01, 1.0])
            )

        def fit_transform(self, x):
            return x[:, [10, 100]] * self.scale  # Na fraction, standardised log volume per atom

    monkeypatch.setattr(umap, "UMAP", Settled)
    items = umap_items()
    pool = Pool(items, np.arange(len(items)), batch_size=16, collate_fn=toy_collate)
    settings = [dict(n_neighbors=5), dict(n_neighbors=7), dict(n_neighbors=5, random_state=1)]
    cached = [strategies.get("umap", cache_dir=tmp_path, **kw).query(None, pool, 30, rng=RNG) for kw in settings]
    assert len(list(tmp_path.glob("umap-order-30-*.npy"))) == 3  # one entry per setting, none reused
    for kw, got in zip(settings, cached):
        again = strategies.get("umap", cache_dir=tmp_path, **kw)
        again.order_from_features = None  # must come from its own cache entry
        assert again.query(None, pool, 30, rng=RNG).tolist() == got.tolist()
        assert strategies.get("umap", **kw).query(None, pool, 30, rng=RNG).tolist() == got.tolist()
    assert cached[0].tolist() != cached[1].tolist()


def test_diverged_loss_prediction_module_raises_clearly() -> None:
    strat = strategies.get("learning_loss", tap_dims=(8, 8), hidden=4)
    model = TapModel()
    module = strat.setup(model)
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"predicted non-finite losses for 12 of 12 .*diverged"):
        strat.query(model, make_pool(12), 3, rng=RNG)


def test_nonfinite_logits_name_the_dataset_index_and_can_be_excluded() -> None:
    table = torch.randn(10, 30, 6)
    table[:, 17, 2] = float("nan")
    pool_idx = np.array([3, 5, 9, 17, 21, 25])
    pool = make_pool(30, pool_idx, batch_size=2)
    with pytest.raises(ValueError, match="non-finite logits .* for dataset index 17.*--nonfinite exclude"):
        strategies.make("bald").query(LookupModel(table), pool, 2, rng=RNG)
    got = strategies.make("bald", nonfinite="exclude").query(LookupModel(table), pool, 5, rng=RNG)
    assert 17 not in got.tolist() and len(got) == 5
    with pytest.raises(ValueError, match="larger than the pool"):
        strategies.make("bald", nonfinite="exclude").query(LookupModel(table), pool, 6, rng=RNG)


def test_mc_passes_leave_batchnorm_statistics_alone() -> None:
    from alkernels.data import GraphDataset, collate, random_graphs
    from alkernels.models import EGNN, SpaceGroupClassifier

    graphs = random_graphs(6, atoms=(2, 5), seed=1)
    batch = collate([GraphDataset(graphs)[i] for i in range(6)])
    model = SpaceGroupClassifier(EGNN(backend="torch"), dropout=0.3, norm="batch")
    model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in norms]
    mc = model.mc_logits(batch, 5)
    assert mc.shape == (5, 6, 230) and not torch.allclose(mc[0], mc[1])  # dropout is active
    for m, (mean, var, count) in zip(norms, before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert int(m.num_batches_tracked) == count
    assert all(m.training for m in model.modules())  # modes restored
