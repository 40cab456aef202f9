"""Regression active learning with Gaussian-process uncertainty (protocol B), the ``gp`` extra.

Its parts::

    GPRegressor      exact (or inducing-point) GP on fixed features: hyper-parameters fitted
                     once with gpytorch, then incremental conditioning with the pool's posterior
                     kept current in place (alkernels.ops.gp)
    GPActiveLearner  the resumable regression AL loop (records.jsonl, checkpoints, fixed test set)
    GP_STRATEGIES    gp_variance, gp_batch_variance (greedy, fantasised means), random
    Embedding        feature sources: train-initial (EGNN on the initial set), checkpoint:PATH,
                     composition

Only the hyper-parameter fit imports gpytorch.
"""

from __future__ import annotations

from alkernels.gp.embeddings import EMBEDDINGS, Embedding, composition_features, load_encoder
from alkernels.gp.loop import RECORD_KEYS, TIMING_KEYS, GPActiveLearner, GPLoopConfig
from alkernels.gp.regressor import (
    DEFAULT_MEMORY_BUDGET,
    METHODS,
    FitResult,
    GPConfig,
    GPFitConfig,
    GPKernelConfig,
    GPRegressor,
    GPSolverConfig,
)
from alkernels.gp.strategies import GP_STRATEGIES, GPStrategy, get_strategy, top_k

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "EMBEDDINGS",
    "GP_STRATEGIES",
    "METHODS",
    "RECORD_KEYS",
    "TIMING_KEYS",
    "Embedding",
    "FitResult",
    "GPActiveLearner",
    "GPConfig",
    "GPFitConfig",
    "GPKernelConfig",
    "GPLoopConfig",
    "GPSolverConfig",
    "GPRegressor",
    "GPStrategy",
    "composition_features",
    "get_strategy",
    "load_encoder",
    "top_k",
]
