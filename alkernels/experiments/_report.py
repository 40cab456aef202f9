"""What the three studies' reports share: the packed-runs file, the sample standard deviation,
the ``mean +- std`` cells and atomic writes of tables and summaries (other processes of a grid
may read them meanwhile)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alkernels.loop.rundir import atomic_write_bytes

#: One JSON line per run of a grid: ``{"run": <folder relative to the grid>, "config": {...},
#: "records": ...}``; what gets committed instead of the ``runs/`` folders.
COMPACT_RUNS = "runs.jsonl"


def sample_std(x: Any) -> float:
    """The sample standard deviation (ddof = 1) of a pandas Series or numpy array; 0 for one value."""
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def mean_std(mean: float, std: float, n: int, spec: str = ".1f", sep: str = "+-") -> str:
    """A table cell ``"<mean> <sep> <std>"``, both formatted with ``spec`` (the std without a
    sign), or the mean alone when ``n < 2``: one seed or repeat has no spread to show."""
    if n < 2:
        return f"{mean:{spec}}"
    return f"{mean:{spec}} {sep} {std:{spec.lstrip('+')}}"


def read_packed_runs(out: Path) -> list[dict]:
    """The runs packed into ``out/runs.jsonl``, in file order ([] when there is none)."""
    path = out / COMPACT_RUNS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (readers see the old file or the new one); returns it."""
    return write_bytes(path, text.encode())


def copy_sources(out: Path, dest: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Copy the raw files of ``names`` that ``out`` holds into ``dest`` when it is another folder,
    so that ``dest`` rebuilds the report written there; returns name -> path of each copy."""
    if dest.resolve() == out.resolve():
        return {}
    copied = {}
    for name in names:
        if (out / name).is_file():
            copied[name] = write_bytes(dest / name, (out / name).read_bytes())
    return copied


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns it."""
    atomic_write_bytes(path, data)
    return path
