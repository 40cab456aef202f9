"""Seed statistics of the space-group study against hand computations, and the report's new
sections (paired differences, areas, labels to reach the standard run, claim verdicts) on
synthetic grids whose verdicts are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from alkernels.experiments.spacegroup import analysis
from alkernels.experiments.spacegroup.stats import (
    curve_area,
    first_reaching,
    mean_interval,
    paired_interval,
    t975,
)
from alkernels.strategies import PAPER_STRATEGIES

pytestmark = pytest.mark.timeout(60)


def test_t_quantiles():
    # textbook values of t(0.975, df)
    assert t975(1) == pytest.approx(12.7062047, abs=1e-6)
    assert t975(4) == pytest.approx(2.7764451, abs=1e-6)
    assert t975(30) == pytest.approx(2.0422725, abs=1e-6)
    assert t975(40) == pytest.approx(2.0210754, abs=1e-6)
    assert t975(1000) == pytest.approx(1.9623391, abs=1e-6)
    assert type(t975(3)) is float
    with pytest.raises(ValueError):
        t975(0)


def test_paired_interval_by_hand():
    # differences 2, 1, 4: mean 7/3; sample variance ((-1/3)^2 + (-4/3)^2 + (5/3)^2) / 2 = 7/3;
    # half width t(0.975, 2) * sqrt(7/3) / sqrt(3) = 4.30265273 * 0.88191710 = 3.794583
    iv = paired_interval({0: 50.0, 1: 52.0, 2: 55.0, 7: 1.0}, {0: 48.0, 1: 51.0, 2: 51.0, 5: 0.0})
    assert iv.n == 3
    assert iv.mean == pytest.approx(7 / 3)
    assert iv.half_width == pytest.approx(4.30265273 * math.sqrt(7 / 3) / math.sqrt(3))
    assert (iv.lo, iv.hi) == pytest.approx((7 / 3 - 3.794583, 7 / 3 + 3.794583), abs=1e-6)
    assert iv.format() == "+2.3 [-1.5, +6.1]"
    assert paired_interval({0: 1.0}, {1: 1.0}) is None
    one = mean_interval([3.0])
    assert (one.lo, one.hi, one.n) == (3.0, 3.0, 1) and one.format() == "+3.0 (1 seed)"


def test_curve_area_and_first_reaching():
    # trapezoids (10 + 20) / 2 * 10 + (20 + 40) / 2 * 10 = 450 over a width of 20
    assert curve_area([10, 20, 30], [10, 20, 40]) == pytest.approx(22.5)
    assert curve_area([30, 10, 20], [40, 10, 20]) == pytest.approx(22.5)  # order does not matter
    assert curve_area([10], [7.0]) == 7.0
    assert first_reaching([100, 200, 300], [40.0, 55.0, 60.0], 55.0) == 200
    assert first_reaching([100, 200], [40.0, 50.0], 55.0) is None


SEED_SHIFT = [0.0, 1.0, -1.0, 2.0, -2.0]  # shared by every strategy of a seed: pairing removes it
PERCENTS = list(range(10, 101, 10))


def _jitter(seed: int, k: int) -> float:
    return 0.1 * ((seed * 7 + k * 3) % 5 - 2)


def synthetic_runs(effects: dict[str, float], reset_gap: float, unc_boost: float) -> list[dict]:
    """A grid of 5 seeds: random rises from 30% to 60% (the standard run); other strategies add
    ``effects[name]`` points from 20% on; the uncertainty strategies add ``unc_boost`` more from 20%;
    the reset variant ends at the standard run plus ``reset_gap``."""
    runs = []
    for seed, shift in enumerate(SEED_SHIFT):
        runs.append(
            {
                "run": f"runs/standard/seed{seed}",
                "config": {"strategy": "random", "seed": seed, "reset_weights": False, "variant": "standard"},
                "records": [
                    {
                        "round": 0,
                        "labelled_fraction": 1.0,
                        "labelled_count": 1000,
                        "accuracy": (60.0 + shift) / 100,
                        "loss": 1.0,
                        "train_seconds": 1.0,
                        "query_seconds": 0.0,
                        "queried": [],
                    }
                ],
            }
        )
        for variant in ("keep", "reset"):
            for k, name in enumerate(PAPER_STRATEGIES):
                records = []
                for r, p in enumerate(PERCENTS):
                    acc = 30.0 + 30.0 * (p - 10) / 90 + shift
                    if p > 10:
                        acc += effects.get(name, 0.0) + _jitter(seed, k)
                        if name in analysis.UNCERTAINTY:
                            acc += unc_boost
                    if variant == "reset" and p == 100:
                        acc = 60.0 + shift + reset_gap + _jitter(seed, k)
                    records.append(
                        {
                            "round": r,
                            "labelled_fraction": p / 100,
                            "labelled_count": 10 * p,
                            "accuracy": acc / 100,
                            "loss": 1.0,
                            "train_seconds": 1.0,
                            "query_seconds": 0.1,
                            "queried": [],
                        }
                    )
                runs.append(
                    {
                        "run": f"runs/{variant}/{name}/seed{seed}",
                        "config": {
                            "strategy": name,
                            "seed": seed,
                            "reset_weights": variant == "reset",
                            "variant": variant,
                        },
                        "records": records,
                    }
                )
    return runs


def _write(tmp_path, runs):
    from alkernels.experiments.spacegroup.report import COMPACT_RUNS, write_compact

    tmp_path.mkdir(parents=True, exist_ok=True)
    write_compact(runs, tmp_path / COMPACT_RUNS)
    return tmp_path


def test_report_supports_claims_that_hold(tmp_path):
    from alkernels.experiments.spacegroup.report import write_report

    runs = synthetic_runs({"center_of_mass": -6.0, "umap": -5.0, "learning_loss": -8.0}, reset_gap=0.0, unc_boost=10.0)
    out = _write(tmp_path / "good", runs)
    paths = write_report(out)
    table = paths["table.md"].read_text()
    for section in (
        "## Paired difference to random",
        "## Area under the learning curve",
        "## Labels needed to reach the standard run",
        "## The paper's claims",
    ):
        assert section in table
    assert paths["differences.png"].stat().st_size > 0
    summary = json.loads(paths["summary.json"].read_text())
    verdicts = [v["verdict"] for v in summary["verdicts"]]
    assert verdicts == ["supported"] * 4, summary["verdicts"]
    # uncertainty runs are 10 points above random from 20% on: 30 + (p - 10) / 3 + 10 = 60 at 70%
    reach = summary["labels_to_reach_standard"]["keep"]
    assert reach["margin"] == {"count": 700, "percent": 70, "seeds": 5, "of": 5}
    assert reach["random"]["percent"] == 100
    assert reach["learning_loss"]["count"] is None and "not reached" in table
    # paired differences: the seed shift cancels, leaving the effect plus a small jitter
    margin40 = [
        d
        for d in summary["paired_to_random"]
        if d["variant"] == "keep" and d["strategy"] == "margin" and d["percent"] == 40
    ][0]
    assert margin40["mean"] == pytest.approx(10.0, abs=0.25) and margin40["n"] == 5
    assert margin40["lo"] > 9 and margin40["hi"] < 11
    assert "**+10." in table


def test_claims_that_do_not_hold_are_not_supported():
    from alkernels.experiments.spacegroup.report import collect

    verdicts = analysis.claim_verdicts(collect(synthetic_runs({}, reset_gap=-5.0, unc_boost=0.0)))
    assert [v["verdict"] for v in verdicts] == ["not supported"] * 4, verdicts


def test_unfinished_runs_and_missing_strategies():
    from alkernels.experiments.spacegroup.report import collect

    runs = synthetic_runs({}, reset_gap=0.0, unc_boost=0.0)
    keep = [r for r in runs if r["run"].startswith(("runs/keep/random", "runs/keep/margin", "runs/standard"))]
    assert keep[-1]["run"] == "runs/keep/random/seed4"
    keep[-1] = {**keep[-1], "records": keep[-1]["records"][:4]}  # an interrupted run: left out of the stats
    df = collect(keep)
    verdicts = analysis.claim_verdicts(df)
    assert all(v["verdict"] == "inconclusive" for v in verdicts[1:])
    assert "needs center_of_mass/umap" in verdicts[1]["evidence"]
    assert set(analysis.paired_to_random(df).n) == {4}
    a = analysis.areas(df)
    assert set(a.seed[a.strategy == "random"]) == {0, 1, 2, 3} and set(a.seed[a.strategy == "margin"]) == set(range(5))


def test_work_of_a_run_and_a_grid_by_hand():
    from alkernels.experiments.spacegroup.cost import Work, grid_work, run_work

    # 100 structures in 10% chunks, 2 epochs, batch 24: sample-epochs 2 x (10 + ... + 100) = 1,100;
    # steps 2 x (1 + 1 + 2 + 2 + 3 + 3 + 3 + 4 + 4 + 5) = 56; the pool scored before each of the
    # nine queries holds 90, 80, ..., 10 structures = 450
    assert run_work(100, 20, epochs=2) == Work(1100, 56, 200, 450)
    assert run_work(100, 20, epochs=2, queries=False).scored == 0
    # a budget of 10 full epochs: epochs 10, 5, 3, 3, 2, 2, 1, 1, 1, 1 (see test_epoch_budget)
    assert run_work(100, 20, epoch_budget=10.0).sample_epochs == 970
    g = grid_work(100, 20, strategies=["margin", "random"], seeds=2, variants=["keep", "reset"], epochs=2)
    assert g["al"] == Work(4 * 1100 * 2, 4 * 56 * 2, 4 * 200 * 2, 4 * 450)  # random scores nothing
    assert g["standard"] == Work(2 * 200, 2 * 10, 2 * 20, 0)
    assert g["total"] == g["al"] + g["standard"]


def test_one_seed_decides_nothing():
    from alkernels.experiments.spacegroup.report import collect

    runs = synthetic_runs({"center_of_mass": -6.0, "umap": -5.0, "learning_loss": -8.0}, reset_gap=-5.0, unc_boost=10.0)
    verdicts = analysis.claim_verdicts(collect([r for r in runs if r["config"]["seed"] == 0]))
    assert [v["verdict"] for v in verdicts] == ["inconclusive"] * 4, verdicts


def test_mean_std_cells():
    from alkernels.experiments._report import mean_std

    assert mean_std(32.44, 0.0, 1) == "32.4"  # one seed has no spread to show
    assert mean_std(32.44, 1.26, 2) == "32.4 +- 1.3"
    assert mean_std(0.0, 0.0, 5, "+.4f") == "+0.0000 +- 0.0000"  # a real zero spread over 5 seeds stays
    assert mean_std(0.06221, 0.0, 1, ".4f", sep="±") == "0.0622"
    assert mean_std(0.06221, 0.00047, 3, ".4f", sep="±") == "0.0622 ± 0.0005"


def test_one_seed_tables_show_the_mean_alone(tmp_path):
    from alkernels.experiments.spacegroup.report import write_report

    runs = synthetic_runs({}, reset_gap=0.0, unc_boost=0.0)
    one = write_report(_write(tmp_path / "one", [r for r in runs if r["config"]["seed"] == 0]))["table.md"].read_text()
    accuracy = one.split("Seconds per round")[0].split("## Weights kept between rounds")[1]
    assert "+-" not in accuracy
    assert "| random | 30.0 | 33.3 | 36.7 |" in accuracy
    assert "| standard (full data) |  |  |  |  |  |  |  |  |  | 60.0 |" in accuracy
    assert "a cell of one seed: its value alone" in one
    many = write_report(_write(tmp_path / "many", runs))["table.md"].read_text()
    assert "| random | 30.0 +- 1.6 |" in many and "a cell of one seed" not in many


def test_paired_power_against_simulation():
    """The noncentral-t power agrees with a simulated paired t-test, and the seed count is the
    first that reaches the target."""
    import numpy as np

    from alkernels.experiments.spacegroup.stats import paired_power, seeds_for_power, t975

    rng = np.random.default_rng(0)
    effect, sd, n = 2.6, 4.5, 8
    d = rng.normal(effect, sd, size=(40_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    simulated = float(np.mean(np.abs(t) > t975(n - 1)))
    assert paired_power(effect, sd, n) == pytest.approx(simulated, abs=0.01)
    assert paired_power(0.0, sd, n) == pytest.approx(0.05, abs=1e-9)  # the test's size
    need = seeds_for_power(effect, sd, 0.8)
    assert paired_power(effect, sd, need) >= 0.8 > paired_power(effect, sd, need - 1)
    with pytest.raises(ValueError, match="n >= 2"):
        paired_power(effect, sd, 1)


def test_detectable_effect_inverts_the_power():
    """The detectable effect is the effect whose power is the target, in the sd's units; it
    shrinks with more seeds, and a known value: 5 seeds, sd 1, 80% power need about 1.7 sd."""
    from alkernels.experiments.spacegroup.stats import detectable_effect, paired_power

    for n in (2, 5, 12):
        e = detectable_effect(4.5, n)
        assert paired_power(e, 4.5, n) == pytest.approx(0.8, abs=1e-4)
        assert detectable_effect(1.0, n) == pytest.approx(e / 4.5, rel=1e-4)
    assert detectable_effect(1.0, 5) > detectable_effect(1.0, 12)
    assert 1.5 < detectable_effect(1.0, 5) < 1.8
    with pytest.raises(ValueError, match="power must lie"):
        detectable_effect(1.0, 5, power=0.05)
    with pytest.raises(ValueError, match="n >= 2"):
        detectable_effect(1.0, 1)


def test_primary_endpoint_of_the_committed_grid():
    """Margin minus random on the committed CPU grid: the intervals and the power the study
    README quotes."""
    from pathlib import Path

    from alkernels.experiments.spacegroup.report import collect, read_runs

    df = collect(read_runs(Path(__file__).parents[1] / "experiments/spacegroup/results/cpu-perovskite2500"))
    primary = analysis.primary_endpoint(df)
    area = primary["area"]
    assert area["difference"]["n"] == 5
    assert (round(area["difference"]["mean"], 1), round(area["sd"], 1)) == (-1.6, 4.5)
    assert area["paper_effect"] == pytest.approx(2.64, abs=0.01)
    assert area["power"] == pytest.approx(0.17, abs=0.01) and area["seeds_for_power"] == 26


def test_transfer_comparisons_are_paired_by_subsample():
    """Fine-tuned minus scratch pairs by repeat: a constant per-repeat gain has a zero-width
    interval, even when the repeats themselves spread widely."""
    pytest.importorskip("matplotlib")
    from alkernels.experiments.transfer.report import paired_percent

    scratch = {0: 1.0, 1: 2.0, 2: 3.0}
    tuned = {r: v - 0.2 for r, v in scratch.items()}
    iv = paired_percent(tuned, scratch)
    assert (iv.n, round(iv.mean, 6), round(iv.lo, 6), round(iv.hi, 6)) == (3, -10.0, -10.0, -10.0)
    assert paired_percent({5: 1.0}, scratch) is None


def test_query_composition_counts_the_picked_classes():
    """The most-picked class's share of each recorded query, its share of the pool and the
    distinct classes picked; the standard run and rounds without a query are skipped."""
    import numpy as np

    labels = np.array([5, 5, 5, 7, 7, 9])
    runs = [
        {
            "config": {"strategy": "bald", "variant": "keep", "seed": 0},
            "records": [{"round": 0, "queried": [0, 1, 3]}, {"round": 1, "queried": []}],
        },
        {"config": {"strategy": "standard", "variant": "standard", "seed": 0}, "records": [{"round": 0}]},
    ]
    comp = analysis.query_composition(runs, labels)
    assert comp.to_dict(orient="records") == [
        {
            "variant": "keep",
            "strategy": "bald",
            "seed": 0,
            "round": 0,
            "top_share": 2 / 3,
            "top_class": 5,
            "pool_share": 0.5,
            "classes": 2,
        }
    ]
    assert "| bald | 67 / 2.0 |" in analysis.composition_table(comp, "keep")


class _FixedPasses(torch.nn.Module):
    """A stand-in classifier whose MC passes are given logits [T, n, C] (rows in pool order)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.seen = logits, 0

    def mc_logits(self, batch: torch.Tensor, passes: int) -> torch.Tensor:
        out = self.logits[:passes, self.seen : self.seen + len(batch)]
        self.seen += len(batch)
        return out


def test_mc_spread_statistics_by_hand():
    """Identical passes have no spread (BALD's MI is 0, no arg-max flips); two passes that
    disagree on one item put all the MI there, with the value the formula gives by hand."""
    from alkernels.experiments.spacegroup.mc_spread import spread
    from alkernels.strategies import Pool

    labels = np.array([0, 1, 1, 2])
    pool = Pool(list(range(4)), np.arange(4), batch_size=3, collate_fn=lambda items: torch.tensor(items))
    same = torch.randn(1, 4, 3).expand(2, 4, 3)
    stats = spread(_FixedPasses(same), pool, labels, k=2, passes=2)
    assert stats["mi_max"] == pytest.approx(0.0, abs=1e-12) and stats["flip_share"] == 0.0
    assert stats["top_class_std"] == pytest.approx(0.0, abs=1e-12)
    logits = torch.zeros(2, 4, 3)
    logits[0, 1, 0], logits[1, 1, 1] = 50.0, 50.0  # item 1: pass 0 says class 0, pass 1 class 1
    stats = spread(_FixedPasses(logits), pool, labels, k=1, passes=2)
    # item 1: mean (1/2, 1/2, 0) has entropy log 2, each pass ~0: MI = log 2; the others 0
    assert stats["mi_max"] == pytest.approx(math.log(2), abs=1e-6)
    assert stats["mi_mean"] == pytest.approx(math.log(2) / 4, abs=1e-6)
    assert stats["flip_share"] == 0.25 and stats["bald_top_class_share"] == 1.0


def test_mc_spread_round0_epochs_follow_the_grid_schedule():
    from alkernels.experiments.spacegroup.grid import PRESETS
    from alkernels.experiments.spacegroup.mc_spread import round0_epochs, schedule_preset

    cpu = PRESETS["cpu"]
    assert round0_epochs(schedule_preset(cpu, "epochs:3"), 2000) == 3
    assert round0_epochs(schedule_preset(cpu, "budget:16.5"), 2000) == 17
    for bad in ("epochs:x", "budget:", "steps:3"):
        with pytest.raises(ValueError, match="schedule must be"):
            schedule_preset(cpu, bad)
