"""Strategies on constructed pools whose right answer is known.

The model and dataset stand-ins here are tiny and defined in the tests: items are one-graph
``GraphBatch``-compatible structures, and a lookup model returns fixed logits per item so the
expected selection can be worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from alkernels import acquisition, strategies
from alkernels.strategies import Pool
from helpers import (
    RNG,
    Item,
    LookupModel,
    TapModel,
    confident,
    make_pool,
    toy_collate,
    umap_items,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread


@pytest.mark.parametrize("name", ["entropy", "least_confidence", "margin"])
def test_single_pass_picks_the_uniform_items(name):
    # 8 items, all confident except 2 (uniform) and 5 (two-way tie): the most uncertain first.
    table = torch.stack([confident(i % 4) for i in range(8)])
    table[2] = 0.0
    table[5] = torch.tensor([3.0, 3.0, -5.0, -5.0])
    model = LookupModel(table[None])
    got = strategies.get(name).query(model, make_pool(8), 2, rng=RNG)
    assert got.tolist() == [2, 5]


@pytest.mark.parametrize("name", ["entropy", "margin", "bald", "expected_margin"])
def test_query_matches_select_on_the_whole_pool_in_dataset_indices(name):
    g = torch.Generator().manual_seed(1)
    table = torch.randn(10, 30, 7, generator=g) * 2
    pool_idx = np.array([1, 2, 4, 7, 8, 11, 13, 17, 20, 22, 25, 29])
    got = strategies.get(name).query(LookupModel(table), make_pool(30, pool_idx, batch_size=5), 4, rng=RNG)
    logits = table[:, pool_idx] if name in strategies.MC_PASS else table[0, pool_idx]
    ref, _ = acquisition.select(logits, name, 4)
    assert got.tolist() == pool_idx[ref.numpy()].tolist()
    assert got.dtype == np.int64


def test_mc_strategies_tell_disagreement_from_noise():
    # item 1: every pass uniform (aleatoric); item 3: passes confident in different classes
    # (epistemic); the rest agree confidently.
    passes = 4
    table = torch.stack([torch.stack([confident(0) for _ in range(6)]) for _ in range(passes)])
    table[:, 1] = 0.0
    for t in range(passes):
        table[t, 3] = confident(t)
    model = LookupModel(table)
    pool = make_pool(6)

    def top(name, k=1):
        return strategies.get(name, passes=passes).query(model, pool, k, rng=RNG).tolist()

    assert top("bald") == [3]
    assert top("expected_entropy") == [1]
    assert top("expected_least_confidence") == [1]
    assert top("expected_margin") == [1]
    assert sorted(top("predictive_entropy", 2)) == [1, 3]
    assert model.passes_seen and set(model.passes_seen) == {passes}


def test_mc_default_is_ten_passes():
    model = LookupModel(torch.zeros(12, 5, 3))
    strategies.get("bald").query(model, make_pool(5), 1, rng=RNG)
    assert set(model.passes_seen) == {10}


def test_uncertainty_query_leaves_training_mode_as_it_was():
    model = LookupModel(torch.randn(1, 5, 3))
    model.train()
    strategies.get("entropy").query(model, make_pool(5), 2, rng=RNG)
    assert model.training


def test_random_is_distinct_seeded_and_inside_the_pool():
    pool = make_pool(50, np.arange(0, 50, 2))
    a = strategies.get("random").query(None, pool, 10, rng=np.random.default_rng(3))
    b = strategies.get("random").query(None, pool, 10, rng=np.random.default_rng(3))
    c = strategies.get("random").query(None, pool, 10, rng=np.random.default_rng(4))
    assert a.tolist() == b.tolist() != c.tolist()
    assert len(set(a.tolist())) == 10 and set(a.tolist()) <= set(pool.indices.tolist())
    assert strategies.get("random").query(None, pool, 25, rng=RNG).size == 25


def test_k_larger_than_pool_is_a_clear_error():
    for name in ("random", "margin", "center_of_mass"):
        with pytest.raises(ValueError, match="query size 6 must be between 1 and the pool size 5"):
            strategies.get(name).query(LookupModel(torch.zeros(1, 5, 3)), make_pool(5), 6, rng=RNG)


def com_items() -> list[Item]:
    """Two-atom structures whose mass-weighted centres lie at known x positions."""
    # H (1.008) at x=0 and O (15.999) at x=d: mass centre = 15.999 d / 17.007.
    ds = [1.0, 5.0, 2.0, 9.0, 3.0]
    return [Item(torch.tensor([1, 8]), torch.tensor([[0.0, 0, 0], [d, 0, 0]]), torch.eye(3) * 10, 0) for d in ds]


def test_center_of_mass_furthest_first_and_restricted_to_pool():
    items = com_items()
    pool = Pool(items, np.arange(5), batch_size=2, collate_fn=toy_collate)
    # centres 0.94 d, mean d = 4: distances prop. to |d - 4| = 3, 1, 2, 5, 1 (tie to lower index)
    strat = strategies.get("center_of_mass")
    assert strat.query(None, pool, 5, rng=RNG).tolist() == [3, 0, 2, 1, 4]
    sub = Pool(items, np.array([0, 1, 4]), batch_size=2, collate_fn=toy_collate)
    assert strat.query(None, sub, 2, rng=RNG).tolist() == [0, 1]


def test_center_of_mass_by_z_differs_from_by_mass():
    # With Z weights (1 and 8) the centre of H at 0 and O at d is 8 d / 9; and a Li-H pair
    # weighs differently by Z (3:1) than by mass (6.94:1.008).
    items = [
        Item(torch.tensor([3, 1]), torch.tensor([[0.0, 0, 0], [4.0, 0, 0]]), torch.eye(3), 0),
        Item(torch.tensor([1, 1]), torch.tensor([[0.0, 0, 0], [2.0, 0, 0]]), torch.eye(3), 0),
        Item(torch.tensor([1, 1]), torch.tensor([[0.0, 0, 0], [1.9, 0, 0]]), torch.eye(3), 0),
    ]
    pool = Pool(items, np.arange(3), collate_fn=toy_collate)
    by_mass = strategies.get("center_of_mass").features(pool)[:, 0]
    by_z = strategies.get("center_of_mass", weights="z").features(pool)[:, 0]
    assert by_mass[0] == pytest.approx(4 * 1.008 / (6.94 + 1.008), rel=1e-3)
    assert by_z[0] == pytest.approx(1.0)
    assert by_mass[1] == by_z[1] == pytest.approx(1.0)


def test_umap_sorts_the_embedding_furthest_from_its_centre(monkeypatch):
    import umap

    class FirstTwoColumns:  # stands in for UMAP: the "embedding" is the Na and Cl fractions
        def __init__(self, **kwargs):
            assert kwargs["n_components"] == 2 and kwargs["random_state"] == 0

        def fit_transform(self, x):
            return x[:, [10, 16]]

    monkeypatch.setattr(umap, "UMAP", FirstTwoColumns)
    items = umap_items()
    pool = Pool(items, np.arange(len(items)), batch_size=7, collate_fn=toy_collate)
    strat = strategies.get("umap")
    feats = strat.features(pool)
    assert feats.shape == (30, 101)
    np.testing.assert_allclose(feats[:, :99].sum(1), 1.0)
    emb = feats[:, [10, 16]]
    dist = np.linalg.norm(emb - emb.mean(0), axis=1)
    expect = sorted(range(30), key=lambda i: (-dist[i], i))
    assert strat.query(None, pool, 30, rng=RNG).tolist() == expect


def test_umap_is_deterministic_and_cached(tmp_path):
    items = umap_items()
    pool = Pool(items, np.arange(len(items)), batch_size=16, collate_fn=toy_collate)
    got = strategies.get("umap", cache_dir=tmp_path).query(None, pool, 30, rng=RNG)
    assert sorted(got.tolist()) == list(range(30))
    assert torch.get_num_threads() == 1  # UMAP (numba's OpenMP) must not change torch's threads
    assert len(list(tmp_path.glob("umap-order-30-*.npy"))) == 1
    again = strategies.get("umap", cache_dir=tmp_path)
    again.order_from_features = None  # a second instance must read the cache, not recompute
    assert again.query(None, pool, 30, rng=RNG).tolist() == got.tolist()
    fresh = strategies.get("umap").query(None, pool, 30, rng=RNG)
    assert fresh.tolist() == got.tolist()
    sub = Pool(items, np.arange(0, 30, 3), batch_size=16, collate_fn=toy_collate)
    assert (
        strategies.get("umap", cache_dir=tmp_path).query(None, sub, 4, rng=RNG).tolist()
        == [i for i in got.tolist() if i % 3 == 0][:4]
    )


def test_ranking_loss_by_hand():
    pred = torch.tensor([0.5, 2.0, 0.0, 1.0, 9.0])  # odd length: the last sample is dropped
    target = torch.tensor([3.0, 1.0, 2.0, 0.0, 5.0])
    # pairs (0, 3): A = +1, margin term max(0, -(0.5 - 1.0) + 1) = 1.5
    #       (1, 2): A = -1, max(0, (2.0 - 0.0) + 1) = 3.0
    assert strategies.ranking_loss(pred, target).item() == pytest.approx((2 / 4) * 4.5)
    assert strategies.ranking_loss(pred[:1], target[:1]).item() == 0.0


def test_learning_loss_stop_gradient_after_sixty_percent():
    torch.manual_seed(0)
    model = TapModel()
    model.head[0].p = 0.0
    strat = strategies.get("learning_loss", tap_dims=(8, 8), hidden=4)
    strat.setup(model)
    batch = toy_collate([Item(torch.tensor([i + 1, 3]), torch.zeros(2, 3), torch.eye(3), i % 3) for i in range(6)])

    def encoder_grad(epoch):
        model.zero_grad()
        strat.module.zero_grad()
        strat.training_loss(model, batch, epoch=epoch, epochs=10).backward()
        return model.encoder.layer.weight.grad.clone(), strat.module.out.weight.grad.clone()

    def ce_only_grad():
        model.zero_grad()
        nn.functional.cross_entropy(model(batch), batch.y).backward()
        return model.encoder.layer.weight.grad.clone()

    early, early_module = encoder_grad(5)  # epoch 5 of 10: still before 60%
    late, late_module = encoder_grad(6)  # epoch 6 >= 0.6 * 10: taps detached
    ce = ce_only_grad()
    assert torch.allclose(late, ce) and not torch.allclose(early, ce)
    assert late_module.abs().sum() > 0 and torch.allclose(early_module, late_module)


def test_learning_loss_queries_the_largest_predicted_losses():
    torch.manual_seed(0)
    model = TapModel()
    strat = strategies.get("learning_loss", tap_dims=(8, 8), hidden=4)
    module = strat.setup(model)
    items = [Item(torch.tensor([i + 1]), torch.zeros(1, 3), torch.eye(3), 0) for i in range(12)]
    pool = Pool(items, np.arange(2, 12), batch_size=3, collate_fn=toy_collate)
    got = strat.query(model, pool, 3, rng=RNG)
    with torch.no_grad():
        batch = toy_collate([items[i] for i in range(2, 12)])
        pred = module(model.encoder(batch, return_taps=True)[1])
    expect = (torch.argsort(pred, descending=True, stable=True)[:3] + 2).tolist()
    assert got.tolist() == expect


def test_learning_loss_needs_setup():
    with pytest.raises(ValueError, match="setup"):
        strategies.get("learning_loss").query(TapModel(), make_pool(4), 1, rng=RNG)


def test_registry_covers_the_paper_and_accepts_user_strategies():
    assert set(strategies.PAPER_STRATEGIES) <= set(strategies.available())
    assert len(strategies.PAPER_STRATEGIES) == 12

    @strategies.register("lowest_index_test")
    class Lowest(strategies.Strategy):
        def query(self, model, pool, k, *, rng):
            return pool.indices[:k]

    try:
        s = strategies.get("lowest_index_test")
        assert s.name == "lowest_index_test"
        assert s.query(None, make_pool(6, [1, 3, 5]), 2, rng=RNG).tolist() == [1, 3]
        with pytest.raises(ValueError, match="already registered"):
            strategies.register("lowest_index_test", Lowest)
    finally:
        strategies.unregister("lowest_index_test")
    with pytest.raises(ValueError, match="unknown strategy 'nope'; available: entropy"):
        strategies.get("nope")
