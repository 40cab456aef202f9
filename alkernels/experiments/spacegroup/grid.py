"""The reproduction grid of the paper's Table 1 (protocol A of ``docs/protocols.md``).

A grid is every strategy x seed x weight-reset variant, each an :class:`ActiveLearningLoop` in
its own folder under ``out/runs/<variant>/<strategy>/seed<k>``, plus one "standard" run per seed
that trains on the whole training set for one round of the same number of epochs. Finished cells
are skipped and interrupted ones resumed, so re-running the same command continues a grid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from alkernels import distributed as dist_mod
from alkernels import strategies as strategies_mod
from alkernels._paths import user_path
from alkernels.experiments._grid import CellsFailedError, Grid, run_grid
from alkernels.experiments._report import read_packed_runs
from alkernels.loop.loop import ActiveLearningLoop, LoopConfig, LoopRuntime
from alkernels.loop.rundir import RunDirectory, SettingsChangedError, read_records, settings_changes
from alkernels.models import paper_classifier

if TYPE_CHECKING:  # the data extra: the presets (and `alkernels run --help`) need none
    from alkernels.data.specs import DatasetSplit

__all__ = [
    "VARIANTS",
    "PRESETS",
    "Preset",
    "Cell",
    "SpacegroupGrid",
    "CellsFailedError",
    "grid",
    "cell_loop",
    "reproduce",
    "preset_with",
]

#: Weight-reset variants: "keep" carries weights over between rounds (the paper's Table 1),
#: "reset" reloads the original initial weights (and a fresh optimiser) every round.
VARIANTS = ("keep", "reset")


@dataclass(frozen=True)
class Preset:
    """Sizes and settings of one experiment scale.

    Attributes:
        name: preset name.
        structures: the size of a generated dataset given without ``:N``, and a cap for any
            dataset (a fixed random subset of this many structures; None = all).
        split: (train, test) fractions, or (train, val, test) where val is left unused; split by
            crystal family with seed 0, the same for every run.
        cutoff, graph_mode: neighbour graphs (see ``alkernels.data.build_graphs``).
        rounds, initial, query_size: the AL schedule (fractions of the training split).
        epochs: epochs per round (and of the standard run).
        epoch_budget: instead of ``epochs``, the compute-matched schedule of
            :mod:`alkernels.loop.epochs`: ``epoch_budget`` full-training-set epochs in total per
            run, the same share per round; the standard run then trains ``epoch_budget`` epochs.
        lr, weight_decay, batch_size: AdamW learning rate, weight decay and batch size.
        dropout: head dropout of the classifier (MC strategies need > 0).
        encoder_dropout: dropout on the encoder's node state (0 in the paper's model; a labelled
            variant otherwise, recorded in every run's config as ``model.encoder.dropout``).
        passes: MC-dropout passes T.
        backend: EGNN edge-op backend.
        precision: matmul precision of the fused edge kernels, ``fp32``, ``tf32`` or ``bf16``
            (float32 accumulation); on a CUDA device anything but ``fp32`` also lets torch's own
            matmuls use TF32. The C++ CPU kernels take ``fp32`` or ``bf16`` (``tf32`` runs
            as ``fp32`` under backend ``auto``); the torch backend computes in float32.
        dataset: the dataset spec used when the command gives none.
        label_mode: the classes (``alkernels.data.LABEL_MODES``); runs record it in their config
            when it is not the paper's ``"spacegroup"``.
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
    epoch_budget: float | None = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 24
    dropout: float = 0.1
    encoder_dropout: float = 0.0
    passes: int = 10
    backend: str = "auto"
    precision: str = "fp32"
    dataset: str = "builtin"
    label_mode: str = "spacegroup"

    def loop_config(self, cell: Cell, n_train: int) -> LoopConfig:
        """The :class:`LoopConfig` of a cell: the AL schedule, or for the standard run one round
        on all ``n_train`` structures; weights reset every round in the ``reset`` variant."""
        standard = cell.variant == "standard"
        return LoopConfig(
            initial=n_train if standard else self.initial,
            query_size=self.query_size,
            rounds=1 if standard else self.rounds,
            epochs=self.epochs,
            epoch_budget=self.epoch_budget,
            reset_weights=cell.variant == "reset",
            seed=cell.seed,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
        )


PRESETS: dict[str, Preset] = {
    # The paper's protocol: 10% chunks, 10 rounds, 25 epochs, AdamW 1e-4, batch 24, the toolkit's
    # in-cell graphs; 70/20/10 split within each crystal family (validation part unused).
    # On a GPU: the auto backend picks the Triton kernels, whose matmuls take TF32 inputs
    # (float32 accumulation; --precision fp32 or bf16 to change).
    "paper": Preset(
        "paper",
        structures=None,
        split=(0.7, 0.2, 0.1),
        cutoff=20.0,
        graph_mode="matsciml",
        epochs=25,
        lr=1e-4,
        precision="tf32",
    ),
    # CPU-sized: same schedule (10% chunks, 10 rounds), 300 structures (240 train / 60 test),
    # periodic graphs with a 4 A cutoff, 1 epoch per round at lr 1e-3 to make up for the epochs.
    # A smoke test of the whole pipeline (the model does not learn at this size).
    "quick": Preset("quick", structures=300, split=(0.8, 0.2), cutoff=4.0, graph_mode="periodic", epochs=1, lr=1e-3),
    # The CPU study (experiments/spacegroup/README.md): 2,500 generated perovskite-derived cells
    # (2,000 train / 500 test, 17 space groups, majority class 22.8% of the test split), the paper's
    # schedule (10% chunks, 10 rounds) with 3 epochs per round at lr 1e-3, fused kernels. Chosen by the
    # scale search (experiments/spacegroup/scale/): the standard run clears 1.5x the majority rate and
    # random's curve still rises at 100%, for about 1.2 core-minutes per AL run.
    "cpu": Preset(
        "cpu",
        structures=None,
        split=(0.8, 0.2),
        cutoff=4.5,
        graph_mode="periodic",
        epochs=3,
        lr=1e-3,
        dataset="perovskite:2500",
    ),
    # The first five minutes (make demo): 2,500 generated perovskite-derived cells (2,000 train /
    # 500 test), 10% to 50% labelled in 5 rounds of 8 epochs, fused kernels. The model learns the
    # tilt systems and polar distortions within that budget, so strategies can differ.
    "demo": Preset(
        "demo",
        structures=None,
        split=(0.8, 0.2),
        cutoff=4.5,
        graph_mode="periodic",
        rounds=5,
        epochs=8,
        lr=1e-3,
        dataset="perovskite:2500",
    ),
}


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
    """Every cell, in the order they run: the standard runs first, then per variant seed by seed
    (every strategy of seed 0, then of seed 1, ...), so an interrupted grid leaves whole seeds,
    which the paired statistics can use, rather than whole strategies."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown reset variant {v!r}; use one of {', '.join(VARIANTS)}")
    for s in strategy_names:
        if s not in strategies_mod.available():
            raise ValueError(f"unknown strategy {s!r}; available: {', '.join(strategies_mod.available())}")
    cells = [Cell("random", "standard", s) for s in range(seeds)]
    cells += [Cell(n, v, s) for v in variants for s in range(seeds) for n in strategy_names]
    return cells


def cell_loop(
    cell: Cell,
    data: DatasetSplit,
    preset: Preset,
    out: Path,
    *,
    device: str = "cpu",
    progress: bool = False,
    distributed: bool = False,
) -> ActiveLearningLoop:
    """The :class:`ActiveLearningLoop` of one cell (not yet run), writing to ``cell.folder(out)``."""
    return ActiveLearningLoop(
        partial(
            paper_classifier,
            preset.backend,
            preset.dropout,
            preset.precision,
            num_classes=data.num_classes,
            encoder_dropout=preset.encoder_dropout,
        ),
        strategies_mod.make(cell.strategy, passes=preset.passes, cache_dir=out / "cache"),
        data.train,
        data.test,
        preset.loop_config(cell, len(data.train)),
        out_dir=cell.folder(out),
        runtime=LoopRuntime(device=device, progress=progress, distributed=distributed),
        metadata={
            "variant": cell.variant,
            "dataset": data.name,
            "preset": preset.name,
            **({"label_mode": data.label_mode} if data.label_mode != "spacegroup" else {}),
        },
    )


@dataclass
class SpacegroupGrid(Grid[Cell]):
    """The grid of one preset in ``out`` (see :func:`reproduce` for the arguments)."""

    data: DatasetSplit
    preset: Preset
    out: Path
    strategy_names: tuple[str, ...]
    seeds: int
    variants: tuple[str, ...]
    device: str = "cpu"
    distributed: bool = False
    restart_round: bool = False
    packed: dict[str, dict] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        return grid(self.strategy_names, self.seeds, self.variants)

    def name(self, cell: Cell) -> str:
        return str(cell.folder(self.out).relative_to(self.out))

    def is_finished(self, cell: Cell) -> bool:
        """Whether the cell's run is complete in ``out/runs/`` or, with the same settings, among
        the runs packed into ``out/runs.jsonl`` (a committed grid, continued without its ``runs/``).

        A finished run (folder or packed) matches when every setting it records equals this
        cell's (runs made by an earlier alkernels record fewer identity keys; the keys they have
        must all match); an unfinished run folder must match exactly, as resuming it requires.
        """
        want = 1 if cell.variant == "standard" else self.preset.rounds
        folder = cell.folder(self.out)
        run_dir = RunDirectory(folder)

        def config() -> dict:
            return json.loads(json.dumps(cell_loop(cell, self.data, self.preset, self.out).config()))

        if run_dir.has_run():
            if len(read_records(run_dir.records_path)) < want:
                run_dir.check_identity(config(), resume=True)
                return False
            changed = settings_changes(run_dir.read_config(), config(), recorded_only=True)
            if changed:
                raise SettingsChangedError(
                    f"{folder} holds a finished run with other settings ({'; '.join(changed)}); "
                    "use the original settings or another output folder"
                )
            return True
        run = self.packed.get(self.name(cell))
        if run is None or len(run["records"]) != want:
            return False
        return not settings_changes(run["config"], config(), recorded_only=True)

    def run_cell(self, cell: Cell) -> dict:
        if self.preset.precision != "fp32" and torch.device(self.device).type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 also for the torch matmuls outside the edge op
        loop = cell_loop(cell, self.data, self.preset, self.out, device=self.device, distributed=self.distributed)
        return {"rounds": len(loop.run(resume=True, restart_round=self.restart_round))}

    def settings(self) -> dict:
        return {
            "dataset": self.data.name,
            "preset": asdict(self.preset),
            "strategies": list(self.strategy_names),
            "seeds": self.seeds,
            "variants": list(self.variants),
            "n_train": len(self.data.train),
            "n_test": len(self.data.test),
            "train_spacegroups": self.data.train_labels.tolist(),
            "test_spacegroups": self.data.test_labels.tolist(),
        }

    def opening(self, total: int, todo: int, processes: int, threads: int) -> str:
        return (
            f"{total} runs ({total - todo} already finished), train {len(self.data.train)}, "
            f"test {len(self.data.test)}, {processes} process(es) x {threads} thread(s)"
        )


def reproduce(
    data: DatasetSplit,
    preset: Preset,
    out: str | os.PathLike,
    *,
    strategy_names: Sequence[str],
    seeds: int = 3,
    variants: Sequence[str] = VARIANTS,
    processes: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    distributed: bool = False,
    restart_round: bool = False,
) -> dict:
    """Run the grid into ``out`` and keep ``out/experiment.json`` current; returns its content.

    ``experiment.json`` holds the settings, the split labels, the accumulated time and the seconds
    per finished cell (see :func:`alkernels.experiments._grid.run_grid`). Several processes, on
    one machine or on nodes sharing ``out``, may run the same call at once: each claims the cells
    it runs and skips those others hold.

    A cell counts as done when its folder under ``out/runs/`` holds every round, or when
    ``out/runs.jsonl`` (the compact records a report writes, and what gets committed) holds the
    finished run; in both cases with the same settings. So a committed grid is continued by
    pointing ``out`` at a folder holding its ``runs.jsonl`` and ``experiment.json``, and a run
    folder made with other settings stops the grid before any work, naming it.

    Args:
        data: the split from :func:`alkernels.data.load_split`.
        preset: the schedule and model settings.
        out: the grid's folder.
        strategy_names: registered strategy names.
        seeds: seeds 0..seeds-1 per strategy and variant.
        variants: any of ``VARIANTS``.
        processes: cells run in parallel worker processes when > 1 (spawned with
            ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets a policy).
        threads: torch / OpenMP threads of each worker process; default: the usable cores
            divided by ``processes`` (at least 1). With ``processes == 1`` the calling process's
            setting is left alone unless ``threads`` is given.
        device: torch device of the model.
        log: receives the opening line (runs to do, split sizes) and, without a terminal for the
            progress bar, a line per finished run; by default they go to the
            ``alkernels.experiments`` logger at INFO (failures as warnings).
        distributed: every rank of a torchrun job calls this; the cells run one after the other,
            each on all ranks (``ActiveLearningLoop`` with ``distributed=True``). Rank 0 decides
            which cells are left and alone writes ``out``; ``processes`` must be 1.
        restart_round: discard damaged checkpoints of unfinished cells and redo their last round.

    Raises:
        SettingsChangedError: before any work, naming every run folder made with other settings.
        CellsFailedError: after every other cell has run, when some raised (a damaged
            checkpoint, a worker process that died, ...); each failure is also logged as it
            happens. In a distributed grid the first failure stops every rank instead.
    """
    out = user_path(out)
    writes = not distributed or dist_mod.is_rank_zero()
    study = SpacegroupGrid(
        data,
        preset,
        out,
        tuple(strategy_names),
        seeds,
        tuple(variants),
        device=device,
        distributed=distributed,
        restart_round=restart_round,
        packed={r["run"]: r for r in read_packed_runs(out)} if writes else {},
    )
    return run_grid(study, processes=processes, threads=threads, log=log, distributed=distributed)


def preset_with(name: str, **overrides) -> Preset:
    """The named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
