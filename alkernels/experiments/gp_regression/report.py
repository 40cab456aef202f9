"""The report of a regression grid (the ``study`` extra): ``table.md``, ``mae.png``,
``summary.json`` and the compact ``runs.jsonl``.

Everything is recomputed from the runs (``runs/**/config.json`` + ``records.jsonl``, or the
committed ``runs.jsonl`` that packs each run's records column-wise on one line) and
``experiment.json``. Means and standard deviations are over seeds (sample std, ddof = 1).

"Labels to reach random's final MAE" follows protocol B's reporting: the first labelled count
at which a strategy's seed-mean MAE curve is at or below the seed-mean MAE random ends with;
the queries to get there are that count minus the initial set, and the ratio is random's
queries over them (the study: 3,000 / 1,361 = 2.2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from alkernels._extras import missing_extra
from alkernels._paths import user_path
from alkernels.experiments._grid import EXPERIMENT, read_experiment
from alkernels.experiments._report import COMPACT_RUNS, copy_sources, mean_std, read_packed_runs, sample_std, write_text
from alkernels.experiments.plots import pyplot
from alkernels.experiments.spacegroup.stats import Interval, paired_interval
from alkernels.loop.loop import read_records

try:
    import pandas as pd
except ImportError as err:
    raise missing_extra("study", __name__, err) from err

#: Per-step record columns packed into ``runs.jsonl`` (6 significant digits; ``queried`` is one
#: list per step). Steps and labelled counts follow from the config; the RMSE is kept for the
#: last step and the wall times as per-run means.
COLUMNS = ("mae", "mae_remainder", "queried")
#: Arm order in tables and plots.
ORDER = ("gp_variance-b1", "gp_batch_variance-b10", "gp_variance-b10", "random-b1")


def _columnar(records: list[dict]) -> dict:
    """One run's records in the compact column form of ``runs.jsonl``."""
    cols: dict = {k: [r.get(k) for r in records] for k in COLUMNS}
    for k in ("mae", "mae_remainder"):
        cols[k] = [None if v is None else float(f"{v:.6g}") for v in cols[k]]
    cols["rmse_final"] = float(f"{records[-1]['rmse']:.6g}") if records else None
    steps = records[:-1]  # the last step queries nothing
    for k in ("query_seconds", "update_seconds"):
        cols[f"{k}_mean"] = float(f"{np.mean([r[k] for r in steps]):.4g}") if steps else 0.0
    cols["fits"] = [{"step": r["step"], **r["fit"]} for r in records if "fit" in r]
    return cols


def read_runs(out: str | os.PathLike) -> list[dict]:
    """Every run of the grid in ``out`` as ``{"run", "config", "records"}`` with column-wise
    records, from ``runs/**`` when present, else from ``runs.jsonl``; sorted by ``run``."""
    out = user_path(out)
    runs = [
        {
            "run": str(path.parent.relative_to(out)),
            "config": json.loads(path.read_text()),
            "records": _columnar(read_records(path.parent / "records.jsonl")),
        }
        for path in sorted(out.glob("runs/**/config.json"))
    ]
    if not runs:
        runs = read_packed_runs(out)
    return sorted([r for r in runs if r["records"]["mae"]], key=lambda r: r["run"])


def labelled_counts(config: dict, steps: int) -> np.ndarray:
    """The labelled count at each of a run's first ``steps`` steps."""
    k = np.arange(steps)
    return np.minimum(config["initial"] + k * config["batch"], config["initial"] + config["queries"])


def is_regression_grid(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a regression grid (its experiment.json or its runs say so)."""
    out = user_path(out)
    if (out / EXPERIMENT).is_file():
        return read_experiment(out).get("study") == "gp-regression"
    first = next(iter(sorted(out.glob("runs/**/config.json"))), None)
    if first is not None:
        return json.loads(first.read_text()).get("task") == "regression"
    packed = read_packed_runs(out)
    return bool(packed) and packed[0]["config"].get("task") == "regression"


def arm_name(config: dict) -> str:
    return f"{config['strategy']}-b{config['batch']}"


def arm_label(arm: str) -> str:
    strategy, _, batch = arm.rpartition("-b")
    return strategy if batch == "1" else f"{strategy} (b={batch})"


def collect(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, step): arm, seed, labelled, queries, mae, rmse (last step only),
    mae_remainder, and the run's mean seconds per step of querying (query_s) and updating
    (update_s)."""
    frames = []
    for run in runs:
        c, r = run["config"], run["records"]
        labelled = labelled_counts(c, len(r["mae"]))
        remainder = [np.nan if v is None else v for v in r["mae_remainder"]]
        rmse = np.full(len(labelled), np.nan)
        rmse[-1] = r["rmse_final"]
        frames.append(
            pd.DataFrame(
                {
                    "arm": arm_name(c),
                    "seed": c["seed"],
                    "labelled": labelled,
                    "queries": labelled - c["initial"],
                    "mae": r["mae"],
                    "rmse": rmse,
                    "mae_remainder": remainder,
                    "query_s": r["query_seconds_mean"],
                    "update_s": r["update_seconds_mean"],
                }
            )
        )
    if not frames:
        raise ValueError("no run records found (neither runs/**/records.jsonl nor runs.jsonl)")
    return pd.concat(frames, ignore_index=True)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the test MAE and RMSE and of the remainder MAE per (arm,
    labelled count)."""
    g = df.groupby(["arm", "labelled"])
    return pd.DataFrame(
        {
            "queries": g["queries"].first(),
            "mae_mean": g["mae"].mean(),
            "mae_std": g["mae"].agg(sample_std),
            "rmse_mean": g["rmse"].mean(),
            "rmse_std": g["rmse"].agg(sample_std),
            "rem_mean": g["mae_remainder"].mean(),
            "rem_std": g["mae_remainder"].agg(sample_std),
            "seeds": g["seed"].nunique(),
        }
    ).reset_index()


def paired(df: pd.DataFrame, baseline: str = "random-b1") -> pd.DataFrame:
    """Per (arm, labelled count): mean and std over seeds of the test MAE minus ``baseline``'s
    test MAE for the same seed and count (every arm of a seed shares its initial set and
    features, so this removes the seed-to-seed spread)."""
    base = df[df.arm == baseline][["seed", "labelled", "mae"]].rename(columns={"mae": "base"})
    both = df.merge(base, on=["seed", "labelled"])
    both["diff"] = both["mae"] - both["base"]
    g = both.groupby(["arm", "labelled"])
    return pd.DataFrame(
        {"diff_mean": g["diff"].mean(), "diff_std": g["diff"].agg(sample_std), "seeds": g["seed"].nunique()}
    ).reset_index()


def _order(arms) -> list[str]:
    known = [a for a in ORDER if a in set(arms)]
    return known + sorted(set(arms) - set(known))


def _first_reach(labelled: np.ndarray, mae: np.ndarray, target: float) -> int | None:
    hit = np.flatnonzero(mae <= target)
    return int(labelled[hit[0]]) if hit.size else None


def reach(df: pd.DataFrame, summary: pd.DataFrame, baseline: str = "random-b1", metric: str = "mae") -> dict:
    """Labels each arm needs to reach ``baseline``'s final MAE (``metric`` ``"mae"``: on the
    fixed test set; ``"rem"``: on the unlabelled remainder, the last step with any left).

    Returns:
        ``{"target_mae", "baseline_queries", "arms": {arm: {"labelled", "queries", "ratio",
        "per_seed": {seed: {"labelled", "queries", "ratio"}}}}}``; counts are None when never
        reached (then the ratio is None too). Per seed, the target is the baseline's final MAE
        for the same seed.
    """
    col, run_col = ("mae_mean", "mae") if metric == "mae" else ("rem_mean", "mae_remainder")
    summary = summary[np.isfinite(summary[col])]
    df = df[np.isfinite(df[run_col])]
    if baseline not in set(summary.arm):
        return {}
    base = summary[summary.arm == baseline].sort_values("labelled")
    target, base_queries = float(base[col].iloc[-1]), int(base.queries.iloc[-1])
    out = {"target_mae": target, "baseline_queries": base_queries, "arms": {}}
    base_runs = df[df.arm == baseline]
    for arm in _order(summary.arm.unique()):
        curve = summary[summary.arm == arm].sort_values("labelled")
        initial = int(curve.labelled.iloc[0] - curve.queries.iloc[0])
        hit = _first_reach(curve.labelled.to_numpy(), curve[col].to_numpy(), target)
        entry = {"labelled": hit, "queries": None if hit is None else hit - initial, "ratio": None, "per_seed": {}}
        if entry["queries"]:
            entry["ratio"] = base_queries / entry["queries"]
        for seed, run in df[df.arm == arm].groupby("seed"):
            b = base_runs[base_runs.seed == seed].sort_values("labelled")
            if b.empty:
                continue
            run = run.sort_values("labelled")
            h = _first_reach(run.labelled.to_numpy(), run[run_col].to_numpy(), float(b[run_col].iloc[-1]))
            q = None if h is None else h - initial
            entry["per_seed"][int(seed)] = {
                "labelled": h,
                "queries": q,
                "ratio": int(b.queries.iloc[-1]) / q if q else None,
            }
        out["arms"][arm] = entry
    return out


def query_marks(last: int, checkpoints: int) -> list[int]:
    """``checkpoints`` evenly spaced query counts from 0 to ``last`` (fewer when they round to the
    same count): the columns of the report's tables, fixed before any result is seen."""
    return sorted({int(round(k * last / (checkpoints - 1))) for k in range(checkpoints)})


def final_table(summary: pd.DataFrame, df: pd.DataFrame, checkpoints: int = 6) -> str:
    """Markdown: MAE (mean +- std, the mean alone for one seed) at evenly spaced query counts, the
    final RMSE, the final MAE minus random's for the same seed, and the mean milliseconds per step
    of querying and of updating the GP."""
    marks = query_marks(int(summary.queries.max()), checkpoints)
    diffs = paired(df)
    lines = [
        "| strategy | "
        + " | ".join(f"MAE @ {q} queries" for q in marks)
        + " | final RMSE | final MAE - random's (paired) | query ms / step | update ms / step |",
        "|---" * (len(marks) + 5) + "|",
    ]
    for arm in _order(summary.arm.unique()):
        part = summary[summary.arm == arm].set_index("queries")
        cells = []
        for q in marks:
            near = part.index[np.argmin(np.abs(part.index.to_numpy() - q))]
            at = part.loc[near]
            cells.append(mean_std(at.mae_mean, at.mae_std, at.seeds, ".4f"))
        runs = df[df.arm == arm].groupby("seed")[["query_s", "update_s"]].first()
        fin = part.loc[part.index.max()]
        rmse = mean_std(fin.rmse_mean, fin.rmse_std, fin.seeds, ".4f")
        d = diffs[diffs.arm == arm].sort_values("labelled")
        diff = mean_std(d.diff_mean.iloc[-1], d.diff_std.iloc[-1], d.seeds.iloc[-1], "+.4f") if len(d) else "-"
        lines.append(
            f"| {arm_label(arm)} | " + " | ".join(cells) + f" | {rmse} | {diff} | {1e3 * runs.query_s.mean():.2f} "
            f"| {1e3 * runs.update_s.mean():.2f} |"
        )
    return "\n".join(lines)


def reach_markdown(r: dict, what: str = "test", study: tuple[int, float] | None = (1361, 2.2)) -> str:
    """The labels-to-match table."""
    if not r:
        return "No random arm (or no such records): nothing to compare against."
    lines = [
        f"Random's final {what} MAE (mean over seeds, after {r['baseline_queries']} queries): "
        f"**{r['target_mae']:.4f}**.",
        "",
        "| strategy | labelled when its mean curve first reaches it | queries | ratio to random "
        "| per seed: queries (ratio) |",
        "|---|---|---|---|---|",
    ]
    for arm, e in r["arms"].items():
        per = ", ".join(
            f"s{s}: {v['queries'] if v['queries'] is not None else 'never'}"
            + (f" ({v['ratio']:.2f}x)" if v["ratio"] else "")
            for s, v in e["per_seed"].items()
        )
        ratio = f"{e['ratio']:.2f}x" if e["ratio"] else "-"
        lines.append(
            f"| {arm_label(arm)} | {e['labelled'] if e['labelled'] is not None else 'never'} | "
            f"{e['queries'] if e['queries'] is not None else 'never'} | {ratio} | {per} |"
        )
    if study:
        lines += [
            "",
            f"The study (Allotey et al. 2021, MP oxides, MEGNet features, test = the shrinking "
            f"unlabelled remainder): {study[0]} queries, {study[1]}x fewer.",
        ]
    return "\n".join(lines)


def plot_mae(summary: pd.DataFrame, reaches: dict, path: Path, title: str, diffs: pd.DataFrame | None = None) -> None:
    """MAE against the labelled count, mean +- std over seeds, one curve per arm: on the fixed
    test set, (when recorded) on the unlabelled remainder, and (with ``diffs`` from
    :func:`paired`) the test MAE minus random's for the same seed."""
    plt = pyplot()
    panels = [("mae", "test MAE (fixed test split)")]
    if np.isfinite(summary.rem_mean).any():
        panels.append(("rem", "MAE on the unlabelled remainder (the study's test set)"))
    if diffs is not None and len(diffs):
        panels.append(("diff", "test MAE minus random's, same seed"))
        summary = summary.merge(diffs[["arm", "labelled", "diff_mean", "diff_std"]], on=["arm", "labelled"], how="left")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    colors = {
        "gp_variance-b1": "tab:blue",
        "gp_batch_variance-b10": "tab:orange",
        "gp_variance-b10": "tab:green",
        "random-b1": "tab:gray",
    }
    for ax, (metric, ylabel) in zip(axes[0], panels):
        r = reaches.get(metric, {})
        for k, arm in enumerate(_order(summary.arm.unique())):
            c = summary[(summary.arm == arm) & np.isfinite(summary[f"{metric}_mean"])].sort_values("labelled")
            color = colors.get(arm, plt.get_cmap("tab10")(k % 10))
            m, s = c[f"{metric}_mean"].to_numpy(), c[f"{metric}_std"].to_numpy()
            ax.plot(
                c.labelled,
                m,
                "--" if arm.startswith("random") else "-",
                color=color,
                lw=1.4,
                label=f"{arm_label(arm)} ({int(c.seeds.min())} seeds)",
            )
            ax.fill_between(c.labelled, m - s, m + s, color=color, alpha=0.15)
            hit = r.get("arms", {}).get(arm, {}).get("labelled") if r else None
            if hit is not None and not arm.startswith("random"):
                ax.plot([hit], [r["target_mae"]], "o", color=color, ms=6)
        if r:
            ax.axhline(r["target_mae"], color="black", lw=0.8, ls=":", label="random's final MAE")
        if metric == "diff":
            ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xlabel("labelled structures")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def paired_table(df: pd.DataFrame, checkpoints: int = 6, baseline: str = "random-b1") -> str:
    """Markdown: each arm's test MAE minus ``baseline``'s for the same seed, mean over seeds with
    its 95% t-interval, at the query counts of :func:`final_table` (fixed in advance: no column
    is chosen by its result); bold where the interval excludes 0."""
    if baseline not in set(df.arm):
        return ""
    marks = query_marks(int(df.queries.max()), checkpoints)[1:]  # at 0 queries every arm is random
    base = df[df.arm == baseline].set_index(["seed", "queries"])["mae"]

    def interval(arm: str, q: int) -> Interval | None:
        run = df[(df.arm == arm) & (df.queries == q)].set_index("seed")["mae"]
        b = {int(s): float(base[(s, q)]) for s in run.index if (s, q) in base.index}
        return paired_interval({int(s): float(v) for s, v in run.items()}, b)

    def cell(i: Interval | None) -> str:
        if i is None:
            return "-"
        text = i.format(4)
        return f"**{text}**" if i.n > 1 and (i.hi < 0 or i.lo > 0) else text

    lines = [
        "| strategy | " + " | ".join(f"@ {q} queries" for q in marks) + " |",
        "|---" * (len(marks) + 1) + "|",
    ]
    for arm in _order([a for a in df.arm.unique() if a != baseline]):
        lines.append(f"| {arm_label(arm)} | " + " | ".join(cell(interval(arm, q)) for q in marks) + " |")
    return "\n".join(lines)


def write_report(out: str | os.PathLike, dest: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``mae.png``, ``summary.json`` and ``runs.jsonl`` for the regression
    grid in ``out`` into ``dest`` (default ``out``; another ``dest`` also gets a copy of
    ``experiment.json``, so it rebuilds the same report); returns the paths by name."""
    out = user_path(out)
    dest = user_path(dest) if dest is not None else out
    dest.mkdir(parents=True, exist_ok=True)
    runs = read_runs(out)
    df = collect(runs)
    summary = summarise(df)
    r = reach(df, summary)
    r_rem = reach(df, summary, metric="rem")
    meta = read_experiment(out)
    paths = {name: dest / name for name in ("table.md", "mae.png", "summary.json")}
    paths[COMPACT_RUNS] = write_text(
        dest / COMPACT_RUNS, "".join(json.dumps(run, sort_keys=True, separators=(",", ":")) + "\n" for run in runs)
    )
    paths.update(copy_sources(out, dest, (EXPERIMENT,)))
    config = runs[0]["config"]
    target = config.get("target", "target")
    head = [f"# Regression active learning with GP uncertainty: test MAE of `{target}`", ""]
    fits = [f for run in runs for f in run["records"]["fits"]]
    if meta:
        p = meta["preset"]
        head += [
            f"Dataset `{meta['dataset']}`, preset `{p['name']}`: {meta['n_train']} pool / {meta['n_test']} "
            f"fixed test structures (test target std {meta['target_std_test']:.4f}), initial "
            f"{config['initial']} labelled, {p['queries']} queries, embedding `{p['embedding']}`"
            + (f" ({p['embedding_epochs']} epochs)" if p["embedding"] == "train-initial" else "")
            + f", seeds {meta['seeds']}. Wall time {meta['wall_seconds'] / 60:.1f} min.",
            "",
        ]
    if fits:
        noise = [f["noise"] for f in fits]
        head += [
            f"GP: {fits[0]['method']} {fits[0]['kernel']}, hyper-parameters fitted once per run on the "
            f"initial set (noise variance {min(noise):.3g}..{max(noise):.3g}; kept iterate "
            f"{min(f['best_iteration'] for f in fits)}..{max(f['best_iteration'] for f in fits)}"
            f" of {max(run['config'].get('gp', {}).get('iterations', 200) for run in runs)}, chosen by "
            "the validation MAE of 20% of the initial set).",
            "",
        ]
    body = [
        "## MAE (mean +- std over seeds)",
        "",
        final_table(summary, df),
        "",
        "## Paired difference to random on the fixed test set",
        "",
        "Test MAE minus random's with the same seed (same initial set and features), mean over seeds "
        "[95% t-interval]; **bold** where the interval excludes 0. Intervals are per column, not "
        "adjusted for the number of columns.",
        "",
        paired_table(df),
        "",
        "## Labels needed to reach random's final MAE",
        "",
        "On the fixed test split:",
        "",
        reach_markdown(r, "test"),
        "",
    ]
    if r_rem:
        body += [
            "On the unlabelled remainder of the pool (protocol B's test set, which shrinks as the "
            "strategy removes the points it labels; random's final value is taken at the last step "
            "that still has a remainder):",
            "",
            reach_markdown(r_rem, "remainder", study=None),
            "",
        ]
    write_text(paths["table.md"], "\n".join(head + body))
    plot_mae(
        summary, {"mae": r, "rem": r_rem}, paths["mae.png"], f"{meta.get('dataset', '')} {target}".strip(), paired(df)
    )
    every = summary[(summary.queries % 50 == 0) | (summary.queries == summary.queries.max())]
    write_text(
        paths["summary.json"],
        json.dumps(
            {
                "experiment": meta,
                "reach": r,
                "reach_remainder": r_rem,
                "curves_every_50_queries": [
                    {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                    for row in every.round(6).to_dict(orient="records")
                ],
            },
            indent=1,
        ),
    )
    return paths
