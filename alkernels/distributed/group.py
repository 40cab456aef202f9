"""Joining a torchrun job, naming failures, and the small collectives the library needs.

Everything here is a thin layer over ``torch.distributed``: the process group is the one torchrun
sets up (``env://``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``),
``gloo`` for CPU ranks and ``nccl`` for CUDA ranks. Next to it, :func:`init_process_group` makes
one ``gloo`` *control group* over the same ranks, used for

- small CPU objects (the labelled set, records, checkpoint states, error messages), so they never
  take a round trip through GPU memory, and
- ``monitored_barrier``, which names the ranks that stopped answering when a collective failed.

Every collective waits at most the process group's timeout (``timeout=`` or the environment
variable ``ALKERNELS_DIST_TIMEOUT`` in seconds; 1800 by default, torch's own default). A
collective that fails inside :func:`phase` raises :class:`DistributedError` naming this rank,
the phase and, when the control group can tell, the ranks that died or hang.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

#: torchrun's environment; :func:`init_process_group` needs all of them unless ``init_method`` is given.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Environment variable holding the default collective timeout in seconds.
TIMEOUT_ENV = "ALKERNELS_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0

#: Error texts of gloo, NCCL and the store that mean a peer died, hangs or is unreachable.
_COMMS_FAILURE = re.compile(
    r"timed out|timeout|connection (closed|reset|refused)|broken pipe|peer|"
    r"nccl|socket|unreachable",
    re.IGNORECASE,
)

_state: dict[str, Any] = {}


class DistributedError(RuntimeError):
    """A multi-process run failed: a collective timed out or lost a peer, or a rank raised.

    Attributes:
        rank: the rank that raises this error.
        phase: what the run was doing (``"training, round 3"``; nested phases joined by " > ").
        unresponsive: ranks the control group found dead or hanging (empty when unknown).
    """

    def __init__(self, message: str, *, rank: int, phase: str, unresponsive: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.rank, self.phase, self.unresponsive = rank, phase, unresponsive

    def __reduce__(self) -> tuple:  # crosses process boundaries intact
        return _rebuild_distributed_error, (str(self), self.rank, self.phase, self.unresponsive)


def _rebuild_distributed_error(message: str, rank: int, phase: str, unresponsive: tuple[int, ...]) -> DistributedError:
    return DistributedError(message, rank=rank, phase=phase, unresponsive=unresponsive)


def _timeout_seconds(timeout: float | None) -> float:
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV)
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT
        except ValueError as err:
            raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from err
    if not timeout > 0:
        raise ValueError(f"the distributed timeout must be positive, got {timeout}")
    return float(timeout)


def init_process_group(
    backend: str = "auto",
    *,
    device: str | torch.device = "cpu",
    timeout: float | None = None,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> torch.device:
    """Join the job torchrun started (or check the one already joined) and return this rank's device.

    Args:
        backend: ``"auto"`` (``nccl`` for CUDA, ``gloo`` otherwise), ``"gloo"`` or ``"nccl"``.
        device: ``"cpu"``, ``"cuda"`` (becomes ``cuda:LOCAL_RANK``) or an explicit device.
        timeout: seconds any collective may wait before the run fails (see the module docstring).
        init_method, rank, world_size: passed to ``torch.distributed.init_process_group`` for
            launchers other than torchrun (a ``file://`` store in tests); by default the
            torchrun environment is required.

    Returns:
        The torch device this rank computes on. Idempotent: a second call returns it again.

    Raises:
        ValueError: outside torchrun without ``init_method``, or a bad backend/timeout.
    """
    seconds = _timeout_seconds(timeout)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'auto', 'gloo' or 'nccl', got {backend!r}")
    if not dist.is_initialized():
        if init_method is None:
            missing = [name for name in TORCHRUN_ENV if name not in os.environ]
            if missing:
                raise ValueError(
                    f"distributed runs need the torchrun environment (missing {', '.join(missing)}); "
                    "launch with: torchrun --nproc_per_node N -m alkernels ..."
                )
        explicit = {
            name: value
            for name, value in (("init_method", init_method), ("rank", rank), ("world_size", world_size))
            if value is not None
        }
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=seconds),
            device_id=dev if dev.type == "cuda" else None,
            **explicit,
        )
    if "control" not in _state:
        _state["control"] = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=seconds))
        _state["timeout"] = seconds
    return dev


def destroy_process_group() -> None:
    """Leave the job (no-op when not in one)."""
    _state.clear()
    if dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    """True inside a joined multi-process job."""
    return dist.is_available() and dist.is_initialized()


def rank(group: dist.ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (the world by default); 0 outside a job."""
    return dist.get_rank(group) if is_initialized() else 0


def world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of ranks in ``group`` (the world by default); 1 outside a job."""
    return dist.get_world_size(group) if is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``; 0 if unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_rank_zero(group: dist.ProcessGroup | None = None) -> bool:
    """True on the rank that writes files (rank 0), and outside a job."""
    return rank(group) == 0


def control_group() -> dist.ProcessGroup:
    """The gloo group over all ranks for objects and failure diagnosis."""
    if "control" not in _state:
        raise ValueError("no process group: call alkernels.distributed.init_process_group() first (under torchrun)")
    return _state["control"]


def comm_device(group: dist.ProcessGroup | None = None) -> torch.device:
    """The device tensors must live on for collectives of ``group``: CUDA for NCCL, else CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _object_group(group: dist.ProcessGroup | None) -> dist.ProcessGroup:
    return control_group() if group is None else group


def broadcast_object(obj: Any, *, group: dist.ProcessGroup | None = None) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; the other ranks' ``obj`` is ignored).

    ``group`` defaults to the control group; tensors inside ``obj`` should be on the CPU."""
    box = [obj]
    dist.broadcast_object_list(box, group=_object_group(group), group_src=0)
    return box[0]


def on_rank_zero(fn: Callable[..., Any], *args: Any, what: str = "work on rank 0", **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` run on rank 0 only, its result returned on every rank (pickled).

    For work whose answer every rank needs but only one should do: reading and checking the
    output folder, a model-free query. A ``ValueError`` from ``fn`` is raised on every rank with
    rank 0's message; the other ranks wait within the process group's timeout. ``what`` names
    the wait in failure messages."""
    reply: tuple[str, Any] | None = None
    if rank() == 0:
        try:
            reply = ("ok", fn(*args, **kwargs))
        except ValueError as err:
            reply = ("error", str(err))
    with phase(f"waiting for rank 0 ({what})"):
        reply = broadcast_object(reply)
    if reply[0] == "error":
        raise ValueError(reply[1])
    return reply[1]


def gather_objects(obj: Any, *, group: dist.ProcessGroup | None = None) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (in rank order); None on the other ranks."""
    g = _object_group(group)
    out: list[Any] | None = [None] * dist.get_world_size(g) if dist.get_rank(g) == 0 else None
    dist.gather_object(obj, out, group=g, group_dst=0)
    return out


def all_gather_objects(obj: Any, *, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Every rank's ``obj`` as a list on every rank, in rank order."""
    g = _object_group(group)
    out: list[Any] = [None] * dist.get_world_size(g)
    dist.all_gather_object(out, obj, group=g)
    return out


def all_reduce_sum(values: list[float], *, group: dist.ProcessGroup | None = None) -> list[float]:
    """Element-wise sums over the ranks of a few numbers, in float64 (on the control group)."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=_object_group(group))
    return t.tolist()


@contextmanager
def rank_zero_first(*, local: bool = True) -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. building a data cache once).

    With ``local=True`` the first is each node's local rank 0, so nodes without a shared file
    system each build their own copy. The others wait at a barrier, which counts against the
    process group's timeout. Outside a job the block just runs.
    """
    if not is_initialized():
        yield
        return
    first = (local_rank() if local else rank()) == 0
    if not first:
        with phase("waiting for rank 0 to prepare shared files"):
            dist.barrier(group=control_group())
    yield
    if first:
        with phase("preparing shared files"):
            dist.barrier(group=control_group())


def _unresponsive_ranks(timeout: float) -> tuple[tuple[int, ...], str]:
    """Ask every rank to pass a monitored barrier on the control group; on rank 0 returns the
    ranks that did not (dead or hanging) and gloo's message."""
    try:
        dist.monitored_barrier(control_group(), timeout=datetime.timedelta(seconds=timeout), wait_all_ranks=True)
    except RuntimeError as err:
        text = str(err)
        found = re.search(r"Ranks? ([\d, ]+) failed to pass", text)
        ranks = tuple(int(r) for r in found.group(1).replace(" ", "").split(",") if r) if found else ()
        return ranks, text.splitlines()[0][:300]
    return (), ""


@contextmanager
def phase(name: str, *, hint: str = "") -> Iterator[None]:
    """Name a stretch of a multi-process run for its error messages.

    A ``RuntimeError`` inside (gloo and NCCL raise those for timeouts and lost peers) becomes a
    :class:`DistributedError` saying which rank saw it, in which phase, and, for communication
    failures, which ranks stopped answering (found with a monitored barrier on the control group,
    waiting at most a minute). Phases nest: the message names the whole path
    (``"query, round 3 > gathering top-k candidates"``). ``hint`` is appended to the message
    (what to do next). Outside a job this does nothing.
    """
    stack = _state.setdefault("phases", [])
    stack.append(name)
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as err:
        if not is_initialized():
            raise
        where = " > ".join(stack)
        me, world = rank(), world_size()
        text = str(err).strip().splitlines()[0][:400] if str(err).strip() else type(err).__name__
        comms = isinstance(err, getattr(dist, "DistError", ())) or bool(_COMMS_FAILURE.search(str(err)))
        unresponsive: tuple[int, ...] = ()
        detail = ""
        if comms and "control" in _state:
            unresponsive, _ = _unresponsive_ranks(min(60.0, _state["timeout"]))
            if unresponsive:
                detail = f"; rank(s) {', '.join(map(str, unresponsive))} did not answer (dead or hung)"
            else:
                detail = "; another rank probably died or hangs (torchrun's summary names the first to fail)"
        raise DistributedError(
            f"rank {me} of {world} failed during {where}: {text}{detail}." + (f" {hint}" if hint else ""),
            rank=me,
            phase=where,
            unresponsive=unresponsive,
        ) from err
    finally:
        stack.pop()
