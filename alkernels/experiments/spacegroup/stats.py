"""Seed statistics of the space-group study: paired t-intervals, learning-curve areas, and the
labels a strategy needs to reach a target accuracy. NumPy, and SciPy (the ``study`` extra) for
the t quantiles of intervals over two or more values.

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

from alkernels._extras import missing_extra


def t975(df: int) -> float:
    """Student's t quantile at 0.975 (two-sided 95%) for ``df`` degrees of freedom, from
    ``scipy.stats.t.ppf`` (the ``study`` extra).

    Raises:
        ValueError: if ``df < 1``.
        ImportError: naming the ``study`` extra, if SciPy is missing.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    try:
        from scipy import stats
    except ImportError as err:
        raise missing_extra("study", "t975", err) from err
    return float(stats.t.ppf(0.975, df))


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


def paired_power(effect: float, sd: float, n: int) -> float:
    """Power of the two-sided 95% paired t-test over ``n`` seeds to detect a true mean
    difference ``effect`` when the per-seed differences have standard deviation ``sd``:
    ``P(|T| > t(0.975, n - 1))`` with ``T`` noncentral t, ``n - 1`` degrees of freedom and
    noncentrality ``effect / (sd / sqrt(n))`` (``scipy.stats.nct``, the ``study`` extra).

    Raises:
        ValueError: if ``n < 2`` or ``sd <= 0``.
    """
    if n < 2 or not sd > 0:
        raise ValueError(f"power needs n >= 2 seeds and sd > 0, got n = {n}, sd = {sd}")
    try:
        from scipy import stats
    except ImportError as err:
        raise missing_extra("study", "paired_power", err) from err
    crit = t975(n - 1)
    nc = effect / (sd / math.sqrt(n))
    # the lower tail P(T < -crit) as the upper tail of -T: SciPy's nct.cdf far in the lower tail
    # returns NaN at large noncentralities (seen at 1 degree of freedom), its sf does not
    power = float(stats.nct.sf(crit, n - 1, nc) + stats.nct.sf(crit, n - 1, -nc))
    if not math.isfinite(power):
        raise ValueError(f"the noncentral t gave no finite power at effect {effect}, sd {sd}, n = {n}")
    return power


def seeds_for_power(effect: float, sd: float, power: float = 0.8, max_seeds: int = 10_000) -> int:
    """The fewest seeds (at least 2) whose :func:`paired_power` reaches ``power``.

    Raises:
        ValueError: if ``max_seeds`` seeds do not reach it (or the arguments are invalid).
    """
    lo, hi = 2, 2
    while paired_power(effect, sd, hi) < power:
        if hi >= max_seeds:
            raise ValueError(f"more than {max_seeds} seeds are needed for power {power} at effect {effect}, sd {sd}")
        lo, hi = hi + 1, min(2 * hi, max_seeds)
    while lo < hi:  # power grows with n: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if paired_power(effect, sd, mid) < power else (lo, mid)
    return hi


def detectable_effect(sd: float, n: int, power: float = 0.8, tol: float = 1e-6) -> float:
    """The smallest true mean difference (in ``sd``'s units, positive) that the two-sided 95%
    paired t-test over ``n`` seeds detects with probability ``power``: the inverse of
    :func:`paired_power` in the effect, by bisection to a relative tolerance ``tol``.

    Raises:
        ValueError: if ``n < 2``, ``sd <= 0`` or ``power`` is not in (0.05, 1).
    """
    if not 0.05 < power < 1.0:
        raise ValueError(f"power must lie in (0.05, 1): the test's size is 0.05; got {power}")
    if n < 2 or not sd > 0:
        raise ValueError(f"a detectable effect needs n >= 2 seeds and sd > 0, got n = {n}, sd = {sd}")
    lo, hi = 0.0, sd
    while paired_power(hi, sd, n) < power:  # power grows with the effect: bracket, then bisect
        lo, hi = hi, 2 * hi
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if paired_power(mid, sd, n) < power else (lo, mid)
    return hi
