"""Peak extra memory of one call, measured in a fresh interpreter.

A fresh process keeps freed heap from earlier runs from hiding allocations. On the CPU the probe
runs the call once untimed (a compiled model compiles there; every implementation pays its
one-off allocations there alike), returns the freed heap to the OS (glibc ``malloc_trim``, so
that the measured call cannot reuse it unseen), resets the peak resident set to the current one
(Linux: write ``5`` to ``/proc/self/clear_refs``), runs the call again and reports the growth of
``VmHWM`` over the resident set before it. On CUDA it runs the call once as a warm-up and reports
``max_memory_allocated`` of a second call beyond the memory allocated before it.

The parent calls :func:`peak_extra_mib`; the child is ``python -m benchmarks.memory PROBE JSON``
run from the repository root and prints the MiB on its last line. Probes:

``acquisition``
    ``{"impl": "ours" | "eager", "strategy", "T", "N", "C", "k", "device"}``: ``select`` or the
    eager peer on the logits of :func:`benchmarks.workloads.make_logits`.
``egnn``
    ``{"impl": one of ``workloads.EGNN_IMPLS``, "mode", "batch",
    "distinct", "device"}``: one forward+backward of the encoder with the initial weights (the
    peak does not depend on them).
``forces``
    ``{"impl": one of FORCE_IMPLS, "structures", "repeat", "device"}``: one force-training step
    (:func:`benchmarks.workloads.force_step`).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_extra_mib(probe: str, params: dict[str, Any]) -> float | None:
    """Peak extra memory in MiB of the call ``probe`` with ``params`` (see the module doc), run
    in a child process with this environment (``OMP_NUM_THREADS`` included); None on a CPU run
    where the kernel cannot reset the peak (not Linux)."""
    if params["device"] == "cpu" and not _CLEAR_REFS.exists():
        return None
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", probe, json.dumps(params, sort_keys=True)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM`` is per process, unlike ``ru_maxrss``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure(run: Callable[[], object], device: torch.device) -> float:
    """Peak MiB that one ``run()`` allocates beyond what exists before it."""
    if device.type == "cuda":
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    run()
    _trim()
    before = _status_kib("VmRSS")
    _CLEAR_REFS.write_text("5")
    run()
    return (_status_kib("VmHWM") - before) / 1024


def _trim() -> None:
    """Return glibc's freed heap to the OS (a no-op where there is no glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _acquisition_call(p: dict[str, Any], device: torch.device) -> Callable[[], object]:
    from alkernels import acquisition
    from benchmarks.peers import eager_select
    from benchmarks.workloads import make_logits

    logits = make_logits(p["T"], p["N"], p["C"], device)
    if p["impl"] == "ours":
        return lambda: acquisition.select(logits, p["strategy"], p["k"])
    peer = eager_select(p["strategy"])
    return lambda: peer(logits, p["k"])


def _egnn_call(p: dict[str, Any], device: torch.device) -> Callable[[], object]:
    from benchmarks.workloads import (
        first_batch,
        forward_backward,
        make_encoder,
        timing_graphs,
    )

    batch = first_batch(timing_graphs(p["mode"], p["distinct"]), p["batch"], device)
    model = make_encoder(p["impl"], device)
    return lambda: forward_backward(model, batch)


def _forces_call(p: dict[str, Any], device: torch.device) -> Callable[[], object]:
    from benchmarks.workloads import force_batch, force_compile_config, force_step, make_force_model

    batch = force_batch(p["structures"], p["repeat"], device)
    model = make_force_model(p["impl"], device)

    def run() -> None:
        with force_compile_config():
            force_step(model, batch)

    return run


def main(argv: list[str]) -> None:
    """Child entry: ``PROBE JSON`` -> prints the peak extra MiB."""
    probe, params = argv[0], json.loads(argv[1])
    device = torch.device(params["device"])
    calls = {"acquisition": _acquisition_call, "egnn": _egnn_call, "forces": _forces_call}
    print(_measure(calls[probe](params, device), device))


if __name__ == "__main__":
    main(sys.argv[1:])
