"""The resumable pool-based active-learning loop (protocol A of the paper).

Files in ``out_dir`` (written through :class:`~alkernels.loop.rundir.RunDirectory`, which holds
an exclusive lock on the folder while the run works):

- ``config.json``: the run's identity: every setting that changes its results, the model's and
  strategy's settings, and content hashes of the training and test data. A resume with any
  difference is refused, naming each one.
- ``records.jsonl``: one JSON object per finished round, appended, flushed and fsynced; its
  ``round`` counts from 0, as the progress bar, the log and ``alkernels run``'s table do.
- ``initial.pt``: the model's (and the strategy module's) ORIGINAL initial weights.
- ``checkpoint.pt``: the state after the last finished round (model, optimiser, strategy module,
  labelled set, the torch / numpy / Python RNG states), checksummed and replaced atomically;
  ``checkpoint.pt.prev`` holds the round before.

A killed run loses at most the round in progress: ``run(resume=True)`` reloads the checkpoint,
drops records newer than it and continues; every record then equals the uninterrupted run's,
except the two wall-time fields. A damaged checkpoint is refused by name;
``run(resume=True, restart_round=True)`` discards it and redoes the last round from the previous
one.

With ``distributed=True`` the loop runs on every rank of a torchrun job (see
:mod:`alkernels.distributed`): training is data-parallel (``DistributedDataParallel``, each global
batch of the single-process run split over the ranks), evaluation is summed over test-set shards,
uncertainty queries score pool shards and merge an exact top-k, other strategies run on rank 0.
Rank 0 alone reads and writes ``out_dir`` and broadcasts what the others need (the resume state,
the labelled set, each record), so only rank 0's node needs the folder.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from alkernels import distributed as dist_mod
from alkernels import strategies as strategies_mod
from alkernels._deprecation import warn_legacy_keywords
from alkernels._logging import progress_bar
from alkernels._paths import user_path
from alkernels.data.dataset import collate
from alkernels.loop.epochs import epoch_schedule
from alkernels.loop.rundir import DamagedCheckpointError, RunDirectory, fingerprint
from alkernels.loop.rundir import read_records as _read_records
from alkernels.loop.trainer import Trainer
from alkernels.strategies import Pool, Strategy

_log = logging.getLogger(__name__)

#: The top-level keys of the loop's checkpoint (``rank_rngs`` too in a distributed run).
CHECKPOINT_KEYS: tuple[str, ...] = (
    "next_round",
    "labelled",
    "weights",
    "optimizer",
    "torch_rng",
    "cuda_rng",
    "loader_rng",
    "numpy_rng",
    "python_rng",
)

#: The keys of every line of ``records.jsonl``.
RECORD_KEYS = (
    "round",
    "labelled_fraction",
    "labelled_count",
    "accuracy",
    "loss",
    "train_seconds",
    "query_seconds",
    "queried",
)
#: Record keys that are wall times and so differ between otherwise identical runs.
TIMING_KEYS = ("train_seconds", "query_seconds")


def labelled_schedule(n: int, initial: int | float, query_size: int | float, rounds: int) -> list[int]:
    """The number of labelled structures in each round.

    Integers are counts; floats in (0, 1] are fractions of ``n`` (rounded half up, the last
    round may label the remainder). Raises ValueError when the schedule does not fit ``n``.

    Returns:
        ``rounds`` strictly increasing counts, the first being the initial set size.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if n < 1:
        raise ValueError("the training set is empty")
    fractional = isinstance(initial, float) or isinstance(query_size, float)
    for name, value in (("initial", initial), ("query_size", query_size)):
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(f"{name} as a fraction must be in (0, 1], got {value}")
        if not isinstance(value, float) and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if fractional:
        f0 = initial / n if not isinstance(initial, float) else initial
        fq = query_size / n if not isinstance(query_size, float) else query_size
        last = f0 + (rounds - 1) * fq
        if last > 1.0 + 1e-9:
            raise ValueError(
                f"query size {fq:.3g} x {rounds - 1} queries after an initial {f0:.3g} "
                f"needs {last:.3g} of the training set, more than the pool holds"
            )
        counts = [min(n, int(np.floor(n * (f0 + r * fq) + 0.5))) for r in range(rounds)]
    else:
        counts = [initial + r * query_size for r in range(rounds)]
        if counts[-1] > n:
            raise ValueError(
                f"query size {query_size} x {rounds - 1} queries after an initial "
                f"{initial} needs {counts[-1]} structures; the training set has {n}"
            )
    if counts[0] < 1:
        raise ValueError(f"the initial labelled set is empty ({initial} of {n})")
    if any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"query size {query_size} rounds to zero structures on {n}")
    return counts


def _with_legacy(config: LoopConfig, runtime: LoopRuntime, legacy: dict[str, Any]) -> tuple[LoopConfig, LoopRuntime]:
    """``config`` and ``runtime`` with the keyword arguments of alkernels 0.1 applied (warning)."""
    if not legacy:
        return config, runtime
    warn_legacy_keywords(
        "ActiveLearningLoop",
        legacy,
        _CONFIG_FIELDS | _RUNTIME_FIELDS,
        "config=LoopConfig(...) and runtime=LoopRuntime(...)",
    )
    config = replace(config, **{k: v for k, v in legacy.items() if k in _CONFIG_FIELDS})
    runtime = replace(runtime, **{k: v for k, v in legacy.items() if k in _RUNTIME_FIELDS})
    return config, runtime


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of ``rank`` > 0 in a distributed run (rank 0 keeps ``seed``'s stream), so
    the ranks draw independent dropout masks."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


def read_records(path: str | os.PathLike) -> list[dict]:
    """The complete records of a ``records.jsonl`` (a torn last line from a kill is skipped;
    a damaged line elsewhere raises ValueError naming the file and line)."""
    return _read_records(path)


def data_fingerprint(dataset: Dataset) -> str:
    """A content hash of a dataset for the run identity: ``dataset.fingerprint()`` when it has
    one (``GraphDataset``: graphs, selected items and targets), else its type and length only."""
    method = getattr(dataset, "fingerprint", None)
    if callable(method):
        return str(method())
    return f"{type(dataset).__name__} of {len(dataset)} (no fingerprint())"


def _flat(prefix: str, settings: dict) -> dict:
    """``{"a": 1}`` -> ``{"<prefix>.a": 1}`` (nested dicts flattened), for readable differences."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


@dataclass(frozen=True)
class LoopConfig:
    """The settings of an active-learning run that decide its results (with the model, the
    strategy and the data), checked when constructed: the CLI and the grids validate a
    configuration by building it, before any data is read. ``config.json`` records them.

    Attributes:
        initial: initial labelled set, a count (int) or a fraction (float in (0, 1]) of the
            training set; drawn at random.
        query_size: structures per query, a count or a fraction.
        rounds: model updates (rounds); the paper's protocol is 10 with 10% chunks.
        epochs: epochs per round (the paper's fixed schedule); may be None with ``epoch_budget``.
        epoch_budget: instead of ``epochs``, a compute-matched schedule: ``epoch_budget x
            len(train)`` sample-epochs in total, the same share for every round (see
            :mod:`alkernels.loop.epochs`); ``config.json`` then records ``epochs_per_round``.
        reset_weights: reload the ORIGINAL initial weights at the start of every round.
        reset_optimizer: re-create the optimiser at the start of every round; None follows
            ``reset_weights`` (the paper's framework kept the optimiser on reset).
        seed: seeds the model init, the initial set, batch order, dropout and random queries.
        batch_size: training batch size (24, the paper's).
        lr, weight_decay: AdamW settings (1e-4 and 0, the paper's).
    """

    initial: int | float = 0.1
    query_size: int | float = 0.1
    rounds: int = 10
    epochs: int | None = 25
    epoch_budget: float | None = None
    reset_weights: bool = False
    reset_optimizer: bool | None = None
    seed: int = 0
    batch_size: int = 24
    lr: float = 1e-4
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("initial", "query_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a count or a fraction, got {value!r}")
            if isinstance(value, float) and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} as a fraction must be in (0, 1], got {value}")
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("rounds", "epochs", "batch_size"):
            value = getattr(self, name)
            if name == "epochs" and value is None and self.epoch_budget is not None:
                continue  # the budget decides the epochs
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.epoch_budget is not None and not self.epoch_budget > 0:
            raise ValueError(f"epoch_budget must be > 0, got {self.epoch_budget}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def resets_optimizer(self) -> bool:
        """Whether the optimiser is re-created every round (``reset_optimizer``, else
        ``reset_weights``)."""
        return self.reset_weights if self.reset_optimizer is None else self.reset_optimizer


@dataclass(frozen=True)
class LoopRuntime:
    """Where and how a run executes; none of it changes the results (not in ``config.json``).

    Attributes:
        device: torch device for the model.
        eval_batch_size: batch size for evaluation and pool scoring.
        progress: a tqdm bar per round, drawn where stderr is a terminal (``TQDM_DISABLE=1``
            turns it off, ``ALKERNELS_PROGRESS=1`` forces it). Whatever this says, each round
            is logged at INFO by the ``alkernels.loop`` logger.
        distributed: run on every rank of a torchrun job (see :class:`ActiveLearningLoop`).
    """

    device: str | torch.device = "cpu"
    eval_batch_size: int = 256
    progress: bool = False
    distributed: bool = False

    def __post_init__(self) -> None:
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")


_CONFIG_FIELDS = {f.name for f in fields(LoopConfig)}
_RUNTIME_FIELDS = {f.name for f in fields(LoopRuntime)}


class ActiveLearningLoop:
    """Train, evaluate, query; repeat until the schedule is done.

    Each round trains on every labelled structure for ``epochs`` epochs (AdamW, shuffled
    batches), evaluates accuracy and mean cross-entropy on ``test`` in eval mode (dropout off),
    then, except after the last round, asks the strategy for the next ``query_size`` structures.

    Args:
        model_factory: builds a fresh classifier; called once, under ``torch.manual_seed(seed)``.
            The model maps a collated batch to logits float32 [B, C] and, for MC strategies,
            has ``mc_logits(batch, T) -> [T, B, C]``.
        strategy: a :class:`~alkernels.strategies.Strategy` or a registered name.
        train: the training split (the pool); items collate to batches with labels ``y``
            (int64 [B], class indices).
        test: the test split.
        config: the run's :class:`LoopConfig` (schedule, optimiser, reset policy, seed).
        out_dir: where records and checkpoints go (``~`` expands).
        runtime: :class:`LoopRuntime` (device, evaluation batch size, progress bar, distributed).
            Distributed: the loop runs on every rank of a torchrun job (joining it if needed;
            ``device="cuda"`` means each rank's ``cuda:LOCAL_RANK``). The schedule, batch size
            and learning rate keep their single-process meaning (``batch_size`` is the global
            batch); the world size is part of ``config.json``, so a resume needs the same number
            of ranks. With one rank the records equal the single-process run's; with more,
            deterministic strategies (single-pass uncertainty without training dropout, random,
            the model-free orders) label the same structures up to floating-point summation
            order, and MC-dropout strategies draw different masks per rank.
        collate_fn: list of items -> batch (``alkernels.data.collate`` by default).
        metadata: extra JSON-serialisable fields stored in ``config.json`` and checked on resume
            (dataset spec, graph settings, preset).
        **legacy: the keyword arguments of alkernels 0.1 (``rounds=``, ``epochs=``, ``device=``,
            ...), mapped onto ``config`` and ``runtime`` with a DeprecationWarning; removed in
            0.3.
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        strategy: Strategy | str,
        train: Dataset,
        test: Dataset,
        config: LoopConfig | None = None,
        *,
        out_dir: str | os.PathLike,
        runtime: LoopRuntime | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        metadata: dict | None = None,
        **legacy: Any,
    ) -> None:
        config, runtime = _with_legacy(config or LoopConfig(), runtime or LoopRuntime(), legacy)
        self.loop_config, self.runtime = config, runtime
        self.strategy = strategies_mod.get(strategy) if isinstance(strategy, str) else strategy
        self.model_factory = model_factory
        self.train_set, self.test_set = train, test
        self.n_train = len(train)
        if len(test) < 1:
            raise ValueError("the test set is empty")
        self.schedule = labelled_schedule(self.n_train, config.initial, config.query_size, config.rounds)
        self.epoch_budget = None if config.epoch_budget is None else float(config.epoch_budget)
        self.epochs_per_round = epoch_schedule(
            self.schedule,
            self.n_train,
            epoch_budget=self.epoch_budget,
            epochs=config.epochs if config.epoch_budget is None else None,
        )
        self.rounds, self.seed = config.rounds, config.seed
        self.epochs = None if config.epoch_budget is not None else config.epochs
        self.reset_weights = config.reset_weights
        self.reset_optimizer = config.resets_optimizer
        self.out_dir = user_path(out_dir)
        self.run_dir = RunDirectory(self.out_dir)
        self.batch_size, self.eval_batch_size = config.batch_size, runtime.eval_batch_size
        self.lr, self.weight_decay = config.lr, config.weight_decay
        self.distributed = runtime.distributed
        if self.distributed:
            self.device = dist_mod.init_process_group(device=runtime.device)
            self.rank, self.world_size = dist_mod.rank(), dist_mod.world_size()
        else:
            self.device = torch.device(runtime.device)
            self.rank, self.world_size = 0, 1
        self.collate_fn = collate_fn or collate
        self.progress = runtime.progress
        self.metadata = dict(metadata or {})
        for name, ds in (("training", train), ("test", test)):
            if self.collate_fn([ds[0]]).y is None:
                raise ValueError(f"the {name} set has no labels; give a label source (for example label='spacegroup')")

    # -- configuration -----------------------------------------------------------------------
    def config(self) -> dict:
        """The run's identity (``config.json``): every setting that changes its results, the
        model's and strategy's settings (``model.*``, ``strategy.*``) and content hashes of the
        training and test data. The device and the evaluation batch size are not part of it."""
        if not hasattr(self, "model"):
            self._build_model()
        method = getattr(self.model, "settings", None)
        model_settings = method() if callable(method) else {"repr": fingerprint(repr(self.model))}
        return {
            "strategy": self.strategy.name,
            "seed": self.seed,
            "rounds": self.rounds,
            "epochs": self.epochs,
            "schedule": self.schedule,
            "n_train": self.n_train,
            **(
                {"epoch_budget": self.epoch_budget, "epochs_per_round": self.epochs_per_round}
                if self.epoch_budget is not None
                else {}
            ),
            "n_test": len(self.test_set),
            "reset_weights": self.reset_weights,
            "reset_optimizer": self.reset_optimizer,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "train_data": data_fingerprint(self.train_set),
            "test_data": data_fingerprint(self.test_set),
            **_flat("model", model_settings),
            **_flat("strategy", self.strategy.settings()),
            **({"world_size": self.world_size} if self.distributed else {}),
            **self.metadata,
        }

    @property
    def records_path(self) -> Path:
        return self.out_dir / "records.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def writes_files(self) -> bool:
        """True on the process that writes ``out_dir`` (rank 0, or the only process)."""
        return self.rank == 0

    def _phase(self, name: str) -> AbstractContextManager:
        """Names a stretch of a distributed run in its failure messages (no-op otherwise)."""
        if not self.distributed:
            return nullcontext()
        return dist_mod.phase(
            name,
            hint=f"Every finished round is checkpointed in {self.out_dir}: "
            "run the same command again with --resume to continue.",
        )

    # -- state ---------------------------------------------------------------------------------
    def _make_trainer(self) -> Trainer:
        """AdamW over the model's (and the strategy module's) parameters."""
        params = list(self.model.parameters())
        if self.aux is not None:
            params += list(self.aux.parameters())
        return Trainer.adamw(params, lr=self.lr, weight_decay=self.weight_decay)

    def _weights(self) -> dict:
        return {"model": self.model.state_dict(), "aux": self.aux.state_dict() if self.aux is not None else None}

    def _load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights["model"])
        if self.aux is not None:
            self.aux.load_state_dict(weights["aux"])

    def _build_model(self) -> None:
        """The model (and the strategy's module) with the run's initial weights: seeded by ``seed``."""
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        self.model = self.model_factory().to(self.device)
        self.aux = self.strategy.setup(self.model)

    def _fresh_start(self) -> None:
        self.initial_weights = {
            k: {n: t.detach().clone() for n, t in v.items()} if v is not None else None
            for k, v in self._weights().items()
        }
        if self.writes_files:
            self.run_dir.save_state("initial.pt", self.initial_weights)
        self.trainer = self._make_trainer()
        self.rng = np.random.default_rng(self.seed)
        self.loader_gen = torch.Generator().manual_seed(self.seed)
        self.labelled = [int(i) for i in self.rng.choice(self.n_train, self.schedule[0], replace=False)]
        self.next_round = 0
        if self.rank > 0:
            torch.manual_seed(rank_seed(self.seed, self.rank))

    def _rng_states(self) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        return torch.get_rng_state(), torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None

    def _checkpoint(self) -> None:
        torch_rng, cuda_rng = self._rng_states()
        state = {
            "next_round": self.next_round,
            "labelled": self.labelled,
            "weights": self._weights(),
            "optimizer": self.trainer.optimizer.state_dict(),
            "torch_rng": torch_rng,
            "cuda_rng": cuda_rng,
            "loader_rng": self.loader_gen.get_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "python_rng": random.getstate(),
        }
        if self.distributed:  # every rank's own torch (and CUDA) generator, in rank order
            state["rank_rngs"] = dist_mod.gather_objects((torch_rng, cuda_rng))
        if self.writes_files:
            self.run_dir.save_checkpoint(state)

    def _restore(self, state: dict, initial_weights: dict) -> None:
        self.initial_weights = initial_weights
        self._load_weights(state["weights"])
        self.trainer = self._make_trainer()
        self.trainer.optimizer.load_state_dict(state["optimizer"])
        torch_rng, cuda_rng = (
            state["rank_rngs"][self.rank] if self.distributed else (state["torch_rng"], state["cuda_rng"])
        )
        torch.set_rng_state(torch_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        self.loader_gen = torch.Generator()
        self.loader_gen.set_state(state["loader_rng"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["numpy_rng"]
        random.setstate(state["python_rng"])
        self.labelled = list(state["labelled"])
        self.next_round = int(state["next_round"])

    def _read_run(self, resume: bool, restart_round: bool) -> tuple[dict | None, dict | None, list[dict]]:
        """Check ``out_dir`` against this run's identity and load what a resume needs (the
        writing process only): (checkpoint state or None, initial weights or None, the records
        of the finished rounds); writes ``config.json`` and drops records newer than the state."""
        config = self.config()
        self.run_dir.check_identity(config, resume=resume)
        state = initial = None
        if resume:
            # Distributed: CPU tensors, pickled to the other ranks, which load them onto their device.
            where = "cpu" if self.distributed else self.device
            state = self.run_dir.load_checkpoint(restart_round=restart_round, map_location=where, keys=CHECKPOINT_KEYS)
            if state is not None:
                initial = self.run_dir.load_state("initial.pt", map_location=where, keys=("model", "aux"))
        self.run_dir.write_config(config)
        done = int(state["next_round"]) if state is not None else 0
        return state, initial, self.run_dir.records(upto=done)

    def _prepare(self, resume: bool, restart_round: bool) -> list[dict]:
        self._build_model()
        if not self.distributed:
            state, initial, records = self._read_run(resume, restart_round)
        else:
            with self._phase("setup"):
                state, initial, records = dist_mod.on_rank_zero(
                    self._read_run, resume, restart_round, what=f"reading {self.out_dir}"
                )
        if state is not None:
            try:
                self._restore(state, initial)
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
                raise DamagedCheckpointError(
                    self.run_dir.checkpoint_path, f"its contents do not fit this run: {type(err).__name__}: {err}"
                ) from err
        else:
            self._fresh_start()
        if self.distributed:
            self._ddp = dist_mod.wrap_ddp(
                dist_mod.DDPLoss(self.model, self.aux, self.strategy.training_loss), self.device
            )
        return records

    # -- one round -----------------------------------------------------------------------------
    def _train(self, round_: int) -> None:
        """The round's epochs on the labelled set: one process, or each global batch split over
        the ranks (the feed is chosen by ``distributed``); the steps are the trainer's."""
        epochs = self.epochs_per_round[round_]
        feed = _ShardedFeed(self) if self.distributed else _LocalFeed(self)
        ranks = f", {self.world_size} ranks" if self.distributed else ""
        bar = progress_bar(
            total=epochs * feed.steps,
            enabled=self.progress and self.rank == 0,
            leave=False,
            desc=f"round {round_}/{self.rounds - 1} ({len(self.labelled)} labelled{ranks})",
        )
        feed.train_mode()
        for epoch in range(epochs):

            def shown(loss: torch.Tensor, epoch: int = epoch) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{feed.shown(loss):.3f}", epoch=epoch + 1)

            self.trainer.epoch(feed.batches(), lambda item, e=epoch: feed.loss(item, e, epochs), on_step=shown)
        bar.close()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) of the current model on the test set, dropout off.

        Distributed: each rank evaluates its shard of the test set and the sums are all-reduced
        (a collective: every rank must call it)."""
        self.model.eval()
        data = self.test_set
        if self.distributed:
            lo, hi = dist_mod.shard_range(len(data), self.rank, self.world_size)
            data = Subset(data, range(lo, hi))
        loader = DataLoader(data, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.collate_fn)
        correct, total_loss, n = 0, 0.0, 0
        for batch in loader:
            batch = batch.to(self.device)
            logits = self.model(batch).float()
            total_loss += nn.functional.cross_entropy(logits, batch.y, reduction="sum").item()
            correct += int((logits.argmax(1) == batch.y).sum())
            n += int(batch.y.numel())
        if self.distributed:  # sums over the test-set shards (float64; counts stay exact)
            correct, total_loss, n = dist_mod.all_reduce_sum([correct, total_loss, n])
        return correct / n, total_loss / n

    def _query(self, k: int) -> list[int]:
        taken = np.zeros(self.n_train, dtype=bool)
        taken[self.labelled] = True
        pool = Pool(self.train_set, np.flatnonzero(~taken), self.eval_batch_size, self.collate_fn)
        if self.distributed:
            chosen = self.strategy.query_distributed(self.model, pool, k, rng=self.rng)
        else:
            chosen = self.strategy.query(self.model, pool, k, rng=self.rng)
        chosen = np.asarray(chosen, dtype=np.int64)
        if (
            chosen.shape != (k,)
            or np.unique(chosen).size != k
            or taken[chosen].any()
            or (chosen < 0).any()
            or (chosen >= self.n_train).any()
        ):
            raise ValueError(
                f"strategy {self.strategy.name!r} must return {k} distinct unlabelled "
                f"indices, got {chosen.tolist()[:10]}..."
            )
        return [int(i) for i in chosen]

    # -- the run -------------------------------------------------------------------------------
    def run(self, resume: bool = False, restart_round: bool = False) -> list[dict]:
        """Run (or, with ``resume=True``, continue) the loop; returns every round's record.

        Args:
            resume: continue the run stored in ``out_dir`` (its identity must match).
            restart_round: with ``resume``, discard a damaged checkpoint and redo the last round
                from the previous one.

        Raises:
            RunInUseError: another process is writing ``out_dir``.
            RunExistsError, SettingsChangedError, DamagedCheckpointError, DamagedRunError: see
                :mod:`alkernels.loop.rundir`.
        """
        guard = self.run_dir.lock() if self.writes_files else nullcontext()
        with guard:
            return self._run(resume, restart_round)

    def _run(self, resume: bool, restart_round: bool) -> list[dict]:
        records = self._prepare(resume, restart_round)
        if self.rank == 0 and self.next_round < self.rounds:
            _log.info(
                "%s, seed %d: %s round %d of rounds 0-%d (%d labelled), writing to %s",
                self.strategy.name,
                self.seed,
                "resuming at" if self.next_round else "starting with",
                self.next_round,
                self.rounds - 1,
                len(self.labelled),
                self.out_dir,
            )
        for r in range(self.next_round, self.rounds):
            if r > 0 and self.reset_weights:
                self._load_weights(self.initial_weights)
            if r > 0 and self.reset_optimizer:
                self.trainer = self._make_trainer()
            t0 = time.perf_counter()
            with self._phase(f"training, round {r}"):
                self._train(r)
            train_seconds = time.perf_counter() - t0
            with self._phase(f"evaluation, round {r}"):
                accuracy, loss = self.evaluate()
            queried: list[int] = []
            t0 = time.perf_counter()
            with self._phase(f"query, round {r}"):
                if r + 1 < self.rounds:
                    queried = self._query(self.schedule[r + 1] - self.schedule[r])
            query_seconds = time.perf_counter() - t0
            record = {
                "round": r,
                "labelled_fraction": len(self.labelled) / self.n_train,
                "labelled_count": len(self.labelled),
                "accuracy": accuracy,
                "loss": loss,
                "train_seconds": train_seconds,
                "query_seconds": query_seconds,
                "queried": queried,
            }
            if self.distributed:
                with self._phase(f"sharing the record, round {r}"):
                    record = dist_mod.broadcast_object(record)  # rank 0's labelled set and timings
                if record["queried"] != queried:
                    raise dist_mod.DistributedError(
                        f"rank {self.rank} queried other structures than rank 0 in round {r}: strategy "
                        f"{self.strategy.name!r}'s query_distributed must give every rank the same answer",
                        rank=self.rank,
                        phase=f"query, round {r}",
                    )
            self.labelled.extend(record["queried"])
            self.next_round = r + 1
            with self._phase(f"checkpoint, round {r}"):
                if self.writes_files:
                    self.run_dir.append_record(record)
                self._checkpoint()
            records.append(record)
            if self.rank == 0:
                _log.info(
                    "round %d/%d: %d labelled, accuracy %.2f%%, loss %.4f (train %.1f s, query %.1f s)",
                    r,
                    self.rounds - 1,
                    record["labelled_count"],
                    100 * record["accuracy"],
                    record["loss"],
                    record["train_seconds"],
                    record["query_seconds"],
                )
        return records


class _LocalFeed:
    """The labelled set in one process: a shuffled DataLoader over the round's labelled items
    (drawing the loop's generator) and the strategy's training loss."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop = loop
        self.loader = DataLoader(
            Subset(loop.train_set, loop.labelled),
            batch_size=loop.batch_size,
            shuffle=True,
            generator=loop.loader_gen,
            collate_fn=loop.collate_fn,
        )
        self.steps = len(self.loader)

    def train_mode(self) -> None:
        self.loop.model.train()
        if self.loop.aux is not None:
            self.loop.aux.train()

    def batches(self) -> Iterable[Any]:
        return self.loader

    def loss(self, batch: Any, epoch: int, epochs: int) -> torch.Tensor:
        loop = self.loop
        return loop.strategy.training_loss(loop.model, batch.to(loop.device), epoch=epoch, epochs=epochs)

    @staticmethod
    def shown(loss: torch.Tensor) -> float:
        return float(loss)


class _ShardedFeed:
    """Data-parallel: every global batch of the one-process run split over the ranks
    (:class:`alkernels.distributed.ShardedBatches`), each rank's loss scaled so that DDP's average
    equals the one-process gradient."""

    def __init__(self, loop: ActiveLearningLoop) -> None:
        self.loop = loop
        self.labelled = Subset(loop.train_set, loop.labelled)
        self.sharded = dist_mod.ShardedBatches(
            len(self.labelled), loop.batch_size, generator=loop.loader_gen, rank=loop.rank, world_size=loop.world_size
        )
        self.steps = len(self.sharded)
        self._scale = 0.0

    def train_mode(self) -> None:
        self.loop._ddp.train()

    def batches(self) -> Iterable[tuple[list[int], int]]:
        return self.sharded

    def loss(self, item: tuple[list[int], int], epoch: int, epochs: int) -> torch.Tensor:
        loop = self.loop
        positions, global_size = item
        batch = loop.collate_fn([self.labelled[i] for i in positions]).to(loop.device) if positions else None
        self._scale = dist_mod.loss_scale(len(positions), global_size, loop.world_size)
        return loop._ddp(batch, self._scale, epoch=epoch, epochs=epochs)

    def shown(self, loss: torch.Tensor) -> float:
        return float(loss) / self._scale if self._scale else 0.0
