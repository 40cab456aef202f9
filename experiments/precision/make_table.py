"""The bf16-against-fp32 accuracy table of this folder's README, from its committed runs.

Each run is an ``alkernels run`` folder packed into ``runs.jsonl`` (its ``config.json`` and
``records.jsonl``): the same seed, data, strategy and schedule, with the fused CPU edge kernels
in ``precision="fp32"`` or ``"bf16"``. The table gives, per round, the test accuracy's mean +- std
over the seeds for each precision and the paired difference bf16 - fp32 (same seed) with its 95%
t-interval (``alkernels.experiments.spacegroup.stats``).

Usage: ``python experiments/precision/make_table.py [RUN_FOLDERS...]`` packs the given folders
(if any) into ``runs.jsonl``, then writes ``table.md`` from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from alkernels.experiments._report import mean_std, sample_std
from alkernels.experiments.spacegroup.stats import paired_interval
from alkernels.loop.loop import read_records

HERE = Path(__file__).resolve().parent


def pack(folders: list[Path]) -> None:
    """Write ``runs.jsonl``: one line per run folder with its config and records."""
    lines = []
    for folder in sorted(folders):
        config = json.loads((folder / "config.json").read_text())
        records = read_records(folder / "records.jsonl")
        for r in records:
            r.pop("queried", None)  # the picked indices are not needed for this table
        lines.append(json.dumps({"config": config, "records": records}, sort_keys=True))
    (HERE / "runs.jsonl").write_text("\n".join(lines) + "\n")


def _cell(values: list[float]) -> str:
    """``mean +- std`` over the seeds (the mean alone for one seed; ``-`` for none)."""
    if not values:
        return "-"
    return mean_std(float(np.mean(values)), sample_std(np.asarray(values)), len(values))


def table() -> str:
    """Markdown of the packed runs (see the module docstring)."""
    runs = [json.loads(x) for x in (HERE / "runs.jsonl").read_text().splitlines() if x.strip()]
    acc: dict[str, dict[int, dict[int, float]]] = {}  # precision -> round -> seed -> accuracy %
    for run in runs:
        precision = run["config"]["model.encoder.precision"]
        for r in run["records"]:
            acc.setdefault(precision, {}).setdefault(r["round"], {})[run["config"]["seed"]] = 100 * r["accuracy"]
    config = runs[0]["config"]
    lines = [
        f"Dataset `{config['dataset']}`, strategy `{config['strategy']}`, {config['epochs']} epochs per round "
        f"({len(config['schedule'])} rounds, labelled {config['schedule'][0]} to {config['schedule'][-1]}), "
        f"the fused CPU edge kernels, seeds {sorted({r['config']['seed'] for r in runs})}; test accuracy (%) "
        f"on {config['n_test']} structures.",
        "",
        "| round | fp32 | bf16 | bf16 - fp32 (paired, 95% interval) |",
        "|---:|---:|---:|---:|",
    ]
    for rnd in sorted(acc["fp32"]):
        a, b = acc["fp32"][rnd], acc["bf16"].get(rnd, {})
        cells = [_cell(list(v.values())) for v in (a, b)]
        diff = paired_interval(b, a)
        lines.append(f"| {rnd} | {cells[0]} | {cells[1]} | {diff.format() if diff else '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:]:
        pack([Path(p) for p in sys.argv[1:]])
    (HERE / "table.md").write_text(table())
    print((HERE / "table.md").read_text())
