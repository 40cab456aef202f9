"""How much the MC-dropout passes of the first round's model disagree: the BALD diagnosis.

BALD ranks the pool by the mutual information between a structure's label and the dropout mask,
``MI = H[mean_t p_t] - mean_t H[p_t]`` over T passes. With dropout only in the head (the paper's
toolkit puts none in the encoder), the T passes share one encoder output and differ only in the
head's masks. This module measures what that spread looks like where BALD's collapse starts:
the model after round 0 (10% labelled) of a grid run, scoring the other 90% of the pool.

For every seed and schedule the round-0 model of the grid's cell is rebuilt exactly (a one-round
:class:`~alkernels.loop.ActiveLearningLoop` with the cell's seed, initial set, batch order and
round-0 epochs), then the pool is scored with T passes. Reported per run:

- ``accuracy``: the round-0 model's test accuracy (dropout off), and ``majority``: the test
  share of its most predicted class (1.0 when it predicts one class everywhere);
- ``mi_mean``, ``mi_median``, ``mi_p90``, ``mi_max``: BALD's scores over the pool (nats);
- ``entropy_mean``: the predictive entropy ``H[mean_t p_t]``, for scale (``mi / entropy`` is the
  share of the uncertainty that the passes' disagreement explains);
- ``flip_share``: share of the pool where some pass's arg-max differs from the mean's;
- ``top_class_std``: mean over the pool of the std across passes of the mean's top-class
  probability;
- ``bald_top_class_share`` / ``entropy_top_class_share``: of the first query (the top ``k``
  of BALD, and of predictive entropy), the share from its single most frequent true class.

Usage::

    python -m alkernels.experiments.spacegroup.mc_spread --seeds 3 \\
        --out experiments/spacegroup/results/bald-mc-spread

writes ``summary.json`` and ``table.md`` there (``--schedules`` picks the schedules compared:
``epochs:E`` fixed epochs per round or ``budget:E`` the compute-matched schedule);
``--report-only`` (or ``alkernels report OUT``) rebuilds ``table.md`` from a committed
``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from alkernels._paths import user_path
from alkernels.data import load_split
from alkernels.experiments.spacegroup.grid import PRESETS, Cell, Preset, cell_loop
from alkernels.loop.epochs import epoch_schedule
from alkernels.loop.loop import labelled_schedule
from alkernels.loop.rundir import claim_folder
from alkernels.strategies import Pool

DEFAULT_SCHEDULES = ("epochs:3", "budget:16.5")


def round0_epochs(preset: Preset, n_train: int) -> int:
    """Epochs of round 0 of ``preset``'s AL runs on ``n_train`` structures."""
    counts = labelled_schedule(n_train, preset.initial, preset.query_size, preset.rounds)
    return epoch_schedule(counts, n_train, epochs=None if preset.epoch_budget else preset.epochs,
                          epoch_budget=preset.epoch_budget)[0]  # fmt: skip


def schedule_preset(base: Preset, schedule: str) -> Preset:
    """``base`` with the schedule ``epochs:E`` or ``budget:E``."""
    kind, _, value = schedule.partition(":")
    if kind == "epochs" and value.isdigit():
        return replace(base, epochs=int(value), epoch_budget=None)
    if kind == "budget":
        try:
            return replace(base, epoch_budget=float(value))
        except ValueError:
            pass
    raise ValueError(f"schedule must be epochs:E (an integer) or budget:E (a number), got {schedule!r}")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


@torch.no_grad()
def spread(model: torch.nn.Module, pool: Pool, labels: np.ndarray, k: int, passes: int) -> dict[str, float]:
    """The MC statistics of the module docstring for ``model`` on ``pool`` (labels: the pool's
    true classes, int [len(pool)]), with the first query of size ``k``."""
    model.eval()
    mi, ent, flips, top_std = [], [], [], []
    for _, batch in pool.chunks():
        probs = torch.softmax(model.mc_logits(batch, passes).double(), dim=-1)  # [T, B, C]
        mean = probs.mean(0)
        h = _entropy(mean)
        mi.append(h - _entropy(probs).mean(0))
        ent.append(h)
        top = mean.argmax(-1)
        flips.append((probs.argmax(-1) != top).any(0))
        top_std.append(probs.gather(-1, top.expand(passes, -1)[..., None]).squeeze(-1).std(0))
    mi_all, ent_all = torch.cat(mi).numpy(), torch.cat(ent).numpy()

    def top_class_share(scores: np.ndarray) -> float:
        chosen = labels[np.argsort(-scores, kind="stable")[:k]]
        return float(np.bincount(chosen).max() / k)

    return {
        "mi_mean": float(mi_all.mean()),
        "mi_median": float(np.median(mi_all)),
        "mi_p90": float(np.quantile(mi_all, 0.9)),
        "mi_max": float(mi_all.max()),
        "entropy_mean": float(ent_all.mean()),
        "flip_share": float(torch.cat(flips).double().mean()),
        "top_class_std": float(torch.cat(top_std).mean()),
        "bald_top_class_share": top_class_share(mi_all),
        "entropy_top_class_share": top_class_share(ent_all),
    }


def run(preset: Preset, schedules: list[str], seeds: int, work: Path, *, cache_dir: str | None = None) -> list[dict]:
    """One row per schedule x seed (see the module docstring); ``work`` holds the throw-away
    one-round runs."""
    data = load_split(
        preset.dataset,
        structures=preset.structures,
        split=preset.split,
        cutoff=preset.cutoff,
        graph_mode=preset.graph_mode,
        cache_dir=cache_dir,
        label_mode=preset.label_mode,
    )
    n_train = len(data.train)
    train_labels = np.array([int(data.train[i].y) for i in range(n_train)])
    rows = []
    for schedule in schedules:
        sp = schedule_preset(preset, schedule)
        epochs = round0_epochs(sp, n_train)
        one_round = replace(sp, rounds=1, epochs=epochs, epoch_budget=None)
        for seed in range(seeds):
            loop = cell_loop(Cell("bald", "keep", seed), data, one_round, work / schedule.replace(":", "-"))
            records = loop.run(resume=True)  # a finished one-round run is reloaded, not retrained
            labelled = np.zeros(n_train, dtype=bool)
            labelled[loop.labelled] = True
            unlabelled = np.flatnonzero(~labelled)
            pool = Pool(data.train, unlabelled, 256)
            k = labelled_schedule(n_train, preset.initial, preset.query_size, preset.rounds)[1] - int(labelled.sum())
            with torch.no_grad():
                predicted = torch.cat(
                    [
                        loop.model.eval()(b).argmax(1)
                        for _, b in Pool(data.test, np.arange(len(data.test)), 256).chunks()
                    ]
                )
            stats = spread(loop.model, pool, train_labels[unlabelled], k, preset.passes)
            rows.append({
                "schedule": schedule,
                "round0_epochs": epochs,
                "seed": seed,
                "accuracy": records[0]["accuracy"],
                "majority": float(torch.bincount(predicted).max() / len(predicted)),
                "k": k,
                **stats,
            })  # fmt: skip
    return rows


def table(rows: list[dict], passes: int) -> str:
    """Markdown: per schedule the mean over seeds and the per-seed values of every statistic."""
    keys = [
        ("accuracy", "test accuracy, round 0", "{:.1%}"),
        ("majority", "share of the test set given its most predicted class", "{:.1%}"),
        ("entropy_mean", "predictive entropy, pool mean (nats)", "{:.3f}"),
        ("mi_mean", "BALD score (MI), pool mean (nats)", "{:.4f}"),
        ("mi_median", "MI, median", "{:.4f}"),
        ("mi_p90", "MI, 90th percentile", "{:.4f}"),
        ("mi_max", "MI, max", "{:.4f}"),
        ("flip_share", f"share of the pool where one of the {passes} passes changes the arg-max", "{:.1%}"),
        ("top_class_std", "std over passes of the top-class probability, pool mean", "{:.4f}"),
        ("bald_top_class_share", "BALD's first query: share from its most frequent class", "{:.1%}"),
        ("entropy_top_class_share", "entropy's first query: share from its most frequent class", "{:.1%}"),
    ]
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    head = "| statistic | " + " | ".join(
        f"{s} ({next(r['round0_epochs'] for r in rows if r['schedule'] == s)} epochs in round 0)" for s in schedules
    )
    lines = [
        "# The MC-dropout spread of the round-0 model (head-only dropout, the BALD diagnosis)",
        "",
        "Generated by `python -m alkernels.experiments.spacegroup.mc_spread`; mean over seeds, the",
        "per-seed values in brackets. Pool: the 90% left unlabelled after round 0.",
        "",
        head + " |",
        "|---|" + "---|" * len(schedules),
    ]
    for key, label, fmt in keys:
        cells = []
        for s in schedules:
            values = [r[key] for r in rows if r["schedule"] == s]
            cells.append(f"{fmt.format(float(np.mean(values)))} ({', '.join(fmt.format(v) for v in values)})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(dest: Path, summary: dict) -> dict[str, Path]:
    claim_folder(dest)
    paths = {"summary.json": dest / "summary.json", "table.md": dest / "table.md"}
    paths["summary.json"].write_text(json.dumps(summary, indent=1, sort_keys=True, allow_nan=False) + "\n")
    paths["table.md"].write_text(table(summary["rows"], summary["passes"]))
    return paths


def is_spread_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds this diagnosis's ``summary.json`` (and no grid records)."""
    path = Path(folder) / "summary.json"
    if not path.is_file() or (Path(folder) / "runs.jsonl").exists():
        return False
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(summary, dict) and {"preset", "passes", "rows"} <= set(summary)


def write_report(src: str | Path, dest: str | Path | None = None) -> dict[str, Path]:
    """Rebuild ``table.md`` (and ``summary.json``) in ``dest`` (default ``src``) from the
    ``summary.json`` of a finished run in ``src``; returns the paths by name."""
    summary = json.loads((Path(src) / "summary.json").read_text())
    return _write(Path(dest if dest is not None else src), summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="grid preset (default: cpu)")
    parser.add_argument(
        "--schedules", default=",".join(DEFAULT_SCHEDULES), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument("--out", required=True, help="folder for summary.json and table.md")
    parser.add_argument(
        "--work", default="runs/mc-spread", help="folder of the one-round runs (default: %(default)s, not committed)"
    )
    parser.add_argument("--cache-dir", default=None, help="data and graph cache (default: alkernels')")
    parser.add_argument("--report-only", action="store_true", help="rebuild OUT/table.md from OUT/summary.json")
    args = parser.parse_args(argv)
    out = user_path(args.out)
    if args.report_only:
        write_report(out)
        return 0
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    preset = PRESETS[args.preset]
    rows = run(preset, args.schedules.split(","), args.seeds, user_path(args.work), cache_dir=args.cache_dir)
    _write(out, {"preset": preset.name, "passes": preset.passes, "rows": rows})
    print(table(rows, preset.passes))
    return 0 if all(math.isfinite(r["mi_mean"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
