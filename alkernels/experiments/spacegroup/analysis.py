"""Seed-level analysis of a space-group grid (the ``study`` extra): paired differences to random,
learning-curve areas, the labels each strategy needs to reach the standard run, and verdicts on
the paper's four claims.

Input is the per-(run, round) frame of :func:`alkernels.experiments.spacegroup.report.collect`
(columns variant, strategy, seed, percent, count, accuracy in %). Statistics are over seeds with
the paired t-interval of :mod:`.stats`. The claim rules below are fixed in code, before any
grid is run, and the report prints the numbers each verdict rests on.

Primary endpoint (declared before the second pass of the study, as the paper states claim 1:
margin, its best strategy, beats random with less data): margin minus random with weights kept,
paired over seeds, in learning-curve area and in mean accuracy over 40-60% labelled, each with
its 95% interval, the power the grid had to detect the paper's effect (Table 1: +2.6 points of
area, +3.3 points over 40-60%) and the seeds needed for 80% power (:func:`primary_endpoint`).
The pooled rule of claim 1 below is kept as a secondary comparison.

Rules (``NEGLIGIBLE`` = 1 accuracy point; "area" = :func:`.stats.curve_area` over 10-100%;
"CI" = the 95% paired t-interval over seeds; an interval over fewer than two seeds decides
nothing):

1. *Uncertainty strategies reach the full-data accuracy with about 40% less data* (weights kept).
   ``A`` = the median, over the eight uncertainty strategies, of the first labelled % whose
   seed-mean accuracy reaches the standard run's mean (never: above 100); ``R`` = the same for
   random; ``D`` = per seed, the uncertainty strategies' mean accuracy over 40/50/60% labelled
   minus random's, with its CI. Supported: ``A <= 70``, ``A < R`` and ``D``'s CI above 0.
   Not supported: ``A > 80``, or ``D``'s CI below ``+NEGLIGIBLE`` (an advantage over random of a
   point or more is ruled out). Otherwise inconclusive.
2. *Centre of mass and UMAP gain accuracy more slowly* (weights kept): for each, the area minus
   the uncertainty strategies' mean area, per seed, with its CI. A strategy is slower when the
   CI is below 0 and not slower when the CI is above ``-NEGLIGIBLE``. Supported: both slower; not
   supported: either not slower; otherwise inconclusive.
3. *Learning loss lags behind* (weights kept): learning loss's area minus the mean area of all
   other strategies, per seed, with its CI. Supported: CI below 0; not supported: CI above
   ``-NEGLIGIBLE``; otherwise inconclusive.
4. *With weights reset, all strategies end at the standard result*: per strategy, the last
   round's accuracy minus the standard run's, same seed, with its CI. Supported: no CI excludes 0
   and every mean lies within 2 points (the paper's seed spread); not supported: some CI lies
   wholly beyond ``NEGLIGIBLE`` on either side; otherwise inconclusive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alkernels._extras import missing_extra
from alkernels.experiments.spacegroup.stats import (
    Interval,
    curve_area,
    first_reaching,
    mean_interval,
    paired_interval,
    paired_power,
    seeds_for_power,
)
from alkernels.strategies import MC_PASS, PAPER_STRATEGIES, SINGLE_PASS

try:
    import pandas as pd
except ImportError as err:
    raise missing_extra("study", __name__, err) from err

#: The eight uncertainty strategies, as grouped for the paper's claims.
UNCERTAINTY = SINGLE_PASS + MC_PASS
#: Labelled fractions (in %) where claim 1's advantage over random is measured.
MID_FRACTIONS = (40, 50, 60)
#: A difference in accuracy points small enough to call "no effect" in the claim rules.
NEGLIGIBLE = 1.0
#: Claim 4's tolerance: the paper's seed standard deviations are 1-2 points.
CONVERGED = 2.0
#: The verdict words.
VERDICTS = ("supported", "not supported", "inconclusive")
#: The paper's Table 1 (``docs/protocols.md``; Materials Project, weights kept, 3 seeds): test
#: accuracy in % of margin and random at 10, 20, ..., 100% labelled, the two rows the primary
#: endpoint compares.
PAPER_PERCENTS = tuple(range(10, 101, 10))
PAPER_MARGIN = (27.7, 36.4, 43.6, 49.1, 51.8, 54.2, 56.0, 57.5, 58.2, 58.2)
PAPER_RANDOM = (29.5, 37.9, 43.3, 47.0, 48.4, 49.9, 51.1, 52.4, 54.2, 54.0)
#: The power the primary endpoint's seed count is planned for.
TARGET_POWER = 0.8


def paper_margin_effects() -> dict[str, float]:
    """The paper's effect sizes for the primary endpoint, from its Table 1: margin minus random
    in learning-curve area (10-100%) and in mean accuracy over ``MID_FRACTIONS``, in points."""
    mid = [PAPER_PERCENTS.index(p) for p in MID_FRACTIONS]
    return {
        "area": curve_area(PAPER_PERCENTS, PAPER_MARGIN) - curve_area(PAPER_PERCENTS, PAPER_RANDOM),
        "mid": float(np.mean([PAPER_MARGIN[i] - PAPER_RANDOM[i] for i in mid])),
    }


def primary_endpoint(df: pd.DataFrame) -> dict | None:
    """The pre-registered primary endpoint of claim 1: margin minus random with weights kept,
    paired over seeds, (a) in learning-curve area and (b) in mean accuracy over ``MID_FRACTIONS``;
    for each, the 95% interval, the paired standard deviation, the power the grid had to detect
    the paper's effect (:func:`paper_margin_effects`) and the seeds that give ``TARGET_POWER``.

    Returns:
        ``{"area": {...}, "mid": {...}}`` with keys ``difference`` (an :class:`Interval` as a
        dict), ``sd``, ``paper_effect``, ``power`` and ``seeds_for_power`` (None where fewer than
        two seeds or a zero spread leave them undefined), or None without margin and random runs.
    """
    df = complete_runs(df)
    keep = df[df.variant == "keep"]
    if not {"margin", "random"} <= set(keep.strategy):
        return None
    a = areas(df)
    mids = keep[keep.percent.isin(MID_FRACTIONS)]
    # only seeds with every mid fraction, so that each seed's mean covers the same rounds
    complete = mids.groupby(["strategy", "seed"]).percent.nunique() == len(MID_FRACTIONS)
    mid_mean = mids.groupby(["strategy", "seed"]).accuracy.mean()[complete]

    def per_seed(name: str) -> dict[int, float]:
        return {int(seed): float(v) for (strategy, seed), v in mid_mean.items() if strategy == name}

    pairs = {
        "area": (_area_by_seed(a, "keep", ["margin"]), _area_by_seed(a, "keep", ["random"])),
        "mid": (per_seed("margin"), per_seed("random")),
    }
    effects = paper_margin_effects()
    out = {}
    for name, (m, r) in pairs.items():
        diff = paired_interval(m, r)
        if diff is None:
            return None
        shared = sorted(set(m) & set(r))
        sd = float(np.std([m[k] - r[k] for k in shared], ddof=1)) if diff.n > 1 else None
        ok = sd is not None and sd > 0
        out[name] = {
            "difference": diff._asdict(),
            "sd": sd,
            "paper_effect": effects[name],
            "power": paired_power(effects[name], sd, diff.n) if ok else None,
            "seeds_for_power": seeds_for_power(effects[name], sd, TARGET_POWER) if ok else None,
        }
    return out


def run_variant(config: dict) -> str:
    """A run's variant: its recorded ``variant``, or for a config written before that was
    recorded, ``keep`` or ``reset`` from ``reset_weights``."""
    if "variant" in config:
        return config["variant"]
    return "reset" if config["reset_weights"] else "keep"


def query_composition(runs: list[dict], train_labels: np.ndarray, rounds: int = 3) -> pd.DataFrame:
    """How concentrated each strategy's queries are on one class, from the indices the runs
    recorded (``queried``: the training-set indices picked after each round's training).

    Args:
        runs: the runs of :func:`alkernels.experiments.spacegroup.report.read_runs`.
        train_labels: int64 [n_train], the training set's space groups (``experiment.json``).
        rounds: the first rounds to describe.

    Returns:
        One row per (variant, strategy, seed, round < ``rounds``) with a query: ``top_share``
        (the most-picked class's share of the query), ``top_class``, ``pool_share`` (that
        class's share of the whole training set) and ``classes`` (distinct classes picked).
    """
    labels = np.asarray(train_labels, dtype=np.int64)
    counts = np.bincount(labels)
    rows = []
    for run in runs:
        config = run["config"]
        if config["strategy"] == "standard":
            continue
        for r in run["records"][:rounds]:
            picked = np.asarray(r.get("queried", []), dtype=np.int64)
            if picked.size == 0:
                continue
            c = np.bincount(labels[picked], minlength=counts.size)
            top = int(c.argmax())
            rows.append(
                {
                    "variant": run_variant(config),
                    "strategy": config["strategy"],
                    "seed": config["seed"],
                    "round": r["round"],
                    "top_share": float(c[top] / picked.size),
                    "top_class": top,
                    "pool_share": float(counts[top] / labels.size),
                    "classes": int((c > 0).sum()),
                }
            )
    columns = ["variant", "strategy", "seed", "round", "top_share", "top_class", "pool_share", "classes"]
    return pd.DataFrame(rows, columns=columns)


def composition_table(comp: pd.DataFrame, variant: str) -> str:
    """Markdown: per strategy and round, the mean over seeds of the most-picked class's share of
    the query (%) and of the distinct classes picked."""
    part = comp[comp.variant == variant]
    if part.empty:
        return "(no recorded queries)"
    rounds = sorted(part["round"].unique())
    lines = [
        "| strategy | " + " | ".join(f"query after round {r + 1}: top class % / classes" for r in rounds) + " |",
        "|---" * (len(rounds) + 1) + "|",
    ]
    for name in order(part.strategy.unique()):
        cells = []
        for r in rounds:
            hit = part[(part.strategy == name) & (part["round"] == r)]
            cells.append(f"{100 * hit.top_share.mean():.0f} / {hit.classes.mean():.1f}" if len(hit) else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def primary_markdown(primary: dict) -> str:
    """Markdown table of :func:`primary_endpoint`."""
    lines = [
        "| margin minus random (weights kept) | difference (points) | paired sd | the paper's effect | "
        f"power at that effect | seeds for {TARGET_POWER:.0%} power |",
        "|---|---|---:|---:|---:|---:|",
    ]
    labels = {
        "area": "learning-curve area, 10-100%",
        "mid": f"mean accuracy over {'/'.join(map(str, MID_FRACTIONS))}% labelled",
    }
    for name, row in primary.items():
        iv = Interval(**row["difference"])
        sd = "-" if row["sd"] is None else f"{row['sd']:.1f}"
        power = "-" if row["power"] is None else f"{row['power']:.0%}"
        seeds = "-" if row["seeds_for_power"] is None else str(row["seeds_for_power"])
        lines.append(
            f"| {labels[name]} | {iv.format()}{f' ({iv.n} seeds)' if iv.n > 1 else ''} | {sd} | "
            f"{row['paper_effect']:+.1f} | {power} | {seeds} |"
        )
    return "\n".join(lines)


def order(names) -> list[str]:
    """Strategy names in the order of the paper's Table 1, unknown names last."""
    known = [s for s in PAPER_STRATEGIES if s in set(names)]
    return known + sorted(set(names) - set(known))


def complete_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that finished every round of their variant (partial runs of an
    unfinished grid would bias areas and paired differences)."""
    rounds = df.groupby(["variant", "strategy", "seed"])["round"].transform("count")
    want = df.groupby("variant")["round"].transform("max") + 1
    return df[rounds == want]


def _by_seed(df: pd.DataFrame) -> dict[tuple[str, str, int], dict[int, float]]:
    """``{(variant, strategy, percent): {seed: accuracy}}``."""
    return {
        (v, n, int(p)): dict(zip(g.seed.astype(int), g.accuracy.astype(float)))
        for (v, n, p), g in df.groupby(["variant", "strategy", "percent"])
    }


def standard_by_seed(df: pd.DataFrame) -> dict[int, float]:
    """The standard (full-data) run's accuracy (%) per seed."""
    part = df[df.variant == "standard"]
    return dict(zip(part.seed.astype(int), part.accuracy.astype(float)))


def paired_to_random(df: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, strategy != random, percent): the mean over seeds of accuracy minus random's
    (same seed, points) with its 95% interval; columns variant, strategy, percent, mean, lo, hi, n."""
    df = complete_runs(df)
    acc = _by_seed(df)
    rows = []
    for variant in sorted(set(df.variant) - {"standard"}):
        part = df[df.variant == variant]
        if "random" not in set(part.strategy):
            continue
        for name in order(set(part.strategy) - {"random"}):
            for p in sorted(part[part.strategy == name].percent.unique()):
                iv = paired_interval(acc[variant, name, int(p)], acc.get((variant, "random", int(p)), {}))
                if iv is not None:
                    rows.append({"variant": variant, "strategy": name, "percent": int(p), **iv._asdict()})
    return pd.DataFrame(rows, columns=["variant", "strategy", "percent", "mean", "lo", "hi", "n"])


def areas(df: pd.DataFrame) -> pd.DataFrame:
    """Area under each complete run's learning curve (mean accuracy in %, trapezoids over the
    labelled %); columns variant, strategy, seed, area."""
    rows = []
    for (variant, name, seed), run in complete_runs(df[df.variant != "standard"]).groupby(
        ["variant", "strategy", "seed"]
    ):
        rows.append(
            {
                "variant": variant,
                "strategy": name,
                "seed": int(seed),
                "area": curve_area(run.percent.to_numpy(), run.accuracy.to_numpy()),
            }
        )
    return pd.DataFrame(rows, columns=["variant", "strategy", "seed", "area"])


def _area_by_seed(a: pd.DataFrame, variant: str, names) -> dict[int, float]:
    """Per seed, the mean area of ``names`` (only seeds where every one of them finished)."""
    part = a[(a.variant == variant) & (a.strategy.isin(list(names)))]
    counts = part.groupby("seed").strategy.nunique()
    full = counts[counts == len(set(names))].index
    return part[part.seed.isin(full)].groupby("seed").area.mean().to_dict()


def area_table(a: pd.DataFrame, variant: str) -> str:
    """Markdown: per strategy, its learning-curve area (mean [95% CI]) and the paired difference
    to random's."""
    part = a[a.variant == variant]
    lines = ["| strategy | area (mean accuracy %, 10-100%) | minus random (points) | seeds |", "|---|---|---|---|"]
    rnd = _area_by_seed(a, variant, ["random"])
    for name in order(part.strategy.unique()):
        mine = _area_by_seed(a, variant, [name])
        iv = mean_interval(list(mine.values()))
        diff = paired_interval(mine, rnd) if name != "random" and rnd else None
        lines.append(
            f"| {name} | {iv.mean:.1f} [{iv.lo:.1f}, {iv.hi:.1f}] | {_fmt(diff) if diff is not None else ''} | {iv.n} |"
        )
    return "\n".join(lines)


def _fmt(iv: Interval) -> str:
    text = iv.format()
    return f"**{text}**" if iv.n > 1 and (iv.lo > 0 or iv.hi < 0) else text


def difference_table(paired: pd.DataFrame, variant: str) -> str:
    """Markdown: strategy x labelled %, the paired difference to random ``mean [lo, hi]`` in
    points; **bold** where the interval excludes 0."""
    part = paired[paired.variant == variant]
    if part.empty:
        return "(no paired runs)"
    percents = sorted(part.percent.unique())
    lines = ["| strategy | " + " | ".join(f"{p}%" for p in percents) + " |", "|---" * (len(percents) + 1) + "|"]
    for name in order(part.strategy.unique()):
        cells = []
        for p in percents:
            hit = part[(part.strategy == name) & (part.percent == p)]
            cells.append(_fmt(Interval(*hit.iloc[0][["mean", "lo", "hi", "n"]])) if len(hit) else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def labels_to_reach(df: pd.DataFrame, target: float) -> dict[str, dict[str, dict]]:
    """Per variant and strategy: the first round whose seed-mean accuracy is at or above
    ``target`` (%): ``{"count": labelled structures, "percent": labelled %}``, or None values
    where no round reaches it; also ``"seeds"``: how many single seeds ever reach it."""
    out: dict[str, dict[str, dict]] = {}
    df = complete_runs(df)
    for variant in sorted(set(df.variant) - {"standard"}):
        part = df[df.variant == variant]
        res = {}
        for name in order(part.strategy.unique()):
            mine = part[part.strategy == name]
            curve = mine.groupby("percent").agg(count=("count", "mean"), accuracy=("accuracy", "mean"))
            count = first_reaching(curve["count"].round().astype(int).tolist(), curve.accuracy.tolist(), target)
            pct = None if count is None else int(curve.index[curve["count"].round() == count][0])
            seeds = int(mine.groupby("seed").accuracy.max().ge(target).sum())
            res[name] = {"count": count, "percent": pct, "seeds": seeds, "of": int(mine.seed.nunique())}
        out[variant] = res
    return out


def reach_table(reach: dict[str, dict[str, dict]], target: float) -> str:
    """Markdown: labels each strategy needs to reach ``target`` (both variants side by side)."""
    variants = [v for v in ("keep", "reset") if v in reach]
    lines = [
        "| strategy | " + " | ".join(f"weights {'kept' if v == 'keep' else 'reset'}" for v in variants) + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    names = order({n for v in variants for n in reach[v]})
    for name in names:
        cells = []
        for v in variants:
            r = reach[v].get(name)
            if r is None:
                cells.append("")
            elif r["count"] is None:
                cells.append(f"not reached ({r['seeds']} of {r['of']} seeds ever do)")
            else:
                cells.append(f"{r['count']} ({r['percent']}%)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(supported: bool, refuted: bool) -> str:
    return "supported" if supported and not refuted else "not supported" if refuted else "inconclusive"


def _ok(iv: Interval | None) -> bool:
    """An interval that can decide a verdict: at least two seeds."""
    return iv is not None and iv.n >= 2


def claim_verdicts(df: pd.DataFrame) -> list[dict]:
    """The four claims of the paper, judged by the rules in the module docstring.

    Returns:
        One dict per claim: ``{"claim", "variant", "verdict", "evidence" (a sentence with the
        numbers), "numbers" (JSON-serialisable)}``; claims whose runs are missing get verdict
        ``"inconclusive"`` and say what is missing.
    """
    df = complete_runs(df)
    std = standard_by_seed(df)
    std_mean = float(np.mean(list(std.values()))) if std else None
    a = areas(df)
    out = []

    # 1. uncertainty reaches the standard run with ~40% less data
    claim = "Uncertainty strategies reach the full-data accuracy with about 40% less data"
    keep = df[df.variant == "keep"]
    unc = [n for n in UNCERTAINTY if n in set(keep.strategy)]
    if std_mean is None or not unc or "random" not in set(keep.strategy):
        out.append(
            {
                "claim": claim,
                "variant": "keep",
                "verdict": "inconclusive",
                "evidence": "needs the standard run, random and the uncertainty strategies (weights kept)",
                "numbers": {},
            }
        )
    else:
        reach = labels_to_reach(df, std_mean)["keep"]
        firsts = [reach[n]["percent"] if reach[n]["percent"] is not None else 110 for n in unc]
        A = float(np.median(firsts))
        R = reach["random"]["percent"] if reach["random"]["percent"] is not None else 110
        mids = keep[keep.percent.isin(MID_FRACTIONS)]
        u = mids[mids.strategy.isin(unc)].groupby("seed").accuracy.mean()
        counts = mids[mids.strategy.isin(unc)].groupby("seed").strategy.nunique()
        u = u[counts == len(unc)].to_dict()
        r = mids[mids.strategy == "random"].groupby("seed").accuracy.mean().to_dict()
        D = paired_interval(u, r)
        if D is None:
            out.append(
                {
                    "claim": claim,
                    "variant": "keep",
                    "verdict": "inconclusive",
                    "evidence": "no seed has both random and every uncertainty strategy",
                    "numbers": {},
                }
            )
        else:
            verdict = _verdict(A <= 70 and A < R and _ok(D) and D.lo > 0, A > 80 or (_ok(D) and D.hi < NEGLIGIBLE))
            when = lambda x: "never" if x > 100 else f"{x:g}%"  # noqa: E731
            out.append(
                {
                    "claim": claim,
                    "variant": "keep",
                    "verdict": verdict,
                    "evidence": (
                        f"standard run {std_mean:.1f}%; the uncertainty strategies first reach it at {when(A)} "
                        "labelled "
                        f"(median over {len(unc)}; each: "
                        + ", ".join(f"{n} {when(f)}" for n, f in zip(unc, firsts))
                        + f"), random at {when(R)}; uncertainty minus random over {'/'.join(map(str, MID_FRACTIONS))}% "
                        f"labelled: {D.format()} points (95% CI over {D.n} seeds)"
                    ),
                    "numbers": {
                        "standard": std_mean,
                        "median_first_percent": A,
                        "random_first_percent": R,
                        "first_percent": dict(zip(unc, firsts)),
                        "mid_difference": D._asdict(),
                    },
                }
            )

    # 2. centre of mass and UMAP rise more slowly than the uncertainty strategies
    claim = "Centre of mass and UMAP gain accuracy more slowly"
    unc_area = _area_by_seed(a, "keep", [n for n in UNCERTAINTY if n in set(a[a.variant == "keep"].strategy)])
    subs = [n for n in ("center_of_mass", "umap") if n in set(a[a.variant == "keep"].strategy)]
    if not subs or not unc_area:
        out.append(
            {
                "claim": claim,
                "variant": "keep",
                "verdict": "inconclusive",
                "evidence": "needs center_of_mass/umap and the uncertainty strategies (weights kept)",
                "numbers": {},
            }
        )
    else:
        ivs = {n: paired_interval(_area_by_seed(a, "keep", [n]), unc_area) for n in subs}
        rnd = _area_by_seed(a, "keep", ["random"])
        vs_random = {n: paired_interval(_area_by_seed(a, "keep", [n]), rnd) for n in subs} if rnd else {}
        slower = [_ok(iv) and iv.hi < 0 for iv in ivs.values()]
        not_slower = [_ok(iv) and iv.lo > -NEGLIGIBLE for iv in ivs.values()]
        verdict = _verdict(len(subs) == 2 and all(slower), any(not_slower))
        out.append(
            {
                "claim": claim,
                "variant": "keep",
                "verdict": verdict,
                "evidence": (
                    "learning-curve area minus the uncertainty strategies' mean area: "
                    + "; ".join(f"{n} {ivs[n].format()}" for n in subs)
                    + (
                        " points; minus random's: "
                        + "; ".join(f"{n} {vs_random[n].format()}" for n in subs if vs_random.get(n))
                        if vs_random
                        else ""
                    )
                    + " points (95% CI over seeds)"
                    + ("" if len(subs) == 2 else f"; only {subs[0]} was run")
                ),
                "numbers": {
                    "minus_uncertainty": {n: iv._asdict() for n, iv in ivs.items() if iv},
                    "minus_random": {n: iv._asdict() for n, iv in vs_random.items() if iv},
                },
            }
        )

    # 3. learning loss lags behind the other strategies
    claim = "Learning loss lags behind the other strategies"
    names = set(a[a.variant == "keep"].strategy)
    others = sorted(names - {"learning_loss"})
    if "learning_loss" not in names or not others:
        out.append(
            {
                "claim": claim,
                "variant": "keep",
                "verdict": "inconclusive",
                "evidence": "needs learning_loss and other strategies (weights kept)",
                "numbers": {},
            }
        )
    else:
        iv = paired_interval(_area_by_seed(a, "keep", ["learning_loss"]), _area_by_seed(a, "keep", others))
        rnd = _area_by_seed(a, "keep", ["random"])
        vr = paired_interval(_area_by_seed(a, "keep", ["learning_loss"]), rnd) if rnd else None
        verdict = _verdict(_ok(iv) and iv.hi < 0, _ok(iv) and iv.lo > -NEGLIGIBLE)
        out.append(
            {
                "claim": claim,
                "variant": "keep",
                "verdict": verdict,
                "evidence": (
                    f"learning-curve area minus the mean of the other {len(others)} strategies: {iv.format()} points"
                    + (f"; minus random's: {vr.format()} points" if vr is not None else "")
                    + " (95% CI over seeds)"
                ),
                "numbers": {"minus_others": iv._asdict(), "minus_random": vr._asdict() if vr is not None else None},
            }
        )

    # 4. with weights reset every strategy ends at the standard result
    claim = "With weights reset, all strategies end at the standard result"
    reset = df[df.variant == "reset"]
    if reset.empty or not std:
        out.append(
            {
                "claim": claim,
                "variant": "reset",
                "verdict": "inconclusive",
                "evidence": "needs the reset variant and the standard run",
                "numbers": {},
            }
        )
    else:
        last = int(reset.percent.max())
        acc = _by_seed(reset)
        ivs = {n: paired_interval(acc.get(("reset", n, last), {}), std) for n in order(reset.strategy.unique())}
        ivs = {n: iv for n, iv in ivs.items() if iv is not None}
        means = np.array([iv.mean for iv in ivs.values()])
        excludes = [_ok(iv) and (iv.lo > 0 or iv.hi < 0) for iv in ivs.values()]
        far = [_ok(iv) and (iv.lo > NEGLIGIBLE or iv.hi < -NEGLIGIBLE) for iv in ivs.values()]
        verdict = _verdict(
            all(_ok(iv) for iv in ivs.values()) and not any(excludes) and bool(np.all(np.abs(means) <= CONVERGED)),
            any(far),
        )
        worst = max(ivs, key=lambda n: abs(ivs[n].mean))
        out.append(
            {
                "claim": claim,
                "variant": "reset",
                "verdict": verdict,
                "evidence": (
                    f"last round ({last}% labelled) minus the standard run, same seed: means from "
                    f"{means.min():+.1f} to "
                    f"{means.max():+.1f} points over {len(ivs)} strategies; {sum(excludes)} interval(s) exclude 0; "
                    f"largest: {worst} {ivs[worst].format()} (95% CI over seeds)"
                ),
                "numbers": {"minus_standard": {n: iv._asdict() for n, iv in ivs.items()}},
            }
        )
    return out


def verdicts_markdown(verdicts: list[dict]) -> str:
    """A numbered list: claim, verdict in bold, the numbers."""
    return "\n".join(
        f"{k}. {v['claim']} ({'weights kept' if v['variant'] == 'keep' else 'weights reset'}): "
        f"**{v['verdict']}**. {v['evidence']}."
        for k, v in enumerate(verdicts, 1)
    )


def plot_differences(paired: pd.DataFrame, path: Path, plt) -> None:
    """One panel per strategy: the paired difference to random (points) against the labelled %,
    with 95% intervals, one line per weight-reset variant; ``plt`` is matplotlib's pyplot."""
    names = order(paired.strategy.unique())
    cols = 4
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False, sharex=True, sharey=True)
    colors = {"keep": "tab:blue", "reset": "tab:orange"}
    for ax, name in zip(axes.flat, names):
        for k, variant in enumerate(("keep", "reset")):
            part = paired[(paired.strategy == name) & (paired.variant == variant)].sort_values("percent")
            if part.empty:
                continue
            x = part.percent.to_numpy() + (k - 0.5) * 1.2
            m = part["mean"].to_numpy()
            ax.errorbar(
                x,
                m,
                yerr=[m - part.lo.to_numpy(), part.hi.to_numpy() - m],
                fmt="o-",
                ms=3,
                lw=1,
                capsize=2,
                color=colors[variant],
                label=f"weights {'kept' if variant == 'keep' else 'reset'}",
            )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("minus random (points)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("labelled %", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("test accuracy minus random's, same seed (mean and 95% t-interval over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
