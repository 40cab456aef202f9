"""``table.md``, ``summary.json``, ``mae_vs_size.png`` (and, with several sources,
``sources_vs_size.png``) of a transfer study, rebuilt from ``experiment.json`` and ``cells.jsonl``
alone (the ``study`` extra, for matplotlib).

Means and standard deviations are over the repeats (sample std, ddof = 1); a cell of one repeat
shows its value alone. Every model of a size is fitted on the same subsamples, one per repeat, so
the comparisons are paired over the repeats: the mean difference with its 95% t-interval
(:mod:`alkernels.experiments.spacegroup.stats`), in % of the reference's mean, beside the change
that the same paired test detects with 80% power. Only the comparisons declared in
``docs/protocols.md`` are reported; none picks the best of several models after the fact. A table
of fine-tuning lengths shows how many cells ended at the budget rather than on the patience.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from alkernels._paths import user_path
from alkernels.experiments._grid import EXPERIMENT, read_experiment
from alkernels.experiments._report import copy_sources, mean_std, sample_std, write_text
from alkernels.experiments.plots import pyplot
from alkernels.experiments.spacegroup.stats import Interval, detectable_effect, paired_interval
from alkernels.experiments.transfer.study import CELLS, SCRATCH_SOURCE, read_cells, source_label

plt = pyplot()  # importing the report needs the study extra

_T = TypeVar("_T")

#: The reference that needs no model: predicting the fine-tuning subsample's median.
MEDIAN = "median"


def finetune_seconds(meta: dict) -> float:
    """The fine-tuning time of a study's ``experiment.json``: the sum of its ``cell_seconds``
    (studies made before alkernels 0.2 recorded it as ``finetune_seconds``)."""
    if "finetune_seconds" in meta:
        return meta["finetune_seconds"]
    return float(sum(meta.get("cell_seconds", {}).values()))


def aggregate(cells: list[dict]) -> dict[tuple[str, str, int], dict]:
    """(source, strategy, size) -> {mean, std, n} of the test MAE; the median baseline appears as
    source ``none``, strategy ``median`` (one value per (size, repeat))."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    medians: dict[tuple[int, int], float] = {}
    for c in cells:
        groups.setdefault((c["source"], c["strategy"], c["size"]), []).append(c["test_mae"])
        medians[(c["size"], c["repeat"])] = c["median_mae"]
    for (size, _), value in medians.items():
        groups.setdefault((SCRATCH_SOURCE, MEDIAN, size), []).append(value)
    out = {}
    for key, values in groups.items():
        v = np.asarray(values, dtype=np.float64)
        out[key] = {"mean": float(v.mean()), "std": sample_std(v), "n": int(v.size)}
    return out


def _fmt(stat: dict | None) -> str:
    if stat is None:
        return "-"
    return mean_std(stat["mean"], stat["std"], stat["n"], ".4f", sep="±")


def _table(rows: list[int], columns: list[tuple[str, str, str]], agg: dict) -> list[str]:
    """Markdown rows: one per size, one column per (header, source, strategy)."""
    lines = ["| size | " + " | ".join(h for h, _, _ in columns) + " |", "|---:|" + "---:|" * len(columns)]
    for size in rows:
        cells = [_fmt(agg.get((src, strat, size))) for _, src, strat in columns]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def _by_repeat(cells: list[dict]) -> dict[tuple[str, str, int], dict[int, float]]:
    """(source, strategy, size) -> {repeat: test MAE}; the median baseline as (``none``,
    ``median``, size). Every model of a size is fitted on the same subsamples (one per repeat),
    so differences between models pair up by repeat."""
    out: dict[tuple[str, str, int], dict[int, float]] = {}
    for c in cells:
        out.setdefault((c["source"], c["strategy"], c["size"]), {})[c["repeat"]] = c["test_mae"]
        out.setdefault((SCRATCH_SOURCE, MEDIAN, c["size"]), {})[c["repeat"]] = c["median_mae"]
    return out


def paired_percent(a: dict[int, float], b: dict[int, float]) -> Interval | None:
    """``a - b`` paired over the repeats both have, as a percentage of ``b``'s mean over those
    repeats, with its 95% t-interval (the interval of the mean difference, scaled by the same
    factor); None when they share no repeat."""
    d = paired_interval(a, b)
    if d is None:
        return None
    scale = 100.0 / float(np.mean([b[r] for r in sorted(set(a) & set(b))]))
    return Interval(d.mean * scale, d.lo * scale, d.hi * scale, d.n)


def detectable_percent(a: dict[int, float], b: dict[int, float], power: float = 0.8) -> float | None:
    """The change of ``a - b``, in % of ``b``'s mean over the repeats both have, that the paired
    95% t-test over those repeats detects with probability ``power``, given the standard deviation
    of the paired differences (:func:`~alkernels.experiments.spacegroup.stats.detectable_effect`);
    None with fewer than two shared repeats or differences without spread."""
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    sd = float(np.std([a[r] - b[r] for r in shared], ddof=1))
    if not sd > 0:
        return None
    return detectable_effect(sd, len(shared), power) * 100.0 / float(np.mean([b[r] for r in shared]))


def at_budget(cell: dict, ft: dict) -> bool:
    """Whether a fine-tuning cell ended at its budget (``ft``'s ``max_epochs``, or ``max_steps``
    when set) rather than on the early-stopping patience."""
    return cell["epochs"] >= ft["max_epochs"] or bool(ft["max_steps"]) and cell["steps"] >= ft["max_steps"]


def _verdict(name: str, intervals: dict[int, Interval]) -> str:
    """``name``: the sizes whose interval lies below 0, above 0, and the count that contain 0."""
    lower = [n for n, i in intervals.items() if i.n > 1 and i.hi < 0]
    higher = [n for n, i in intervals.items() if i.n > 1 and i.lo > 0]
    undecided = len(intervals) - len(lower) - len(higher)
    return (
        f"{name}: lower at {', '.join(map(str, lower)) or 'no size'}; higher at "
        f"{', '.join(map(str, higher)) or 'no size'}; interval contains 0 at {undecided} of {len(intervals)}."
    )


def _findings(
    paired: dict[tuple[str, str, int], dict[int, float]],
    sources: list[list[str]],
    trained: list[str],
    sizes: list[int],
    has_scratch: bool,
) -> tuple[list[str], dict[str, dict[str, dict[int, Interval]]], dict[str, dict[str, dict[str, dict[int, Interval]]]]]:
    """The pre-declared comparisons (``docs/protocols.md``), each a paired 95% interval per size
    of the test-MAE change in % (negative: the first model is better): every model against the
    median baseline, each fine-tuning strategy against scratch, and a multi-property source
    against each single source with the same strategy. No comparison picks a best model after
    the fact. Returns the statements; per source and strategy, the intervals against scratch; and
    per multi-property source, single source and strategy, the intervals of MPT against it."""
    labels = [source_label(c) for c in sources]
    models = [(src, x) for src in labels for x in trained] + ([(SCRATCH_SOURCE, "scratch")] if has_scratch else [])
    out = []
    below = sum(
        1
        for src, x in models
        for n in sizes
        if (i := _pair(paired, (src, x, n), (SCRATCH_SOURCE, MEDIAN, n))) is not None and i.n > 1 and i.hi < 0
    )
    total = sum(1 for src, x in models for n in sizes if (src, x, n) in paired)
    text = f"Against the median baseline (no model): {below} of {total} (model, size) cells have a test MAE lower"
    text += " than predicting the median, with a paired interval below 0."
    if not below:
        text += " No model beats predicting the median, so the comparisons below say nothing about transfer."
    out.append(text)
    versus: dict[str, dict[str, dict[int, Interval]]] = {}
    if has_scratch:
        for src in labels:
            for x in trained:
                row = {n: i for n in sizes if (i := _pair(paired, (src, x, n), (SCRATCH_SOURCE, "scratch", n)))}
                versus.setdefault(src, {})[x] = row
                out.append(_verdict(f"`{src}` {x} vs scratch", row))
    singles = [source_label(c) for c in sources if len(c) == 1]
    mpt_versus: dict[str, dict[str, dict[str, dict[int, Interval]]]] = {}
    for mpt in (source_label(c) for c in sources if len(c) > 1):
        for single in singles:
            for x in trained:
                row = {n: i for n in sizes if (i := _pair(paired, (mpt, x, n), (single, x, n)))}
                mpt_versus.setdefault(mpt, {}).setdefault(single, {})[x] = row
                out.append(_verdict(f"MPT `{mpt}` vs `{single}`, {x}", row))
    return out, versus, mpt_versus


def _by_size_table(sizes: list[int], rows: dict[str, dict[str, dict[int, _T]]], fmt: Callable[[_T], str]) -> list[str]:
    """A markdown table with a row per source and strategy and a column per size, each cell
    ``fmt(rows[source][strategy][size])`` (``-`` where a size is missing)."""
    lines = ["| source | strategy | " + " | ".join(str(n) for n in sizes) + " |", "|---|---|" + "---:|" * len(sizes)]
    for src, by_strategy in rows.items():
        for strat, row in by_strategy.items():
            lines.append(f"| `{src}` | {strat} | " + " | ".join(fmt(row[n]) if n in row else "-" for n in sizes) + " |")
    return lines


def _intervals_json(rows: dict[str, dict[str, dict[int, Interval]]]) -> dict:
    """``rows`` (source -> strategy -> size -> interval) as summary.json stores it."""
    return {
        src: {st: {str(n): i._asdict() for n, i in row.items()} for st, row in r.items()} for src, r in rows.items()
    }


def _pair(paired: dict, a: tuple[str, str, int], b: tuple[str, str, int]) -> Interval | None:
    if a not in paired or b not in paired:
        return None
    return paired_percent(paired[a], paired[b])


def write_report(out: str | os.PathLike, dest: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write the report of the study in ``out`` (into ``dest``, default ``out``; another ``dest``
    also gets copies of ``experiment.json`` and ``cells.jsonl``, so it rebuilds the same report).

    Returns:
        name -> path of every file written.
    """
    out = user_path(out)
    dest = user_path(dest) if dest is not None else out
    dest.mkdir(parents=True, exist_ok=True)
    if not (out / EXPERIMENT).is_file():
        raise ValueError(f"{out} has no {EXPERIMENT}: not a transfer study folder")
    meta = read_experiment(out)
    cells = read_cells(out)
    if not cells:
        raise ValueError(f"{out} has no finished cells yet")
    s = meta["settings"]
    agg = aggregate(cells)
    sizes = sorted({c["size"] for c in cells})
    sources = [source_label(cols) for cols in s["sources"]]
    strategies = list(s["strategies"])
    trained = [x for x in strategies if x != "scratch"]
    has_scratch = "scratch" in strategies
    target = s["finetune"]

    lines = [
        f"# Transfer learning: fine-tuning `{target}`",
        "",
        f"Fine-tuning data `{s['finetune_data']}`: a fixed test set of {meta['n_test']} structures and a pool "
        f"of {meta['n_pool']}; each size draws {s['repeats']} random subsamples from the pool, each split "
        f"90/10 into train and validation. Pre-training data: "
        + ", ".join(f"`{n}`" for n in s["pretrain_data"])
        + " (fine-tuning test structures removed: "
        + ", ".join(f"{k} {v}" for k, v in meta["dropped_from_pretraining"].items())
        + ").",
        "",
        f"Test MAE of `{target}`, mean ± std over the subsamples; `{MEDIAN}` predicts the subsample's median "
        "(no model) for reference. Comparisons are paired: every model of a size is fitted on the same "
        "subsamples.",
        "",
    ]
    expected = len(s["sizes"]) * s["repeats"] * (len(sources) * len(trained) + int(has_scratch))
    if len(cells) < expected:
        lines += [
            f"**Partial study: {len(cells)} of {expected} cells finished.** Each mean covers the repeats "
            "finished so far; re-running the study's command continues it.",
            "",
        ]
    for src in sources:
        lines += [f"## Pre-trained on `{src}`", ""]
        cols = ([("scratch", SCRATCH_SOURCE, "scratch")] if has_scratch else []) + [(x, src, x) for x in trained]
        cols.append((MEDIAN, SCRATCH_SOURCE, MEDIAN))
        lines += _table(sizes, cols, agg) + [""]
    if len(sources) > 1:
        lines += ["## Sources compared, one table per strategy", ""]
        for strat in trained:
            lines += [f"### `{strat}`", ""]
            cols = ([("scratch", SCRATCH_SOURCE, "scratch")] if has_scratch else []) + [(x, x, strat) for x in sources]
            lines += _table(sizes, cols, agg) + [""]
    paired = _by_repeat(cells)
    findings, versus, mpt_versus = _findings(paired, s["sources"], trained, sizes, has_scratch)
    scratch = {n: paired[(SCRATCH_SOURCE, "scratch", n)] for n in sizes if (SCRATCH_SOURCE, "scratch", n) in paired}
    detectable = {
        src: {
            strat: {n: d for n in row if (d := detectable_percent(paired[(src, strat, n)], scratch[n])) is not None}
            for strat, row in rows.items()
        }
        for src, rows in versus.items()
    }
    if has_scratch:
        lines += [
            "## Change of the test MAE against scratch",
            "",
            "Fine-tuned minus scratch, paired over the subsamples, in % of scratch's mean, with the 95% "
            "t-interval (negative: fine-tuning is better).",
            "",
        ]
        lines += _by_size_table(sizes, versus, Interval.format)
        lines += [
            "",
            "## What these subsamples can detect",
            "",
            "The change against scratch, in % of scratch's mean and of either sign, that the paired 95% "
            "t-test over these subsamples detects with 80% power, given the spread of that pair's "
            "differences (noncentral t): a true change smaller than this is more likely missed than seen.",
            "",
        ]
        lines += _by_size_table(sizes, detectable, lambda d: f"{d:.1f}")
        lines.append("")
    for mpt, rows in mpt_versus.items():
        lines += [
            f"## Multi-property `{mpt}` against each single source",
            "",
            "MPT minus the single source with the same strategy, paired over the subsamples, in % of the "
            "single source's mean, with the 95% t-interval (negative: MPT is better).",
            "",
        ]
        lines += _by_size_table(sizes, rows, Interval.format) + [""]
    lines += ["## The pre-declared comparisons", ""] + [f"- {f}" for f in findings] + [""]
    lines += [
        "## Pre-training",
        "",
        "| source | rows per file | train / val | epochs (best) | validation MAE | seconds |",
        "|---|---|---:|---:|---|---:|",
    ]
    for src in sources:
        p = meta["pretraining"].get(src)
        if p is None:
            continue
        lines.append(
            f"| `{src}` | "
            + ", ".join(f"{k} {v}" for k, v in p["rows"].items())
            + f" | {p['n_train']} / {p['n_val']} | {p['epochs']} ({p['best_epoch']}) | "
            + ", ".join(f"{k} {v:.4f}" for k, v in p["val_mae"].items())
            + f" | {p['seconds']:.0f} |"
        )
    ft = s["ft"]
    lines += [
        "",
        "## Fine-tuning length",
        "",
        f"Per strategy and size: the median best epoch / the median epochs run, and in brackets how many of "
        f"the cells ended at the budget ({ft['max_epochs']} epochs"
        + (f" or {ft['max_steps']} optimiser steps" if ft["max_steps"] else "")
        + f") instead of on the patience of {ft['patience']} epochs; such a cell may still have been improving.",
        "",
        "| strategy | " + " | ".join(str(n) for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    budget_hits: dict[str, dict[str, int]] = {}
    for strat in strategies:
        row = []
        for n in sizes:
            mine = [c for c in cells if c["strategy"] == strat and c["size"] == n]
            if not mine:
                row.append("-")
                continue
            capped = sum(1 for c in mine if at_budget(c, ft))
            best = float(np.median([c["best_epoch"] for c in mine]))
            run = float(np.median([c["epochs"] for c in mine]))
            budget_hits.setdefault(strat, {})[str(n)] = capped
            row.append(f"{best:g} / {run:g} ({capped}/{len(mine)})")
        lines.append(f"| {strat} | " + " | ".join(row) + " |")
    seconds: dict[str, float] = {}
    for c in cells:
        seconds[c["strategy"]] = seconds.get(c["strategy"], 0.0) + c["seconds"]
    lines += ["", "## Fine-tuning time", "", "| strategy | cells | seconds in total |", "|---|---:|---:|"]
    for strat in strategies:
        count = sum(1 for c in cells if c["strategy"] == strat)
        lines.append(f"| {strat} | {count} | {seconds.get(strat, 0.0):.0f} |")
    lines += [
        "",
        f"Fine-tuning wall time {finetune_seconds(meta):.0f} s; whole study {meta['wall_seconds']:.0f} s "
        "(summed over the runs that built it; a cached pre-training counts where it was trained).",
    ]
    written = {"table.md": dest / "table.md", **copy_sources(out, dest, (EXPERIMENT, CELLS))}
    write_text(written["table.md"], "\n".join(lines) + "\n")

    summary = {
        "settings": s,
        "n_pool": meta["n_pool"],
        "n_test": meta["n_test"],
        "mae": [{"source": k[0], "strategy": k[1], "size": k[2], **v} for k, v in sorted(agg.items())],
        "findings": findings,
        "paired_vs_scratch_percent": _intervals_json(versus),
        "paired_mpt_vs_single_percent": {mpt: _intervals_json(rows) for mpt, rows in mpt_versus.items()},
        "detectable_vs_scratch_percent_at_80_power": {
            src: {st: {str(n): v for n, v in row.items()} for st, row in r.items()} for src, r in detectable.items()
        },
        "pretraining": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in meta["pretraining"].items()},
        "finetune_cells_at_budget": budget_hits,
        "finetune_seconds_by_strategy": seconds,
        "finetune_seconds": finetune_seconds(meta),
        "wall_seconds": meta["wall_seconds"],
        "cells": len(cells),
    }
    written["summary.json"] = dest / "summary.json"
    write_text(written["summary.json"], json.dumps(summary, indent=1))

    def curve(ax, src: str, strat: str, label: str, **style) -> None:
        xs = [n for n in sizes if (src, strat, n) in agg]
        if not xs:
            return
        m = np.array([agg[(src, strat, n)]["mean"] for n in xs])
        sd = np.array([agg[(src, strat, n)]["std"] for n in xs])
        (line,) = ax.plot(xs, m, marker="o", ms=3, label=label, **style)
        ax.fill_between(xs, m - sd, m + sd, color=line.get_color(), alpha=0.15, lw=0)

    def grid(count: int):
        ncols = min(3, count)
        nrows = -(-count // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), squeeze=False, sharey=True)
        for ax in axes.flat[count:]:
            ax.set_visible(False)
        return fig, axes.flat

    def finish(ax, title: str) -> None:
        ax.set(xscale="log", xlabel="fine-tuning structures (train + val)", ylabel=f"test MAE of {target}", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    def save(fig, name: str) -> None:
        fig.tight_layout()
        written[name] = dest / name
        fig.savefig(written[name], dpi=110)
        plt.close(fig)

    fig, axes = grid(len(sources))
    for ax, src in zip(axes, sources):
        if has_scratch:
            curve(ax, SCRATCH_SOURCE, "scratch", "scratch", color="black", lw=2)
        for strat in trained:
            curve(ax, src, strat, strat)
        curve(ax, SCRATCH_SOURCE, MEDIAN, MEDIAN, color="grey", ls="--")
        finish(ax, f"pre-trained on {src}" if len(src) < 40 else "pre-trained on\n" + src.replace("+", " + "))
    save(fig, "mae_vs_size.png")
    if len(sources) > 1 and trained:
        fig, axes = grid(len(trained))
        for ax, strat in zip(axes, trained):
            if has_scratch:
                curve(ax, SCRATCH_SOURCE, "scratch", "scratch", color="black", lw=2)
            for src in sources:
                curve(ax, src, strat, src if len(src) < 30 else "MPT: " + src)
            finish(ax, f"fine-tuned with {strat}")
        save(fig, "sources_vs_size.png")
    return written
