"""What the sub-commands share: data, schedule, backend, precision and distributed flags, the
early checks of devices and output folders, thread settings, and the rewording of library errors
in the CLI's terms."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from alkernels.data._store import default_cache_dir
from alkernels.ops.dispatch import BACKENDS, normalize_backend
from alkernels.ops.message_passing import PRECISIONS


def count_or_fraction(text: str) -> int | float:
    """``"0.1"`` -> 0.1 (a fraction), ``"24"`` -> 24 (a count)."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from err


def add_backend_arg(p: argparse.ArgumentParser, *, default: str | None, what: str) -> None:
    """``--backend`` in the library's one vocabulary (``reference`` is accepted as ``torch``)."""
    p.add_argument(
        "--backend",
        default=default,
        type=normalize_backend,
        choices=BACKENDS,
        help=f"{what}: {', '.join(BACKENDS)} ('reference' is an alias of 'torch')",
    )


def add_data_args(p: argparse.ArgumentParser, *, default_dataset: str | None) -> None:
    """Dataset and graph options shared by ``run`` and ``reproduce``."""
    p.add_argument(
        "--dataset",
        default=default_dataset,
        help="perovskite:N or builtin:N (N generated crystals) or a structure file/folder"
        + (f" (default {default_dataset})" if default_dataset else " (default: the preset's)"),
    )
    p.add_argument("--label", help="for files: 'spacegroup' (spglib) or a column of space-group numbers")
    p.add_argument(
        "--label-mode",
        default=None,
        choices=["spacegroup", "crystal_system", "bravais"],
        help="classes to predict: the 230 space groups (the paper's task), or, coarser, the 7 crystal "
        "systems or 14 Bravais lattices of those space groups (default: spacegroup, or the preset's)",
    )
    p.add_argument("--cache-dir", default=None, help=f"generated data and graph cache (default {default_cache_dir()})")
    p.add_argument("--workers", type=int, default=None, help="processes for data generation and graphs")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)",
    )


def add_distributed_args(p: argparse.ArgumentParser) -> None:
    """``--distributed`` and ``--dist-timeout`` (for runs launched by torchrun)."""
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one process per rank under torchrun: torchrun --nproc_per_node N -m alkernels ... "
        "--distributed (gloo on CPU, nccl with --device cuda)",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=None,
        help="seconds a rank waits for the others before the run fails (default $ALKERNELS_DIST_TIMEOUT or 1800)",
    )


def checks_output(args: argparse.Namespace) -> bool:
    """Whether this process checks ``--out`` before the job starts: always without
    ``--distributed``; with it only rank 0, read from the process group when the caller already
    joined one (ranks spawned in-process) and from torchrun's ``RANK`` otherwise."""
    if not args.distributed:
        return True
    from alkernels import distributed

    if distributed.is_initialized():
        return distributed.is_rank_zero()
    return int(os.environ.get("RANK", "0")) == 0


def start_distributed(args: argparse.Namespace) -> tuple[str, Callable[..., None], AbstractContextManager]:
    """Join the torchrun job when ``--distributed`` is given.

    Returns:
        (this rank's device, a print that only rank 0 executes, a context in which each node's
        local rank 0 prepares data before the other ranks read it).
    """
    if not args.distributed:
        if args.dist_timeout is not None:
            raise ValueError("--dist-timeout only applies with --distributed")
        return args.device, print, nullcontext()
    import torch.distributed

    from alkernels import distributed

    device = distributed.init_process_group(device=args.device, timeout=args.dist_timeout)
    say = print if distributed.is_rank_zero() else (lambda *a, **k: None)
    say(f"distributed: {distributed.world_size()} ranks, backend {torch.distributed.get_backend()}")
    return str(device), say, distributed.rank_zero_first()


def stop_distributed(args: argparse.Namespace) -> None:
    """Leave the torchrun job after a successful ``--distributed`` command."""
    if args.distributed:
        from alkernels import distributed

        distributed.destroy_process_group()


def check_device(name: str) -> str:
    """``name`` if torch can use it here: a clear error for an unknown device or a missing GPU."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: alkernels runs on cpu or cuda, not {device.type}")
    return name


def _folder_path(path: str) -> Path:
    """``--out`` as a path, refused when it or a folder above it is a file."""
    out = Path(path)
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a folder")
            break
    return out


def check_grid_dir(path: str) -> None:
    """Fail before any work when ``--out`` cannot take a grid: a file, a path under a file, a
    folder that cannot be written or one that alkernels did not make. Other processes filling the
    same grid are not an error: they share it."""
    from alkernels.experiments._grid import grid_lock

    out = _folder_path(path)
    try:
        with grid_lock(out):  # creates the folder and checks it is writable
            pass
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {out}: {err.strerror}") from err


def check_output_dir(path: str, *, resume: bool, restart_round: bool = False) -> None:
    """Fail before any work when ``--out`` cannot take a run: a file, a path under a file, a folder
    that cannot be written, one that another run is writing, or one that holds a run without
    ``--resume``."""
    from alkernels.loop.rundir import RunDirectory

    if restart_round and not resume:
        raise ValueError("--restart-round only applies with --resume")
    out = _folder_path(path)
    run_dir = RunDirectory(out)
    with run_dir.lock():  # creates the folder, checks it is writable and not in use
        pass
    if run_dir.has_run() and not resume:
        raise ValueError(f"--out {out} already holds a run: add --resume to continue it, or choose another --out")


def cli_words(err: ValueError, *, resumes: bool = False) -> ValueError:
    """A library error about a run folder, re-worded with the CLI's flags; ``resumes``: the
    command always resumes (``reproduce``), so it has no ``--resume`` flag to name."""
    from alkernels.loop.rundir import DamagedCheckpointError, RunExistsError

    if isinstance(err, RunExistsError):
        return ValueError(str(err).replace("resume it (resume=True)", "add --resume to continue it"))
    if isinstance(err, DamagedCheckpointError):
        flags = "--restart-round" if resumes else "--resume --restart-round"
        return ValueError(
            f"{err}; rerun with {flags} to discard it and redo the last round from the previous checkpoint"
        )
    return err


def apply_threads(args: argparse.Namespace, processes: int = 1) -> int:
    """Set torch's intra-op thread count from ``--threads`` (if given) and warn on stderr when
    ``processes`` x the threads each will run exceed the usable cores; returns the threads per
    process (``--threads``, else an even share of the cores when ``processes > 1``, else torch's)."""
    import sys

    import torch

    from alkernels._threads import oversubscription_warning, threads_per_worker

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    threads = threads_per_worker(processes, args.threads) if processes > 1 else torch.get_num_threads()
    warning = oversubscription_warning(processes, threads)
    if warning:
        print(f"alkernels: warning: {warning}", file=sys.stderr)
    return threads


def add_schedule_args(p: argparse.ArgumentParser, *, epochs_default: int | None) -> None:
    """``--epochs`` and ``--epoch-budget`` (the compute-matched schedule), shared by ``run`` and
    ``reproduce``."""
    p.add_argument(
        "--epochs",
        type=int,
        default=epochs_default,
        help="epochs per round" + (f" (default {epochs_default})" if epochs_default else " (default: the preset's)"),
    )
    p.add_argument(
        "--epoch-budget",
        type=float,
        default=None,
        metavar="E",
        help="compute-matched schedule instead of fixed epochs: E full-training-set epochs in total "
        "(E x n_train sample-epochs), the same share for every round, whole epochs and at "
        "least 1 per round (see alkernels.loop.epochs)",
    )


def add_precision_arg(p: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--precision`` of the GPU (Triton) matmuls."""
    p.add_argument(
        "--precision",
        default=default,
        choices=PRECISIONS,
        help="matmul precision of the Triton (GPU) EGNN kernels; the CPU backends compute in "
        "float32" + (f" (default {default})" if default else " (default: the preset's)"),
    )
