"""The regression AL grid of protocol B: strategies x seeds, each a :class:`GPActiveLearner`.

A grid runs every (strategy, batch) of its preset for seeds 0..seeds-1 into
``out/runs/<strategy>-b<batch>/seed<k>``. The test split is fixed (seed 0) for the whole grid;
a seed draws the initial set, and with the ``train-initial`` embedding the encoder trained on
it, so every strategy of one seed starts from the same labelled set and the same features (the
encoder is trained once per seed and cached under ``out/cache``). Finished runs are skipped and
interrupted ones resumed, so re-running the same command continues a grid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from alkernels._paths import user_path
from alkernels.data.specs import RegressionData, load_regression
from alkernels.experiments._grid import Grid, run_grid
from alkernels.gp import Embedding, GPActiveLearner, GPConfig, GPLoopConfig, get_strategy
from alkernels.gp.embeddings import file_digest, parse_embedding
from alkernels.loop.rundir import read_records

#: The name under which ``experiment.json`` records this study (``alkernels report`` dispatches on it).
STUDY = "gp-regression"


@dataclass(frozen=True)
class Preset:
    """One experiment of the study.

    Attributes:
        name: preset name.
        files: the structure files (names inside the data folder), read as one dataset.
        target: the property column.
        test_fraction: the fixed held-out test fraction (seed 0).
        initial: the initial labelled set, a fraction of the pool or a count.
        queries: labels acquired after it.
        arms: ``(strategy, batch)`` pairs to run.
        embedding: ``train-initial``, ``composition`` or ``checkpoint:PATH``.
        embedding_epochs, embedding_lr: the encoder training of ``train-initial``.
        cutoff, graph_mode: the EGNN's neighbour graphs.
        gp: the GP's :class:`~alkernels.gp.GPConfig`.
        max_structures: a fixed random subset (seed 0) of at most this many structures.
        checkpoint_every: steps between checkpoints of a run.
    """

    name: str
    files: tuple[str, ...]
    target: str
    test_fraction: float = 0.2
    initial: float | int = 0.1
    queries: int = 3000
    arms: tuple[tuple[str, int], ...] = (("gp_variance", 1), ("gp_batch_variance", 10), ("random", 1))
    embedding: str = "train-initial"
    embedding_epochs: int = 100
    embedding_lr: float = 1e-3
    cutoff: float = 5.0
    graph_mode: str = "periodic"
    gp: GPConfig = GPConfig()
    max_structures: int | None = None
    checkpoint_every: int = 500


_PEROVSKITE = ("perov5_val.csv.gz", "perov5_test.csv.gz")
PRESETS: dict[str, Preset] = {
    # The main experiment: both perovskite files (7,572 structures), a fixed 20% test
    # split, 10% of the pool labelled at the start, 3,000 single queries (batches of 10 for the
    # greedy arm), plain top-10 variance as the batch baseline.
    "perovskite": Preset(
        "perovskite",
        _PEROVSKITE,
        "heat_ref",
        arms=(("gp_variance", 1), ("gp_batch_variance", 10), ("gp_variance", 10), ("random", 1)),
    ),
    # The same with the model-free composition descriptor instead of a trained encoder.
    "perovskite-composition": Preset(
        "perovskite-composition",
        _PEROVSKITE,
        "heat_ref",
        embedding="composition",
        arms=(("gp_variance", 1), ("gp_batch_variance", 10), ("gp_variance", 10), ("random", 1)),
    ),
    # The study's setting, fairly: features from an encoder pre-trained on a separate, larger
    # labelled set. The encoder is pre-trained on heat_ref of perov5_val.csv.gz (3,787 structures,
    # `alkernels transfer`, command in experiments/gp-regression/README.md) and given with
    # --embedding checkpoint:PATH; the AL runs on perov5_test.csv.gz alone (3,028 pool / 757 test),
    # 10% initial (303), 2,000 single queries, variance against random.
    "perovskite-pretrained": Preset(
        "perovskite-pretrained",
        ("perov5_test.csv.gz",),
        "heat_ref",
        queries=2000,
        embedding="checkpoint",
        arms=(("gp_variance", 1), ("random", 1)),
    ),
    # Materials Project formation energy per atom on the 1,130-structure sample: 904 pool / 226
    # test, 90 initial, 600 queries (the pool cannot hold the study's 1,800 + 3,000).
    "mp20": Preset("mp20", ("mp20_sample.csv.gz",), "formation_energy_per_atom", queries=600),
    "mp20-composition": Preset(
        "mp20-composition", ("mp20_sample.csv.gz",), "formation_energy_per_atom", queries=600, embedding="composition"
    ),
}


def _embedding_record(preset: Preset) -> dict:
    """The preset's embedding as ``experiment.json`` records it: a checkpoint by its file name and
    content hash (no machine path)."""
    kind, path = parse_embedding(preset.embedding)
    if kind != "checkpoint" or path is None:
        return {}
    return {"embedding": f"checkpoint:{Path(path).name}", "checkpoint_sha256": file_digest(path)}


def preset_with(name: str, **overrides) -> Preset:
    """The named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    strategy: str
    batch: int
    seed: int

    @property
    def arm(self) -> str:
        return f"{self.strategy}-b{self.batch}"

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.arm / f"seed{self.seed}"


def grid(preset: Preset, seeds: int) -> list[Cell]:
    """Every cell, seed-major (the first cell of a seed trains the shared encoder)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    for strategy, batch in preset.arms:
        get_strategy(strategy)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
    return [Cell(s, b, seed) for seed in range(seeds) for s, b in preset.arms]


def load_data(
    preset: Preset,
    data_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> RegressionData:
    """The preset's dataset from ``data_dir``, split and with graphs."""
    spec = ",".join(str(user_path(data_dir) / f) for f in preset.files)
    return load_regression(
        spec,
        preset.target,
        test_fraction=preset.test_fraction,
        structures=preset.max_structures,
        cutoff=preset.cutoff,
        graph_mode=preset.graph_mode,
        cache_dir=cache_dir,
        workers=workers,
    )


@dataclass
class RegressionGrid(Grid[Cell]):
    """The grid of one preset in ``out`` (see :func:`reproduce` for the arguments)."""

    data: RegressionData
    preset: Preset
    out: Path
    seeds: int
    device: str = "cpu"
    backend: str = "auto"
    progress: bool = False
    indent: int | None = 1

    def cells(self) -> list[Cell]:
        return grid(self.preset, self.seeds)

    def name(self, cell: Cell) -> str:
        return str(cell.folder(self.out).relative_to(self.out))

    def is_finished(self, cell: Cell) -> bool:
        steps = -(-self.preset.queries // cell.batch) + 1
        return len(read_records(cell.folder(self.out) / "records.jsonl")) == steps

    def run_cell(self, cell: Cell) -> dict:
        preset, data = self.preset, self.data
        embedding = Embedding(
            preset.embedding,
            epochs=preset.embedding_epochs,
            lr=preset.embedding_lr,
            backend=self.backend,
            device=self.device,
            cache_dir=self.out / "cache",
            progress=self.progress,
        )
        learner = GPActiveLearner(
            partial(embedding, data.dataset),
            data.y,
            data.train,
            data.test,
            GPLoopConfig(
                strategy=cell.strategy,
                initial=preset.initial,
                queries=preset.queries,
                batch=cell.batch,
                seed=cell.seed,
                checkpoint_every=preset.checkpoint_every,
            ),
            out_dir=cell.folder(self.out),
            gp=preset.gp,
            progress=self.progress,
            metadata={"dataset": data.name, "target": data.target, "preset": preset.name, **embedding.describe()},
        )
        return {"steps": len(learner.run(resume=True))}

    def settings(self) -> dict:
        return {
            "study": STUDY,
            "dataset": self.data.name,
            "preset": {**asdict(self.preset), "gp": self.preset.gp.overrides(), **_embedding_record(self.preset)},
            "seeds": self.seeds,
            "n_train": len(self.data.train),
            "n_test": len(self.data.test),
            "skipped": len(self.data.skipped),
            "target_std_test": float(self.data.y[self.data.test].std()),
        }

    def opening(self, total: int, todo: int, processes: int, threads: int) -> str:
        data = self.data
        return (
            f"{total} runs ({total - todo} already finished): {len(data.train)} pool / "
            f"{len(data.test)} test structures of {data.name}, target {data.target}"
        )


def reproduce(
    data: RegressionData,
    preset: Preset,
    out: str | os.PathLike,
    *,
    seeds: int = 5,
    device: str = "cpu",
    backend: str = "auto",
    progress: bool = False,
    processes: int = 1,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the grid into ``out`` and keep ``out/experiment.json`` current; returns its content.

    Several processes, on one machine or on nodes sharing ``out``, may run the same call at once:
    each claims the cells it runs and skips those others hold (see
    :func:`alkernels.experiments._grid.run_grid`); one seed's encoder is trained once.

    Args:
        data: the split from :func:`load_data`.
        preset: the study's settings.
        out: the grid's folder.
        seeds: seeds 0..seeds-1 per arm.
        device, backend: the encoder's torch device and EGNN edge-op backend.
        progress: progress bars (the grid's, the encoder training's, each run's).
        processes, threads: worker processes and their threads (as for the spacegroup grid).
        log: receives the opening line and a line per finished run without a terminal; by
            default they go to the ``alkernels.experiments`` logger at INFO.

    Raises:
        CellsFailedError: after every other cell has run, when some raised.
    """
    study = RegressionGrid(data, preset, user_path(out), seeds, device=device, backend=backend, progress=progress)
    return run_grid(study, processes=processes, threads=threads, progress=progress, log=log)


def arms_of(names: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """``["gp_variance:1", "random"]`` -> ``(("gp_variance", 1), ("random", 1))``."""
    arms = []
    for name in names:
        strategy, _, batch = name.partition(":")
        if batch and not batch.isdigit():
            raise ValueError(f"arm {name!r}: expected STRATEGY or STRATEGY:BATCH")
        arms.append((strategy, int(batch or 1)))
    return tuple(arms)
