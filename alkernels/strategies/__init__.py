"""The 12 query strategies of the paper, behind one registry.

Every strategy has ``query(model, pool, k, *, rng) -> int64 [k]`` dataset indices (a subset of
``pool.indices``, best first). ``get(name, **kwargs)`` builds one by name; ``register`` adds your
own::

    from alkernels import strategies

    @strategies.register("smallest_index")
    class SmallestIndex(strategies.Strategy):
        def query(self, model, pool, k, *, rng):
            return pool.indices[:k]

Names: the eight uncertainty scores of ``alkernels.acquisition`` (entropy, least_confidence,
margin single-pass; predictive_entropy, expected_entropy, bald, expected_least_confidence,
expected_margin over ``passes`` MC-dropout passes, default 10), ``learning_loss``, ``random``,
``center_of_mass`` and ``umap``.
"""

from __future__ import annotations

import os
from functools import partial

from alkernels.strategies.base import Pool, Strategy, available, get, register, unregister
from alkernels.strategies.learning_loss import LearningLossStrategy, LossPredictionModule, ranking_loss
from alkernels.strategies.subset import CenterOfMassStrategy, OrderStrategy, RandomStrategy, UmapStrategy
from alkernels.strategies.uncertainty import MC_PASS, SINGLE_PASS, UncertaintyStrategy

#: The paper's 12 strategies in the order of its Table 1.
PAPER_STRATEGIES = (
    "entropy",
    "least_confidence",
    "margin",
    "expected_entropy",
    "predictive_entropy",
    "expected_least_confidence",
    "expected_margin",
    "bald",
    "learning_loss",
    "random",
    "center_of_mass",
    "umap",
)

for _name in SINGLE_PASS + MC_PASS:
    register(_name, partial(UncertaintyStrategy, _name))
register("learning_loss", LearningLossStrategy)
register("random", RandomStrategy)
register("center_of_mass", CenterOfMassStrategy)
register("umap", UmapStrategy)


def make(
    name: str, *, passes: int = 10, cache_dir: str | os.PathLike | None = None, nonfinite: str = "raise"
) -> Strategy:
    """The registered strategy ``name`` with the options that apply to it: ``passes`` (T) for the
    MC strategies, ``nonfinite`` for the eight uncertainty strategies, ``cache_dir`` (the order
    cache) for center_of_mass and umap."""
    if name in MC_PASS:
        return get(name, passes=passes, nonfinite=nonfinite)
    if name in SINGLE_PASS:
        return get(name, nonfinite=nonfinite)
    if name in ("center_of_mass", "umap"):
        return get(name, cache_dir=cache_dir)
    return get(name)


__all__ = [
    "PAPER_STRATEGIES",
    "Pool",
    "Strategy",
    "available",
    "get",
    "make",
    "register",
    "unregister",
    "UncertaintyStrategy",
    "LearningLossStrategy",
    "LossPredictionModule",
    "ranking_loss",
    "RandomStrategy",
    "OrderStrategy",
    "CenterOfMassStrategy",
    "UmapStrategy",
]
