"""CPU threads of training processes: how many to start, and a warning when they oversubscribe.

torch's intra-op pool and the fused C++ kernels share one OpenMP runtime (libgomp), so
``torch.set_num_threads`` sets the thread count of both. OpenMP threads busy-wait between
parallel regions by default; when more threads run than there are cores, the waiting threads
steal the cores the working ones need. Measured on a 2-core machine, a 2-thread training step
took 20x longer while a second 2-thread job ran. So each of ``P`` parallel workers gets
``cores // P`` threads, and background runs should set ``OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where the
    platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(processes: int, threads: int | None = None) -> int:
    """Threads for each of ``processes`` parallel workers: ``threads`` if given; else, for one
    process (the caller, which runs the work itself), torch's current setting; else an even share
    of :func:`usable_cores` (at least 1)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return threads
    if processes == 1:
        import torch

        return torch.get_num_threads()
    return max(1, usable_cores() // processes)


def oversubscription_warning(processes: int, threads: int, cores: int | None = None) -> str | None:
    """A warning text when ``processes x threads`` exceeds ``cores`` (default
    :func:`usable_cores`), else None."""
    cores = usable_cores() if cores is None else cores
    total = processes * threads
    if total <= cores:
        return None
    return (
        f"{processes} process(es) x {threads} thread(s) = {total} threads on {cores} usable core(s): "
        f"OpenMP threads spin while they wait, so oversubscribed training can run many times slower; "
        f"use --threads {max(1, cores // processes)} (or fewer processes) and OMP_WAIT_POLICY=PASSIVE"
    )
