"""The work a grid of the space-group study does, counted before it runs.

Training dominates: an AL run trains ``sum over rounds of labelled x epochs`` sample-epochs in
``sum over rounds of ceil(labelled / batch) x epochs`` optimiser steps; each round also evaluates
the test split and, except the last, scores the unlabelled pool (one encoder pass per structure;
the MC strategies repeat only the small head). Multiplying by a measured rate (structures per
second, or seconds per step when a small batch makes a step latency-bound) gives the time of a
run or a grid; the README of the study derives its GPU estimate for ``--preset paper`` this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from alkernels.loop.epochs import epoch_schedule, sample_epochs
from alkernels.loop.loop import labelled_schedule


@dataclass(frozen=True)
class Work:
    """Counts of one run (or, summed, of a grid).

    Attributes:
        sample_epochs: structures seen in training (one structure once = 1).
        steps: optimiser steps.
        evaluated: test-set forward passes (structures).
        scored: pool forward passes for queries (structures).
    """

    sample_epochs: int
    steps: int
    evaluated: int
    scored: int

    def __add__(self, other: "Work") -> "Work":
        return Work(
            self.sample_epochs + other.sample_epochs,
            self.steps + other.steps,
            self.evaluated + other.evaluated,
            self.scored + other.scored,
        )

    def __mul__(self, k: int) -> "Work":
        return Work(self.sample_epochs * k, self.steps * k, self.evaluated * k, self.scored * k)


def run_work(
    n_train: int,
    n_test: int,
    *,
    rounds: int = 10,
    initial: int | float = 0.1,
    query_size: int | float = 0.1,
    epochs: int | None = 25,
    epoch_budget: float | None = None,
    batch_size: int = 24,
    queries: bool = True,
) -> Work:
    """The work of one AL run (``epochs`` is ignored when ``epoch_budget`` is given), or with
    ``rounds=1, initial=n_train`` of a standard run. ``queries=False`` leaves out pool scoring
    (random, centre of mass and UMAP do not run the model on the pool)."""
    counts = labelled_schedule(n_train, initial, query_size, rounds)
    per_round = epoch_schedule(
        counts, n_train, epoch_budget=epoch_budget, epochs=epochs if epoch_budget is None else None
    )
    steps = sum(math.ceil(c / batch_size) * e for c, e in zip(counts, per_round))
    scored = sum(n_train - c for c in counts[:-1]) if queries else 0
    return Work(sample_epochs(counts, per_round), steps, rounds * n_test, scored)


def grid_work(
    n_train: int,
    n_test: int,
    *,
    strategies: Sequence[str],
    seeds: int,
    variants: Sequence[str],
    rounds: int = 10,
    initial: float = 0.1,
    query_size: float = 0.1,
    epochs: int | None = 25,
    epoch_budget: float | None = None,
    batch_size: int = 24,
) -> dict[str, Work]:
    """The work of a whole grid: ``{"al": ..., "standard": ..., "total": ...}``."""
    model_free = {"random", "center_of_mass", "umap"}
    kw = dict(
        rounds=rounds,
        initial=initial,
        query_size=query_size,
        epochs=epochs,
        epoch_budget=epoch_budget,
        batch_size=batch_size,
    )
    al = Work(0, 0, 0, 0)
    for name in strategies:
        al = al + run_work(n_train, n_test, queries=name not in model_free, **kw) * (seeds * len(variants))
    standard = (
        run_work(
            n_train,
            n_test,
            rounds=1,
            initial=n_train,
            query_size=n_train,
            epochs=epochs,
            epoch_budget=epoch_budget,
            batch_size=batch_size,
            queries=False,
        )
        * seeds
    )
    return {"al": al, "standard": standard, "total": al + standard}
