"""Statistics over seeds: every interval and test comes from scipy.stats, nothing hand-rolled.

- mean, sample std (ddof=1), 95% t-interval of the mean (scipy.stats.t.interval with the
  standard error scipy.stats.sem), median, interquartile mean (scipy.stats.trim_mean, 25%
  cut each side), and a BCa bootstrap interval (scipy.stats.bootstrap, fixed seed so
  reports are reproducible) once there are BOOTSTRAP_MIN_N seeds;
- A minus B: Welch's t-test (scipy.stats.ttest_ind(equal_var=False)) and its 95% interval
  of the difference, P(A > B) over all seed pairs (the Mann-Whitney U statistic divided by
  n_a * n_b, ties counted one half), and a verdict that says "n too small to conclude"
  below MIN_N_CONCLUDE seeds on either side;
- Benjamini-Hochberg adjusted p-values across a table (scipy.stats.false_discovery_control).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONF = 0.95
BOOTSTRAP_MIN_N = 5        # fewer seeds give BCa intervals that are not worth printing
BOOTSTRAP_RESAMPLES = 9999  # scipy's default
BOOTSTRAP_SEED = 0
MIN_N_CONCLUDE = 3         # with 2 seeds a side Welch has ~1-2 degrees of freedom: too few
ALPHA = 0.05
TOO_SMALL = "n too small to conclude"

Interval = tuple[float, float]
NAN = float("nan")


def _array(values: Sequence[float]):

    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


@dataclass(frozen=True)
class Summary:
    """Final accuracies of one row in one cell, over seeds."""
    n: int
    mean: float
    std: float                # sample std (ddof=1); nan when n < 2
    ci: Interval | None       # 95% t-interval of the mean; None when n < 2
    median: float
    iqm: float                # interquartile mean
    boot: Interval | None     # 95% BCa bootstrap interval of the mean; None when n < 5
    min: float
    max: float

    @property
    def has_error_bar(self) -> bool:
        return self.n >= 2


EMPTY = Summary(0, NAN, NAN, None, NAN, NAN, None, NAN, NAN)


def t_interval(values: Sequence[float], conf: float = CONF) -> Interval | None:
    """t-interval of the mean; None when n < 2; (mean, mean) when all values agree."""
    x = _array(values)
    if len(x) < 2:
        return None
    mean, sem = float(x.mean()), float(stats.sem(x))
    if sem == 0.0:
        return (mean, mean)
    lo, hi = stats.t.interval(conf, len(x) - 1, loc=mean, scale=sem)
    return (float(lo), float(hi))


def bootstrap_interval(values: Sequence[float], conf: float = CONF) -> Interval | None:
    """BCa bootstrap interval of the mean (scipy.stats.bootstrap); None when n < 5."""
    x = _array(values)
    if len(x) < BOOTSTRAP_MIN_N:
        return None
    if np.ptp(x) == 0:
        return (float(x[0]), float(x[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on near-degenerate resamples
        res = stats.bootstrap((x,), np.mean, confidence_level=conf,
                              n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                              rng=np.random.default_rng(BOOTSTRAP_SEED))
    lo, hi = res.confidence_interval
    return (float(lo), float(hi))


def describe(values: Sequence[float], bootstrap: bool = True) -> Summary:
    """Every field; ``bootstrap=False`` leaves ``boot`` None (see with_bootstrap)."""
    x = _array(values)
    n = len(x)
    if n == 0:
        return EMPTY
    return Summary(n=n, mean=float(x.mean()), std=float(x.std(ddof=1)) if n >= 2 else NAN,
                   ci=t_interval(x), median=float(stats.scoreatpercentile(x, 50)),
                   iqm=float(stats.trim_mean(x, 0.25)),
                   boot=bootstrap_interval(x) if bootstrap else None,
                   min=float(x.min()), max=float(x.max()))


def with_bootstrap(s: Summary, values: Sequence[float]) -> Summary:
    """``s`` with its bootstrap interval filled in (the costly part of describe)."""
    return dataclasses.replace(s, boot=bootstrap_interval(values))


def intervals_overlap(a: Interval | None, b: Interval | None) -> bool:
    """True unless both intervals exist and are disjoint (a missing interval overlaps all)."""
    if a is None or b is None:
        return True
    return not (a[0] > b[1] or b[0] > a[1])


# --------------------------------------------------------------------------- A vs B

@dataclass(frozen=True)
class Comparison:
    """A minus B over seeds (A = ours, B = a baseline)."""
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    ci: Interval | None       # Welch 95% interval of the difference
    p: float                  # Welch two-sided p-value; nan when not computable
    df: float
    p_a_greater: float        # P(A > B) over seed pairs (ties count 1/2)

    @property
    def conclusive(self) -> bool:
        return min(self.n_a, self.n_b) >= MIN_N_CONCLUDE and math.isfinite(self.p)

    def verdict(self, a: str = "A", b: str = "B") -> str:
        if min(self.n_a, self.n_b) < MIN_N_CONCLUDE:
            return f"{TOO_SMALL} (n = {self.n_a} vs {self.n_b})"
        if not math.isfinite(self.p):
            return ("identical on every seed" if self.diff == 0
                    else "no seed-to-seed variance: the test is undefined")
        if self.p < ALPHA:
            return f"{a} higher" if self.diff > 0 else f"{b} higher"
        return f"no significant difference at p < {ALPHA:g}"


def compare(a: Sequence[float], b: Sequence[float], conf: float = CONF) -> Comparison:

    xa, xb = _array(a), _array(b)
    na, nb = len(xa), len(xb)
    mean_a = float(xa.mean()) if na else NAN
    mean_b = float(xb.mean()) if nb else NAN
    p_greater = NAN
    if na and nb:
        # only U is used; the asymptotic method skips the (slow) exact null distribution
        u = stats.mannwhitneyu(xa, xb, method="asymptotic").statistic
        p_greater = float(u) / (na * nb)
    ci, p, df = None, NAN, NAN
    if na >= 2 and nb >= 2 and (np.ptp(xa) > 0 or np.ptp(xb) > 0):
        res = stats.ttest_ind(xa, xb, equal_var=False)
        lo, hi = res.confidence_interval(conf)
        ci, p, df = (float(lo), float(hi)), float(res.pvalue), float(res.df)
    return Comparison(na, nb, mean_a, mean_b, mean_a - mean_b, ci, p, df, p_greater)


def adjust_pvalues(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjustment over the finite p-values; nan stays nan."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return [float(v) for v in out]


# --------------------------------------------------------------------------- curves

def curve_band(matrix, conf: float = CONF):
    """Per-epoch mean and t-interval over seeds of a (seeds x epochs) array.

    Returns (mean, low, high); low/high are None when there are fewer than 2 seeds.
    """

    m = np.asarray(matrix, dtype=float)
    mean = m.mean(axis=0)
    n = m.shape[0]
    if n < 2:
        return mean, None, None
    half = stats.sem(m, axis=0) * stats.t.ppf((1 + conf) / 2, n - 1)
    half = np.nan_to_num(np.asarray(half, dtype=float))
    return mean, mean - half, mean + half


# --------------------------------------------------------------------------- formatting

def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def fmt_interval(ci: Interval | None, digits: int = 2, signed: bool = False) -> str:
    if ci is None:
        return "n/a"
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return f"[{f.format(ci[0])}, {f.format(ci[1])}]"


def fmt_summary(s: Summary, digits: int = 2) -> str:
    """'mean ± std (n=5)' for prose; no error bar below 2 seeds."""
    if s.n == 0:
        return "no completed run"
    if s.n < 2:
        return f"{s.mean:.{digits}f} (n=1, no error bar)"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f} (n={s.n})"


def fmt_comparison(c: Comparison, digits: int = 2) -> str:
    """'+0.60 [+0.20, +1.00] (95% CI), p = 0.01' or the reason there is no test."""
    if c.ci is None:
        return f"{c.diff:+.{digits}f} ({TOO_SMALL}: n = {c.n_a} vs {c.n_b})" if \
            min(c.n_a, c.n_b) < 2 else f"{c.diff:+.{digits}f} (no seed variance: no test)"
    p = fmt_p(c.p)
    p = f"p {p}" if p.startswith("<") else f"p = {p}"
    text = f"{c.diff:+.{digits}f} {fmt_interval(c.ci, digits, signed=True)} (95% CI), {p}"
    if min(c.n_a, c.n_b) < MIN_N_CONCLUDE:
        text += f", {TOO_SMALL}"
    return text
