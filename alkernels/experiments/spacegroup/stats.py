"""Seed statistics of the space-group study: paired t-intervals, learning-curve areas, and the
labels a strategy needs to reach a target accuracy. NumPy only.

Paired differences: strategy and random run with the same seeds, and a seed fixes the model's
initial weights, the initial labelled set and the batch order, so the per-seed differences
``d_k = acc(strategy, seed k) - acc(random, seed k)`` remove most of the seed-to-seed variation
that the two curves share. The interval is Student's t over those ``n`` differences:
``mean(d) +- t(0.975, n - 1) * std(d, ddof=1) / sqrt(n)``, a 95% interval for the mean difference
that assumes the seed differences are roughly normal. Intervals are per comparison, not adjusted
for the many strategies and fractions of a table.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

#: Two-sided 95% quantiles t(0.975, df) of Student's t for df = 1..30.
_T975 = (
    12.706204736,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """Student's t quantile at 0.975 (two-sided 95%) for ``df`` degrees of freedom.

    Exact table values for df <= 30; above, the Cornish-Fisher expansion around the normal
    quantile (error below 1e-5 for df > 30).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


class Interval(NamedTuple):
    """A mean with its 95% t-interval over ``n`` values (``lo = hi = mean`` when n = 1)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def format(self, digits: int = 1) -> str:
        """``"+1.2 [-0.3, +2.7]"``."""
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (1 seed)"
        return f"{self.mean:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def mean_interval(values: Sequence[float] | np.ndarray) -> Interval:
    """Mean of ``values`` with its 95% t-interval (see the module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty 1-D array of values, got shape {x.shape}")
    m = float(x.mean())
    if x.size == 1:
        return Interval(m, m, m, 1)
    half = t975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(m, m - half, m + half, int(x.size))


def paired_interval(a: dict[int, float], b: dict[int, float]) -> Interval | None:
    """Mean of ``a[seed] - b[seed]`` over the seeds both have, with its 95% t-interval; None when
    they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return mean_interval([a[s] - b[s] for s in seeds])


def curve_area(percent: Sequence[float], accuracy: Sequence[float]) -> float:
    """Area under a learning curve, divided by its width: the trapezoid-rule mean accuracy
    between the first and the last labelled fraction (in the accuracy's units)."""
    p = np.asarray(percent, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    if p.shape != a.shape or p.ndim != 1 or p.size == 0:
        raise ValueError("percent and accuracy must be 1-D of the same non-zero length")
    order = np.argsort(p)
    p, a = p[order], a[order]
    if p.size == 1:
        return float(a[0])
    return float(np.sum((a[1:] + a[:-1]) / 2 * np.diff(p)) / (p[-1] - p[0]))


def first_reaching(counts: Sequence[int], accuracy: Sequence[float], target: float) -> int | None:
    """The smallest labelled count whose accuracy is at or above ``target``; None if none is."""
    hits = [c for c, a in zip(counts, accuracy) if a >= target]
    return min(hits) if hits else None
