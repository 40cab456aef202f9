"""The active-learning loop: invariants, determinism, weight reset, crash and resume.

Uses the tiny stand-ins of ``test_strategies`` (a two-layer classifier with taps and dropout on
toy structures whose label is set by their composition), so a full run takes well under a second.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alkernels import strategies
from alkernels.loop import (
    RECORD_KEYS,
    ActiveLearningLoop,
    LoopConfig,
    LoopRuntime,
    labelled_schedule,
    read_records,
)
from alkernels.loop.rundir import RunDirectory
from helpers import (
    TEST,
    TRAIN,
    TapModel,
    make_loop,
    toy_collate,
    toy_set,
    without_timings,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread


def test_schedule_counts_and_fractions():
    assert labelled_schedule(40, 0.1, 0.1, 10) == [4 * r for r in range(1, 11)]
    assert labelled_schedule(15, 0.1, 0.1, 10)[-1] == 15
    assert labelled_schedule(10, 2, 3, 3) == [2, 5, 8]
    with pytest.raises(ValueError, match="more than the pool holds"):
        labelled_schedule(40, 0.1, 0.2, 10)
    with pytest.raises(ValueError, match="the training set has 10"):
        labelled_schedule(10, 2, 5, 3)
    with pytest.raises(ValueError, match="rounds to zero"):
        labelled_schedule(5, 0.1, 0.01, 3)


@pytest.mark.parametrize("strategy", ["margin", "bald", "random", "learning_loss", "center_of_mass"])
def test_loop_invariants(tmp_path, strategy):
    loop = make_loop(tmp_path, strategy)
    records = loop.run()
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert all(tuple(r) == RECORD_KEYS for r in records)
    assert [r["labelled_count"] for r in records] == [4, 8, 12, 16]
    assert [r["labelled_fraction"] for r in records] == [0.1, 0.2, 0.3, 0.4]
    assert [len(r["queried"]) for r in records] == [4, 4, 4, 0]
    queried = [i for r in records for i in r["queried"]]
    labelled = loop.labelled
    assert len(labelled) == len(set(labelled)) == 16
    assert set(queried) <= set(labelled) and len(set(labelled) - set(queried)) == 4
    assert all(0 <= i < len(TRAIN) for i in labelled)
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and np.isfinite(r["loss"]) and r["loss"] > 0
    assert read_records(tmp_path / "run" / "records.jsonl") == records
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["strategy"] == strategy and config["schedule"] == [4, 8, 12, 16]


def test_pool_plus_labelled_is_the_training_set(tmp_path):
    seen = []

    class Recording(strategies.Strategy):
        name = "recording"

        def query(self, model, pool, k, *, rng):
            seen.append((pool.indices.copy(), list(loop.labelled)))
            return pool.indices[rng.choice(len(pool), k, replace=False)]

    loop = make_loop(tmp_path, Recording(), initial=5, query_size=7, rounds=6)
    loop.run()
    assert len(seen) == 5
    for pool_idx, labelled in seen:
        assert sorted(pool_idx.tolist() + labelled) == list(range(len(TRAIN)))
    assert len(loop.labelled) == 40


def test_deterministic_for_a_seed(tmp_path):
    a = make_loop(tmp_path, "bald", "a")
    b = make_loop(tmp_path, "bald", "b")
    c = make_loop(tmp_path, "bald", "c", seed=1)
    ra, rb, rc = a.run(), b.run(), c.run()
    assert without_timings(ra) == without_timings(rb)
    assert without_timings(ra) != without_timings(rc)
    for (n1, t1), (_, t2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(t1, t2), n1


def test_weight_reset_reloads_the_original_initial_state(tmp_path):
    starts = []

    class Watch(ActiveLearningLoop):
        def _train(self, round_):
            starts.append({k: v.clone() for k, v in self.model.state_dict().items()})
            super()._train(round_)

    calls = []

    def factory():
        calls.append(1)
        return TapModel()

    loop = Watch(
        factory,
        "random",
        TRAIN,
        TEST,
        LoopConfig(initial=4, query_size=4, rounds=3, epochs=1, reset_weights=True, seed=3, batch_size=6, lr=3e-2),
        collate_fn=toy_collate,
        out_dir=tmp_path / "w",
    )
    loop.run()
    assert len(calls) == 1 and len(starts) == 3
    initial = RunDirectory(tmp_path / "w").load_state("initial.pt")["model"]
    for state in starts:
        assert all(torch.equal(state[k], initial[k]) for k in initial)
    assert not all(torch.equal(loop.model.state_dict()[k], initial[k]) for k in initial)
    assert loop.reset_optimizer is True
    kept = make_loop(tmp_path, "random", "k", reset_weights=False)
    assert kept.reset_optimizer is False


class Crash(Exception):
    pass


def crashing_strategy(name, crash_round):
    """``name``'s strategy that raises during the query of round ``crash_round`` (0-based)."""
    strat = strategies.get(name, tap_dims=(8, 8), hidden=4) if name == "learning_loss" else strategies.get(name)
    inner = strat.query
    count = [0]

    def query(model, pool, k, *, rng):
        count[0] += 1
        if count[0] == crash_round + 1:
            raise Crash("killed mid-round")
        return inner(model, pool, k, rng=rng)

    strat.query = query
    return strat


@pytest.mark.parametrize("strategy", ["bald", "learning_loss", "random"])
def test_resume_after_a_crash_in_the_query_equals_an_uninterrupted_run(tmp_path, strategy):
    straight = make_loop(tmp_path, strategy, "straight")
    expect = straight.run()
    crashed = make_loop(tmp_path, crashing_strategy(strategy, 2), "resumed")
    with pytest.raises(Crash):
        crashed.run()
    assert [r["round"] for r in read_records(tmp_path / "resumed" / "records.jsonl")] == [0, 1]
    resumed = make_loop(tmp_path, strategy, "resumed").run(resume=True)
    assert without_timings(resumed) == without_timings(expect)
    assert read_records(tmp_path / "resumed" / "records.jsonl") == resumed


def test_crash_during_training_then_resume(tmp_path):
    expect = make_loop(tmp_path, "expected_margin", "straight", reset_weights=True).run()

    class Dying(TapModel):
        calls = 0

        def __repr__(self):  # the run's identity sees the same model as the resumed run's
            return TapModel.__repr__(self).replace("Dying", "TapModel")

        def forward(self, batch):
            Dying.calls += 1
            if Dying.calls == 12:  # inside the training of round 1
                raise Crash("killed while training")
            return super().forward(batch)

    loop = ActiveLearningLoop(
        Dying,
        "expected_margin",
        TRAIN,
        TEST,
        LoopConfig(initial=0.1, query_size=0.1, rounds=4, epochs=2, seed=0, batch_size=6, lr=3e-2, reset_weights=True),
        collate_fn=toy_collate,
        out_dir=tmp_path / "r",
        runtime=LoopRuntime(eval_batch_size=8),
    )
    with pytest.raises(Crash):
        loop.run()
    assert [r["round"] for r in read_records(tmp_path / "r" / "records.jsonl")] == [0]
    resumed = make_loop(tmp_path, "expected_margin", "r", reset_weights=True).run(resume=True)
    assert without_timings(resumed) == without_timings(expect)


def test_resume_drops_records_newer_than_the_checkpoint_and_torn_lines(tmp_path):
    expect = make_loop(tmp_path, "margin", "straight").run()
    loop = make_loop(tmp_path, crashing_strategy("margin", 2), "r")
    with pytest.raises(Crash):
        loop.run()
    path = tmp_path / "r" / "records.jsonl"
    # a kill after a record was written but before its checkpoint, then a torn line
    with open(path, "a") as f:
        f.write(json.dumps(dict(expect[2], accuracy=-1.0)) + "\n" + '{"round": 3, "acc')
    assert len(read_records(path)) == 3
    resumed = make_loop(tmp_path, "margin", "r").run(resume=True)
    assert without_timings(resumed) == without_timings(expect)
    assert len(path.read_text().splitlines()) == 4


def test_resume_of_a_finished_run_returns_its_records(tmp_path):
    expect = make_loop(tmp_path).run()
    assert make_loop(tmp_path).run(resume=True) == expect


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    expect = make_loop(tmp_path, name="a").run()
    assert without_timings(make_loop(tmp_path, name="b").run(resume=True)) == without_timings(expect)


def test_the_keywords_of_0_1_still_work_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"rounds=.*LoopConfig"):
        old = ActiveLearningLoop(
            TapModel, "margin", TRAIN, TEST, initial=0.1, query_size=0.1, rounds=4, epochs=2, seed=0, batch_size=6,
            eval_batch_size=8, lr=3e-2, collate_fn=toy_collate, out_dir=tmp_path / "old",
        )  # fmt: skip
    assert old.loop_config == LoopConfig(rounds=4, epochs=2, batch_size=6, lr=3e-2) and old.eval_batch_size == 8
    assert without_timings(old.run()) == without_timings(make_loop(tmp_path, name="new").run())
    with pytest.raises(TypeError, match="unexpected keyword"):
        ActiveLearningLoop(TapModel, "margin", TRAIN, TEST, out_dir=tmp_path / "x", epocs=3)


def test_loop_config_is_checked_when_built():
    for bad, message in (({"rounds": 0}, "rounds must be"), ({"initial": 1.5}, "fraction must be in"),
                         ({"lr": 0.0}, "lr > 0"), ({"seed": -1}, "seed must be"), ({"batch_size": 2.5}, "batch_size"),
                         ({"epoch_budget": -1.0}, "epoch_budget")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            LoopConfig(**bad)
    assert LoopConfig(reset_weights=True).resets_optimizer and not LoopConfig().resets_optimizer


def test_bad_configuration_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        make_loop(tmp_path, "nope")
    with pytest.raises(ValueError, match="more than the pool holds"):
        make_loop(tmp_path, query_size=0.5, rounds=4)
    with pytest.raises(ValueError, match="the training set has 40"):
        make_loop(tmp_path, initial=10, query_size=50, rounds=2)
    with pytest.raises(ValueError, match="the training set has no labels"):
        ActiveLearningLoop(
            TapModel, "margin", toy_set(10, 0, labelled=False), TEST, collate_fn=toy_collate, out_dir=tmp_path / "x"
        )
    make_loop(tmp_path, rounds=2).run()
    with pytest.raises(ValueError, match=r"already holds a run; resume it \(resume=True\)"):
        make_loop(tmp_path, rounds=2).run()
    with pytest.raises(ValueError, match="settings differ .*epochs: 2 -> 3"):
        make_loop(tmp_path, rounds=2, epochs=3).run(resume=True)


def test_a_strategy_returning_bad_indices_is_caught(tmp_path):
    class Repeats(strategies.Strategy):
        name = "repeats"

        def query(self, model, pool, k, *, rng):
            return np.repeat(pool.indices[:1], k)

    with pytest.raises(ValueError, match="'repeats' must return 4 distinct unlabelled indices"):
        make_loop(tmp_path, Repeats()).run()


def test_standard_run_is_one_round_on_everything(tmp_path):
    records = make_loop(tmp_path, "random", initial=len(TRAIN), rounds=1, epochs=3).run()
    assert len(records) == 1 and records[0]["labelled_fraction"] == 1.0 and records[0]["queried"] == []
