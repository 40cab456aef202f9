"""``alkernels.gp``: the GPRegressor (gpytorch fit + incremental posterior), the strategies and
the resumable GPActiveLearner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("gpytorch")

from alkernels.gp import (  # noqa: E402
    GPActiveLearner,
    GPConfig,
    GPFitConfig,
    GPKernelConfig,
    GPLoopConfig,
    GPRegressor,
    GPSolverConfig,
    get_strategy,
    top_k,
)
from alkernels.gp.loop import RECORD_KEYS, TIMING_KEYS  # noqa: E402
from alkernels.loop import read_records  # noqa: E402
from alkernels.ops.gp import exact_posterior  # noqa: E402
from helpers import np_gp

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(120)]


def data(n=300, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 5.0  # an offset: the regressor centres the inputs
    y = 3.0 + 2.0 * np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=n)
    return x, y


def small_gp(**kw) -> GPRegressor:
    """A GPRegressor of 15 fit iterations; ``kw`` are flat GP settings (``GPConfig.from_flat``)."""
    c = GPConfig.from_flat({"iterations": 15, **kw})
    return GPRegressor(c.kernel, c.fit, c.solver)


def test_regressor_predicts_the_closed_form_posterior_of_its_hyperparameters():
    x, y = data()
    gp = small_gp().fit(x[:80], y[:80], pool=x[80:])
    p = gp.params_
    ls = p.lengthscale.numpy()
    ys = (y[:80] - gp.y_mean) / gp.y_std
    m, v = np_gp("matern12", x[:80], ys, x[200:], ls, p.outputscale, p.noise, p.mean)
    mean, var = gp.predict(x[200:])
    np.testing.assert_allclose(mean.numpy(), m * gp.y_std + gp.y_mean, atol=1e-9)
    np.testing.assert_allclose(var.numpy(), np.maximum(v, 0) * gp.y_std**2, atol=1e-9)
    np.testing.assert_allclose(gp.pool_mean[120:].numpy(), mean.numpy(), atol=1e-9)
    assert mean.dtype == torch.float64 and var.shape == (100,)


def test_fit_keeps_the_iterate_with_the_lowest_validation_mae():
    x, y = data()
    gp = GPRegressor(fit=GPFitConfig(iterations=30, lr=0.1)).fit(x[:100], y[:100])
    hist = gp.fit_result.history
    assert len(hist) == 31 and all(h["val_mae"] is not None for h in hist)
    best = min(range(31), key=lambda i: (hist[i]["val_mae"], i))
    assert gp.fit_result.best_iteration == best
    # the loss went down: the optimiser moved the hyper-parameters
    assert hist[-1]["loss"] < hist[0]["loss"]
    # explicit validation data is used as given
    gp2 = GPRegressor(fit=GPFitConfig(iterations=5)).fit(x[:100], y[:100], x_val=x[100:120], y_val=y[100:120])
    assert len(gp2.fit_result.history) == 6


@pytest.mark.parametrize("kernel", ["matern32", "matern52", "rbf"])
def test_other_kernels_and_ard(kernel):
    x, y = data(d=3)
    gp = small_gp(kernel=kernel, ard=True).fit(x[:60], y[:60])
    assert gp.params_.kernel == kernel and gp.params_.lengthscale.numel() == 3
    mean, var = gp.predict(x[60:90])
    assert torch.isfinite(mean).all() and (var >= 0).all()


def test_noise_free_mode_uses_the_jitter():
    x, y = data()
    gp = small_gp(noise=0.0, jitter=1e-6).fit(x[:50], y[:50])
    assert gp.params_.noise == pytest.approx(1e-6)
    mean, _ = gp.predict(x[:50])  # interpolates its training data
    np.testing.assert_allclose(mean.numpy(), y[:50], atol=1e-3)
    fixed = small_gp(noise=0.04).fit(x[:50], y[:50])
    assert fixed.params_.noise * fixed.y_std**2 == pytest.approx(0.04)


def test_condition_equals_refitting_the_posterior():
    x, y = data()
    gp = small_gp().fit(x[:40], y[:40], pool=x[40:])
    for j in range(40, 60):
        gp.condition(x[j : j + 1], y[j : j + 1], pool_index=torch.tensor([j - 40]))
    gp.condition(x[60:65], y[60:65])
    xs = torch.from_numpy(x[:65]) - gp.center
    ys = (torch.from_numpy(y[:65]) - gp.y_mean) / gp.y_std
    m, v = exact_posterior(gp.params_, xs, ys, torch.from_numpy(x[40:]) - gp.center)
    np.testing.assert_allclose(gp.pool_mean.numpy(), (m * gp.y_std + gp.y_mean).numpy(), atol=1e-8)
    np.testing.assert_allclose(gp.pool_var.numpy(), (v.clamp_min(0) * gp.y_std**2).numpy(), atol=1e-8)


def test_sparse_method_and_auto_switch():
    x, y = data(n=400)
    gp = small_gp(method="sparse", inducing_points=30).fit(x[:200], y[:200], pool=x[200:])
    assert gp.method_ == "sparse" and gp.inducing_.shape == (30, 4)
    mean, _ = gp.predict(x[200:])
    np.testing.assert_allclose(gp.pool_mean.numpy(), mean.numpy(), atol=1e-9)
    exact = small_gp(method="exact").fit(x[:200], y[:200])
    m_exact, _ = exact.predict(x[200:])
    rel = float((mean - m_exact).abs().mean() / (m_exact - m_exact.mean()).abs().mean())
    assert rel < 0.5, rel  # a rough approximation of the same function
    gp.condition(x[200:210], y[200:210])
    assert gp.n_observations == 210
    tiny = small_gp(memory_budget=10_000)
    assert tiny.choose_method(100, 200, 4) == "sparse" and small_gp().choose_method(100, 200, 4) == "exact"


def test_regressor_errors():
    x, y = data()
    with pytest.raises(ValueError, match="unknown kernel 'laplace'"):
        GPRegressor("laplace")
    with pytest.raises(ValueError, match="unknown method"):
        GPSolverConfig(method="svgp")
    with pytest.raises(ValueError, match="noise must be None"):
        GPKernelConfig(noise=-1.0)
    with pytest.raises(ValueError, match="unknown GP setting 'lenghtscale'"):
        GPConfig.from_flat({"lenghtscale": 1.0})
    y_bad = y.copy()
    y_bad[[3, 7]] = np.nan
    with pytest.raises(ValueError, match="2 NaN or infinite targets"):
        small_gp().fit(x[:50], y_bad[:50])
    with pytest.raises(ValueError, match="not fitted"):
        GPRegressor().predict(x)
    with pytest.raises(ValueError, match="at least 2 labelled points"):
        small_gp().fit(x[:1], y[:1])


def test_variance_strategy_picks_the_argmax_with_the_lower_index_on_ties():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.5, float("nan"), 0.4], dtype=torch.float64)
    assert top_k(scores, 3).tolist() == [1, 3, 5]
    x, y = data()
    gp = small_gp().fit(x[:30], y[:30], pool=x)
    cand = torch.arange(30, 300)
    pick = get_strategy("gp_variance").query(gp, cand, 1, np.random.default_rng(0))
    assert int(pick[0]) == int(cand[torch.argmax(gp.pool_var[cand])])
    top5 = get_strategy("gp_variance").query(gp, cand, 5, np.random.default_rng(0))
    assert top5.tolist() == cand[torch.argsort(gp.pool_var[cand], descending=True)[:5]].tolist()
    with pytest.raises(ValueError, match="cannot pick 5 of 3"):
        top_k(scores[:3], 5)


def test_greedy_batch_equals_sequential_conditioning():
    """Each greedy pick is the argmax variance after conditioning on the previous picks at their
    predicted means; checked against a full refit after every fantasised pick."""
    x, y = data()
    gp = small_gp().fit(x[:30], y[:30], pool=x)
    cand = torch.arange(30, 300)
    picks = get_strategy("gp_batch_variance").query(gp, cand, 6, np.random.default_rng(0))
    xs = torch.from_numpy(x) - gp.center
    tx = list(xs[:30])
    ty = list((torch.from_numpy(y[:30]) - gp.y_mean) / gp.y_std)
    chosen: list[int] = []
    for _ in range(6):
        m, v = exact_posterior(gp.params_, torch.stack(tx), torch.stack(ty), xs)
        v[:30] = -1.0
        v[chosen] = -1.0
        j = int(torch.argmax(v))
        chosen.append(j)
        tx.append(xs[j])
        ty.append(m[j])  # the fantasy: the predicted mean
    assert picks.tolist() == chosen
    # the real labels then replace the fantasies: same state as conditioning on them directly
    gp.update_targets(y[chosen])
    ref = small_gp().fit(x[:30], y[:30], pool=x)
    ref.condition(x[chosen], y[chosen], pool_index=torch.tensor(chosen))
    np.testing.assert_allclose(gp.pool_mean.numpy(), ref.pool_mean.numpy(), atol=1e-10)
    np.testing.assert_allclose(gp.pool_var.numpy(), ref.pool_var.numpy(), atol=1e-10)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown regression strategy 'margin'"):
        get_strategy("margin")


# -- the loop ---------------------------------------------------------------------------------
def learner(out, strategy="gp_variance", **kw):
    """A seeded GP run on the synthetic data; ``kw`` are GPLoopConfig fields."""
    x, y = data(n=240)
    config = GPLoopConfig(
        **{**dict(strategy=strategy, initial=20, queries=30, batch=1, seed=3, checkpoint_every=4), **kw}
    )
    gp = GPConfig(fit=GPFitConfig(iterations=10))
    return GPActiveLearner(x, y, np.arange(200), np.arange(200, 240), config, out_dir=out, gp=gp)


def strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and k != "fit"} for r in records]


@pytest.mark.parametrize("strategy, batch", [("gp_variance", 1), ("gp_batch_variance", 4), ("random", 3)])
def test_loop_records_determinism_and_resume(tmp_path, strategy, batch):
    full = learner(tmp_path / "a", strategy, batch=batch).run()
    steps = -(-30 // batch)
    assert len(full) == steps + 1
    assert all(tuple(k for k in r if k != "fit") == RECORD_KEYS for r in full)
    assert full[0]["labelled_count"] == 20 and full[-1]["labelled_count"] == 50 and full[-1]["queried"] == []
    queried = [i for r in full for i in r["queried"]]
    assert len(set(queried)) == 30 and max(queried) < 200  # distinct pool structures, never test ones
    assert "fit" in full[0] and "fit" not in full[1]
    again = learner(tmp_path / "b", strategy, batch=batch).run()
    assert strip(again) == strip(full)  # deterministic for a seed

    # interrupted after step 6 (checkpoint at 4), then resumed: the same records
    class Boom(RuntimeError):
        pass

    run = learner(tmp_path / "c", strategy, batch=batch)
    calls = {"n": 0}
    original = run.strategy.query

    def query(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise Boom
        return original(*args, **kwargs)

    run.strategy.query = query
    with pytest.raises(Boom):
        run.run()
    assert len(read_records(tmp_path / "c" / "records.jsonl")) == 6
    resumed = learner(tmp_path / "c", strategy, batch=batch).run(resume=True)
    assert strip(resumed) == strip(full)
    assert strip(read_records(tmp_path / "c" / "records.jsonl")) == strip(full)
    # a finished run resumes to the same records without work; a fresh run there is refused
    assert strip(learner(tmp_path / "c", strategy, batch=batch).run(resume=True)) == strip(full)
    with pytest.raises(ValueError, match="already holds a run"):
        learner(tmp_path / "c", strategy, batch=batch).run()
    with pytest.raises(ValueError, match=r"settings differ \(seed: 3 -> 4\)"):
        learner(tmp_path / "c", strategy, batch=batch, seed=4).run(resume=True)


def test_run_folder_guarantees(tmp_path):
    """The GP run writes through RunDirectory: one writer, checksummed checkpoints with a fallback
    to the previous one, and no resume on other data."""
    from alkernels.loop.rundir import (
        DamagedCheckpointError,
        RunDirectory,
        RunInUseError,
    )

    out = tmp_path / "r"
    full = learner(out).run()
    with RunDirectory(out).lock(), pytest.raises(RunInUseError, match="in use by another run"):
        learner(out).run(resume=True)
    x, y = data(n=240)
    other = GPActiveLearner(
        x,
        y + 1.0,
        np.arange(200),
        np.arange(200, 240),
        GPLoopConfig(initial=20, queries=30, seed=3, checkpoint_every=4),
        out_dir=out,
        gp=GPConfig(fit=GPFitConfig(iterations=10)),
    )
    with pytest.raises(ValueError, match="settings differ \\(data: "):
        other.run(resume=True)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DamagedCheckpointError, match="checkpoint.pt is damaged"):
        learner(out).run(resume=True)
    again = learner(out).run(resume=True, restart_round=True)  # from checkpoint.pt.prev: redoes the tail
    assert strip(again) == strip(full)
    assert list(out.glob("checkpoint.pt.damaged-*"))


def test_greedy_batches_reproduce_single_queries_at_fixed_hyperparameters(tmp_path):
    """The variance does not depend on the targets, so without refits the greedy batch arm
    labels exactly the structures the single-query arm labels, in the same order."""
    single = learner(tmp_path / "s", "gp_variance", batch=1).run()
    greedy = learner(tmp_path / "g", "gp_batch_variance", batch=5).run()
    assert [i for r in single for i in r["queried"]] == [i for r in greedy for i in r["queried"]]
    np.testing.assert_allclose([r["mae"] for r in single[::5]], [r["mae"] for r in greedy], atol=1e-10)


def test_refit_and_feature_callable(tmp_path):
    x, y = data(n=240)
    seen = []

    def features(labelled, seed):
        seen.append((len(labelled), seed))
        return x * 1.0

    run = GPActiveLearner(
        features,
        y,
        np.arange(200),
        np.arange(200, 240),
        GPLoopConfig(initial=0.1, queries=12, batch=2, refit_every=5, retrain_every=8, seed=1),
        out_dir=tmp_path / "r",
        gp=GPConfig(fit=GPFitConfig(iterations=5)),
    )
    records = run.run()
    fits = [r["step"] for r in records if "fit" in r]
    # queries done before each step: 0, 2, 4, 6, 8, 10, 12 -> refits when crossing 5 and 10,
    # retraining (which refits) when crossing 8
    assert fits == [0, 3, 4, 5]
    assert seen == [(20, 1), (28, 1)]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["refit_every"] == 5


def test_loop_configuration_errors(tmp_path):
    x, y = data(n=100)
    train, test = np.arange(80), np.arange(80, 100)
    with pytest.raises(ValueError, match="the pool has 80"):
        GPActiveLearner(x, y, train, test, GPLoopConfig(initial=10, queries=71), out_dir=tmp_path)
    y_nan = y.copy()
    y_nan[5] = np.nan
    with pytest.raises(ValueError, match="1 train structures have NaN targets"):
        GPActiveLearner(x, y_nan, train, test, GPLoopConfig(queries=10), out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown kernel 'sinc'"):
        GPKernelConfig("sinc")
    with pytest.raises(ValueError, match="overlap"):
        GPActiveLearner(x, y, train, np.arange(70, 100), GPLoopConfig(queries=10), out_dir=tmp_path)
    with pytest.raises(ValueError, match="retrain_every needs features given as a callable"):
        GPActiveLearner(x, y, train, test, GPLoopConfig(queries=10, retrain_every=3), out_dir=tmp_path)
    with pytest.raises(ValueError, match="batch >= 1"):
        GPLoopConfig(batch=0)


def test_the_keywords_of_0_1_still_work_with_a_deprecation_warning(tmp_path):
    x, y = data(n=100)
    with pytest.warns(DeprecationWarning, match="GPLoopConfig"):
        old = GPActiveLearner(x, y, np.arange(80), np.arange(80, 100), queries=10, seed=2, gp={"iterations": 5},
                              out_dir=tmp_path / "old")  # fmt: skip
    assert old.loop_config == GPLoopConfig(queries=10, seed=2)
    assert old.gp_config == GPConfig(fit=GPFitConfig(iterations=5))
    with pytest.warns(DeprecationWarning, match="GPRegressor"):
        gp = GPRegressor(kernel="rbf", iterations=3, method="exact")
    assert gp.config == GPConfig(GPKernelConfig("rbf"), GPFitConfig(iterations=3), GPSolverConfig(method="exact"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        GPActiveLearner(x, y, np.arange(80), np.arange(80, 100), out_dir=tmp_path, queriez=3)


# -- embeddings -------------------------------------------------------------------------------
def test_period_and_group():
    from alkernels.gp.embeddings import period_and_group

    z = np.array([1, 2, 8, 11, 26, 35, 57, 71, 72, 79, 86, 92])
    period, group = period_and_group(z)
    assert period.tolist() == [1, 1, 2, 3, 4, 4, 6, 6, 6, 6, 6, 7]
    assert group.tolist() == [1, 18, 16, 1, 8, 17, 3, 3, 4, 11, 18, 3]


def test_composition_features_and_encoder_files(tmp_path):
    from alkernels.data import random_graphs
    from alkernels.gp import composition_features, load_encoder
    from alkernels.models import EGNN, PropertyRegressor

    graphs = random_graphs(6, atoms=(2, 5), seed=0)
    feats = composition_features(graphs)
    assert feats.shape == (6, 111) and np.allclose(feats[:, :99].sum(1), 1.0)
    torch.manual_seed(0)
    model = PropertyRegressor(EGNN(), ["e"])
    ref = model.encoder.state_dict()
    for name, obj in (
        ("enc.pt", model.encoder.state_dict()),
        ("model.pt", model.state_dict()),
        ("initial.pt", {"model": model.state_dict(), "aux": None}),
    ):
        torch.save(obj, tmp_path / name)
        loaded = load_encoder(tmp_path / name, backend="torch").state_dict()
        assert all(torch.equal(loaded[k], ref[k]) for k in ref)
    from alkernels.transfer import checkpoint

    checkpoint.save(model, tmp_path / "pt.ckpt")  # what `alkernels transfer` pre-trains
    loaded = load_encoder(tmp_path / "pt.ckpt", backend="torch").state_dict()
    assert all(torch.equal(loaded[k], ref[k]) for k in ref)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an EGNN state_dict"):
        load_encoder(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match="cannot read encoder weights"):
        load_encoder(tmp_path / "junk.pt")
