"""``GPActiveLearner``: resumable pool-based regression AL with a GP on fixed features (protocol B).

Files in ``out_dir``, written through :class:`~alkernels.loop.rundir.RunDirectory` (one writer,
checksummed checkpoints, torn-line-safe records, a run identity that a resume must match):

- ``config.json``: the run's settings and content hashes of its data (a resume checks them).
- ``records.jsonl``: one JSON object per step (:data:`RECORD_KEYS`, plus ``fit`` on steps where
  the hyper-parameters were fitted), flushed every step and fsynced with every checkpoint. Step 0
  scores the GP fitted on the initial set, before any query; step k follows the k-th query batch,
  so ``queries`` labels in batches of ``batch`` make ``ceil(queries / batch) + 1`` records.
- ``checkpoint.pt`` (and ``checkpoint.pt.prev``): the state after a step (labelled set, NumPy
  RNG, features, the GP with its posterior), every ``checkpoint_every`` steps and at the end (the
  final one without the posterior).

A killed run resumes from its last checkpoint: later records are dropped and recomputed, and
every record then equals the uninterrupted run's except the wall times.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from alkernels._deprecation import warn_legacy_keywords
from alkernels._logging import progress_bar
from alkernels._paths import user_path
from alkernels.gp.regressor import GPConfig, GPRegressor
from alkernels.gp.strategies import GPStrategy, get_strategy
from alkernels.loop.rundir import DamagedCheckpointError, RunDirectory, fingerprint

_log = logging.getLogger(__name__)

#: The top-level keys of the GP loop's checkpoint.
CHECKPOINT_KEYS: tuple[str, ...] = ("next_step", "labelled", "numpy_rng", "features", "gp", "finished")

#: The keys of every line of ``records.jsonl``: ``mae`` and ``rmse`` are on the fixed test set;
#: ``mae_remainder`` is on the still-unlabelled pool (protocol B's shrinking test set).
RECORD_KEYS = ("step", "labelled_count", "mae", "rmse", "mae_remainder", "query_seconds", "update_seconds", "queried")
#: Record keys that are wall times.
TIMING_KEYS = ("query_seconds", "update_seconds")

#: A feature source: ``(labelled dataset indices, seed) -> float64 [N, d]``.
FeatureSource = Callable[[np.ndarray, int], np.ndarray]


def _with_legacy(config: GPLoopConfig, gp: GPConfig | None, legacy: dict) -> tuple[GPLoopConfig, GPConfig]:
    """``config`` and the GP config with the keyword arguments of alkernels 0.1 applied (warning)."""
    if isinstance(gp, dict):  # the 0.1 form of the GP settings
        legacy = {**legacy, "gp": gp}
        gp = None
    if not legacy:
        return config, gp or GPConfig()
    warn_legacy_keywords(
        "GPActiveLearner", legacy, _LOOP_FIELDS | {"gp"}, "config=GPLoopConfig(...) and gp=GPConfig(...)"
    )
    settings = legacy.pop("gp", None)
    gp = GPConfig.from_flat(dict(settings)) if settings else (gp or GPConfig())
    return replace(config, **legacy), gp


def initial_count(n_train: int, initial: int | float) -> int:
    """The initial labelled count: an int as given, a float in (0, 1] as a fraction of the pool
    (rounded half up)."""
    if isinstance(initial, float):
        if not 0.0 < initial <= 1.0:
            raise ValueError(f"initial as a fraction must be in (0, 1], got {initial}")
        return int(math.floor(n_train * initial + 0.5))
    return int(initial)


@dataclass(frozen=True)
class GPLoopConfig:
    """The settings of a GP active-learning run that decide its results (with the data and the
    GP), checked when constructed; ``config.json`` records them.

    Attributes:
        strategy: ``"gp_variance"``, ``"gp_batch_variance"`` or ``"random"`` (or a
            :class:`~alkernels.gp.strategies.GPStrategy`).
        initial: initial labelled count, or fraction of the pool.
        queries: labels to acquire after the initial set.
        batch: labels per step (the last step takes the remainder).
        refit_every: refit the hyper-parameters every this many queries (0: never).
        retrain_every: recompute the features (retrain the encoder) with the labelled set every
            this many queries, then refit (0: never; needs features given as a callable).
        seed: seeds the initial set, the random strategy, the GP fit and the features.
        checkpoint_every: steps between checkpoints (the posterior is saved: O(n^2 + n p) bytes).
    """

    strategy: str | GPStrategy = "gp_variance"
    initial: int | float = 0.1
    queries: int = 100
    batch: int = 1
    refit_every: int = 0
    retrain_every: int = 0
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if isinstance(self.strategy, str):
            get_strategy(self.strategy)  # an unknown name fails here
        if isinstance(self.initial, float) and not 0.0 < self.initial <= 1.0:
            raise ValueError(f"initial as a fraction must be in (0, 1], got {self.initial}")
        if self.queries < 0 or self.batch < 1:
            raise ValueError(f"queries must be >= 0 and batch >= 1, got {self.queries}, {self.batch}")
        if self.refit_every < 0 or self.retrain_every < 0 or self.checkpoint_every < 1:
            raise ValueError("refit_every and retrain_every must be >= 0, checkpoint_every >= 1")


_LOOP_FIELDS = {f.name for f in fields(GPLoopConfig)}


class GPActiveLearner:
    """Label ``queries`` pool structures ``batch`` at a time, choosing by ``strategy``, with a GP
    on fixed features; score every step on a fixed test set.

    The GP's hyper-parameters are fitted on the initial labelled set (and again every
    ``refit_every`` queries); in between, each new label is added by an incremental update, and
    the posterior of the pool and the test set is kept current in place.

    Args:
        features: float [N, d] features of every structure, or a callable
            ``(labelled indices, seed) -> [N, d]`` called once the initial set is drawn (e.g. an
            EGNN trained on that set, :class:`~alkernels.gp.embeddings.Embedding`).
        y: float [N] targets (finite on ``train`` and ``test``).
        train: int [n_train] indices of the pool (the initial set is drawn from it).
        test: int [n_test] indices of the fixed test set (disjoint from ``train``).
        config: the run's :class:`GPLoopConfig` (strategy, schedule, refits, seed).
        out_dir: the run's folder (``~`` expands).
        gp: the GP's :class:`~alkernels.gp.GPConfig` (its seed is the run's).
        progress: a tqdm bar over the steps, drawn where stderr is a terminal (``TQDM_DISABLE=1``
            turns it off, ``ALKERNELS_PROGRESS=1`` forces it). The ``alkernels.gp.loop`` logger
            logs the start and the end at INFO and every step at DEBUG.
        metadata: extra JSON fields for ``config.json`` (dataset, target, embedding).
        **legacy: the keyword arguments of alkernels 0.1 (``strategy=``, ``queries=``, ``gp={...}``,
            ...), mapped onto ``config`` and ``gp`` with a DeprecationWarning; removed in 0.3.
    """

    def __init__(
        self,
        features: np.ndarray | FeatureSource,
        y: np.ndarray,
        train: np.ndarray,
        test: np.ndarray,
        config: GPLoopConfig | None = None,
        *,
        out_dir: str | os.PathLike,
        gp: GPConfig | None = None,
        progress: bool = False,
        metadata: dict | None = None,
        **legacy: object,
    ) -> None:
        config, gp = _with_legacy(config or GPLoopConfig(), gp, legacy)
        strategy, initial, queries, batch = config.strategy, config.initial, config.queries, config.batch
        refit_every, retrain_every, seed = config.refit_every, config.retrain_every, config.seed
        checkpoint_every = config.checkpoint_every
        self.strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
        self.y = np.asarray(y, dtype=np.float64).reshape(-1)
        self.train = np.asarray(train, dtype=np.int64).reshape(-1)
        self.test = np.asarray(test, dtype=np.int64).reshape(-1)
        n = self.y.size
        for name, idx in (("train", self.train), ("test", self.test)):
            if idx.size == 0:
                raise ValueError(f"the {name} set is empty")
            if idx.min() < 0 or idx.max() >= n or np.unique(idx).size != idx.size:
                raise ValueError(f"{name} indices must be distinct and in 0..{n - 1}")
            bad = idx[~np.isfinite(self.y[idx])]
            if bad.size:
                raise ValueError(
                    f"{bad.size} {name} structures have NaN targets (first: {bad[:5].tolist()}); "
                    f"drop them before the run"
                )
        if np.intersect1d(self.train, self.test).size:
            raise ValueError("train and test indices overlap")
        self.features_source = features if callable(features) else None
        self.features = None if callable(features) else np.asarray(features, dtype=np.float64)
        if self.features is not None and (self.features.ndim != 2 or self.features.shape[0] != n):
            raise ValueError(f"features must be [{n}, d], got {self.features.shape}")
        if retrain_every and self.features_source is None:
            raise ValueError("retrain_every needs features given as a callable (an embedding to retrain)")
        self.n_train = self.train.size
        self.n_initial = initial_count(self.n_train, initial)
        if self.n_initial < 2:
            raise ValueError(f"the initial labelled set needs at least 2 structures, got {self.n_initial}")
        if self.n_initial + queries > self.n_train:
            raise ValueError(
                f"{queries} queries after an initial {self.n_initial} need "
                f"{self.n_initial + queries} structures; the pool has {self.n_train}"
            )
        self.queries, self.batch = int(queries), int(batch)
        steps = math.ceil(self.queries / self.batch)
        self.sizes = [min(self.batch, self.queries - s * self.batch) for s in range(steps)]
        self.loop_config, self.gp_config = config, gp
        self.refit_every, self.retrain_every = int(refit_every), int(retrain_every)
        self.seed = seed
        self.out_dir = user_path(out_dir)
        self.run_dir = RunDirectory(self.out_dir)
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.metadata = dict(metadata or {})

    # -- configuration -----------------------------------------------------------------------
    def config(self) -> dict:
        """The JSON-serialisable settings of this run (``config.json``)."""
        return {
            "task": "regression",
            "strategy": self.strategy.name,
            "seed": self.seed,
            "initial": self.n_initial,
            "queries": self.queries,
            "batch": self.batch,
            "n_train": self.n_train,
            "n_test": int(self.test.size),
            "gp": self.gp_config.overrides(),
            "refit_every": self.refit_every,
            "retrain_every": self.retrain_every,
            "data": self._data_fingerprint(),
            **self.metadata,
        }

    def _data_fingerprint(self) -> str:
        """Content hash of the targets, the split and fixed features (a resume on other data is refused)."""
        parts = [self.y.tobytes(), self.train.tobytes(), self.test.tobytes()]
        if self.features is not None and self.features_source is None:
            parts.append(np.ascontiguousarray(self.features).tobytes())
        return fingerprint(*parts)

    @property
    def records_path(self) -> Path:
        return self.run_dir.records_path

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir.checkpoint_path

    # -- the GP ----------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.n_initial + self.queries

    def _tracked(self) -> np.ndarray:
        """The GP's pool: the training pool, then the test set."""
        return self.features[np.concatenate([self.train, self.test])]

    def _new_gp(self) -> GPRegressor:
        c = self.gp_config
        return GPRegressor(c.kernel, c.fit, c.solver, seed=self.seed)

    def _fit_gp(self) -> dict:
        labelled = np.asarray(self.labelled, dtype=np.int64)
        self.gp = self._new_gp()
        self.gp.fit(self.features[labelled], self.y[labelled], pool=self._tracked(), capacity=self.capacity)
        return self.gp.describe()

    def _compute_features(self) -> None:
        feats = np.asarray(self.features_source(np.asarray(self.labelled, dtype=np.int64), self.seed), dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] != self.y.size or not np.isfinite(feats).all():
            raise ValueError(
                f"the feature source returned {feats.shape} (or non-finite values); expected finite [{self.y.size}, d]"
            )
        self.features = feats

    # -- state -----------------------------------------------------------------------------------
    def _fresh_start(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.labelled = [int(i) for i in self.rng.choice(self.train, self.n_initial, replace=False)]
        self.next_step = 0

    def _checkpoint(self, records_file, final: bool = False) -> None:
        records_file.flush()
        os.fsync(records_file.fileno())  # every record up to the checkpoint is durable before it
        self.run_dir.save_checkpoint(
            {
                "next_step": self.next_step,
                "labelled": self.labelled,
                "numpy_rng": self.rng.bit_generator.state,
                "features": torch.from_numpy(self.features) if self.features_source is not None else None,
                "gp": None if final else self.gp.state_dict(),
                "finished": final,
            }
        )

    def _restore(self, state: dict) -> None:
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["numpy_rng"]
        self.labelled = list(state["labelled"])
        self.next_step = int(state["next_step"])
        if state["features"] is not None:
            self.features = state["features"].numpy()
        if state["gp"] is not None:
            self.gp = self._new_gp()
            self.gp.load_state_dict(state["gp"], self._tracked(), capacity=self.capacity)

    def _prepare(self, resume: bool, restart_round: bool) -> list[dict]:
        config = self.config()
        self.run_dir.check_identity(config, resume=resume)
        state = self.run_dir.load_checkpoint(restart_round=restart_round, keys=CHECKPOINT_KEYS) if resume else None
        if state is not None:
            try:
                self._restore(state)
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
                raise DamagedCheckpointError(
                    self.run_dir.checkpoint_path, f"its contents do not fit this run: {type(err).__name__}: {err}"
                ) from err
        else:
            self._fresh_start()
        self.run_dir.write_config(config)
        return self.run_dir.records(upto=self.next_step, key="step")

    # -- the run ---------------------------------------------------------------------------------
    def _refit_due(self, step: int) -> tuple[bool, bool]:
        """(retrain the features, refit the GP) before evaluating ``step``."""
        if step == 0:
            return self.features_source is not None, True
        done = sum(self.sizes[:step])
        before = done - self.sizes[step - 1]
        retrain = bool(self.retrain_every) and done // self.retrain_every > before // self.retrain_every
        refit = retrain or (bool(self.refit_every) and done // self.refit_every > before // self.refit_every)
        return retrain, refit

    def run(self, resume: bool = False, restart_round: bool = False) -> list[dict]:
        """Run (or, with ``resume=True``, continue) the loop; returns every step's record.

        ``restart_round`` (with ``resume``) discards a damaged checkpoint and continues from the
        previous one. Raises :class:`~alkernels.loop.rundir.RunInUseError` when another process
        writes ``out_dir``, and ``ValueError`` for a resume with other settings or data.
        """
        with self.run_dir.lock():
            return self._run(resume, restart_round)

    def _run(self, resume: bool, restart_round: bool) -> list[dict]:
        if restart_round and not resume:
            raise ValueError("restart_round only applies with resume=True")
        records = self._prepare(resume, restart_round)
        n_steps = len(self.sizes)
        if self.next_step > n_steps:
            return records
        unlabelled = np.ones(self.y.size, dtype=bool)
        unlabelled[self.labelled] = False
        pos_of = np.full(self.y.size, -1, dtype=np.int64)
        pos_of[self.train] = np.arange(self.n_train)
        y_test = torch.as_tensor(self.y[self.test])
        y_train = torch.as_tensor(self.y[self.train])
        _log.info(
            "%s, seed %d: %s step %d of steps 0-%d (step 0: the initial set, then one per query batch), writing to %s",
            self.strategy.name,
            self.seed,
            "resuming at" if self.next_step else "starting with",
            self.next_step,
            n_steps,
            self.out_dir,
        )
        bar = progress_bar(
            total=n_steps + 1,
            initial=self.next_step,
            enabled=self.progress,
            desc=f"{self.strategy.name} seed {self.seed}, steps 0-{n_steps}",
        )
        with open(self.records_path, "a", encoding="utf-8") as out:
            for step in range(self.next_step, n_steps + 1):
                fit = None
                t0 = time.perf_counter()
                retrain, refit = self._refit_due(step)
                if retrain:
                    self._compute_features()
                if refit:
                    fit = self._fit_gp()
                fit_seconds = time.perf_counter() - t0
                mean = self.gp.pool_mean.to(y_test.dtype).cpu()
                err = mean[self.n_train :] - y_test
                rest = np.flatnonzero(unlabelled[self.train])
                mae_rest = float((mean[rest] - y_train[rest]).abs().mean()) if rest.size else None
                queried: list[int] = []
                query_seconds = update_seconds = 0.0
                if step < n_steps:
                    cand = torch.as_tensor(
                        pos_of[self.train[unlabelled[self.train]]], device=self.gp.posterior.x_pool.device
                    )
                    t0 = time.perf_counter()
                    pos = self.strategy.query(self.gp, cand, self.sizes[step], self.rng)
                    query_seconds = time.perf_counter() - t0
                    chosen = self.train[pos.cpu().numpy()]
                    t0 = time.perf_counter()
                    if self.strategy.fantasises:
                        self.gp.update_targets(self.y[chosen])
                    else:
                        self.gp.condition(self.features[chosen], self.y[chosen], pool_index=pos)
                    update_seconds = time.perf_counter() - t0
                    queried = [int(i) for i in chosen]
                    unlabelled[chosen] = False
                    self.labelled.extend(queried)
                record = {
                    "step": step,
                    "labelled_count": len(self.labelled) - len(queried),
                    "mae": float(err.abs().mean()),
                    "rmse": float(err.pow(2).mean().sqrt()),
                    "mae_remainder": mae_rest,
                    "query_seconds": query_seconds,
                    "update_seconds": update_seconds,
                    "queried": queried,
                }
                if fit is not None:
                    record["fit"] = {**fit, "seconds": fit_seconds}
                out.write(json.dumps(record) + "\n")
                out.flush()
                records.append(record)
                self.next_step = step + 1
                if step == n_steps:
                    self._checkpoint(out, final=True)
                elif self.next_step % self.checkpoint_every == 0:
                    self._checkpoint(out)
                bar.update(1)
                bar.set_postfix(mae=f"{record['mae']:.4f}", n=record["labelled_count"])
                _log.debug("step %d/%d: %d labelled, MAE %.5g", step, n_steps, record["labelled_count"], record["mae"])
        bar.close()
        _log.info(
            "%s, seed %d: step %d/%d, %d labelled, MAE %.5g",
            self.strategy.name,
            self.seed,
            n_steps,
            n_steps,
            records[-1]["labelled_count"],
            records[-1]["mae"],
        )
        return records
