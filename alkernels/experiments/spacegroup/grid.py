"""The reproduction grid of the paper's Table 1 (protocol A of ``docs/protocols.md``).

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

import torch
from tqdm.auto import tqdm

from alkernels import distributed as dist_mod
from alkernels import strategies as strategies_mod
from alkernels._threads import threads_per_worker
from alkernels.data.specs import DatasetSplit
from alkernels.loop.loop import ActiveLearningLoop, LoopConfig, LoopRuntime
from alkernels.loop.rundir import (
    RunDirectory,
    SettingsChangedError,
    atomic_write_bytes,
    claim_folder,
    read_records,
    settings_changes,
)
from alkernels.models import paper_classifier

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
        passes: MC-dropout passes T.
        backend: EGNN edge-op backend.
        precision: matmul precision of the GPU (Triton) edge kernels, ``fp32``, ``tf32`` or
            ``bf16`` (float32 accumulation); anything but ``fp32`` also lets torch's own matmuls
            on a CUDA device use TF32. The CPU backends compute in float32 whatever this says.
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
        partial(paper_classifier, preset.backend, preset.dropout, preset.precision, num_classes=data.num_classes),
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


def run_cell(
    cell: Cell,
    data: DatasetSplit,
    preset: Preset,
    out: Path,
    *,
    device: str = "cpu",
    progress: bool = False,
    distributed: bool = False,
    restart_round: bool = False,
) -> dict:
    """Run (or finish) one cell; returns ``{"cell", "seconds", "records"}``. With
    ``distributed=True`` every rank of the torchrun job calls it for the same cell;
    ``restart_round`` discards a damaged checkpoint of the cell (see ``ActiveLearningLoop.run``)."""
    t0 = time.perf_counter()
    if preset.precision != "fp32" and torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 also for the torch matmuls outside the edge op
    loop = cell_loop(cell, data, preset, out, device=device, progress=progress, distributed=distributed)
    records = loop.run(resume=True, restart_round=restart_round)
    return {"cell": asdict(cell), "seconds": time.perf_counter() - t0, "records": records}


class CellsFailedError(RuntimeError):
    """Some cells of a grid raised while the others ran to the end; the finished ones are in
    the grid's folder and ``experiment.json``. ``failures`` maps each failed cell's run folder
    (relative to the grid) to its exception."""

    def __init__(self, failures: dict[str, BaseException], attempted: int) -> None:
        self.failures, self.attempted = failures, attempted
        lines = "; ".join(f"{name}: {type(err).__name__}: {err}" for name, err in failures.items())
        super().__init__(f"{len(failures)} of the {attempted} runs left failed, the others finished: {lines}")

    def __reduce__(self) -> tuple:
        return type(self), (self.failures, self.attempted)


_WORKER: dict = {}


def _init_worker(data: DatasetSplit, preset: Preset, out: Path, device: str, threads: int, restart_round: bool) -> None:
    torch.set_num_threads(threads)  # torch and the fused C++ kernels share one OpenMP pool
    _WORKER.update(data=data, preset=preset, out=out, device=device, restart_round=restart_round)


def _run_in_worker(cell: Cell) -> dict:
    return run_cell(
        cell,
        _WORKER["data"],
        _WORKER["preset"],
        _WORKER["out"],
        device=_WORKER["device"],
        restart_round=_WORKER["restart_round"],
    )


def _finished(cell: Cell, out: Path, preset: Preset, packed: dict[str, dict], data: DatasetSplit) -> bool:
    """Whether the cell's run is complete in ``out/runs/`` or, with the same settings, among the
    runs packed into ``out/runs.jsonl`` (a committed grid, continued without its ``runs/``).

    A finished run (folder or packed) matches when every setting it records equals this cell's
    (runs made by an earlier alkernels record fewer identity keys; the keys they have must all
    match); an unfinished run folder must match exactly, as resuming it requires.

    Raises:
        SettingsChangedError: the cell's run folder holds a run with other settings.
    """
    want = 1 if cell.variant == "standard" else preset.rounds
    folder = cell.folder(out)
    run_dir = RunDirectory(folder)

    def config() -> dict:
        return json.loads(json.dumps(cell_loop(cell, data, preset, out).config()))

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
    run = packed.get(str(folder.relative_to(out)))
    if run is None or len(run["records"]) != want:
        return False
    return not settings_changes(run["config"], config(), recorded_only=True)


def _packed_runs(out: Path) -> dict[str, dict]:
    """The runs packed into ``out/runs.jsonl`` by run folder (empty when there is none)."""
    path = out / "runs.jsonl"
    if not path.is_file():
        return {}
    runs = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["run"]: r for r in runs}


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
    log: Callable[[str], None] = print,
    distributed: bool = False,
    restart_round: bool = False,
) -> dict:
    """Run the grid into ``out`` and keep ``out/experiment.json`` current; returns its content.

    ``experiment.json`` (settings, split labels, accumulated wall time, seconds per finished cell)
    is written before the first cell and after every finished one, so an interrupted grid still
    has it.

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
            progress bar, a line per finished run.
        distributed: every rank of a torchrun job calls this; the cells run one after the other,
            each on all ranks (``ActiveLearningLoop(distributed=True)``). Rank 0 decides which
            cells are left and alone writes ``out``; ``processes`` must be 1.
        restart_round: discard damaged checkpoints of unfinished cells and redo their last round.

    Raises:
        SettingsChangedError: before any work, naming every run folder made with other settings.
        CellsFailedError: after every other cell has run, when some raised (a damaged
            checkpoint, a worker process that died, ...); each failure is also logged as it
            happens. In a distributed grid the first failure stops every rank instead.
    """
    if distributed and processes != 1:
        raise ValueError("a distributed grid runs one cell at a time on all ranks; use processes=1")
    out = Path(out)
    writes = not distributed or dist_mod.is_rank_zero()
    if writes:
        claim_folder(out)  # a folder alkernels did not create is refused, untouched
    cells = grid(strategy_names, seeds, variants)
    packed = _packed_runs(out) if writes else {}

    def unfinished() -> list[Cell]:
        """The cells left to run; refuses, before any work, run folders with other settings."""
        todo, clashes = [], []
        for c in cells:
            try:
                if not _finished(c, out, preset, packed, data):
                    todo.append(c)
            except SettingsChangedError as err:
                clashes.append((c, err))
        if clashes:
            names = ", ".join(str(c.folder(out).relative_to(out)) for c, _ in clashes)
            raise SettingsChangedError(
                f"{len(clashes)} run folder(s) of {out} hold other settings ({names}); the first: {clashes[0][1]}"
            )
        return todo

    todo = dist_mod.on_rank_zero(unfinished, what="listing unfinished cells") if distributed else unfinished()
    per_worker = threads_per_worker(processes, threads)
    log(
        f"{len(cells)} runs ({len(cells) - len(todo)} already finished), train {len(data.train)}, "
        f"test {len(data.test)}, {processes} process(es) x {per_worker} thread(s)"
    )
    t0 = time.perf_counter()
    meta_path = out / "experiment.json"
    previous = json.loads(meta_path.read_text()) if writes and meta_path.exists() else {}
    meta = {
        "dataset": data.name,
        "preset": asdict(preset),
        "strategies": list(strategy_names),
        "seeds": seeds,
        "variants": list(variants),
        "processes": processes,
        "threads": per_worker,
        "n_train": len(data.train),
        "n_test": len(data.test),
        "train_spacegroups": data.train_labels.tolist(),
        "test_spacegroups": data.test_labels.tolist(),
        "wall_seconds": previous.get("wall_seconds", 0.0),
        "cell_seconds": previous.get("cell_seconds", {}),
    }

    def save_meta() -> None:
        if writes:
            meta["wall_seconds"] = previous.get("wall_seconds", 0.0) + time.perf_counter() - t0
            atomic_write_bytes(meta_path, json.dumps(meta).encode())

    save_meta()
    bar = tqdm(total=len(todo), desc="grid", unit="run", disable=None if writes else True)
    done: list[Cell] = []

    def finished(res: dict) -> None:
        cell = Cell(**res["cell"])
        meta["cell_seconds"][str(cell.folder(out).relative_to(out))] = res["seconds"]
        save_meta()
        bar.update(1)
        bar.set_postfix_str(f"{cell.variant}/{cell.strategy}/seed{cell.seed} {res['seconds']:.0f} s")
        done.append(cell)
        if bar.disable and writes:  # no terminal: a line per run instead of the bar
            log(
                f"finished {cell.variant}/{cell.strategy}/seed{cell.seed} in {res['seconds']:.0f} s "
                f"({len(done)}/{len(todo)})"
            )

    failures: dict[str, BaseException] = {}

    def failed(cell: Cell, err: Exception) -> None:
        name = str(cell.folder(out).relative_to(out))
        failures[name] = err
        log(f"failed {name}: {type(err).__name__}: {err}")

    if processes > 1 and todo:
        ctx = get_context("spawn")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by the workers' OpenMP at start
        with ProcessPoolExecutor(
            processes,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(data, preset, out, device, per_worker, restart_round),
        ) as pool:
            futures = {pool.submit(_run_in_worker, c): c for c in todo}
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except Exception as err:  # the other cells go on, and are recorded
                    failed(futures[fut], err)
                    continue
                finished(res)
    else:
        if threads is not None:
            torch.set_num_threads(threads)
        for cell in todo:
            try:
                res = run_cell(
                    cell, data, preset, out, device=device, distributed=distributed, restart_round=restart_round
                )
            except Exception as err:
                if distributed:  # the ranks run each cell together: all stop (DistributedError says where)
                    raise
                failed(cell, err)
                continue
            finished(res)
    bar.close()
    save_meta()
    if failures:
        raise CellsFailedError(failures, len(todo))
    return meta


def preset_with(name: str, **overrides) -> Preset:
    """The named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
