"""``table.md``, ``summary.json``, ``mae_vs_size.png`` (and, with several sources,
``sources_vs_size.png``) of a transfer study, rebuilt from ``experiment.json`` and ``cells.jsonl``
alone (the ``study`` extra, for matplotlib).

Means and standard deviations are over the repeats (sample std, ddof = 1); a cell of one repeat
shows its value alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from alkernels.experiments._grid import EXPERIMENT, read_experiment
from alkernels.experiments._report import mean_std, sample_std, write_text
from alkernels.experiments.plots import pyplot
from alkernels.experiments.transfer.study import SCRATCH_SOURCE, read_cells, source_label

plt = pyplot()  # importing the report needs the study extra

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


def _fmt(stat: dict | None, bold: bool = False) -> str:
    if stat is None:
        return "-"
    text = mean_std(stat["mean"], stat["std"], stat["n"], ".4f", sep="±")
    return f"**{text}**" if bold else text


def _table(rows: list[int], columns: list[tuple[str, str, str]], agg: dict, *, best_among: set[str]) -> list[str]:
    """Markdown rows: one per size, one column per (header, source, strategy); the lowest mean
    among the columns whose header is in ``best_among`` is bold."""
    lines = ["| size | " + " | ".join(h for h, _, _ in columns) + " |", "|---:|" + "---:|" * len(columns)]
    for size in rows:
        stats = [agg.get((src, strat, size)) for _, src, strat in columns]
        candidates = [s["mean"] for (h, _, _), s in zip(columns, stats) if s is not None and h in best_among]
        best = min(candidates) if candidates else None
        cells = [
            _fmt(s, s is not None and h in best_among and s["mean"] == best) for (h, _, _), s in zip(columns, stats)
        ]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def _best_strategies(agg: dict, src: str, trained: list[str], sizes: list[int], has_scratch: bool) -> dict[int, str]:
    """size -> the strategy (scratch included) with the lowest mean test MAE for source ``src``."""
    out = {}
    for n in sizes:
        options = [(agg[(src, x, n)]["mean"], x) for x in trained if (src, x, n) in agg]
        if has_scratch and (SCRATCH_SOURCE, "scratch", n) in agg:
            options.append((agg[(SCRATCH_SOURCE, "scratch", n)]["mean"], "scratch"))
        if options:
            out[n] = min(options)[1]
    return out


def _against_median(
    agg: dict, sources: list[str], trained: list[str], sizes: list[int], has_scratch: bool
) -> list[str]:
    """The first finding: at which sizes the best model (any source and strategy, scratch
    included) has a lower mean test MAE than predicting the median; with none, the comparisons
    between models say nothing about transfer."""
    models = [(src, x) for src in sources for x in trained] + ([(SCRATCH_SOURCE, "scratch")] if has_scratch else [])
    rows = []
    for n in sizes:
        median = agg.get((SCRATCH_SOURCE, MEDIAN, n))
        means = [(agg[(s, x, n)]["mean"], s, x) for s, x in models if (s, x, n) in agg]
        if median is not None and means:
            best, src, x = min(means)
            rows.append((n, 100.0 * (best / median["mean"] - 1.0), src, x))
    if not rows:
        return []
    beat = [n for n, gain, _, _ in rows if gain < 0]
    detail = ", ".join(f"{n}: {gain:+.1f}% (`{src}` {x})" for n, gain, src, x in rows)
    text = (
        f"Against the median baseline (no model): the best model's mean test MAE is lower at {len(beat)} of "
        f"{len(rows)} sizes ({detail})."
    )
    if not beat:
        text += " No model beats predicting the median, so the comparisons below say nothing about transfer."
    return [text]


def _findings(
    agg: dict,
    sources: list[list[str]],
    trained: list[str],
    sizes: list[int],
    has_scratch: bool,
    best: dict[str, dict[int, str]],
) -> list[str]:
    """Plain statements of what the numbers say about the study's three findings (means only;
    compare with the stds in the tables before calling a difference real)."""
    out = _against_median(agg, [source_label(c) for c in sources], trained, sizes, has_scratch)
    scratch = {n: agg[(SCRATCH_SOURCE, "scratch", n)]["mean"] for n in sizes if (SCRATCH_SOURCE, "scratch", n) in agg}
    for cols in sources:
        src = source_label(cols)
        if has_scratch:
            gains = {}
            for n in sizes:
                tuned = [(agg[(src, x, n)]["mean"], x) for x in trained if (src, x, n) in agg]
                if tuned and n in scratch:
                    m, x = min(tuned)
                    gains[n] = (100.0 * (m / scratch[n] - 1.0), x)
            wins = [n for n, (g, _) in gains.items() if g < 0]
            detail = ", ".join(f"{n}: {g:+.1f}% ({x})" for n, (g, x) in gains.items())
            out.append(
                f"PT-FT vs scratch, `{src}`: the best fine-tuned strategy has a lower mean than scratch at "
                f"{len(wins)} of {len(gains)} sizes ({detail})."
            )
            per_strategy = []
            for x in trained:
                beat = [
                    n for n in sizes if (src, x, n) in agg and n in scratch and agg[(src, x, n)]["mean"] < scratch[n]
                ]
                per_strategy.append(f"{x}: {', '.join(map(str, beat)) or 'none'}")
            out.append(f"Sizes where each strategy beats scratch, `{src}`: {'; '.join(per_strategy)}.")
        winners = ", ".join(f"{n}: {x}" for n, x in best[src].items())
        out.append(f"Best strategy per size, `{src}`: {winners}.")
    singles = [source_label(c) for c in sources if len(c) == 1]
    for cols in (c for c in sources if len(c) > 1):
        mpt = source_label(cols)
        if not singles:
            continue
        firsts, ranks, total = 0, [], 0
        for x in trained:
            for n in sizes:
                means = {src: agg[(src, x, n)]["mean"] for src in singles + [mpt] if (src, x, n) in agg}
                if mpt not in means or len(means) < 2:
                    continue
                rank = 1 + sum(v < means[mpt] for k, v in means.items() if k != mpt)
                ranks.append(rank)
                firsts += rank == 1
                total += 1
        if total:
            out.append(
                f"MPT `{mpt}` vs the {len(singles)} pair-wise sources: lowest mean in {firsts} of {total} "
                f"(strategy, size) cells; mean rank {np.mean(ranks):.1f} of {len(singles) + 1}."
            )
    return out


def write_report(out: str | os.PathLike, dest: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write the report of the study in ``out`` (into ``dest``, default ``out``).

    Returns:
        name -> path of every file written.
    """
    out = Path(out)
    dest = Path(dest) if dest is not None else out
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
        f"Test MAE of `{target}`, mean ± std over the subsamples. **Bold**: the lowest mean of the row among "
        f"the models; `{MEDIAN}` predicts the subsample's median (no model) for reference.",
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
        lines += _table(sizes, cols, agg, best_among={h for h, _, _ in cols if h != MEDIAN}) + [""]
    if len(sources) > 1:
        lines += ["## Sources compared, one table per strategy", ""]
        for strat in trained:
            lines += [f"### `{strat}`", ""]
            cols = ([("scratch", SCRATCH_SOURCE, "scratch")] if has_scratch else []) + [(x, x, strat) for x in sources]
            lines += _table(sizes, cols, agg, best_among={h for h, _, _ in cols}) + [""]
    relative: dict[str, dict[str, dict[int, float]]] = {}
    if has_scratch:
        lines += [
            "## Change of the mean test MAE against scratch (%; negative: fine-tuning is better)",
            "",
            "| source | strategy | " + " | ".join(str(n) for n in sizes) + " |",
            "|---|---|" + "---:|" * len(sizes),
        ]
        for src in sources:
            for strat in trained:
                row = {}
                for n in sizes:
                    a, b = agg.get((src, strat, n)), agg.get((SCRATCH_SOURCE, "scratch", n))
                    if a is not None and b is not None:
                        row[n] = 100.0 * (a["mean"] / b["mean"] - 1.0)
                relative.setdefault(src, {})[strat] = row
                lines.append(
                    f"| `{src}` | {strat} | " + " | ".join(f"{row[n]:+.1f}" if n in row else "-" for n in sizes) + " |"
                )
        lines.append("")
    best = {src: _best_strategies(agg, src, trained, sizes, has_scratch) for src in sources}
    findings = _findings(agg, s["sources"], trained, sizes, has_scratch, best)
    lines += ["## The study's findings, checked on these numbers", ""] + [f"- {f}" for f in findings] + [""]
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
    written = {"table.md": dest / "table.md"}
    write_text(written["table.md"], "\n".join(lines) + "\n")

    summary = {
        "settings": s,
        "n_pool": meta["n_pool"],
        "n_test": meta["n_test"],
        "mae": [{"source": k[0], "strategy": k[1], "size": k[2], **v} for k, v in sorted(agg.items())],
        "best_strategy": {src: {str(n): x for n, x in b.items()} for src, b in best.items()},
        "findings": findings,
        "relative_to_scratch_percent": {
            src: {st: {str(n): v for n, v in row.items()} for st, row in r.items()} for src, r in relative.items()
        },
        "pretraining": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in meta["pretraining"].items()},
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
