"""The grid runner the three studies share: a study is a :class:`Grid` (its cells, when one is
finished, how to run one, its settings), and :func:`run_grid` runs the unfinished cells, keeps
``experiment.json`` and lets several processes fill one grid together.

Several ``reproduce`` (or ``transfer``) processes, on one machine or on many nodes that share the
output folder, may fill one grid; the cluster's own scheduler starts them (a SLURM job array,
plain ``ssh``), the grid only needs the shared folder:

- a process claims a cell by an exclusive lock on ``<grid>/<cell>/.claim`` for as long as it runs
  it, and re-checks there that the cell is still unfinished. The file names the host and process
  for people; the operating system drops the lock when the process exits or dies, so a claim
  never goes stale and a killed worker's cell is taken up by the next process that reaches it;
- a process skips cells another process holds: a busy cell is never an error;
- every process merges its bookkeeping into ``experiment.json`` (settings, seconds per finished
  cell, accumulated time) under the grid's lock, ``<grid>/.grid.lock``; the CLI writes the tables
  under that lock too, so the last process to finish writes the complete ones.

Locks are ``flock`` (``msvcrt.locking`` on Windows, see :mod:`alkernels._locking`): on a shared
filesystem the nodes must share locks (NFSv4, Lustre or GPFS with locking enabled).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Generic, TypeVar

import torch

from alkernels import distributed as dist_mod
from alkernels._locking import NOFOLLOW, lock, unlock
from alkernels._logging import cli_settings, configure_cli, emit, progress_bar
from alkernels._paths import user_path
from alkernels._threads import threads_per_worker
from alkernels.loop.rundir import SettingsChangedError, atomic_write_bytes, claim_folder, file_lock

#: The file a process holds locked while it runs a cell (in the cell's folder).
CLAIM = ".claim"
#: The grid's lock file, held while ``experiment.json`` or the tables are rewritten.
GRID_LOCK = ".grid.lock"
#: The grid's bookkeeping file.
EXPERIMENT = "experiment.json"

CellT = TypeVar("CellT")

_log = logging.getLogger(__name__)


class CellsFailedError(RuntimeError):
    """Some cells of a grid raised while the others ran to the end; the finished ones are in
    the grid's folder and ``experiment.json``. ``failures`` maps each failed cell's name
    (:meth:`Grid.name`) to its exception."""

    def __init__(self, failures: dict[str, BaseException], attempted: int) -> None:
        self.failures, self.attempted = failures, attempted
        lines = "; ".join(f"{name}: {type(err).__name__}: {err}" for name, err in failures.items())
        super().__init__(f"{len(failures)} of the {attempted} runs left failed, the others finished: {lines}")

    def __reduce__(self) -> tuple:
        return type(self), (self.failures, self.attempted)


class Grid(ABC, Generic[CellT]):
    """One study's grid in the folder ``out``: what :func:`run_grid` needs to know of it.

    A subclass must be picklable when it runs with ``processes > 1`` (the workers get a copy).

    Attributes:
        out: the grid's folder.
        indent: the JSON indent of ``experiment.json`` (None: one line).
    """

    out: Path
    indent: int | None = None

    @abstractmethod
    def cells(self) -> list[CellT]:
        """Every cell, in the order they run."""

    @abstractmethod
    def name(self, cell: CellT) -> str:
        """The cell's relative path under ``out``: by default its folder (which holds its claim),
        its key in ``experiment.json`` and its name in logs and failures."""

    @abstractmethod
    def is_finished(self, cell: CellT) -> bool:
        """Whether the cell is complete in ``out``.

        Raises:
            SettingsChangedError: ``out`` holds the cell made with other settings.
        """

    @abstractmethod
    def run_cell(self, cell: CellT) -> dict:
        """Run (or finish) the cell, leaving it finished in ``out``; returns a JSON-able summary
        (the seconds are measured by the runner)."""

    @abstractmethod
    def settings(self) -> dict:
        """The grid's entries of ``experiment.json`` (they replace the stored ones)."""

    def claim_path(self, cell: CellT) -> Path:
        """The file a process holds locked while it runs the cell: ``.claim`` in its folder."""
        return self.out / self.name(cell) / CLAIM

    def opening(self, total: int, todo: int, processes: int, threads: int) -> str:
        """The line logged before any cell runs."""
        return f"{total} runs ({total - todo} already finished), {processes} process(es) x {threads} thread(s)"

    def check(self, previous: dict) -> None:
        """Refuse, before any work, an ``experiment.json`` of another grid (``previous``; {} when
        there is none). Raises ValueError naming the difference."""

    def prepare(self, todo: Sequence[CellT]) -> dict[str, dict]:
        """Work the cells in ``todo`` share, done once per process before them (e.g. a
        pre-training); returns entries joined into ``experiment.json``'s dict entries of the same
        name (e.g. ``{"pretraining": {label: info}}``)."""
        return {}


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)


@contextmanager
def grid_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold the grid's lock meanwhile (waiting for it): for read-modify-writes of the grid's
    shared files, ``experiment.json`` and the tables."""
    out = user_path(out)
    claim_folder(out)
    with file_lock(out / GRID_LOCK):
        yield


@contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Claim a cell by its claim file ``path`` (its folder is created when new): yields True while
    this process holds it, False at once when another process does."""
    claim_folder(path.parent)
    fd = _open_lock(path)
    try:
        try:
            lock(fd, blocking=False)
        except OSError:
            yield False
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            yield True
        finally:
            unlock(fd)
    finally:
        os.close(fd)


def read_experiment(out: str | os.PathLike) -> dict:
    """``experiment.json`` of the grid in ``out`` ({} when there is none yet)."""
    path = user_path(out) / EXPERIMENT
    return json.loads(path.read_text()) if path.is_file() else {}


def merge_experiment(
    out: Path,
    settings: dict,
    *,
    add: dict[str, float] | None = None,
    join: dict[str, dict] | None = None,
    indent: int | None = None,
) -> dict:
    """Merge one process's bookkeeping into ``experiment.json`` under the grid's lock; returns
    the merged content.

    Args:
        settings: entries that replace the stored ones.
        add: numbers added to the stored ones (e.g. this process's seconds since its last merge).
        join: dicts whose entries join the stored dict of the same name (e.g. seconds per cell).
    """
    with grid_lock(out):
        meta = {**read_experiment(out), **settings}
        for key, value in (add or {}).items():
            meta[key] = meta.get(key, 0.0) + value
        for key, entries in (join or {}).items():
            meta[key] = {**meta.get(key, {}), **entries}
        atomic_write_bytes(out / EXPERIMENT, json.dumps(meta, indent=indent).encode())
    return meta


def _claimed(grid: Grid, cell: object) -> dict:
    """Run the cell under its claim: ``{"seconds", "result"}``, ``{"busy": True}`` when another
    process holds it, ``{"already": True}`` when another process finished it meanwhile."""
    with claim(grid.claim_path(cell)) as mine:
        if not mine:
            return {"busy": True}
        if grid.is_finished(cell):
            return {"already": True}
        return _timed(grid, cell)


def _timed(grid: Grid, cell: object) -> dict:
    t0 = time.perf_counter()
    result = grid.run_cell(cell)
    return {"seconds": time.perf_counter() - t0, "result": result}


_WORKER: dict = {}


def _init_worker(grid: Grid, threads: int, logs: tuple[int, bool] | None) -> None:
    torch.set_num_threads(threads)  # torch and the fused C++ kernels share one OpenMP pool
    _WORKER["grid"] = grid
    if logs is not None:  # log as the command line that started the grid does
        configure_cli(logs[0], run_lines=logs[1])


def _run_in_worker(cell: object) -> dict:
    return _claimed(_WORKER["grid"], cell)


def _unfinished(grid: Grid) -> list:
    """The cells left to run; refuses, before any work, cells ``out`` holds with other settings."""
    todo, clashes = [], []
    for cell in grid.cells():
        try:
            if not grid.is_finished(cell):
                todo.append(cell)
        except SettingsChangedError as err:
            clashes.append((cell, err))
    if clashes:
        names = ", ".join(grid.name(c) for c, _ in clashes)
        raise SettingsChangedError(
            f"{len(clashes)} run folder(s) of {grid.out} hold other settings ({names}); the first: {clashes[0][1]}"
        )
    return todo


def run_grid(
    grid: Grid,
    *,
    processes: int = 1,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    distributed: bool = False,
) -> dict:
    """Run the unfinished cells of ``grid`` and keep ``experiment.json`` current; returns its
    content. Re-running the same call continues an interrupted grid; several processes given
    the same grid fill it together (see the module's text).

    ``experiment.json`` holds :meth:`Grid.settings`, ``cell_seconds`` (seconds per finished
    cell, by name) and ``wall_seconds``: the time spent in this function, summed over the calls
    and processes that worked on the grid (the wall time when one process ran it). It is written
    before the first cell and after every finished one, so an interrupted grid still has it.

    Args:
        processes: cells run in that many spawned worker processes when > 1 (with
            ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets a policy).
        threads: torch / OpenMP threads of each worker; default the usable cores divided by
            ``processes``. With one process the caller's setting is kept unless this is given.
            ``experiment.json`` records the threads the cells ran with (``threads``).
        progress: a progress bar on a terminal (elsewhere, or when False, a log line per cell).
        log: receives the opening line, busy cells, failures and the per-cell lines; by default
            they go to the ``alkernels.experiments`` logger (failures as warnings, the rest at
            INFO).
        distributed: every rank of a torchrun job calls this and each cell runs on all ranks;
            rank 0 lists the cells left and alone writes ``out``; cells are not claimed (run one
            such job per grid), and the first failure stops every rank.

    Raises:
        SettingsChangedError: before any work, naming every cell ``out`` holds with other settings.
        CellsFailedError: after every other cell has run, when some raised (each failure is also
            logged as it happens).
    """
    if distributed and processes != 1:
        raise ValueError("a distributed grid runs one cell at a time on all ranks; use processes=1")
    out = grid.out
    writes = not distributed or dist_mod.is_rank_zero()
    if writes:
        claim_folder(out)  # a folder alkernels did not create is refused, untouched
        grid.check(read_experiment(out))
    todo = (
        dist_mod.on_rank_zero(_unfinished, grid, what="listing unfinished cells") if distributed else _unfinished(grid)
    )
    per_worker = threads_per_worker(processes, threads)
    total = len(grid.cells())
    emit(log, _log, grid.opening(total, len(todo), processes, per_worker))
    t0 = last = time.perf_counter()
    joined = grid.prepare(todo) if todo else {}
    settings = {**grid.settings(), "processes": processes, "threads": per_worker}

    def merge(seconds: dict[str, float]) -> dict:
        nonlocal last
        now = time.perf_counter()
        add, last = {"wall_seconds": now - last}, now
        if not writes:
            return {}
        return merge_experiment(out, settings, add=add, join={**joined, "cell_seconds": seconds}, indent=grid.indent)

    meta = merge({})
    bar = progress_bar(total=len(todo), desc="grid", unit="run", enabled=progress and writes)
    failures: dict[str, BaseException] = {}
    ran = 0

    def done(cell: object, outcome: dict) -> None:
        nonlocal meta, ran
        name = grid.name(cell)
        if outcome.get("busy"):
            emit(log, _log, f"skipped {name}: another process is running it")
        elif outcome.get("already"):
            emit(log, _log, f"skipped {name}: another process finished it")
        else:
            ran += 1
            meta = merge({name: outcome["seconds"]})
            bar.set_postfix_str(f"{name} {outcome['seconds']:.0f} s")
            if bar.disable and writes:  # no terminal: a line per cell instead of the bar
                emit(log, _log, f"finished {name} in {outcome['seconds']:.0f} s ({ran}/{len(todo)})")
        bar.update(1)

    def failed(cell: object, err: BaseException) -> None:
        failures[grid.name(cell)] = err
        emit(log, _log, f"failed {grid.name(cell)}: {type(err).__name__}: {err}", logging.WARNING)

    if processes > 1 and todo:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by the workers' OpenMP at start
        with ProcessPoolExecutor(
            processes,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(grid, per_worker, cli_settings()),
        ) as pool:
            futures = {pool.submit(_run_in_worker, c): c for c in todo}
            for fut in as_completed(futures):
                try:
                    outcome = fut.result()
                except Exception as err:  # the other cells go on, and are recorded
                    failed(futures[fut], err)
                    continue
                done(futures[fut], outcome)
    else:
        if threads is not None:
            torch.set_num_threads(threads)
        for cell in todo:
            try:
                outcome = _timed(grid, cell) if distributed else _claimed(grid, cell)
            except Exception as err:
                if distributed:  # the ranks run each cell together: all stop (DistributedError says where)
                    raise
                failed(cell, err)
                continue
            done(cell, outcome)
    bar.close()
    meta = merge({})
    if failures:
        raise CellsFailedError(failures, len(todo))
    return meta if writes else {"wall_seconds": time.perf_counter() - t0}
