"""Datasets, models and the reproduction grid of the paper's Table 1 (protocol A).

A grid is every strategy x seed x weight-reset variant, each an :class:`ActiveLearningLoop` in
its own folder under ``out/runs/<variant>/<strategy>/seed<k>``, plus one "standard" run per seed
that trains on the whole training set for one round of the same number of epochs. Finished cells
are skipped and interrupted ones resumed, so re-running the same command continues a grid.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from alkernels import strategies as strategies_mod
from alkernels.loop.loop import ActiveLearningLoop, read_records

#: Weight-reset variants: "keep" carries weights over between rounds (the paper's Table 1),
#: "reset" reloads the original initial weights (and a fresh optimiser) every round.
VARIANTS = ("keep", "reset")


@dataclass(frozen=True)
class Preset:
    """Sizes and settings of one experiment scale.

    Attributes:
        name: preset name.
        structures: the built-in dataset's size, and a cap for any dataset (a fixed random
            subset of this many structures; None = all).
        split: (train, test) fractions, or (train, val, test) where val is left unused; split by
            crystal family with seed 0, the same for every run.
        cutoff, graph_mode: neighbour graphs (see ``alkernels.data.build_graphs``).
        rounds, initial, query_size: the AL schedule (fractions of the training split).
        epochs: epochs per round (and of the standard run).
        lr, batch_size: AdamW learning rate and batch size.
        dropout: head dropout of the classifier (MC strategies need > 0).
        passes: MC-dropout passes T.
        backend: EGNN edge-op backend.
    """

    name: str
    structures: int | None
    split: tuple[float, ...]
    cutoff: float
    graph_mode: str
    rounds: int = 10
    initial: float = 0.1
    query_size: float = 0.1
    epochs: int = 25
    lr: float = 1e-4
    batch_size: int = 24
    dropout: float = 0.1
    passes: int = 10
    backend: str = "auto"


PRESETS: dict[str, Preset] = {
    # The paper's protocol: 10% chunks, 10 rounds, 25 epochs, AdamW 1e-4, batch 24, the toolkit's
    # in-cell graphs; 70/20/10 split within each crystal family (validation part unused).
    "paper": Preset("paper", structures=None, split=(0.7, 0.2, 0.1), cutoff=20.0, graph_mode="matsciml",
                    epochs=25, lr=1e-4),
    # CPU-sized: same schedule (10% chunks, 10 rounds), 300 structures (240 train / 60 test),
    # periodic graphs with a 4 A cutoff, 1 epoch per round at lr 1e-3 to make up for the epochs.
    "quick": Preset("quick", structures=300, split=(0.8, 0.2), cutoff=4.0, graph_mode="periodic",
                    epochs=1, lr=1e-3, backend="reference"),
}

#: Size of plain ``builtin`` when the preset sets none: about the paper's 154,519 MP structures.
DEFAULT_BUILTIN_SIZE = 150_000


@dataclass
class Data:
    """A labelled train/test split ready for the loop.

    Attributes:
        name: the dataset spec it came from.
        train, test: ``GraphDataset`` views with class labels (space-group number - 1).
        train_labels, test_labels: int64 space-group numbers (1..230) of the two parts.
    """

    name: str
    train: object
    test: object
    train_labels: np.ndarray
    test_labels: np.ndarray


def default_cache_dir() -> Path:
    """``$ALKERNELS_CACHE`` or ``~/.cache/alkernels``: generated structures and graphs."""
    return Path(os.environ.get("ALKERNELS_CACHE", Path.home() / ".cache" / "alkernels"))


def load_data(spec: str, *, label: str | None = None, structures: int | None = None,
              split: Sequence[float] = (0.8, 0.2), cutoff: float = 4.0, graph_mode: str = "periodic",
              cache_dir: str | os.PathLike | None = None, workers: int | None = None) -> Data:
    """Read or generate a dataset, build its graphs and split it into train and test.

    Args:
        spec: ``builtin:N`` (N synthetic crystals, seed 0), ``builtin`` (``structures`` of them,
            or ``DEFAULT_BUILTIN_SIZE``),
            or a path in any format ``alkernels.data.read_structures`` reads.
        label: for a path: ``"spacegroup"`` (spglib) or the name of a column of space-group
            numbers (1..230). Required for paths.
        structures: keep a fixed random subset (seed 0) of at most this many (for ``builtin``
            without N, generate this many).
        split: (train, test) or (train, val, test) fractions; stratified by crystal family.
        cutoff, graph_mode: graph construction.
        cache_dir: cache for generated structures and graphs (default :func:`default_cache_dir`).
        workers: processes for generation and graph building.
    """
    from alkernels import data

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if spec == "builtin" or spec.startswith("builtin:"):
        size = spec.partition(":")[2]
        if size and not size.isdigit():
            raise ValueError(f"dataset {spec!r}: expected builtin:N with a positive integer N")
        n = int(size) if size else (structures or DEFAULT_BUILTIN_SIZE)
        if n < 1:
            raise ValueError(f"dataset {spec!r}: N must be positive")
        structset = data.synthetic_crystals(n, seed=0, workers=workers, cache_dir=cache)
    else:
        if not Path(spec).exists():
            raise ValueError(f"dataset {spec!r} is neither builtin:N nor an existing path")
        if label is None:
            raise ValueError(f"dataset {spec!r} has no labels: pass --label spacegroup or a column name")
        structset = data.read_structures(spec, label=label)
    if structset.labels is None or len(structset) == 0:
        raise ValueError(f"dataset {spec!r} has no labelled structures")
    labels = np.asarray(structset.labels, dtype=np.int64)
    if labels.min() < 1 or labels.max() > 230:
        raise ValueError(f"dataset {spec!r}: labels must be space-group numbers 1..230, "
                         f"got {labels.min()}..{labels.max()}")
    graphs = data.build_graphs(structset, cutoff=cutoff, mode=graph_mode, workers=workers, cache_dir=cache)
    dataset = data.GraphDataset(graphs, y=labels - 1)
    keep = np.arange(len(dataset))
    if structures is not None and len(dataset) > structures:
        keep = np.sort(np.random.default_rng(0).permutation(len(dataset))[:structures])
    dataset = dataset.subset(keep)
    parts = data.split(dataset, split, seed=0, stratify="crystal_family", spacegroups=labels[keep])
    train, test = parts[0], parts[-1]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"dataset {spec!r}: {len(dataset)} structures are too few to split {tuple(split)}")
    return Data(spec, train, test, labels[train.indices], labels[test.indices])


def make_model(backend: str = "auto", dropout: float = 0.1) -> nn.Module:
    """The paper's classifier: EGNN encoder + the toolkit head with dropout, 230 logits."""
    from alkernels.models import EGNN, SpaceGroupClassifier

    return SpaceGroupClassifier(EGNN(backend=backend), dropout=dropout)


def make_strategy(name: str, *, passes: int = 10, cache_dir: str | os.PathLike | None = None):
    """A registered strategy with the options that apply to it (MC passes, order cache)."""
    if name in strategies_mod.MC_PASS:
        return strategies_mod.get(name, passes=passes)
    if name in ("center_of_mass", "umap"):
        return strategies_mod.get(name, cache_dir=cache_dir)
    return strategies_mod.get(name)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: ``variant`` is "keep", "reset" or "standard"."""

    strategy: str
    variant: str
    seed: int

    def folder(self, out: Path) -> Path:
        if self.variant == "standard":
            return out / "runs" / "standard" / f"seed{self.seed}"
        return out / "runs" / self.variant / self.strategy / f"seed{self.seed}"


def grid(strategy_names: Sequence[str], seeds: int, variants: Sequence[str]) -> list[Cell]:
    """Every cell: the standard runs first, then strategy x variant x seed."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown reset variant {v!r}; use one of {', '.join(VARIANTS)}")
    for s in strategy_names:
        if s not in strategies_mod.available():
            raise ValueError(f"unknown strategy {s!r}; available: {', '.join(strategies_mod.available())}")
    cells = [Cell("random", "standard", s) for s in range(seeds)]
    cells += [Cell(n, v, s) for v in variants for n in strategy_names for s in range(seeds)]
    return cells


def run_cell(cell: Cell, data: Data, preset: Preset, out: Path, *, device: str = "cpu",
             progress: bool = False) -> dict:
    """Run (or finish) one cell; returns ``{"cell", "seconds", "records"}``."""
    t0 = time.perf_counter()
    folder = cell.folder(out)
    n = len(data.train)
    standard = cell.variant == "standard"
    loop = ActiveLearningLoop(
        partial(make_model, preset.backend, preset.dropout),
        make_strategy(cell.strategy, passes=preset.passes, cache_dir=out / "cache"),
        data.train, data.test,
        initial=n if standard else preset.initial, query_size=preset.query_size,
        rounds=1 if standard else preset.rounds, epochs=preset.epochs,
        reset_weights=cell.variant == "reset", seed=cell.seed, out_dir=folder,
        batch_size=preset.batch_size, lr=preset.lr, device=device, progress=progress,
        metadata={"variant": cell.variant, "dataset": data.name, "preset": preset.name})
    records = loop.run(resume=True)
    return {"cell": asdict(cell), "seconds": time.perf_counter() - t0, "records": records}


_WORKER: dict = {}


def _init_worker(data: Data, preset: Preset, out: Path, device: str) -> None:
    torch.set_num_threads(1)
    _WORKER.update(data=data, preset=preset, out=out, device=device)


def _run_in_worker(cell: Cell) -> dict:
    return run_cell(cell, _WORKER["data"], _WORKER["preset"], _WORKER["out"], device=_WORKER["device"])


def _finished(cell: Cell, out: Path, preset: Preset) -> bool:
    want = 1 if cell.variant == "standard" else preset.rounds
    return len(read_records(cell.folder(out) / "records.jsonl")) == want


def reproduce(data: Data, preset: Preset, out: str | os.PathLike, *, strategy_names: Sequence[str],
              seeds: int = 3, variants: Sequence[str] = VARIANTS, processes: int = 1,
              device: str = "cpu", log: Callable[[str], None] = print) -> dict:
    """Run the grid into ``out`` and write ``out/experiment.json``; returns its content.

    Args:
        data: the split from :func:`load_data`.
        preset: sizes and settings.
        strategy_names: registered strategy names.
        seeds: seeds 0..seeds-1 per strategy and variant.
        variants: any of ``VARIANTS``.
        processes: cells run in parallel worker processes (one torch thread each) when > 1.
        device: torch device of the model.
        log: receives one line per finished cell.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = grid(strategy_names, seeds, variants)
    todo = [c for c in cells if not _finished(c, out, preset)]
    log(f"{len(cells)} runs ({len(cells) - len(todo)} already finished), train {len(data.train)}, "
        f"test {len(data.test)}, {processes} process(es)")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    if processes > 1 and todo:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_worker,
                                 initargs=(data, preset, out, device)) as pool:
            futures = [pool.submit(_run_in_worker, c) for c in todo]
            for k, fut in enumerate(as_completed(futures), 1):
                res = fut.result()
                seconds[str(Cell(**res["cell"]).folder(out).relative_to(out))] = res["seconds"]
                log(f"[{k}/{len(todo)}] {res['cell']['variant']}/{res['cell']['strategy']}/"
                    f"seed{res['cell']['seed']}: {res['seconds']:.1f} s")
    else:
        for k, cell in enumerate(todo, 1):
            res = run_cell(cell, data, preset, out, device=device)
            seconds[str(cell.folder(out).relative_to(out))] = res["seconds"]
            log(f"[{k}/{len(todo)}] {cell.variant}/{cell.strategy}/seed{cell.seed}: {res['seconds']:.1f} s")
    wall = time.perf_counter() - t0
    meta_path = out / "experiment.json"
    previous = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta = {
        "dataset": data.name, "preset": asdict(preset), "strategies": list(strategy_names),
        "seeds": seeds, "variants": list(variants), "processes": processes,
        "n_train": len(data.train), "n_test": len(data.test),
        "train_spacegroups": data.train_labels.tolist(), "test_spacegroups": data.test_labels.tolist(),
        "wall_seconds": previous.get("wall_seconds", 0.0) + wall,
        "cell_seconds": {**previous.get("cell_seconds", {}), **seconds},
    }
    meta_path.write_text(json.dumps(meta))
    return meta


def preset_with(name: str, **overrides) -> Preset:
    """The named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
