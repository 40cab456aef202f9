"""The compact summary JSON of a benchmark run: environment, sizes, and per group the statistics
of every member with our speed-up over each peer.

Each timed test stores its metadata in ``benchmark.extra_info`` (see :func:`benchmarks.harness.timed`);
a group name is ``SUITE/TABLE/ROW``. Schema (``format`` = :data:`FORMAT`)::

    {
      "format": "alkernels-bench/1",
      "environment": {"date", "preset", "device", "device_name", "cpu", "cpu_count", "threads",
                      "omp_num_threads", "extension", "fused_backend", "commit", "platform",
                      "python", "versions": {package: version}, "load_average": [start, end]},
      "suites": {
        SUITE: {
          "sizes": {...},                   # benchmarks.settings, as run
          "memcpy_gb_per_s": float | null,  # read + written bytes of a copy / time, same run
          "groups": {
            "SUITE/TABLE/ROW": {
              "table": TABLE, "row": ROW, "baseline": IMPL | null,
              "order": position of the group's first test in the run (tables are shown in this order),
              "members": {
                IMPL: {
                  "role": "baseline" | "ours" | "peer" | "reference", "test": node id,
                  "median_s", "min_s", "iqr_s", "q1_s", "q3_s", "mean_s", "stddev_s", "rounds",
                  "items", "unit", "items_per_s",
                  "speedup": member time per item / baseline time per item (our speed-up),
                  "bytes", "gb_per_s", "fraction_of_memcpy",   # where bytes were recorded
                  "peak_extra_mib", "memory_ratio",              # where memory was measured
                  "scaling", "notes", "meta": {...}              # the rest of extra_info
                }}}}}}
    }

Keys are sorted and no machine paths are recorded (test ids are relative to the repository).
This module imports torch and alkernels only inside :func:`environment`, so that
``benchmarks/report.py`` can read :data:`FORMAT` without them.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = "alkernels-bench/1"
#: The step profile of ``benchmarks/profile_training.py`` (rendered into ``docs/performance.md``).
PROFILE_FORMAT = "alkernels-profile/1"
ROOT = Path(__file__).resolve().parent.parent
#: Packages whose versions every result records.
PACKAGES: tuple[str, ...] = ("alkernels", "torch", "numpy", "triton", "baal", "torch_geometric", "pytest-benchmark")
#: extra_info keys that the summary lifts out of ``meta`` into the member itself.
_LIFTED: tuple[str, ...] = ("role", "items", "unit", "bytes", "peak_extra_mib", "scaling", "notes")


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(root: Path = ROOT) -> str | None:
    """The checked-out commit, read from the files under ``.git`` (no git process is started, so a
    concurrent commit is never disturbed); None outside a repository."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        for folder in (git, base):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(preset: str, device: torch.device, load_start: float) -> dict[str, Any]:
    """Where and with what the run happened (no paths, no host name)."""
    import torch

    from alkernels.ops.dispatch import has_ext, resolve_backend

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": preset,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "extension": has_ext(),
        "fused_backend": resolve_backend("auto", device, op="benchmarks"),
        "commit": git_commit(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PACKAGES},
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }


def _member(record: dict[str, Any]) -> dict[str, Any]:
    """One member's entry from a record (``test``, ``extra_info``, ``stats``)."""
    stats, extra = record["stats"], record["extra_info"]
    entry: dict[str, Any] = {
        "test": record["test"],
        **{f"{k}_s": stats[k] for k in ("median", "min", "iqr", "q1", "q3", "mean", "stddev")},
    }
    entry["rounds"] = stats["rounds"]
    entry.update({k: extra[k] for k in _LIFTED if k in extra})
    entry["meta"] = {k: v for k, v in extra.items() if k not in _LIFTED and k != "impl"}
    entry["items_per_s"] = entry["items"] / stats["median"]
    if "bytes" in entry:
        entry["gb_per_s"] = entry["bytes"] / stats["median"] / 1e9
    return entry


def _group(name: str, records: list[dict[str, Any]], order: int) -> dict[str, Any]:
    """A group's members, with our speed-up and memory ratio against the baseline."""
    members = {r["extra_info"]["impl"]: _member(r) for r in records}
    baseline = next((impl for impl, m in members.items() if m["role"] == "baseline"), None)
    if baseline is not None:
        base = members[baseline]
        per_item = base["median_s"] / base["items"]
        for m in members.values():
            m["speedup"] = (m["median_s"] / m["items"]) / per_item
            if m.get("peak_extra_mib") is not None and base.get("peak_extra_mib"):
                m["memory_ratio"] = m["peak_extra_mib"] / base["peak_extra_mib"]
    _, table, row = name.split("/", 2)
    return {"table": table, "row": row, "order": order, "baseline": baseline, "members": members}


def suite_summary(records: list[dict[str, Any]], sizes: dict[str, Any]) -> dict[str, Any]:
    """The summary of one suite from its records (all of one suite)."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_group.setdefault(record["group"], []).append(record)
    groups = {name: _group(name, members, order) for order, (name, members) in enumerate(by_group.items())}
    copies = [m for g in groups.values() for m in g["members"].values() if m["role"] == "reference" and "gb_per_s" in m]
    memcpy = max((m["gb_per_s"] for m in copies), default=None)
    if memcpy:
        for group in groups.values():
            for m in group["members"].values():
                if "gb_per_s" in m and m["role"] != "reference":
                    m["fraction_of_memcpy"] = m["gb_per_s"] / memcpy
    return {"sizes": sizes, "memcpy_gb_per_s": memcpy, "groups": groups}


def record_of(benchmark: Any) -> dict[str, Any] | None:
    """The record of a finished pytest-benchmark fixture (None when it timed nothing, e.g. under
    ``--benchmark-disable``)."""
    if not benchmark.stats:
        return None
    s = benchmark.stats.stats
    return {
        "test": benchmark.fullname,
        "group": benchmark.group,
        "extra_info": dict(benchmark.extra_info),
        "stats": {
            "median": s.median,
            "min": s.min,
            "iqr": s.iqr,
            "q1": s.q1,
            "q3": s.q3,
            "mean": s.mean,
            "stddev": s.stddev,
            "rounds": s.rounds,
        },
    }


def write(path: Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` as sorted, indented JSON (one trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
