"""The transfer-learning study (protocol C of ``docs/protocols.md``): pre-train, then fine-tune at
several training-set sizes with every strategy, scored on one fixed test set.

One study pre-trains one model per *source* (a list of target columns: one column is pair-wise
PT, several are multi-property PT), caches each pre-trained checkpoint under a key of everything
that determines it, and runs every cell ``source x strategy x size x repeat``: a random subsample
of ``size`` labelled structures of the fine-tuning pool (the same subsample for every source and
strategy), fine-tuned with a 90/10 train/validation split and scored on the test set. ``scratch``
does not depend on the source and runs once per (size, repeat) under the source name
:data:`SCRATCH_SOURCE`.

Files in ``out``:

- ``experiment.json``: the settings (data recorded by file name), the test rows, each
  pre-training's summary (rows, epochs, seconds, validation MAE), the seconds per cell and the
  accumulated time. A second run with other settings is refused.
- ``cells.jsonl``: one JSON record per finished cell (appended, flushed, fsynced); finished cells
  are skipped on a re-run, so an interrupted study resumes where it stopped.
- ``.claims/``: the claim file of each cell (see :mod:`alkernels.experiments._grid`): several
  processes sharing ``out`` fill one study together.
- ``pretrained/<label>-<key>.ckpt``: the pre-trained checkpoints (not committed; any change of
  data, columns, architecture or settings gives another key), and while one trains its
  per-epoch state ``.<label>-<key>.state``, so an interrupted pre-training resumes exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alkernels._logging import emit
from alkernels._paths import user_path
from alkernels.experiments._grid import EXPERIMENT, Grid, grid_lock, read_experiment, run_grid
from alkernels.loop.rundir import append_record, claim_folder, file_lock, read_records
from alkernels.models import EGNN, EGNNConfig, PropertyRegressor
from alkernels.transfer import (
    PropertyData,
    TrainConfig,
    content_hash,
    finetune,
    load,
    mae,
    parse_strategy,
    pretrain,
    read_checkpoint,
    save,
)
from alkernels.transfer.strategies import REUSES_HEAD

_log = logging.getLogger(__name__)

#: The source name of the ``scratch`` cells (no pre-training).
SCRATCH_SOURCE = "none"
CELLS = "cells.jsonl"
#: Record keys of ``cells.jsonl``.
CELL_KEYS = (
    "source",
    "strategy",
    "size",
    "repeat",
    "test_mae",
    "val_mae",
    "median_mae",
    "best_epoch",
    "epochs",
    "steps",
    "n_train",
    "n_val",
    "seconds",
    "cpu_seconds",
)


def source_label(columns: Sequence[str]) -> str:
    """``["heat_ref"]`` -> ``"heat_ref"``; several columns are joined with ``+`` (MPT)."""
    return "+".join(columns)


@dataclass(frozen=True)
class StudySettings:
    """Everything that determines a study's results (``experiment.json``'s ``settings``).

    Attributes:
        sources: one list of pre-training columns per pre-training.
        pretrain_data: the pre-training files (paths; recorded by file name).
        finetune: the fine-tuning column. finetune_data: its file.
        sizes: fine-tuning subsample sizes (train + validation). repeats: subsamples per size.
        strategies: fine-tuning strategies (``last_k_layers=K`` spelled out).
        test_size: structures of the fixed test set, drawn once from the labelled fine-tuning rows.
        seed: seeds the test set, the subsamples, the splits, batch orders and fresh weights.
        cutoff, max_neighbors, graph_mode: graph construction.
        egnn: the encoder's :class:`EGNNConfig` fields. head_hidden: head width.
        pt, ft: pre-training and fine-tuning :class:`TrainConfig` fields.
        init_head: the pre-trained head that ``all``/``head`` start from for a multi-column
            source without the fine-tuning column (see :mod:`alkernels.transfer.strategies`).
        backend: EGNN edge-op backend.
    """

    sources: tuple[tuple[str, ...], ...]
    pretrain_data: tuple[str, ...]
    finetune: str
    finetune_data: str
    sizes: tuple[int, ...] = (10, 100, 200, 500, 800)
    repeats: int = 5
    strategies: tuple[str, ...] = (
        "scratch",
        "all",
        "head",
        "new_head_frozen_trunk",
        "new_head_frozen_embedding",
        "last_k_layers=2",
    )
    test_size: int = 500
    seed: int = 0
    cutoff: float = 6.0
    max_neighbors: int | None = 12
    graph_mode: str = "periodic"
    egnn: dict = field(default_factory=lambda: EGNNConfig().record())
    head_hidden: int = 128
    pt: dict = field(
        default_factory=lambda: TrainConfig(batch_size=64, max_epochs=30, patience=6, error="absolute").record()
    )
    ft: dict = field(
        default_factory=lambda: TrainConfig(max_epochs=150, max_steps=200, patience=25, error="absolute").record()
    )
    init_head: str | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not self.sources or any(not s for s in self.sources):
            raise ValueError("give at least one pre-training source with at least one column")
        labels = [source_label(s) for s in self.sources]
        if len(set(labels)) != len(labels):
            raise ValueError(f"pre-training sources repeat: {labels}")
        if any(len(set(s)) != len(s) for s in self.sources):
            raise ValueError(f"a pre-training source names a column twice: {labels}")
        if not self.pretrain_data:
            raise ValueError("give at least one pre-training data file")
        if not self.sizes or any(s < 2 for s in self.sizes):
            raise ValueError(f"sizes must be integers >= 2 (train + validation), got {list(self.sizes)}")
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"sizes repeat: {list(self.sizes)}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.test_size < 1:
            raise ValueError(f"test_size must be >= 1, got {self.test_size}")
        if not self.strategies:
            raise ValueError("give at least one fine-tuning strategy")
        parsed = [str(parse_strategy(s)) for s in self.strategies]
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"strategies repeat: {parsed}")
        TrainConfig(**self.pt)
        TrainConfig(**self.ft)
        EGNNConfig(**self.egnn)
        for strategy in parsed:
            if parse_strategy(strategy).name not in REUSES_HEAD:
                continue
            for cols in self.sources:
                if len(cols) > 1 and self.finetune not in cols and self.init_head not in cols:
                    raise ValueError(
                        f"strategy {strategy!r} starts from a pre-trained head, but source "
                        f"{source_label(cols)!r} has {len(cols)} heads and none is {self.finetune!r}"
                        + (f" or the --init-head {self.init_head!r}" if self.init_head else "")
                        + ": pass --init-head with one of its columns or use the new_head_* strategies"
                    )

    def record(self) -> dict:
        """The settings as stored: data files by name only (no machine paths)."""
        out = asdict(self)
        out["sources"] = [list(s) for s in self.sources]
        out["pretrain_data"] = [Path(p).name for p in self.pretrain_data]
        out["finetune_data"] = Path(self.finetune_data).name
        out["sizes"], out["strategies"] = list(self.sizes), [str(parse_strategy(s)) for s in self.strategies]
        return out

    def cells(self) -> list[tuple[str, str, int, int]]:
        """Every (source, strategy, size, repeat), small sizes first; scratch once per size/repeat."""
        out = []
        for size in sorted(self.sizes):
            for repeat in range(self.repeats):
                for strategy in (str(parse_strategy(s)) for s in self.strategies):
                    if strategy == "scratch":
                        out.append((SCRATCH_SOURCE, strategy, size, repeat))
                    else:
                        out.extend((source_label(src), strategy, size, repeat) for src in self.sources)
        return out


@dataclass
class StudyData:
    """The loaded data of a study: pre-training files and the fine-tuning pool and test set."""

    pretrain: list[PropertyData]
    pool: PropertyData
    test: PropertyData
    test_rows: np.ndarray
    dropped: dict[str, int]


def read_cells(out: str | os.PathLike) -> list[dict]:
    """The finished cells of ``out/cells.jsonl`` (a torn last line from a kill is skipped; a
    damaged line elsewhere raises :class:`~alkernels.loop.rundir.DamagedRunError` naming it)."""
    return read_records(user_path(out) / CELLS)


def load_data(settings: StudySettings, *, loader: Callable[[str], PropertyData]) -> StudyData:
    """Read the files, draw the fixed test set and drop test structures from the pre-training data.

    Args:
        settings: the study.
        loader: path -> :class:`PropertyData` with every numeric column (the CLI reads files with
            :func:`alkernels.data.specs.load_property_graphs`; tests pass generated data).

    Raises ValueError for a column in none of the pre-training files, fine-tuning data without
    labels, or a size larger than the fine-tuning pool.
    """
    ft_all = loader(settings.finetune_data)
    if settings.finetune not in ft_all.properties:
        raise ValueError(
            f"fine-tuning column {settings.finetune!r} is not in {Path(settings.finetune_data).name} "
            f"(its numeric columns: {', '.join(ft_all.columns) or 'none'})"
        )
    labelled = np.flatnonzero(np.isfinite(ft_all.values(settings.finetune)))
    if labelled.size == 0:
        raise ValueError(
            f"fine-tuning data {Path(settings.finetune_data).name} has no labels in column "
            f"{settings.finetune!r} (every value is missing)"
        )
    biggest = max(settings.sizes)
    if labelled.size < settings.test_size + biggest:
        raise ValueError(
            f"size {biggest} is larger than the fine-tuning pool: {Path(settings.finetune_data).name} has "
            f"{labelled.size} labelled rows of {settings.finetune!r}, and the {settings.test_size}-structure "
            f"test set leaves {max(0, labelled.size - settings.test_size)} (lower --sizes or --test-size)"
        )
    rng = np.random.default_rng([settings.seed, 7919])
    perm = rng.permutation(labelled)
    test_rows, pool_rows = np.sort(perm[: settings.test_size]), np.sort(perm[settings.test_size :])
    test, pool = ft_all.subset(test_rows), ft_all.subset(pool_rows)
    test_keys = set(test.structure_keys())
    pretrain_sets, dropped = [], {}
    for path in settings.pretrain_data:
        name = Path(path).name
        data = ft_all if user_path(path).resolve() == user_path(settings.finetune_data).resolve() else loader(path)
        keep = np.array([k not in test_keys for k in data.structure_keys()], dtype=bool)
        dropped[name] = int((~keep).sum())
        pretrain_sets.append(PropertyData(data.graphs, data.properties, data.indices[keep], name))
    for cols in settings.sources:
        for col in cols:
            if not any(col in d.properties for d in pretrain_sets):
                described = "; ".join(f"{d.name}: {', '.join(d.columns)}" for d in pretrain_sets)
                raise ValueError(f"pre-training column {col!r} is in none of the pre-training files ({described})")
    return StudyData(pretrain_sets, pool, test, ft_all.indices[test_rows], dropped)


def _source_data(data: StudyData, columns: Sequence[str]) -> list[PropertyData]:
    """The pre-training files that have any of ``columns``, cut to rows labelled in at least one."""
    out = []
    for d in data.pretrain:
        present = [c for c in columns if c in d.properties]
        if not present:
            continue
        labelled = np.zeros(len(d), dtype=bool)
        for c in present:
            labelled |= np.isfinite(d.values(c))
        out.append(d.subset(np.flatnonzero(labelled)))
    return out


def pretrained_path(
    settings: StudySettings, datasets: Sequence[PropertyData], columns: Sequence[str], cache: Path
) -> Path:
    """Where the checkpoint of one source is cached: its label and a hash of the data, columns,
    architecture, head, pre-training settings, backend-independent seed."""
    key = hashlib.sha256(
        json.dumps(
            {
                "data": content_hash(datasets, list(columns)),
                "columns": list(columns),
                "egnn": settings.egnn,
                "head_hidden": settings.head_hidden,
                "pt": settings.pt,
                "seed": settings.seed,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return cache / f"{source_label(columns)}-{key[:16]}.ckpt"


def pretrain_source(
    settings: StudySettings,
    data: StudyData,
    columns: Sequence[str],
    cache: Path,
    *,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[Path, dict]:
    """The cached checkpoint of one source, pre-training it first when absent.

    Returns:
        ``(path, info)`` with info: rows, epochs, best_epoch, steps, val_mae, seconds (of the
        pre-training itself, also when read back from the cache) and ``cached``.
    """
    datasets = _source_data(data, columns)
    path = pretrained_path(settings, datasets, columns, cache)
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.stem}.lock")):  # processes sharing the cache train it once
        cached = path.is_file()
        if not cached:
            _pretrain(settings, datasets, columns, path, device=device, progress=progress)
    info = dict(read_checkpoint(path)["metadata"]["study_pretraining"])
    info["cached"] = cached
    info["checkpoint"] = path.name
    return path, info


def _pretrain(
    settings: StudySettings,
    datasets: list[PropertyData],
    columns: Sequence[str],
    path: Path,
    *,
    device: str,
    progress: bool,
) -> None:
    """Pre-train one source and save its checkpoint at ``path`` (resuming its per-epoch state)."""
    encoder = EGNN(EGNNConfig(**settings.egnn), backend=settings.backend)
    result = pretrain(
        encoder,
        datasets,
        list(columns),
        config=TrainConfig(**settings.pt),
        seed=settings.seed,
        hidden=settings.head_hidden,
        device=device,
        progress=progress,
        state_path=path.with_name(f".{path.stem}.state"),
    )
    info = {
        "rows": {d.name: len(d) for d in datasets},
        "n_train": result.n_train,
        "n_val": result.n_val,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "val_mae": result.val_mae,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "history": [
            {"epoch": h["epoch"], "val_score": h["val_score"], "train_loss": h["train_loss"]} for h in result.history
        ],
    }
    save(result, path, metadata={"study_pretraining": info})


def _cell_seed(settings: StudySettings, size: int, repeat: int) -> int:
    return int(np.random.default_rng([settings.seed, size, repeat]).integers(2**31))


def subsample(settings: StudySettings, pool: PropertyData, size: int, repeat: int) -> PropertyData:
    """The fine-tuning rows of (size, repeat): the same for every source and strategy."""
    rng = np.random.default_rng([settings.seed, size, repeat, 1])
    return pool.subset(np.sort(rng.choice(len(pool), size, replace=False)))


def run_cell(
    settings: StudySettings, data: StudyData, pretrained, cell: tuple[str, str, int, int], *, device: str = "cpu"
) -> dict:
    """Fine-tune one cell and score it on the test set; returns its record."""
    source, strategy, size, repeat = cell
    sample = subsample(settings, data.pool, size, repeat)
    seed = _cell_seed(settings, size, repeat)
    t0, c0 = time.perf_counter(), time.process_time()
    result = finetune(
        pretrained,
        sample,
        settings.finetune,
        strategy,
        config=TrainConfig(**settings.ft),
        seed=seed,
        init_head=settings.init_head,
        backend=settings.backend,
        device=device,
        progress=False,
    )
    test_mae = mae(result.model, data.test)[settings.finetune]
    median = float(np.median(sample.values(settings.finetune)))
    median_mae = float(np.abs(data.test.values(settings.finetune) - median).mean())
    return {
        "source": source,
        "strategy": strategy,
        "size": size,
        "repeat": repeat,
        "test_mae": test_mae,
        "val_mae": result.val_mae[settings.finetune],
        "median_mae": median_mae,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "steps": result.steps,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def _check_settings(out: Path, previous: dict, settings: StudySettings) -> None:
    """Refuse a folder that holds another study (or cells without their ``experiment.json``)."""
    if not previous:
        if read_cells(out):
            raise ValueError(f"{out} holds {CELLS} but no {EXPERIMENT}: not a study folder this run can continue")
        return
    old, new = previous.get("settings", {}), settings.record()
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise ValueError(
            f"{out} already holds a study with other settings ({', '.join(changed)} differ); "
            f"use another --out or the same settings to resume it"
        )


Cell = tuple[str, str, int, int]


@dataclass
class TransferGrid(Grid[Cell]):
    """A study's cells in ``out`` (see :func:`run_study` for the arguments): each cell's record
    is appended to ``cells.jsonl``, its claim is ``.claims/<cell>.claim``."""

    study: StudySettings
    data: StudyData
    out: Path
    cache: Path
    device: str = "cpu"
    progress: bool = False
    log: Callable[[str], None] | None = None
    load_seconds: float = 0.0
    indent: int | None = 1
    models: dict = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        return self.study.cells()

    def name(self, cell: Cell) -> str:
        source, strategy, size, repeat = cell
        return f"{source}/{strategy}/n{size}/r{repeat}"

    def claim_path(self, cell: Cell) -> Path:
        return self.out / ".claims" / (self.name(cell).replace("/", "-") + ".claim")

    def is_finished(self, cell: Cell) -> bool:
        return any((c["source"], c["strategy"], c["size"], c["repeat"]) == cell for c in read_cells(self.out))

    def check(self, previous: dict) -> None:
        _check_settings(self.out, previous, self.study)
        if previous and previous.get("test_rows") != self.data.test_rows.tolist():
            raise ValueError(
                f"{self.out}: the fixed test set differs from the recorded one (the fine-tuning data changed)"
            )
        with grid_lock(self.out):
            read_records(self.out / CELLS, repair=True)  # a torn last line from a kill is truncated

    def prepare(self, todo: Sequence[Cell]) -> dict[str, dict]:
        """Pre-train (or read from the cache) the sources the cells in ``todo`` fine-tune."""
        settings, needed = self.study, {c[0] for c in todo} - {SCRATCH_SOURCE}
        # scratch only takes the architecture from its "pre-trained" model
        self.models[SCRATCH_SOURCE] = PropertyRegressor(
            EGNN(EGNNConfig(**settings.egnn), backend=settings.backend),
            [settings.finetune],
            hidden=settings.head_hidden,
        )
        pretraining = {}
        for cols in settings.sources:
            label = source_label(cols)
            if label not in needed:
                continue
            path, info = pretrain_source(
                settings, self.data, cols, self.cache, device=self.device, progress=self.progress
            )
            pretraining[label] = info
            emit(
                self.log,
                _log,
                f"pre-training {label}: {'cached' if info['cached'] else 'trained'} ({info['seconds']:.0f} s, "
                f"{info['epochs']} epochs, best {info['best_epoch']}, val MAE "
                + ", ".join(f"{k} {v:.4g}" for k, v in info["val_mae"].items())
                + ")",
            )
            self.models[label] = load(path, backend=settings.backend, device=self.device)
        return {"pretraining": pretraining}

    def run_cell(self, cell: Cell) -> dict:
        record = run_cell(self.study, self.data, self.models[cell[0]], cell, device=self.device)
        with grid_lock(self.out):
            append_record(self.out / CELLS, record)
        return {"test_mae": record["test_mae"]}

    def settings(self) -> dict:
        data = self.data
        return {
            "settings": self.study.record(),
            "test_rows": data.test_rows.tolist(),
            "n_pool": len(data.pool),
            "n_test": len(data.test),
            "dropped_from_pretraining": data.dropped,
            "load_seconds": self.load_seconds,
        }

    def opening(self, total: int, todo: int, processes: int, threads: int) -> str:
        data = self.data
        return (
            f"fine-tuning pool {len(data.pool)}, test {len(data.test)} ({self.study.finetune}); "
            "pre-training files: "
            + ", ".join(
                f"{d.name} {len(d)} rows ({data.dropped[d.name]} test structures dropped)" for d in data.pretrain
            )
            + f"\n{total} cells, {total - todo} already finished"
        )


def run_study(
    settings: StudySettings,
    out: str | os.PathLike,
    *,
    loader: Callable[[str], PropertyData],
    pretrain_cache: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run (or resume) a study into ``out``; returns the content of ``experiment.json``.

    Several processes, on one machine or on nodes sharing ``out``, may run the same study at
    once: each claims the cells it fine-tunes and skips those others hold, and a source is
    pre-trained once (see :func:`alkernels.experiments._grid.run_grid`).

    Args:
        settings: the study.
        out: the output folder.
        loader: path -> :class:`PropertyData` (see :func:`load_data`).
        pretrain_cache: folder of cached pre-trained checkpoints (default ``out/pretrained``);
            studies may share one, since each checkpoint's name carries its settings' hash.
        device: torch device.
        progress: tqdm bars for pre-training and for the cells.
        log: receives one line per pre-training and the grid's lines (see
            :func:`~alkernels.experiments._grid.run_grid`); by default they go to the
            ``alkernels.experiments`` logger at INFO.

    Raises:
        ValueError: before any work, when ``out`` holds a study with other settings.
        CellsFailedError: after every other cell has run, when some raised.
    """
    out = user_path(out)
    claim_folder(out)
    _check_settings(out, read_experiment(out), settings)  # before the data are read
    t0 = time.perf_counter()
    data = load_data(settings, loader=loader)
    cache = user_path(pretrain_cache) if pretrain_cache is not None else out / "pretrained"
    grid = TransferGrid(
        settings, data, out, cache, device=device, progress=progress, log=log, load_seconds=time.perf_counter() - t0
    )
    return run_grid(grid, progress=progress, log=log)
