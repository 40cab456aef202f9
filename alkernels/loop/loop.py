"""The resumable pool-based active-learning loop (protocol A of the paper).

Files in ``out_dir``:

- ``config.json``: the run's settings (written once; a resume checks them).
- ``records.jsonl``: one JSON object per finished round, appended, flushed and fsynced.
- ``initial.pt``: the model's (and the strategy module's) ORIGINAL initial weights.
- ``checkpoint.pt``: the state after the last finished round (model, optimiser, strategy module,
  labelled set, the torch / numpy / Python RNG states), replaced atomically.

A killed run loses at most the round in progress: ``run(resume=True)`` reloads the checkpoint,
drops records newer than it and continues; every record then equals the uninterrupted run's,
except the two wall-time fields.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from alkernels import strategies as strategies_mod
from alkernels.data.dataset import collate
from alkernels.loop.epochs import epoch_schedule
from alkernels.strategies import Pool, Strategy

#: The keys of every line of ``records.jsonl``.
RECORD_KEYS = ("round", "labelled_fraction", "labelled_count", "accuracy", "loss", "train_seconds",
               "query_seconds", "queried")
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
            raise ValueError(f"query size {fq:.3g} x {rounds - 1} queries after an initial {f0:.3g} "
                             f"needs {last:.3g} of the training set, more than the pool holds")
        counts = [min(n, int(np.floor(n * (f0 + r * fq) + 0.5))) for r in range(rounds)]
    else:
        counts = [initial + r * query_size for r in range(rounds)]
        if counts[-1] > n:
            raise ValueError(f"query size {query_size} x {rounds - 1} queries after an initial "
                             f"{initial} needs {counts[-1]} structures; the training set has {n}")
    if counts[0] < 1:
        raise ValueError(f"the initial labelled set is empty ({initial} of {n})")
    if any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"query size {query_size} rounds to zero structures on {n}")
    return counts


def _fsync_append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_records(path: str | os.PathLike) -> list[dict]:
    """The complete records of ``records.jsonl`` (a torn last line from a kill is skipped)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


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
        initial: initial labelled set, a count or a fraction of ``len(train)``; drawn at random.
        query_size: structures per query, a count or a fraction of ``len(train)``.
        rounds: model updates (rounds); the paper's protocol is 10 with 10% chunks.
        epochs: epochs per round (the paper's fixed schedule).
        epoch_budget: instead of ``epochs``, a compute-matched schedule: ``epoch_budget x
            len(train)`` sample-epochs in total, the same share for every round (see
            :mod:`alkernels.loop.epochs`); ``config.json`` then records ``epochs_per_round``.
        reset_weights: reload the ORIGINAL initial weights at the start of every round.
        reset_optimizer: re-create the optimiser at the start of every round; defaults to
            ``reset_weights`` (the paper's framework kept the optimiser on reset).
        seed: seeds the model init, the initial set, batch order, dropout and random queries.
        out_dir: where records and checkpoints go.
        batch_size: training batch size (24, the paper's).
        eval_batch_size: batch size for evaluation and pool scoring.
        lr, weight_decay: AdamW settings (1e-4 and 0, the paper's).
        device: torch device for the model.
        collate_fn: list of items -> batch (``alkernels.data.collate`` by default).
        progress: show a tqdm bar per round.
        metadata: extra JSON-serialisable fields stored in ``config.json`` (dataset, preset).
    """

    def __init__(self, model_factory: Callable[[], nn.Module], strategy: Strategy | str,
                 train: Dataset, test: Dataset, *, initial: int | float = 0.1,
                 query_size: int | float = 0.1, rounds: int = 10, epochs: int = 25,
                 epoch_budget: float | None = None,
                 reset_weights: bool = False, reset_optimizer: bool | None = None, seed: int = 0,
                 out_dir: str | os.PathLike, batch_size: int = 24, eval_batch_size: int = 256,
                 lr: float = 1e-4, weight_decay: float = 0.0, device: str | torch.device = "cpu",
                 collate_fn: Callable[[list[Any]], Any] | None = None, progress: bool = False,
                 metadata: dict | None = None) -> None:
        self.strategy = strategies_mod.get(strategy) if isinstance(strategy, str) else strategy
        self.model_factory = model_factory
        self.train_set, self.test_set = train, test
        self.n_train = len(train)
        if len(test) < 1:
            raise ValueError("the test set is empty")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        self.schedule = labelled_schedule(self.n_train, initial, query_size, rounds)
        self.epoch_budget = None if epoch_budget is None else float(epoch_budget)
        self.epochs_per_round = epoch_schedule(self.schedule, self.n_train, epoch_budget=self.epoch_budget,
                                               epochs=epochs if epoch_budget is None else None)
        self.rounds, self.epochs, self.seed = rounds, None if epoch_budget is not None else epochs, seed
        self.reset_weights = reset_weights
        self.reset_optimizer = reset_weights if reset_optimizer is None else reset_optimizer
        self.out_dir = Path(out_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.lr, self.weight_decay = lr, weight_decay
        self.device = torch.device(device)
        self.collate_fn = collate_fn or collate
        self.progress = progress
        self.metadata = dict(metadata or {})
        for name, ds in (("training", train), ("test", test)):
            if self.collate_fn([ds[0]]).y is None:
                raise ValueError(f"the {name} set has no labels; give a label source "
                                 f"(for example label='spacegroup')")

    # -- configuration -----------------------------------------------------------------------
    def config(self) -> dict:
        """The JSON-serialisable settings of this run (``config.json``)."""
        return {
            "strategy": self.strategy.name, "seed": self.seed, "rounds": self.rounds,
            "epochs": self.epochs, "schedule": self.schedule, "n_train": self.n_train,
            **({"epoch_budget": self.epoch_budget, "epochs_per_round": self.epochs_per_round}
               if self.epoch_budget is not None else {}),
            "n_test": len(self.test_set), "reset_weights": self.reset_weights,
            "reset_optimizer": self.reset_optimizer, "batch_size": self.batch_size,
            "lr": self.lr, "weight_decay": self.weight_decay, **self.metadata,
        }

    @property
    def records_path(self) -> Path:
        return self.out_dir / "records.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    # -- state ---------------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.model.parameters())
        if self.aux is not None:
            params += list(self.aux.parameters())
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def _weights(self) -> dict:
        return {"model": self.model.state_dict(),
                "aux": self.aux.state_dict() if self.aux is not None else None}

    def _load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights["model"])
        if self.aux is not None:
            self.aux.load_state_dict(weights["aux"])

    def _fresh_start(self) -> None:
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        self.model = self.model_factory().to(self.device)
        self.aux = self.strategy.setup(self.model)
        self.initial_weights = {k: {n: t.detach().clone() for n, t in v.items()} if v is not None else None
                                for k, v in self._weights().items()}
        _atomic_save(self.initial_weights, self.out_dir / "initial.pt")
        self.optimizer = self._make_optimizer()
        self.rng = np.random.default_rng(self.seed)
        self.loader_gen = torch.Generator().manual_seed(self.seed)
        self.labelled = [int(i) for i in self.rng.choice(self.n_train, self.schedule[0], replace=False)]
        self.next_round = 0

    def _checkpoint(self) -> None:
        _atomic_save({
            "next_round": self.next_round, "labelled": self.labelled, "weights": self._weights(),
            "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "loader_rng": self.loader_gen.get_state(), "numpy_rng": self.rng.bit_generator.state,
            "python_rng": random.getstate(),
        }, self.checkpoint_path)

    def _restore(self) -> None:
        self.model = self.model_factory().to(self.device)
        self.aux = self.strategy.setup(self.model)
        self.initial_weights = torch.load(self.out_dir / "initial.pt", weights_only=False)
        state = torch.load(self.checkpoint_path, weights_only=False, map_location=self.device)
        self._load_weights(state["weights"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.loader_gen = torch.Generator()
        self.loader_gen.set_state(state["loader_rng"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["numpy_rng"]
        random.setstate(state["python_rng"])
        self.labelled = list(state["labelled"])
        self.next_round = int(state["next_round"])

    def _prepare(self, resume: bool) -> list[dict]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.out_dir / "config.json"
        config = self.config()
        if config_path.exists():
            if not resume:
                raise ValueError(f"{self.out_dir} already holds a run; pass resume=True to continue "
                                 f"it or choose another output directory")
            old = json.loads(config_path.read_text())
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            if changed:
                raise ValueError(f"cannot resume {self.out_dir}: settings differ in {', '.join(changed)}")
        if resume and self.checkpoint_path.exists():
            self._restore()
        else:
            self._fresh_start()
        config_path.write_text(json.dumps(config, indent=1))
        records = [r for r in read_records(self.records_path) if r["round"] < self.next_round]
        with open(self.records_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
        return records

    # -- one round -----------------------------------------------------------------------------
    def _train(self, round_: int) -> None:
        from tqdm.auto import tqdm

        loader = DataLoader(Subset(self.train_set, self.labelled), batch_size=self.batch_size,
                            shuffle=True, generator=self.loader_gen, collate_fn=self.collate_fn)
        self.model.train()
        if self.aux is not None:
            self.aux.train()
        epochs = self.epochs_per_round[round_]
        bar = tqdm(total=epochs * len(loader), disable=not self.progress, leave=False,
                   desc=f"round {round_ + 1}/{self.rounds} ({len(self.labelled)} labelled)")
        for epoch in range(epochs):
            for batch in loader:
                batch = batch.to(self.device)
                loss = self.strategy.training_loss(self.model, batch, epoch=epoch, epochs=epochs)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch + 1)
        bar.close()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) of the current model on the test set, dropout off."""
        self.model.eval()
        loader = DataLoader(self.test_set, batch_size=self.eval_batch_size, shuffle=False,
                            collate_fn=self.collate_fn)
        correct, total_loss, n = 0, 0.0, 0
        for batch in loader:
            batch = batch.to(self.device)
            logits = self.model(batch).float()
            total_loss += nn.functional.cross_entropy(logits, batch.y, reduction="sum").item()
            correct += int((logits.argmax(1) == batch.y).sum())
            n += int(batch.y.numel())
        return correct / n, total_loss / n

    def _query(self, k: int) -> list[int]:
        taken = np.zeros(self.n_train, dtype=bool)
        taken[self.labelled] = True
        pool = Pool(self.train_set, np.flatnonzero(~taken), self.eval_batch_size, self.collate_fn)
        chosen = np.asarray(self.strategy.query(self.model, pool, k, rng=self.rng), dtype=np.int64)
        if chosen.shape != (k,) or np.unique(chosen).size != k or taken[chosen].any() \
                or (chosen < 0).any() or (chosen >= self.n_train).any():
            raise ValueError(f"strategy {self.strategy.name!r} must return {k} distinct unlabelled "
                             f"indices, got {chosen.tolist()[:10]}...")
        return [int(i) for i in chosen]

    # -- the run -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> list[dict]:
        """Run (or, with ``resume=True``, continue) the loop; returns every round's record."""
        records = self._prepare(resume)
        for r in range(self.next_round, self.rounds):
            if r > 0 and self.reset_weights:
                self._load_weights(self.initial_weights)
            if r > 0 and self.reset_optimizer:
                self.optimizer = self._make_optimizer()
            t0 = time.perf_counter()
            self._train(r)
            train_seconds = time.perf_counter() - t0
            accuracy, loss = self.evaluate()
            queried: list[int] = []
            t0 = time.perf_counter()
            if r + 1 < self.rounds:
                queried = self._query(self.schedule[r + 1] - self.schedule[r])
            query_seconds = time.perf_counter() - t0
            record = {"round": r, "labelled_fraction": len(self.labelled) / self.n_train,
                      "labelled_count": len(self.labelled), "accuracy": accuracy, "loss": loss,
                      "train_seconds": train_seconds, "query_seconds": query_seconds,
                      "queried": queried}
            self.labelled.extend(queried)
            self.next_round = r + 1
            _fsync_append(self.records_path, json.dumps(record))
            self._checkpoint()
            records.append(record)
        return records
