"""Training for transfer learning: :func:`fit` (the one loop), :func:`pretrain` and :func:`finetune`.

Every fit splits its rows at random into train and validation (90/10 by default), normalises each
target by the training part's mean and std (stored in the model), trains the parameters that
require gradients with AdamW on the masked squared (or absolute) error of the normalised targets, evaluates the
validation MAE after every epoch, stops after ``patience`` epochs without improvement and restores
the best epoch's weights. When the whole encoder is frozen the graph embeddings are computed once
and only the heads run per step (the same result, far less work).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset

from alkernels._logging import progress_bar
from alkernels._paths import user_path
from alkernels.data.batch import GraphBatch
from alkernels.data.dataset import collate
from alkernels.loop.rundir import read_checksummed, write_checksummed
from alkernels.loop.trainer import Trainer
from alkernels.models import EGNN, PropertyRegressor
from alkernels.transfer.data import PropertyData, content_hash
from alkernels.transfer.strategies import Strategy, finetune_model, parse_strategy

#: The top-level keys of a fit's resumable training state.
STATE_KEYS: tuple[str, ...] = (
    "fingerprint",
    "model",
    "optimizer",
    "loader_rng",
    "torch_rng",
    "best_score",
    "best_state",
    "best_epoch",
    "bad",
    "steps",
    "history",
    "stopped",
    "seconds",
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one fit.

    Attributes:
        lr, weight_decay: AdamW settings.
        batch_size: training batch size.
        max_epochs: upper bound on epochs.
        max_steps: upper bound on optimiser steps (None: no bound); an epoch cut short by it
            still ends with a validation.
        patience: stop after this many epochs without a lower validation score (None: never).
        val_fraction: share of the rows held out for validation.
        min_val: at least this many rows are held out for validation (one row always stays for
            training): a validation set of one structure at the smallest sizes picks the best
            epoch by noise.
        eval_batch_size: batch size of validation and embedding passes.
        error: the training loss, ``"squared"`` (masked MSE) or ``"absolute"`` (masked L1),
            on normalised targets (see :meth:`PropertyRegressor.loss`).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    max_epochs: int = 100
    max_steps: int | None = None
    patience: int | None = 20
    val_fraction: float = 0.1
    min_val: int = 1
    eval_batch_size: int = 256
    error: str = "squared"

    def __post_init__(self) -> None:
        if self.error not in ("squared", "absolute"):
            raise ValueError(f"error must be 'squared' or 'absolute', got {self.error!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if self.max_epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("max_epochs (and max_steps when set) must be >= 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.min_val < 1:
            raise ValueError(f"min_val must be >= 1, got {self.min_val}")

    def record(self) -> dict:
        """The fields as study settings and fit fingerprints record them: every field, ``min_val``
        only when it is not the default 1, so that settings and pre-training cache keys recorded
        before the option existed still match."""
        out = asdict(self)
        if out["min_val"] == 1:
            del out["min_val"]
        return out


@dataclass
class TrainResult:
    """What a fit returns.

    Attributes:
        model: the trained :class:`PropertyRegressor`, best validation epoch restored.
        data_hash: :func:`~alkernels.transfer.data.content_hash` of all rows it was given.
        best_epoch: the restored epoch (1-based).
        epochs, steps: epochs and optimiser steps run.
        val_mae: per-target validation MAE (physical units) of the restored model.
        history: one dict per epoch: ``epoch``, ``steps``, ``train_loss`` (normalised units),
            ``val_mae`` (per target), ``val_score`` (mean over targets of MAE / std).
        seconds, cpu_seconds: wall time and CPU time (this process, all threads) of the fit.
        n_train, n_val: rows in the two parts.
    """

    model: PropertyRegressor
    data_hash: str
    best_epoch: int
    epochs: int
    steps: int
    val_mae: dict[str, float]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    n_train: int = 0
    n_val: int = 0


def _as_list(datasets: PropertyData | Sequence[PropertyData]) -> list[PropertyData]:
    items = [datasets] if isinstance(datasets, PropertyData) else list(datasets)
    if not items or not all(isinstance(d, PropertyData) for d in items):
        raise ValueError("datasets must be a PropertyData or a non-empty sequence of them")
    return items


def check_targets(datasets: Sequence[PropertyData], targets: Sequence[str]) -> None:
    """Raise ValueError unless every target has a label in some dataset and every dataset has at
    least one of the targets."""
    described = "; ".join(
        f"{d.name or f'dataset {k}'}: {', '.join(d.columns) or 'no columns'}" for k, d in enumerate(datasets)
    )
    for t in targets:
        if not any(t in d.properties for d in datasets):
            raise ValueError(f"target {t!r} is a column of none of the datasets ({described})")
        if not any(np.isfinite(d.values(t)).any() for d in datasets if t in d.properties):
            raise ValueError(f"target {t!r} has no labels (every value is missing) in the data given")
    for k, d in enumerate(datasets):
        if not any(t in d.properties for t in targets):
            raise ValueError(
                f"{d.name or f'dataset {k}'} has none of the targets {list(targets)} "
                f"(its columns: {', '.join(d.columns) or 'none'})"
            )


def _normalization(y: np.ndarray, targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    mean, std = np.zeros(y.shape[1]), np.ones(y.shape[1])
    for k, name in enumerate(targets):
        col = y[:, k][np.isfinite(y[:, k])].astype(np.float64)
        if col.size == 0:
            raise ValueError(f"target {name!r} has no label in the training part of the split")
        mean[k] = col.mean()
        s = col.std()
        std[k] = s if s > 1e-8 * max(1.0, abs(mean[k])) else 1.0
    return mean, std


def _mae(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-column MAE over labelled entries [P] (NaN where a column has no label)."""
    mask = torch.isfinite(y)
    err = torch.where(mask, (pred - torch.where(mask, y, torch.zeros_like(y))).abs(), torch.zeros_like(pred))
    counts = mask.sum(0)
    return torch.where(counts > 0, err.sum(0) / counts.clamp(min=1), torch.full_like(err[0], float("nan")))


@torch.no_grad()
def embeddings(
    model: PropertyRegressor, dataset, batch_size: int = 256, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Encoder output float [len(dataset), out_dim] of a graph dataset, in eval mode."""
    was = model.training
    model.eval()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
        return torch.cat([model.embed(b.to(device)) for b in loader])
    finally:
        model.train(was)


@torch.no_grad()
def predict(
    model: PropertyRegressor, data: PropertyData, *, batch_size: int = 256, device: torch.device | str | None = None
) -> np.ndarray:
    """Predictions in physical units, float64 [len(data), P] in the order of ``model.targets``."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        loader = DataLoader(data.dataset(model.targets), batch_size=batch_size, shuffle=False, collate_fn=collate)
        out = [model(b.to(dev)).double().cpu() for b in loader]
    finally:
        model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.targets)))


def mae(
    model: PropertyRegressor, data: PropertyData, *, batch_size: int = 256, device: torch.device | str | None = None
) -> dict[str, float]:
    """Per-target MAE (physical units) of ``model`` on the labelled rows of ``data`` (NaN for a
    target without labels there)."""
    pred = predict(model, data, batch_size=batch_size, device=device)
    y = data.labels(model.targets).astype(np.float64)
    out = {}
    for k, name in enumerate(model.targets):
        keep = np.isfinite(y[:, k])
        out[name] = float(np.abs(pred[keep, k] - y[keep, k]).mean()) if keep.any() else float("nan")
    return out


#: One training or validation step's forward: batch -> (normalised predictions [B, P], labels [B, P]).
_Step = Callable[[Any], tuple[torch.Tensor, torch.Tensor]]


def _embedding_step(model: PropertyRegressor) -> _Step:
    def run(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return model.head(batch[0]), batch[1]

    return run


def _graph_step(model: PropertyRegressor, device: torch.device) -> _Step:
    def run(batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        batch = batch.to(device)
        return model.head(model.embed(batch)), batch.y

    return run


def fit(
    model: PropertyRegressor,
    datasets: PropertyData | Sequence[PropertyData],
    *,
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "fit",
    state_path: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model``'s trainable parameters on ``datasets`` (see the module docstring).

    Args:
        model: a :class:`PropertyRegressor`; its ``targets`` are the columns trained on.
        datasets: one or more :class:`PropertyData`; their rows are pooled, each carrying the
            labels it has (NaN elsewhere).
        config: optimisation settings.
        seed: seeds the split, the batch order and dropout (the caller's RNG state is restored).
        device: where to train (default: where the model is).
        progress: a tqdm bar over epochs, drawn where stderr is a terminal; it shows
            ``val_score`` (the validation score below) and, for one target, ``val_mae`` (its MAE
            in the target's units).
        desc: the bar's label.
        state_path: if set, the training state (weights, optimiser, best epoch, history, RNG
            states) is written there atomically after every epoch, and a fit that finds it
            resumes from it exactly (the file must come from the same model, data, settings and
            seed, else ValueError); it is removed when the fit ends.

    Loss: :meth:`PropertyRegressor.loss` with ``reduction="properties"`` and ``config.error`` on
    normalised targets.
    Validation score: the mean over targets of MAE / std (for one target, the MAE's order).
    """
    items = _as_list(datasets)
    targets = model.targets
    check_targets(items, targets)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter (every requires_grad is False)")
    n = sum(len(d) for d in items)
    if n < 2:
        raise ValueError(f"need at least 2 structures to split into train and validation, got {n}")
    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = min(n - 1, max(config.min_val, int(round(config.val_fraction * n))))
    val_rows, train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    labels = np.concatenate([d.labels(targets) for d in items])
    data_hash = content_hash(items, targets)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "data": data_hash,
                "config": config.record(),
                "seed": seed,
                "targets": targets,
                "trainable": [name for name, p in model.named_parameters() if p.requires_grad],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    model.set_normalization(*_normalization(labels[train_rows], targets))
    graphs = ConcatDataset([d.dataset(targets) for d in items])
    y_all = torch.from_numpy(labels)
    frozen_trunk = not any(p.requires_grad for p in model.encoder.parameters())
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if frozen_trunk:
            emb = embeddings(model, graphs, config.eval_batch_size, dev)
            train_set = TensorDataset(emb[train_rows], y_all[train_rows].to(dev))
            val_set = TensorDataset(emb[val_rows], y_all[val_rows].to(dev))
            run = _embedding_step(model)
            loader_args: dict = {}
        else:
            train_set, val_set = Subset(graphs, train_rows.tolist()), Subset(graphs, val_rows.tolist())
            run = _graph_step(model, dev)
            loader_args = {"collate_fn": collate}
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=gen, **loader_args)
        val_loader = DataLoader(val_set, batch_size=config.eval_batch_size, shuffle=False, **loader_args)
        trainer = Trainer.adamw(params, lr=config.lr, weight_decay=config.weight_decay)
        std = model.target_std.detach().clone()
        best_score, best_state, best_epoch, bad, steps = math.inf, None, 0, 0, 0
        history: list[dict] = []
        earlier = (0.0, 0.0)
        stopped = False
        state_file = user_path(state_path)
        if state_file is not None and state_file.is_file():
            # plain data only, and of the right shape: a damaged or planted file is named, never used
            state = read_checksummed(state_file, map_location=dev, keys=STATE_KEYS)
            if state.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"training state {state_file} belongs to another fit (other model, data, "
                    f"settings or seed); remove it or choose another state_path"
                )
            model.load_state_dict(state["model"])
            trainer.optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["loader_rng"])
            torch.set_rng_state(state["torch_rng"])
            best_score, best_state, best_epoch, bad, steps = (
                state["best_score"],
                state["best_state"],
                state["best_epoch"],
                state["bad"],
                state["steps"],
            )
            history, earlier, stopped = state["history"], tuple(state["seconds"]), state["stopped"]
        bar = progress_bar(
            total=config.max_epochs, initial=len(history), desc=desc, enabled=progress, leave=False, unit="epoch"
        )
        for epoch in range(len(history) + 1, 0 if stopped else config.max_epochs + 1):
            model.train()

            def batch_loss(batch: Any) -> torch.Tensor:
                pred, y = run(batch)
                return PropertyRegressor.loss(pred, model.normalize(y), reduction="properties", error=config.error)

            done = trainer.epoch(
                loader, batch_loss, max_steps=None if config.max_steps is None else config.max_steps - steps
            )
            steps += done.steps
            model.eval()
            with torch.no_grad():
                preds, ys = zip(*(run(b) for b in val_loader))
                val = _mae(model.denormalize(torch.cat(preds)), torch.cat(ys))
            score = float(torch.nanmean(val / std)) if torch.isfinite(val).any() else math.inf
            val_mae = {t: float(v) for t, v in zip(targets, val.tolist())}
            history.append(
                {
                    "epoch": epoch,
                    "steps": steps,
                    "train_loss": done.mean_loss,
                    "val_mae": val_mae,
                    "val_score": score,
                }
            )
            if score < best_score:
                best_score, best_epoch, bad = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            bar.update(1)
            shown = {"val_score": f"{score:.4g}"}
            if len(targets) == 1:
                shown["val_mae"] = f"{val_mae[targets[0]]:.4g}"
            bar.set_postfix(shown, best=best_epoch)
            stopped = (config.patience is not None and bad >= config.patience) or (
                config.max_steps is not None and steps >= config.max_steps
            )
            if state_file is not None:
                state_file.parent.mkdir(parents=True, exist_ok=True)
                write_checksummed(
                    state_file,
                    {
                        "fingerprint": fingerprint,
                        "model": model.state_dict(),
                        "optimizer": trainer.optimizer.state_dict(),
                        "loader_rng": gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "best_score": best_score,
                        "best_state": best_state,
                        "best_epoch": best_epoch,
                        "bad": bad,
                        "steps": steps,
                        "history": history,
                        "stopped": stopped or epoch == config.max_epochs,
                        "seconds": (earlier[0] + time.perf_counter() - t0, earlier[1] + time.process_time() - c0),
                    },
                )
            if stopped:
                break
        bar.close()
    if best_state is None:
        raise ValueError("no validation label for any target: the validation split is unusable")
    model.load_state_dict(best_state)
    model.eval()
    if state_file is not None:
        state_file.unlink(missing_ok=True)
    return TrainResult(
        model=model,
        data_hash=data_hash,
        best_epoch=best_epoch,
        epochs=len(history),
        steps=steps,
        val_mae=history[best_epoch - 1]["val_mae"],
        history=history,
        seconds=earlier[0] + time.perf_counter() - t0,
        cpu_seconds=earlier[1] + time.process_time() - c0,
        n_train=len(train_rows),
        n_val=len(val_rows),
    )


def pretrain(
    encoder: EGNN,
    datasets: PropertyData | Sequence[PropertyData],
    targets: Sequence[str],
    *,
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
    hidden: int = 128,
    dropout: float = 0.0,
    activation: str = "relu",
    device: torch.device | str | None = None,
    progress: bool = True,
    state_path: str | os.PathLike | None = None,
) -> TrainResult:
    """Pre-train ``encoder`` with one head per target: pair-wise PT (one target) or multi-property
    PT (several, possibly from datasets that share no property).

    Args:
        encoder: the :class:`EGNN` to train (it is trained in place and becomes
            ``result.model.encoder``); ``EGNN(backend="auto")`` runs on the fused kernels.
        datasets: one or more :class:`PropertyData`; a target may be a column of only some of them.
        targets: the property names, one head each.
        config, seed, device, progress, state_path: as in :func:`fit` (``state_path`` makes an
            interrupted pre-training resumable).
        hidden, dropout, activation: the heads' layout (see :class:`PropertyRegressor`).

    Returns:
        The :class:`TrainResult`; save it with :func:`alkernels.transfer.save`.
    """
    items = _as_list(datasets)
    check_targets(items, list(targets))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PropertyRegressor(encoder, list(targets), hidden=hidden, dropout=dropout, activation=activation)
    model.to(next(encoder.parameters()).device)
    label = "+".join(targets)
    return fit(
        model,
        items,
        config=config,
        seed=seed,
        device=device,
        progress=progress,
        desc=f"pretrain {label}",
        state_path=state_path,
    )


def finetune(
    pretrained: PropertyRegressor | str | os.PathLike | None,
    data: PropertyData,
    target: str,
    strategy: str | Strategy = "all",
    *,
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
    init_head: str | None = None,
    backend: str | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune a pre-trained model on ``target`` of ``data`` with one of the strategies of
    :mod:`alkernels.transfer.strategies` (``scratch`` is the baseline: the same architecture
    and budget from random initialisation).

    Args:
        pretrained: a :class:`PropertyRegressor`, a checkpoint path (:func:`alkernels.transfer.load`),
            or None with ``strategy="scratch"`` (the default architecture). Never modified.
        data: the fine-tuning rows; rows without a ``target`` label are dropped, the rest split
            ``config.val_fraction`` for validation.
        target: the property to learn; the returned model has exactly this one head.
        strategy: e.g. ``"all"``, ``"new_head_frozen_trunk"``, ``"last_k_layers=2"``.
        config, seed, device, progress: as in :func:`fit` (``seed`` also draws fresh weights).
        init_head: for ``all``/``head`` on a multi-head model without a ``target`` head: the
            pre-trained head to start from.
        backend: EGNN backend of the fine-tuned model (default: the pre-trained one's).
    """
    if isinstance(pretrained, (str, os.PathLike)):
        from alkernels.transfer.checkpoint import load

        pretrained = load(pretrained, backend=backend or "auto")
    values = data.values(target)
    labelled = np.flatnonzero(np.isfinite(values))
    if labelled.size < 2:
        raise ValueError(
            f"{data.name or 'the fine-tuning data'} has {labelled.size} labelled rows of "
            f"{target!r}; fine-tuning needs at least 2 (train and validation)"
        )
    strat = parse_strategy(strategy)
    model = finetune_model(pretrained, target, strat, init_head=init_head, seed=seed, backend=backend)
    return fit(
        model,
        data.subset(labelled),
        config=config,
        seed=seed,
        device=device,
        progress=progress,
        desc=f"finetune {target} ({strat})",
    )
