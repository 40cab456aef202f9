"""Tables and plots from a grid's records: ``table.md``, ``accuracy.png``, ``loss.png``,
``differences.png``, ``spacegroups.png``, ``summary.json`` and the compact ``runs.jsonl`` (the
``study`` extra). The seed-level statistics and the claim verdicts are in :mod:`.analysis`.

Everything is recomputed from the runs (each run's ``config.json`` and ``records.jsonl`` under
``runs/``, or, for committed results, the same content packed one run per line into
``runs.jsonl``) and, for the label plot and the sizes, ``experiment.json``, so a report can be
regenerated at any time, also from a partly finished grid. Means and standard deviations are
over seeds (sample std, ddof = 1; 0 for a single seed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from alkernels._extras import missing_extra
from alkernels._paths import user_path
from alkernels.loop.loop import read_records
from alkernels.loop.rundir import claim_folder

try:
    import pandas as pd
except ImportError as err:
    raise missing_extra("study", __name__, err) from err
from alkernels.experiments._grid import EXPERIMENT, read_experiment
from alkernels.experiments._report import COMPACT_RUNS, copy_sources, mean_std, read_packed_runs, sample_std, write_text
from alkernels.experiments.plots import pyplot
from alkernels.experiments.spacegroup import analysis
from alkernels.experiments.spacegroup.analysis import MID_FRACTIONS, UNCERTAINTY
from alkernels.experiments.spacegroup.analysis import order as _order


def read_runs(out: str | os.PathLike) -> list[dict]:
    """Every run of the grid in ``out``: those packed into ``runs.jsonl`` and those under
    ``runs/**`` (a committed grid continued); a run in both is taken from ``runs/`` unless the
    packed copy has more rounds.

    Returns:
        ``{"run", "config", "records"}`` per run, sorted by ``run``.
    """
    out = user_path(out)
    runs: dict[str, dict] = {run["run"]: run for run in read_packed_runs(out)}
    for path in sorted(out.glob("runs/**/config.json")):
        name = str(path.parent.relative_to(out))
        records = read_records(path.parent / "records.jsonl")
        if name not in runs or len(records) >= len(runs[name]["records"]):
            runs[name] = {"run": name, "config": json.loads(path.read_text()), "records": records}
    return [runs[k] for k in sorted(runs)]


def write_compact(runs: list[dict], path: Path) -> Path:
    """Pack ``runs`` (from :func:`read_runs`) into one JSON line each at ``path``."""
    return write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in runs))


def collect(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, round): variant, strategy, seed, percent, count, accuracy, loss, times.

    ``percent`` is the labelled fraction in whole percent, ``count`` the labelled structures.
    """
    rows = []
    for run in runs:
        config = run["config"]
        for r in run["records"]:
            rows.append(
                {
                    "variant": analysis.run_variant(config),
                    "strategy": config["strategy"],
                    "seed": config["seed"],
                    "round": r["round"],
                    "percent": int(round(100 * r["labelled_fraction"])),
                    "count": r["labelled_count"],
                    "accuracy": 100 * r["accuracy"],
                    "loss": r["loss"],
                    "train_seconds": r["train_seconds"],
                    "query_seconds": r["query_seconds"],
                }
            )
    if not rows:
        raise ValueError("no run records found (neither runs/**/records.jsonl nor runs.jsonl)")
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (variant, strategy, percent) of accuracy (%), loss and times."""
    g = df.groupby(["variant", "strategy", "percent"])
    return pd.DataFrame(
        {
            "acc_mean": g["accuracy"].mean(),
            "acc_std": g["accuracy"].agg(sample_std),
            "loss_mean": g["loss"].mean(),
            "loss_std": g["loss"].agg(sample_std),
            "train_seconds": g["train_seconds"].mean(),
            "query_seconds": g["query_seconds"].mean(),
            "seeds": g["seed"].nunique(),
        }
    ).reset_index()


def _standard(summary: pd.DataFrame) -> tuple[float, float, float, float, int] | None:
    """The standard (full-data) run's accuracy mean and std, loss mean and std, and seeds."""
    row = summary[summary.variant == "standard"]
    if row.empty:
        return None
    r = row.iloc[0]
    return r.acc_mean, r.acc_std, r.loss_mean, r.loss_std, int(r.seeds)


def accuracy_table(summary: pd.DataFrame, variant: str) -> str:
    """Markdown table in the layout of the paper's Table 1: strategies x labelled fraction,
    ``mean +- std`` test accuracy in % (the mean alone for one seed), cells at or above the
    standard run's mean in bold."""
    part = summary[summary.variant == variant]
    percents = sorted(part.percent.unique())
    std = _standard(summary)
    lines = ["| strategy | " + " | ".join(f"{p}%" for p in percents) + " |", "|---" * (len(percents) + 1) + "|"]
    for name in _order(part.strategy.unique()):
        cells = []
        for p in percents:
            hit = part[(part.strategy == name) & (part.percent == p)]
            if hit.empty:
                cells.append("")
                continue
            m = hit.iloc[0].acc_mean
            text = mean_std(m, hit.iloc[0].acc_std, hit.iloc[0].seeds)
            cells.append(f"**{text}**" if std is not None and m >= std[0] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if std is not None:
        text = mean_std(std[0], std[1], std[4])
        lines.append("| standard (full data) | " + " | " * (len(percents) - 1) + text + " |")
    seeds = part.groupby("strategy").seeds.min()
    if seeds.nunique() > 1:
        lines += [
            "",
            "Seeds per strategy differ (an unfinished grid): "
            + ", ".join(f"{n} {seeds[n]}" for n in _order(seeds.index))
            + ".",
        ]
    return "\n".join(lines)


def console_tables(out: str | os.PathLike) -> str:
    """The accuracy tables of the grid in ``out`` (one per weight-reset variant), for a terminal."""
    summary = summarise(collect(read_runs(out)))
    parts = []
    for variant in ("keep", "reset"):
        if variant in set(summary.variant):
            title = "weights kept" if variant == "keep" else "weights reset"
            parts += [
                f"Test accuracy (%), {title} between rounds (mean +- std over seeds; "
                "**bold**: at or above the standard run):",
                accuracy_table(summary, variant),
                "",
            ]
    return "\n".join(parts)


def timing_table(summary: pd.DataFrame, variant: str) -> str:
    """Mean seconds per round of training and of querying, per strategy (averaged over rounds)."""
    part = summary[summary.variant == variant]
    lines = ["| strategy | train s / round | query s / round |", "|---|---|---|"]
    for name in _order(part.strategy.unique()):
        hit = part[part.strategy == name]
        queried = hit[hit.percent < hit.percent.max()]
        lines.append(f"| {name} | {hit.train_seconds.mean():.2f} | {queried.query_seconds.mean():.3f} |")
    return "\n".join(lines)


def claims(summary: pd.DataFrame) -> dict:
    """Numbers behind the paper's qualitative claims, per weight-reset variant.

    - ``mid_gain``: per uncertainty strategy, mean accuracy over 40/50/60% minus random's (points).
    - ``first_at_standard``: per strategy, the smallest labelled % whose mean reaches the standard
      run's mean (None if never).
    - ``area``: per strategy, mean accuracy over the 10-90% rounds (a learning-curve area).
    - ``final_minus_standard``: per strategy, accuracy at the last round minus standard's.
    """
    std = _standard(summary)
    out: dict = {"standard": None if std is None else {"acc_mean": std[0], "acc_std": std[1]}}
    for variant in sorted(set(summary.variant) - {"standard"}):
        part = summary[summary.variant == variant]
        by = {n: part[part.strategy == n].set_index("percent").acc_mean for n in part.strategy.unique()}
        res: dict = {"mid_gain": {}, "first_at_standard": {}, "area": {}, "final_minus_standard": {}}
        for name, curve in by.items():
            res["area"][name] = float(curve[curve.index < curve.index.max()].mean())
            if std is not None:
                reached = curve[curve >= std[0]]
                res["first_at_standard"][name] = int(reached.index.min()) if len(reached) else None
                res["final_minus_standard"][name] = float(curve.iloc[-1] - std[0])
            if name in UNCERTAINTY and "random" in by:
                mids = [p for p in MID_FRACTIONS if p in curve.index and p in by["random"].index]
                if mids:
                    res["mid_gain"][name] = float(np.mean([curve[p] - by["random"][p] for p in mids]))
        out[variant] = res
    return out


def _plot_metric(summary: pd.DataFrame, metric: str, ylabel: str, path: Path, majority: float | None = None) -> None:
    """Curves of ``metric`` per strategy and variant; ``majority``: the test accuracy (%) of
    always predicting the most frequent class, drawn as a dotted line."""
    plt = pyplot()
    variants = [v for v in ("keep", "reset") if v in set(summary.variant)]
    fig, axes = plt.subplots(
        1, max(len(variants), 1), figsize=(7 * max(len(variants), 1), 5), squeeze=False, sharey=True
    )
    std = summary[summary.variant == "standard"]
    cmap = plt.get_cmap("tab20")
    for ax, variant in zip(axes[0], variants):
        part = summary[summary.variant == variant]
        for k, name in enumerate(_order(part.strategy.unique())):
            curve = part[part.strategy == name].sort_values("percent")
            m, s = curve[f"{metric}_mean"].to_numpy(), curve[f"{metric}_std"].to_numpy()
            style = "-" if name in UNCERTAINTY else "--" if name == "random" else ":"
            ax.plot(curve.percent, m, style, marker="o", ms=3, color=cmap(k % 20), label=name)
            ax.fill_between(curve.percent, m - s, m + s, color=cmap(k % 20), alpha=0.12)
        if not std.empty:
            m, s = std.iloc[0][f"{metric}_mean"], std.iloc[0][f"{metric}_std"]
            ax.axhline(m, color="black", ls="--", lw=1.5, label="standard (full data)")
            ax.axhspan(m - s, m + s, color="black", alpha=0.08)
        if majority is not None:
            ax.axhline(majority, color="grey", ls=":", lw=1.5, label=f"most frequent class ({majority:.1f}%)")
        ax.set_title(f"weights {'kept' if variant == 'keep' else 'reset'} between rounds")
        ax.set_xlabel("labelled fraction of the training set (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_spacegroups(train: np.ndarray, test: np.ndarray, path: Path, title: str = "") -> None:
    """Bar plot of the space-group distributions (fraction of structures) of train and test."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(12, 4))
    bins = np.arange(1, 232)
    for labels, name, shift in ((train, "train", -0.2), (test, "test", 0.2)):
        counts = np.bincount(labels, minlength=231)[1:] / max(len(labels), 1)
        ax.bar(bins[:-1] + shift, counts, width=0.4, label=f"{name} ({len(labels)})")
    ax.set_xlabel("space-group number")
    ax.set_ylabel("fraction of structures")
    ax.set_title(title or "space-group distribution")
    ax.set_xlim(0, 231)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _variant_sections(frame: pd.DataFrame, table: Callable[[pd.DataFrame, str], str]) -> list[str]:
    """One ``### Weights kept|reset`` section per variant present in ``frame`` (a DataFrame with a
    ``variant`` column), holding ``table(frame, variant)``."""
    out: list[str] = []
    for variant in ("keep", "reset"):
        if variant in set(frame.variant):
            out += [f"### Weights {'kept' if variant == 'keep' else 'reset'}", "", table(frame, variant), ""]
    return out


def write_report(out: str | os.PathLike, dest: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``accuracy.png``, ``loss.png``, ``spacegroups.png`` (if the grid's
    ``experiment.json`` exists), ``summary.json`` and ``runs.jsonl`` for the grid in ``out`` into
    ``dest`` (default ``out``; another ``dest`` also gets a copy of ``experiment.json``); returns
    the written paths by name.

    ``runs.jsonl`` packs every run's config and records, so a copy of ``dest`` without the
    ``runs/`` folder still rebuilds the same report."""
    out = user_path(out)
    dest = user_path(dest) if dest is not None else out
    claim_folder(dest)  # only a folder alkernels writes; created when new
    runs = read_runs(out)
    summary = summarise(collect(runs))
    meta = read_experiment(out)
    c = claims(summary)
    df = collect(runs)
    paired = analysis.paired_to_random(df)
    area = analysis.areas(df)
    verdicts = analysis.claim_verdicts(df)
    primary = analysis.primary_endpoint(df)
    std = _standard(summary)
    reach = analysis.labels_to_reach(df, std[0]) if std is not None else {}
    paths = {name: dest / name for name in ("table.md", "accuracy.png", "loss.png", "summary.json")}
    paths[COMPACT_RUNS] = write_compact(runs, dest / COMPACT_RUNS)
    paths.update(copy_sources(out, dest, (EXPERIMENT,)))

    head = ["# Active learning for space-group classification: test accuracy (%)", ""]
    if meta:
        p = meta["preset"]
        epochs = (
            f"{p['epochs']} epoch(s) per round"
            if p.get("epoch_budget") is None
            else f"an epoch budget of {p['epoch_budget']:g} full-training-set epochs per run"
        )
        head += [
            f"Dataset `{meta['dataset']}`, preset `{p['name']}`: {meta['n_train']} train / "
            f"{meta['n_test']} test structures, {p['rounds']} rounds of {p['query_size']:.0%} "
            f"chunks, {epochs}, AdamW lr {p['lr']:g}, batch {p['batch_size']}, "
            f"{p['graph_mode']} graphs with a {p['cutoff']:g} A cutoff, T = {p['passes']} MC passes, "
            f"seeds {meta['seeds']}. Wall time {meta['wall_seconds'] / 60:.1f} min with "
            f"{meta['processes']} process(es).",
            "",
        ]
        if p.get("encoder_dropout"):
            head += [
                f"**A variant of the paper's model:** dropout {p['encoder_dropout']:g} on the encoder's node "
                "state after every layer (the paper's has dropout in the head only); every run here, the "
                "standard run included, trains and scores with it.",
                "",
            ]
        planned = meta["seeds"] * (1 + len(meta["strategies"]) * len(meta["variants"]))
        done = analysis.complete_runs(df).groupby(["variant", "strategy", "seed"]).ngroups
        if done < planned:
            per = (
                analysis.complete_runs(df)
                .groupby("variant")
                .apply(lambda g: g.groupby(["strategy", "seed"]).ngroups, include_groups=False)
            )
            head += [
                f"**Unfinished grid: {done} of {planned} runs complete** ("
                + ", ".join(f"{v} {int(per[v])}" for v in ("standard", "keep", "reset") if v in per)
                + "); the tables use the finished rounds, the statistics only complete runs.",
                "",
            ]
    single = " (a cell of one seed: its value alone)" if (summary.seeds < 2).any() else ""
    head += [f"Mean +- std over seeds{single}; **bold**: at or above the standard (full-data) run's mean.", ""]
    body = []
    for variant in ("keep", "reset"):
        if variant in set(summary.variant):
            body += [
                f"## Weights {'kept' if variant == 'keep' else 'reset to the initial ones'} between rounds",
                "",
                accuracy_table(summary, variant),
                "",
                "Seconds per round (mean over rounds and seeds):",
                "",
                timing_table(summary, variant),
                "",
            ]
    body += [
        "## Paired difference to random",
        "",
        "Test accuracy minus random's with the same seed (same initial weights, initial labelled set "
        "and batch order), in points: mean over seeds [95% t-interval, t(0.975, seeds - 1) x sd / "
        "sqrt(seeds)]; **bold** where the interval excludes 0. Intervals are per cell, not adjusted "
        "for the number of cells. Plot: `differences.png`.",
        "",
    ]
    body += _variant_sections(paired, analysis.difference_table)
    body += [
        "## Area under the learning curve",
        "",
        "Trapezoid-rule mean test accuracy over the labelled fractions (10-100%), per seed; "
        "mean [95% t-interval] over seeds, and the paired difference to random.",
        "",
    ]
    body += _variant_sections(area, analysis.area_table)
    if reach:
        body += [
            "## Labels needed to reach the standard run",
            "",
            f"The first round whose mean accuracy over seeds is at or above the standard (full-data) "
            f"run's mean, {std[0]:.1f}%: labelled structures (labelled %).",
            "",
            analysis.reach_table(reach, std[0]),
            "",
        ]
    train_labels = np.asarray(meta.get("train_spacegroups", []), dtype=np.int64)
    if len(train_labels):
        comp = analysis.query_composition(runs, train_labels)
        if not comp.empty:
            pool = np.bincount(train_labels)
            body += [
                "## Class composition of the queries",
                "",
                "Per query, the most-picked space group's share of the picked structures (%) and the number "
                f"of distinct groups picked, mean over seeds; the training set's largest group is "
                f"{100 * pool.max() / pool.sum():.0f}% of it, and it has {(pool > 0).sum()} groups. A query "
                "concentrated on one group skews the labelled set towards it.",
                "",
            ]
            body += _variant_sections(comp, analysis.composition_table)
    if primary is not None:
        body += [
            "## Primary endpoint: margin minus random",
            "",
            "Declared before the study's second pass (`alkernels/experiments/spacegroup/analysis.py`): the "
            "paper's best strategy against random with weights kept, paired over seeds, with the power a "
            "two-sided paired t-test over these seeds had to detect the paper's own effect (from its Table 1) "
            "and the seeds that would give 80% power at this paired sd.",
            "",
            analysis.primary_markdown(primary),
            "",
        ]
    body += [
        "## The paper's claims",
        "",
        "Verdicts by the rules in `alkernels/experiments/spacegroup/analysis.py` (fixed before the "
        "grid ran): supported / not supported / inconclusive at this scale.",
        "",
        analysis.verdicts_markdown(verdicts),
        "",
    ]
    write_text(paths["table.md"], "\n".join(head + body))
    test_labels = np.asarray(meta.get("test_spacegroups", []), dtype=np.int64)
    majority = 100 * np.bincount(test_labels).max() / len(test_labels) if len(test_labels) else None
    _plot_metric(summary, "acc", "test accuracy (%)", paths["accuracy.png"], majority)
    _plot_metric(summary, "loss", "test cross-entropy", paths["loss.png"])
    if not paired.empty:
        paths["differences.png"] = dest / "differences.png"
        analysis.plot_differences(paired, paths["differences.png"], pyplot())
    if meta:
        paths["spacegroups.png"] = dest / "spacegroups.png"
        plot_spacegroups(
            np.asarray(meta["train_spacegroups"]),
            np.asarray(meta["test_spacegroups"]),
            paths["spacegroups.png"],
            title=f"space groups of {meta['dataset']}",
        )
    records = {k: v for k, v in meta.items() if k not in ("train_spacegroups", "test_spacegroups")}
    write_text(
        paths["summary.json"],
        json.dumps(
            {
                "experiment": records,
                "claims": c,
                "verdicts": verdicts,
                "primary_endpoint": primary,
                "labels_to_reach_standard": reach,
                "paired_to_random": paired.to_dict(orient="records"),
                "areas": area.to_dict(orient="records"),
                "curves": summary.to_dict(orient="records"),
            },
            indent=1,
        ),
    )
    return paths
