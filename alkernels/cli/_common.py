"""What the sub-commands share: data, schedule, backend, precision and distributed flags, the
early checks of devices and output folders, thread settings, and the rewording of library errors
in the CLI's terms."""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from alkernels._logging import ROOT
from alkernels.data._store import default_cache_dir
from alkernels.ops.dispatch import BACKENDS, normalize_backend
from alkernels.ops.message_passing import PRECISIONS

#: The command line's own progress lines (``-q`` hides them).
log = logging.getLogger("alkernels.cli")


def count_or_fraction(text: str) -> int | float:
    """``"0.1"`` -> 0.1 (a fraction, in (0, 1]), ``"24"`` -> 24 (a count, at least 1)."""
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from err
    if isinstance(value, int) and value < 1:
        raise argparse.ArgumentTypeError(f"a count must be >= 1, got {value}")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction must be in (0, 1], got {text}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (a usage error otherwise, before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def float_in(low: float, high: float = math.inf, *, closed: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number between ``low`` and ``high``, the ends excluded unless
    ``closed`` names them (``"low"``, ``"high"`` or ``"both"``)."""
    low_ok = closed in ("low", "both")
    high_ok = closed in ("high", "both")
    if math.isinf(high):
        wanted = f"{'>=' if low_ok else '>'} {low:g}"
    else:
        wanted = f"in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text!r}") from None
        above = value >= low if low_ok else value > low
        below = value <= high if high_ok else value < high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    return parse


#: Counts that must be at least 1, and at least 0.
POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
#: A learning rate, a cutoff, a timeout: a finite number > 0.
POSITIVE_FLOAT = float_in(0.0)


def strategy_help() -> str:
    """``--strategy``'s help: every registered strategy, per task."""
    from alkernels.gp import GP_STRATEGIES
    from alkernels.strategies import available

    return (
        f"classification (the default --task): {', '.join(available())}; "
        f"regression (--task regression): {', '.join(GP_STRATEGIES)}"
    )


def add_backend_arg(p: argparse.ArgumentParser, *, default: str | None, what: str) -> None:
    """``--backend`` in the library's one vocabulary (``reference`` is accepted as ``torch``)."""
    p.add_argument(
        "--backend",
        default=default,
        type=normalize_backend,
        choices=BACKENDS,
        help=f"{what}: {', '.join(BACKENDS)} ('reference' is an alias of 'torch')"
        + ("" if default else " (default: the preset's)"),
    )


def add_data_args(p: argparse.ArgumentParser, *, default_dataset: str | None, required: bool = False) -> None:
    """Dataset and graph options shared by ``run`` (``required``: no default dataset) and
    ``reproduce`` (``default_dataset`` None: the preset's)."""
    p.add_argument(
        "--dataset",
        default=default_dataset,
        required=required,
        help="perovskite:N or builtin:N (N generated crystals) or a structure file/folder"
        + ("" if required else f" (default {default_dataset})" if default_dataset else " (default: the preset's)")
        + (
            "; regression: a structure file with the --target column, or several separated by commas"
            if required
            else ""
        ),
    )
    p.add_argument(
        "--label",
        help="for files: 'spacegroup' (spglib) or a column of space-group numbers (default: none, for "
        "files whose rows carry no labels: required then)",
    )
    p.add_argument(
        "--label-mode",
        default=None,
        choices=["spacegroup", "crystal_system", "bravais"],
        help="classes to predict: the 230 space groups (the paper's task), or, coarser, the 7 crystal "
        "systems or 14 Bravais lattices of those space groups (default: spacegroup, or the preset's)",
    )
    p.add_argument("--cache-dir", default=None, help=f"generated data and graph cache (default {default_cache_dir()})")
    p.add_argument(
        "--workers", type=POSITIVE, default=None, help="processes for data generation and graphs (default: all cores)"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--threads",
        type=POSITIVE,
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
        type=POSITIVE_FLOAT,
        default=None,
        help="seconds a rank waits for the others before the run fails (default $ALKERNELS_DIST_TIMEOUT or 1800)",
    )


def rank_zero(args: argparse.Namespace) -> bool:
    """Whether this process checks ``--out`` before the job starts and prints the results: always
    without ``--distributed``; with it only rank 0, read from the process group when the caller
    already joined one (ranks spawned in-process) and from torchrun's ``RANK`` otherwise."""
    if not args.distributed:
        return True
    from alkernels import distributed

    if distributed.is_initialized():
        return distributed.is_rank_zero()
    return int(os.environ.get("RANK", "0")) == 0


def start_distributed(args: argparse.Namespace) -> tuple[str, AbstractContextManager]:
    """Join the torchrun job when ``--distributed`` is given.

    The other ranks log warnings and errors only, so each progress line appears once.

    Returns:
        (this rank's device, a context in which each node's local rank 0 prepares data before the
        other ranks read it).
    """
    if not args.distributed:
        if args.dist_timeout is not None:
            raise ValueError("--dist-timeout only applies with --distributed")
        return args.device, nullcontext()
    import torch.distributed

    from alkernels import distributed

    device = distributed.init_process_group(device=args.device, timeout=args.dist_timeout)
    if not distributed.is_rank_zero():
        logging.getLogger(ROOT).setLevel(max(logging.WARNING, logging.getLogger(ROOT).level))
    log.info(f"distributed: {distributed.world_size()} ranks, backend {torch.distributed.get_backend()}")
    return str(device), distributed.rank_zero_first()


def stop_distributed(args: argparse.Namespace) -> None:
    """Leave the torchrun job after a successful ``--distributed`` command."""
    if args.distributed:
        from alkernels import distributed

        distributed.destroy_process_group()


def check_dataset(spec: str) -> None:
    """Fail before any work when a path in ``--dataset`` (comma-separated for regression) does
    not exist; ``perovskite:N`` and ``builtin:N`` are generated."""
    for part in (p for p in spec.split(",") if p):
        if part.split(":")[0] not in ("perovskite", "builtin") and not Path(part).expanduser().exists():
            raise ValueError(f"--dataset {part}: the file does not exist (give perovskite:N, builtin:N or a path)")


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
    threads = threads_per_worker(processes, args.threads)
    warning = oversubscription_warning(processes, threads)
    if warning:
        print(f"alkernels: warning: {warning}", file=sys.stderr)
    return threads


def add_schedule_args(p: argparse.ArgumentParser, *, epochs_default: int | None) -> None:
    """``--epochs`` and ``--epoch-budget`` (the compute-matched schedule), shared by ``run`` and
    ``reproduce``."""
    p.add_argument(
        "--epochs",
        type=POSITIVE,
        default=epochs_default,
        help="epochs per round" + (f" (default {epochs_default})" if epochs_default else " (default: the preset's)"),
    )
    p.add_argument(
        "--epoch-budget",
        type=POSITIVE_FLOAT,
        default=None,
        metavar="E",
        help="compute-matched schedule instead of fixed epochs: E full-training-set epochs in total "
        "(E x n_train sample-epochs), the same share for every round, whole epochs and at "
        "least 1 per round (see alkernels.loop.epochs; default: fixed --epochs)",
    )


def add_precision_arg(p: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--precision`` of the fused EGNN kernels' matmuls."""
    p.add_argument(
        "--precision",
        default=default,
        choices=PRECISIONS,
        help="matmul precision of the fused EGNN kernels: Triton (GPU) takes fp32, tf32 or bf16; the C++ "
        "CPU kernels fp32 or bf16 (tf32 runs as fp32 there under --backend auto), the torch backend "
        "float32" + (f" (default {default})" if default else " (default: the preset's)"),
    )
