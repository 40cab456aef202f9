"""alkernels.transfer: freezing strategies, the masked loss, normalisation, checkpoints and a
constructed task where pre-training must help. Core only: graphs come from ``random_graphs``."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from alkernels import transfer
from alkernels.data import collate, random_graphs
from alkernels.loop import ActiveLearningLoop, LoopConfig
from alkernels.models import EGNN, EGNNConfig, PropertyRegressor, SpaceGroupClassifier
from alkernels.transfer import CheckpointError, PropertyData, TrainConfig

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(120)]

#: A small encoder (the fused CPU kernels need widths that are multiples of 16).
SMALL = EGNNConfig(num_layers=3, node_dim=16, edge_hidden=16, coord_hidden=16, node_hidden=16, proj_dim=16)


def small_model(targets=("a",), config: EGNNConfig = SMALL, seed: int = 0) -> PropertyRegressor:
    torch.manual_seed(seed)
    return PropertyRegressor(EGNN(config), list(targets), hidden=16)


@functools.lru_cache(maxsize=None)
def graphs(n: int, seed: int = 0):
    return random_graphs(n, atoms=(2, 5), cutoff=4.0, species=(1, 20), seed=seed)


def composition_property(g) -> np.ndarray:
    """A structure-determined target: the sum over atoms of a smooth function of Z."""
    z = g.z.astype(np.float64)
    per_atom = np.sin(z / 3.0) + z / 10.0
    return np.add.reduceat(per_atom, g.node_ptr[:-1])


def pretrained(targets=("a",)) -> PropertyRegressor:
    """A model whose weights differ from any fresh draw (one short pre-training)."""
    g = graphs(40)
    a = composition_property(g)
    data = PropertyData(g, {"a": a, "c": -a})
    return transfer.pretrain(
        EGNN(SMALL), data, list(targets), config=TrainConfig(max_epochs=1, batch_size=8), hidden=16, progress=False
    ).model


# -- strategies -------------------------------------------------------------------------------

#: Parameters that no loss can reach: the last layer's coordinate MLP (its x output is discarded);
#: they get zero gradients, so only AdamW's weight decay moves them when they are trainable.
DEAD = {
    f"encoder.layers.{SMALL.num_layers - 1}.coord_mlp.{k}"
    for k in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight")
}
ENCODER_PREFIX = "encoder."
EXPECTED_FROZEN = {
    "scratch": lambda name: False,
    "all": lambda name: False,
    "head": lambda name: name.startswith("encoder."),
    "new_head_frozen_trunk": lambda name: name.startswith("encoder."),
    "new_head_frozen_embedding": lambda name: name == "encoder.embedding.weight",
    # 3 layers, the last one trains: embedding, input Linear, layers 0 and 1 are frozen
    "last_k_layers=1": lambda name: (
        name == "encoder.embedding.weight"
        or name.startswith(("encoder.input.", "encoder.layers.0.", "encoder.layers.1."))
    ),
    "last_k_layers=3": lambda name: name == "encoder.embedding.weight" or name.startswith("encoder.input."),
}


def test_only_the_last_coordinate_mlp_is_out_of_reach_of_the_loss():
    model = small_model()
    batch = collate([PropertyData(graphs(8), {"a": np.ones(8)}).dataset(["a"])[i] for i in range(8)])
    model(batch).sum().backward()
    unreached = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert unreached == DEAD


@pytest.mark.parametrize("strategy", list(EXPECTED_FROZEN))
def test_a_fine_tune_step_changes_exactly_the_trainable_parameters(strategy):
    pt = pretrained()
    before_pt = copy.deepcopy(pt.state_dict())
    model = transfer.finetune_model(pt, "b", strategy, seed=3)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the starting point: a pre-trained encoder (fresh for scratch), a reused or fresh head
    for name, value in start.items():
        if name.startswith(ENCODER_PREFIX):
            same = torch.equal(value, pt.state_dict()[name])
            assert same == (strategy != "scratch"), name
        else:
            pt_name = name.replace("heads.b.", "heads.a.")
            assert torch.equal(value, pt.state_dict()[pt_name]) == (strategy in ("all", "head")), name
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in start if EXPECTED_FROZEN[strategy](n)}
    g = graphs(24, seed=1)
    data = PropertyData(g, {"b": composition_property(g) ** 2})
    transfer.fit(model, data, config=TrainConfig(max_epochs=1, max_steps=1, batch_size=24, lr=1e-2))
    for name, param in model.named_parameters():
        changed = not torch.equal(param.detach(), start[name])
        if name in frozen:
            assert not changed, f"{strategy}: {name} should be unchanged"
        elif name not in DEAD:  # trainable but gradient-free: only weight decay moves it
            assert changed, f"{strategy}: {name} should have changed"
    # the pre-trained model itself is never modified
    assert all(torch.equal(v, pt.state_dict()[k]) for k, v in before_pt.items())


def test_strategy_spelling_and_errors():
    assert transfer.parse_strategy("last_k_layers") == transfer.Strategy("last_k_layers", transfer.DEFAULT_LAST_K)
    assert str(transfer.parse_strategy("last_k_layers=4")) == "last_k_layers=4"
    assert str(transfer.parse_strategy("last_k_layers", default_k=1)) == "last_k_layers=1"
    for bad, match in [
        ("freeze_all", "unknown fine-tuning strategy"),
        ("last_k_layers=x", "positive integer"),
        ("last_k_layers=0", "K >= 1"),
        ("head=2", "takes no"),
    ]:
        with pytest.raises(ValueError, match=match):
            transfer.parse_strategy(bad)
    with pytest.raises(ValueError, match="only 3 layers"):
        transfer.finetune_model(small_model(), "b", "last_k_layers=4")
    with pytest.raises(ValueError, match="needs a pre-trained model"):
        transfer.finetune_model(None, "b", "head")


def test_multi_head_models_need_a_named_head_for_all_and_head():
    pt = small_model(("a", "c"))
    with pytest.raises(ValueError, match="init_head"):
        transfer.finetune_model(pt, "b", "all")
    with pytest.raises(ValueError, match="not a head"):
        transfer.finetune_model(pt, "b", "head", init_head="zz")
    model = transfer.finetune_model(pt, "b", "head", init_head="c")
    assert all(torch.equal(p, q) for p, q in zip(model.heads["b"].parameters(), pt.heads["c"].parameters()))
    own = transfer.finetune_model(pt, "c", "all")  # the target's own head wins
    assert all(torch.equal(p, q) for p, q in zip(own.heads["c"].parameters(), pt.heads["c"].parameters()))
    fresh = transfer.finetune_model(pt, "b", "new_head_frozen_trunk")  # no head choice needed
    assert fresh.targets == ["b"]


# -- loss and normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["entries", "properties"])
@pytest.mark.parametrize("error", ["squared", "absolute"])
def test_masked_loss_equals_the_loss_on_present_labels(reduction, error):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y[[0, 2, 3], 0] = float("nan")
    y[:, 1] = float("nan")  # a property with no label at all in this batch
    y[5, 2] = float("nan")
    loss = PropertyRegressor.loss(pred, y, reduction=reduction, error=error)
    loss.backward()
    grad = pred.grad.clone()

    ref_pred = pred.detach().clone().requires_grad_(True)
    terms = []
    for k in range(3):
        keep = torch.isfinite(y[:, k])
        if keep.any():
            d = ref_pred[keep, k] - y[keep, k]
            terms.append(d * d if error == "squared" else d.abs())
    if reduction == "entries":
        ref = torch.cat(terms).mean()
    else:
        ref = torch.stack([t.mean() for t in terms]).mean()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, ref_pred.grad)
    assert (grad[~torch.isfinite(y)] == 0).all()
    with pytest.raises(ValueError, match="reduction"):
        PropertyRegressor.loss(pred, y, reduction="sum")


def test_normalisation_round_trips_and_is_fitted_on_the_training_part():
    model = small_model(("a", "c"))
    y = torch.tensor([[1.0, float("nan")], [-3.0, 2.5], [10.0, 0.0]], dtype=torch.float32)
    model.set_normalization([2.0, -1.0], [4.0, 0.5])
    torch.testing.assert_close(model.denormalize(model.normalize(y)), y, equal_nan=True)
    torch.testing.assert_close(model.normalize(y)[1], torch.tensor([-1.25, 7.0]))
    with pytest.raises(ValueError, match="std > 0"):
        model.set_normalization([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="one per target"):
        model.set_normalization([0.0], [1.0])
    # fit: mean/std of the training rows, predictions in physical units
    g = graphs(30)
    a = 100.0 + 5.0 * composition_property(g)
    result = transfer.fit(small_model(), PropertyData(g, {"a": a}), config=TrainConfig(max_epochs=1))
    train_mean, train_std = result.model.target_mean.item(), result.model.target_std.item()
    assert abs(train_mean - a.mean()) < 2.0 * a.std() / np.sqrt(result.n_train) + 1e-6
    assert 0.5 * a.std() < train_std < 2.0 * a.std()
    batch = collate([PropertyData(g, {"a": a}).dataset(["a"])[i] for i in range(5)])
    m = result.model
    torch.testing.assert_close(m(batch), m.head(m.embed(batch)) * train_std + train_mean)


# -- checkpoints ----------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    g = graphs(40)
    a = composition_property(g)
    result = transfer.pretrain(
        EGNN(SMALL),
        PropertyData(g, {"a": a, "c": -a}),
        ["a", "c"],
        config=TrainConfig(max_epochs=1),
        hidden=16,
        progress=False,
    )
    path = transfer.save(result, tmp_path / "pt.ckpt", metadata={"note": "x"})
    payload = transfer.read_checkpoint(path)
    assert payload["format_version"] == transfer.FORMAT_VERSION and payload["targets"] == ["a", "c"]
    assert payload["data_hash"] == result.data_hash and len(payload["data_hash"]) == 64
    assert payload["normalization"]["mean"] == result.model.target_mean.tolist()
    loaded = transfer.load(path)
    assert loaded.encoder.config == SMALL and loaded.targets == ["a", "c"]
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    data = PropertyData(g, {"a": a})
    np.testing.assert_array_equal(transfer.predict(loaded, data), transfer.predict(result.model, data))
    encoder = transfer.load_encoder(path)
    batch = collate([data.dataset(["a"])[i] for i in range(4)])
    torch.testing.assert_close(encoder(batch), result.model.embed(batch))
    # loading into a model of the same layout works too
    other = small_model(("a", "c"), seed=5)
    transfer.load(path, model=other)
    assert torch.equal(other.target_std, result.model.target_std)


def test_checkpoint_mismatches_raise_naming_the_difference(tmp_path):
    path = transfer.save(small_model(("a", "c")), tmp_path / "m.ckpt")
    from dataclasses import replace

    with pytest.raises(CheckpointError, match="num_layers: checkpoint 3, model 2"):
        transfer.load(path, model=small_model(("a", "c"), config=replace(SMALL, num_layers=2)))
    with pytest.raises(CheckpointError, match="target names differ"):
        transfer.load(path, model=small_model(("a", "b")))
    with pytest.raises(CheckpointError, match="hidden"):
        transfer.load(path, model=PropertyRegressor(EGNN(SMALL), ["a", "c"], hidden=32))
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = transfer.FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "new.ckpt")
    with pytest.raises(CheckpointError, match="newer"):
        transfer.load(tmp_path / "new.ckpt")
    payload["format_version"] = transfer.FORMAT_VERSION
    payload["egnn_config"]["future_flag"] = True
    torch.save(payload, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match="future_flag"):
        transfer.load(tmp_path / "future.ckpt")
    torch.save({"weights": 1}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not an alkernels transfer checkpoint"):
        transfer.load(tmp_path / "other.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        transfer.load(tmp_path / "text.ckpt")
    with pytest.raises(CheckpointError, match="does not exist"):
        transfer.load(tmp_path / "missing.ckpt")


def test_active_learning_loop_starts_from_a_pretrained_encoder(tmp_path):
    pt = pretrained()
    path = transfer.save(pt, tmp_path / "pt.ckpt")
    factory = functools.partial(transfer.classifier_from_checkpoint, path, hidden=16, num_classes=3)
    model = factory()
    assert isinstance(model, SpaceGroupClassifier)
    assert all(torch.equal(v, pt.encoder.state_dict()[k]) for k, v in model.encoder.state_dict().items())
    from alkernels.data import GraphDataset

    g = graphs(12)
    data = GraphDataset(g, y=np.arange(12) % 3)
    loop = ActiveLearningLoop(
        factory,
        "margin",
        data[np.arange(9)],
        data[np.arange(9, 12)],
        LoopConfig(initial=3, query_size=3, rounds=2, epochs=1, seed=0, batch_size=4),
        out_dir=tmp_path / "al",
    )
    assert len(loop.run()) == 2
    frozen = transfer.classifier_from_checkpoint(path, hidden=16, num_classes=3, freeze_encoder=True)
    assert not any(p.requires_grad for p in frozen.encoder.parameters())


# -- transfer on a constructed task ----------------------------------------------------------------


def test_pretraining_beats_scratch_when_the_target_is_a_function_of_the_pretraining_target():
    g_pt, g_ft, g_test = graphs(300, seed=10), graphs(30, seed=11), graphs(100, seed=12)
    a_pt = composition_property(g_pt)
    pt = transfer.pretrain(
        EGNN(SMALL),
        PropertyData(g_pt, {"a": a_pt}),
        ["a"],
        config=TrainConfig(max_epochs=30, batch_size=16, lr=3e-3, patience=None),
        hidden=16,
        progress=False,
    )
    b = lambda g: 0.5 * composition_property(g) ** 2 - composition_property(g)  # noqa: E731
    ft_data, test = PropertyData(g_ft, {"b": b(g_ft)}), PropertyData(g_test, {"b": b(g_test)})
    config = TrainConfig(max_epochs=60, lr=3e-3, batch_size=16, patience=None)
    scratch = transfer.finetune(pt.model, ft_data, "b", "scratch", config=config, progress=False)
    tuned = transfer.finetune(pt.model, ft_data, "b", "all", config=config, progress=False)
    frozen = transfer.finetune(pt.model, ft_data, "b", "new_head_frozen_trunk", config=config, progress=False)
    scratch_mae = transfer.mae(scratch.model, test)["b"]
    for result in (tuned, frozen):
        assert result.val_mae["b"] < scratch.val_mae["b"]
        assert transfer.mae(result.model, test)["b"] < 0.8 * scratch_mae


def test_pretrain_errors_name_the_problem():
    g = graphs(10)
    data = PropertyData(g, {"a": np.ones(10), "empty": np.full(10, np.nan)}, name="d1")
    with pytest.raises(ValueError, match="target 'zz' is a column of none"):
        transfer.pretrain(EGNN(SMALL), data, ["zz"], progress=False)
    with pytest.raises(ValueError, match="no labels"):
        transfer.pretrain(EGNN(SMALL), data, ["empty"], progress=False)
    other = PropertyData(g, {"q": np.ones(10)}, name="d2")
    with pytest.raises(ValueError, match="d2 has none of the targets"):
        transfer.pretrain(EGNN(SMALL), [data, other], ["a"], progress=False)
    with pytest.raises(ValueError, match="needs at least 2"):
        transfer.finetune(small_model(), data.subset([0]), "a", "all", progress=False)


def test_multi_property_pretraining_on_datasets_sharing_no_property():
    g1, g2 = graphs(30, seed=1), graphs(20, seed=2)
    d1 = PropertyData(g1, {"a": composition_property(g1)}, name="one")
    d2 = PropertyData(g2, {"c": -composition_property(g2)}, name="two")
    result = transfer.pretrain(
        EGNN(SMALL), [d1, d2], ["a", "c"], config=TrainConfig(max_epochs=2), hidden=16, progress=False
    )
    assert result.model.targets == ["a", "c"] and result.n_train + result.n_val == 50
    assert set(result.val_mae) == {"a", "c"}
    assert result.data_hash == transfer.content_hash([d1, d2], ["a", "c"])
    assert result.data_hash != transfer.content_hash([d2, d1], ["a", "c"])


def test_an_interrupted_fit_resumes_exactly_from_its_state_file(tmp_path, monkeypatch):
    from alkernels.transfer import train as train_mod

    g = graphs(30)
    data = PropertyData(g, {"a": composition_property(g)})
    config = TrainConfig(max_epochs=4, batch_size=8, patience=None)
    whole = transfer.fit(small_model(seed=1), data, config=config, seed=2)

    state = tmp_path / "fit.state"
    save, calls = train_mod.write_checksummed, []

    def save_then_die(path, obj):
        save(path, obj)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "write_checksummed", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        transfer.fit(small_model(seed=1), data, config=config, seed=2, state_path=state)
    monkeypatch.setattr(train_mod, "write_checksummed", save)
    assert state.is_file()
    resumed = transfer.fit(small_model(seed=7), data, config=config, seed=2, state_path=state)
    assert not state.exists()
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    # a state file from another fit is refused
    transfer.fit(small_model(seed=1), data, config=TrainConfig(max_epochs=1), seed=2, state_path=state)
    train_mod.write_checksummed(state, {**dict.fromkeys(train_mod.STATE_KEYS), "fingerprint": "other"})
    with pytest.raises(ValueError, match="belongs to another fit"):
        transfer.fit(small_model(seed=1), data, config=config, seed=2, state_path=state)
    # a damaged state file is named, never used
    state.write_bytes(state.read_bytes()[:-5])
    with pytest.raises(ValueError, match="fit.state is damaged"):
        transfer.fit(small_model(seed=1), data, config=config, seed=2, state_path=state)


def test_min_val_holds_out_enough_structures_and_keeps_old_records():
    """min_val sets a floor under the validation share (size 10: 5 held out instead of 1); at its
    default the recorded settings are those of before the option existed."""
    g = graphs(10)
    data = PropertyData(g, {"a": composition_property(g)})
    assert transfer.fit(small_model(), data, config=TrainConfig(max_epochs=1)).n_val == 1
    result = transfer.fit(small_model(), data, config=TrainConfig(max_epochs=1, min_val=5))
    assert (result.n_train, result.n_val) == (5, 5)
    assert "min_val" not in TrainConfig().record() and TrainConfig(min_val=5).record()["min_val"] == 5
    with pytest.raises(ValueError, match="min_val"):
        TrainConfig(min_val=0)
