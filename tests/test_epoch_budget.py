"""The compute-matched schedule (``epoch_budget``): the split, the loop's steps, config and resume,
and the CLI flag; and the oversubscription warning."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from alkernels import _threads
from alkernels.loop.epochs import epoch_schedule, sample_epochs
from alkernels.strategies import RandomStrategy
from helpers import make_loop

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(60)]


def test_fixed_epochs_schedule():
    assert epoch_schedule([4, 8, 12], 40, epochs=3) == [3, 3, 3]
    assert sample_epochs([4, 8, 12], [3, 3, 3]) == 72


def test_budget_split_by_hand():
    counts = [100 * r for r in range(1, 11)]  # 10% .. 100% of 1,000
    # each round's share is 1,000 sample-epochs; the running total follows 1,000 x (r + 1):
    # 1000/100 = 10; 1000/200 = 5; 1000/300 -> 3 (spent 2,900); 1100/400 -> 3 (4,100);
    # 900/500 -> 2 (5,100); 900/600 -> 2 (6,300); 700/700 = 1; 1000/800 -> 1; 1200/900 -> 1; 1300/1000 -> 1
    epochs = epoch_schedule(counts, 1000, epoch_budget=10)
    assert epochs == [10, 5, 3, 3, 2, 2, 1, 1, 1, 1]
    assert sample_epochs(counts, epochs) == 9700
    # a standard run (one round on everything) gets the budget itself
    assert epoch_schedule([1000], 1000, epoch_budget=10) == [10]
    # the 1-epoch floor: late rounds whose share is under one epoch still train one, so a small
    # budget is overspent (5.5 is the least accepted here: one epoch per round costs 5,500)
    tight = epoch_schedule(counts, 1000, epoch_budget=5.5)
    assert tight == [6, 3, 2, 1, 1, 1, 1, 1, 1, 1] and sample_epochs(counts, tight) == 6700


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of"),
        ({"epochs": 2, "epoch_budget": 3.0}, "exactly one of"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epoch_budget": 5.0}, "below 5.5"),
        ({"epoch_budget": float("nan")}, "below 5.5"),
    ],
)
def test_bad_schedules_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        epoch_schedule([100 * r for r in range(1, 11)], 1000, **kwargs)


class CountingRandom(RandomStrategy):
    """Random queries that count training batches per (round, epochs) call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def training_loss(self, model, batch, *, epoch, epochs):
        self.calls.append((epoch, epochs))
        return super().training_loss(model, batch, epoch=epoch, epochs=epochs)


def test_loop_trains_the_budgeted_epochs_and_records_them(tmp_path):
    strat = CountingRandom()
    loop = make_loop(tmp_path, strat, epoch_budget=3.0, batch_size=4)
    # 40 structures, 4 rounds of 4, 8, 12, 16, shares of 30 sample-epochs: 30/4 -> 8 (spent 32);
    # 28/8 -> 4 (64); 26/12 -> 2 (88); 32/16 = 2
    assert loop.epochs_per_round == [8, 4, 2, 2]
    loop.run()
    batches = [1, 2, 3, 4]  # ceil(count / batch_size)
    assert len(strat.calls) == sum(b * e for b, e in zip(batches, loop.epochs_per_round))
    assert [e for _, e in strat.calls] == [8] * 8 + [4] * 8 + [2] * 6 + [2] * 8
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["epoch_budget"] == 3.0 and config["epochs_per_round"] == [8, 4, 2, 2]
    assert config["epochs"] is None
    # resuming under another budget is refused
    with pytest.raises(ValueError, match=r"settings differ \(epoch_budget: 3.0 -> 4.0; epochs_per_round: "):
        make_loop(tmp_path, CountingRandom(), epoch_budget=4.0, batch_size=4).run(resume=True)


def test_fixed_schedule_config_is_unchanged(tmp_path):
    loop = make_loop(tmp_path, "random", rounds=2, epochs=3)
    assert "epoch_budget" not in loop.config() and loop.config()["epochs"] == 3
    assert loop.epochs_per_round == [3, 3]


def test_run_cli_epoch_budget(tmp_path):
    import ase.io
    from ase.build import bulk

    from alkernels.cli import main
    from helpers import CRYSTALS

    folder = tmp_path / "cifs"
    folder.mkdir()
    for k, (formula, kind, a) in enumerate(CRYSTALS * 2):
        ase.io.write(folder / f"{k:02d}.cif", bulk(formula, kind, a=a * (1 + 0.02 * (k // len(CRYSTALS)))))
    args = [
        "run",
        "--strategy",
        "random",
        "--dataset",
        folder,
        "--label",
        "spacegroup",
        "--out",
        tmp_path / "r",
        "--rounds",
        3,
        "--epoch-budget",
        2,
        "--initial",
        4,
        "--query-size",
        4,
        "--backend",
        "torch",
        "--cache-dir",
        tmp_path / "cache",
        "--workers",
        1,
        "--test-fraction",
        0.25,
    ]
    assert main([str(a) for a in args]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    n = config["n_train"]
    assert config["epoch_budget"] == 2.0
    assert config["epochs_per_round"] == epoch_schedule([4, 8, 12], n, epoch_budget=2.0)


def test_threads_per_worker_and_the_warning(monkeypatch, capsys):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 4)
    assert _threads.threads_per_worker(2) == 2
    assert _threads.threads_per_worker(3) == 1
    assert _threads.threads_per_worker(8) == 1
    assert _threads.threads_per_worker(2, threads=3) == 3
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _threads.threads_per_worker(1) == 1  # one process: the caller's setting, not the cores
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        _threads.threads_per_worker(0)
    assert _threads.oversubscription_warning(2, 2) is None
    text = _threads.oversubscription_warning(2, 3)
    assert "2 process(es) x 3 thread(s) = 6 threads on 4 usable core(s)" in text and "--threads 2" in text
    assert _threads.oversubscription_warning(1, 2, cores=1) is not None

    from alkernels.cli._common import apply_threads

    before = torch.get_num_threads()
    try:
        assert apply_threads(argparse.Namespace(threads=3), processes=2) == 3
        assert "warning: 2 process(es) x 3 thread(s)" in capsys.readouterr().err
        assert apply_threads(argparse.Namespace(threads=None), processes=4) == 1
        assert capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)


def test_usable_cores_follows_the_affinity_mask():
    import os

    if hasattr(os, "sched_getaffinity"):
        assert _threads.usable_cores() == len(os.sched_getaffinity(0))
    assert _threads.usable_cores() >= 1
