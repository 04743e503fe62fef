"""Statistics over seeds: every interval and test comes from scipy.stats, nothing hand-rolled.

- mean, sample std (ddof=1), 95% t-interval of the mean (scipy.stats.t.interval with the
  standard error scipy.stats.sem), median, interquartile mean (scipy.stats.trim_mean, 25%
  cut each side), and a BCa bootstrap interval (scipy.stats.bootstrap, fixed seed so
  reports are reproducible) once there are BOOTSTRAP_MIN_N seeds;
- A minus B: Welch's t-test (scipy.stats.ttest_ind(equal_var=False)) and its 95% interval
  of the difference, P(A > B) over all seed pairs (the Mann-Whitney U statistic divided by
  n_a * n_b, ties counted one half), and a verdict that says "n too small to conclude"
  below MIN_N_CONCLUDE seeds on either side. When both sides ran the same seeds and each
  seed's runs share their randomness (``paired``: the caller knows, from the records' seed
  fingerprints), the paired t-test (scipy.stats.ttest_rel) and its interval instead, and
  P(A > B) over the seeds. Sides equal on every seed to within ``IDENTICAL_TOL`` are the
  same network: ``identical``, no test;
- Benjamini-Hochberg adjusted p-values over a family of comparisons
  (scipy.stats.false_discovery_control) and the one verdict rule (``RULE``, ``decide``):
  every "higher", bold cell and "significantly" in a report comes from it;
- bounded quantities (accuracies in [0, 100], declared internal metrics): intervals and
  bands are clipped to the bounds (``clip_interval``, ``clip_band``) and say so;
- aggregates over the cells of a study, in the manner of rliable (Agarwal et al., NeurIPS
  2021), with scipy.stats.bootstrap over several samples, which resamples each sample on its
  own, i.e. the stratified bootstrap: the interquartile mean of all runs
  (``aggregate_iqm``), the probability of improvement (``probability_of_improvement``) and
  performance profiles (``performance_profile``). rliable itself pulls in arch, statsmodels,
  seaborn, patsy, formulaic and absl-py for these few lines. The probability of improvement
  has a p-value too (``poi_permutation_p``: runs permuted within each cell), so a family of
  them is Benjamini-Hochberg adjusted like the t-tests.
"""
from __future__ import annotations

import dataclasses
import itertools
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
FEW_SEEDS = 3              # conclusions from this many seeds or fewer carry a caveat
ALPHA = 0.05
TOO_SMALL = "n too small to conclude"
PERCENT = (0.0, 100.0)     # the bounds of an accuracy
AGG_RESAMPLES = 2000       # stratified bootstrap resamples for the aggregates (rliable's)
# per-seed results closer than this (in the score's unit: accuracy points, dB) are the same
# network: a test set of 10,000 images moves an accuracy by 0.01 points per image, and
# identical SR networks differ by ~1e-6 dB of float rounding
IDENTICAL_TOL = 1e-4
PERMUTATIONS = 20000       # Monte Carlo permutations where the exact count is larger
RULE = (f"A is called higher than B (bold in a main table, \"higher\" in a verdict, "
        f"\"significantly\" in an answer) only when both have at least {MIN_N_CONCLUDE} "
        f"seeds and the t-test's p-value (paired by seed where the runs share their seed's "
        f"randomness, else Welch's), Benjamini-Hochberg adjusted over every test the report "
        f"makes in that setting, is below {ALPHA:g}; the 95% CI of the difference then "
        f"excludes 0")

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
    clipped: bool = False     # ``ci`` reached past the bounds given to describe: clipped

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


def describe(values: Sequence[float], bootstrap: bool = True,
             bounds: tuple[float | None, float | None] | None = None) -> Summary:
    """Every field; ``bootstrap=False`` leaves ``boot`` None (see with_bootstrap).
    ``bounds``: the range of the quantity (``PERCENT`` for accuracies); the t-interval is
    clipped to it and ``clipped`` says whether it had to be."""
    x = _array(values)
    n = len(x)
    if n == 0:
        return EMPTY
    ci, clipped = clip_interval(t_interval(x), bounds)
    return Summary(n=n, mean=float(x.mean()), std=float(x.std(ddof=1)) if n >= 2 else NAN,
                   ci=ci, median=float(stats.scoreatpercentile(x, 50)),
                   iqm=float(stats.trim_mean(x, 0.25)),
                   boot=bootstrap_interval(x) if bootstrap else None,
                   min=float(x.min()), max=float(x.max()), clipped=clipped)


def clip_interval(ci: Interval | None, bounds) -> tuple[Interval | None, bool]:
    """(the interval clipped to ``bounds`` (low, high; None = open), whether it had to be)."""
    if ci is None or not bounds:
        return ci, False
    lo_b = -math.inf if bounds[0] is None else bounds[0]
    hi_b = math.inf if bounds[1] is None else bounds[1]
    out = (min(max(ci[0], lo_b), hi_b), max(min(ci[1], hi_b), lo_b))
    return out, out != tuple(ci)


def clip_band(lo, hi, bounds):
    """A per-epoch band (arrays, or None) clipped to ``bounds``: (lo, hi, whether it had
    to be)."""
    if lo is None or not bounds:
        return lo, hi, False
    lo_b = -np.inf if bounds[0] is None else bounds[0]
    hi_b = np.inf if bounds[1] is None else bounds[1]
    clo, chi = np.clip(lo, lo_b, hi_b), np.clip(hi, lo_b, hi_b)
    return clo, chi, bool(np.any(clo != lo) or np.any(chi != hi))


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
    ci: Interval | None       # 95% interval of the difference (paired or Welch)
    p: float                  # two-sided p-value; nan when not computable (or identical)
    df: float
    p_a_greater: float        # P(A > B) over seed pairs, or over the seeds when paired
    paired: bool = False      # the paired t-test (same seeds, shared randomness)
    identical: bool = False   # equal on every seed to within IDENTICAL_TOL: no test
    sd_diff: float = NAN      # paired: the sample std of the per-seed differences

    @property
    def test_name(self) -> str:
        return "paired t-test" if self.paired else "Welch's t-test"

    @property
    def conclusive(self) -> bool:
        return min(self.n_a, self.n_b) >= MIN_N_CONCLUDE and math.isfinite(self.p)

    @property
    def few_seeds(self) -> bool:
        """FEW_SEEDS or fewer on a side: a conclusion carries a caveat."""
        return min(self.n_a, self.n_b) <= FEW_SEEDS

    def decide(self, p: float | None = None) -> str:
        """The verdict rule (``RULE``) on the p-value ``p`` (the adjusted one; default the
        unadjusted): "higher" (A), "lower" (B higher), "ns", "small", "identical",
        "undefined"."""
        p = self.p if p is None else p
        if self.identical:
            return "identical"
        if min(self.n_a, self.n_b) < MIN_N_CONCLUDE:
            return "small"
        if not math.isfinite(self.p):
            return "identical" if self.diff == 0 else "undefined"
        if p < ALPHA:
            return "higher" if self.diff > 0 else "lower"
        return "ns"

    def verdict(self, a: str = "A", b: str = "B", p: float | None = None) -> str:
        """The decision in words, on ``p`` (the adjusted p-value; default the unadjusted)."""
        d = self.decide(p)
        return {"small": f"{TOO_SMALL} (n = {self.n_a} vs {self.n_b})",
                "identical": ("identical on every seed (the same network): no test"
                              if self.identical else "identical on every seed"),
                "undefined": "no seed-to-seed variance: the test is undefined",
                "higher": f"{a} higher", "lower": f"{b} higher",
                "ns": "no significant difference"}[d]


def compare(a: Sequence[float], b: Sequence[float], conf: float = CONF,
            aligned: bool = False, paired: bool = False) -> Comparison:
    """A minus B. ``aligned``: a[i] and b[i] are the same seed's runs (then sides equal on
    every seed to within IDENTICAL_TOL are ``identical``); ``paired``: aligned, and each
    seed's runs share their randomness, so the paired t-test is the test."""
    xa, xb = _array(a), _array(b)
    aligned = aligned and len(xa) == len(xb) == len(a) == len(b) and len(xa) > 0
    if aligned and float(np.max(np.abs(xa - xb))) <= IDENTICAL_TOL:
        return Comparison(len(xa), len(xb), float(xa.mean()), float(xb.mean()),
                          float(xa.mean() - xb.mean()), None, NAN, NAN, 0.5, identical=True)
    if paired and aligned and len(xa) >= 2:
        return _paired(xa, xb, conf)
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
        with warnings.catch_warnings():
            # one side constant (every seed the same accuracy): scipy warns of precision loss
            # in its variance (~1e-28 instead of 0); Welch's test is then well defined (the
            # other side's variance alone), and the result is the same
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            res = stats.ttest_ind(xa, xb, equal_var=False)
        lo, hi = res.confidence_interval(conf)
        ci, p, df = (float(lo), float(hi)), float(res.pvalue), float(res.df)
    return Comparison(na, nb, mean_a, mean_b, mean_a - mean_b, ci, p, df, p_greater)


def _paired(xa, xb, conf: float) -> Comparison:
    """The paired t-test (scipy.stats.ttest_rel) on seed-aligned sides; P(A > B) over the
    seeds (ties ½). Differences equal on every seed have no variance: no test."""
    d = xa - xb
    n = len(d)
    p_greater = float(np.mean((d > 0) + 0.5 * (d == 0)))
    ci, p, df = None, NAN, NAN
    if np.ptp(d) > 0:
        res = stats.ttest_rel(xa, xb)
        lo, hi = res.confidence_interval(conf)
        ci, p, df = (float(lo), float(hi)), float(res.pvalue), float(res.df)
    return Comparison(n, n, float(xa.mean()), float(xb.mean()), float(d.mean()), ci, p, df,
                      p_greater, paired=True, sd_diff=float(d.std(ddof=1)))


def flip(c: Comparison) -> Comparison:
    """B minus A from A minus B (Welch's test is symmetric; P(B > A) = 1 - P(A > B))."""
    ci = None if c.ci is None else (-c.ci[1], -c.ci[0])
    return Comparison(c.n_b, c.n_a, c.mean_b, c.mean_a, -c.diff, ci, c.p, c.df,
                      1.0 - c.p_a_greater if math.isfinite(c.p_a_greater) else NAN,
                      paired=c.paired, identical=c.identical, sd_diff=c.sd_diff)


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

    Returns (mean, low, high); low/high are None when there are fewer than 2 seeds. A
    bounded quantity's band goes through ``clip_band``.
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

# --------------------------------------------------------------------------- aggregates

def _iqm_stat(*samples, axis=-1):
    return stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)


def _usable(samples) -> list:
    """The samples (cells) with two or more values: the bootstrap resamples within each."""
    return [x for x in (_array(s) for s in samples) if len(x) >= 2]


def _stratified(samples: list, statistic, conf: float = CONF):
    """Percentile interval of ``statistic`` under the stratified bootstrap: every sample
    (a cell's seeds) resampled on its own, AGG_RESAMPLES times, fixed seed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (constant) resamples
        res = stats.bootstrap(tuple(samples), statistic, n_resamples=AGG_RESAMPLES,
                              method="percentile", vectorized=True, confidence_level=conf,
                              rng=np.random.default_rng(BOOTSTRAP_SEED))
    return res.confidence_interval


def aggregate_iqm(samples: Sequence[Sequence[float]]) -> tuple[float, Interval | None]:
    """Interquartile mean of every run of every cell (rliable's IQM) and its 95% stratified
    bootstrap interval; cells with fewer than 2 runs are left out; (nan, None) without any."""
    xs = _usable(samples)
    if not xs:
        return NAN, None
    ci = _stratified(xs, _iqm_stat)
    return float(_iqm_stat(*xs)), (float(ci.low), float(ci.high))


def _win_rate(x, y):
    """P(X > Y) + P(X = Y) / 2 over all pairs of the last axes (x: (..., n), y: (..., m)):
    the Mann-Whitney U of x over n * m, from the midranks of the pooled runs (ties one half),
    in O((n + m) log(n + m)) rather than over every pair."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    n, m = x.shape[-1], y.shape[-1]
    pooled = np.concatenate([np.broadcast_to(x, lead + (n,)), np.broadcast_to(y, lead + (m,))],
                            axis=-1)
    return _u_of_first(stats.rankdata(pooled, axis=-1), n) / (n * m)


def _u_of_first(ranks, n: int):
    """Mann-Whitney U of the first ``n`` of ``ranks`` (last axis) against the rest."""
    return ranks[..., :n].sum(axis=-1) - n * (n + 1) / 2


def probability_of_improvement(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]]
                               ) -> tuple[float, Interval | None, int]:
    """P(X > Y) averaged over the cells both ran (rliable's probability of improvement:
    per cell the Mann-Whitney win rate over run pairs, ties one half) with its 95% stratified
    bootstrap interval; ``xs[k]`` and ``ys[k]`` are one cell's runs. Returns (value,
    interval, cells used); cells where a side has fewer than 2 runs are left out."""
    pairs = [(x, y) for x, y in ((_array(a), _array(b)) for a, b in zip(xs, ys))
             if len(x) >= 2 and len(y) >= 2]
    if not pairs:
        return NAN, None, 0
    k = len(pairs)

    def stat(*samples, axis=-1):
        return np.mean([_win_rate(samples[i], samples[k + i]) for i in range(k)], axis=0)

    samples = [x for x, _ in pairs] + [y for _, y in pairs]
    ci = _stratified(samples, stat)
    return float(stat(*samples)), (float(ci.low), float(ci.high)), k


def _split_win_rates(x, y, rng, exact: bool):
    """The win rate P(X > Y) of every way (``exact``) or of PERMUTATIONS random ways to split
    one cell's runs into groups of len(x) and len(y). A split only regroups the pooled runs,
    whose midranks stay: its U is the sum of the midranks of the n runs put in X."""
    pooled, n = np.concatenate([x, y]), len(x)
    ranks, scale = stats.rankdata(pooled), n * len(y)
    if exact:
        splits = np.array(list(itertools.combinations(range(len(pooled)), n)))
        return _u_of_first(ranks[splits], n) / scale
    # X gets the runs with the n smallest of a row of random keys; half-integer ranks sum
    # exactly, in any order
    keys = rng.random((PERMUTATIONS, len(pooled)))
    in_x = keys <= np.partition(keys, n - 1, axis=1)[:, n - 1:n]
    if not (in_x.sum(axis=1) == n).all():  # two equal keys at the cut (never seen): by index
        in_x = np.zeros_like(in_x)
        np.put_along_axis(in_x, np.argpartition(keys, n - 1, axis=1)[:, :n], True, axis=1)
    return (in_x @ ranks - n * (n + 1) / 2) / scale


def poi_permutation_p(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]]) -> float:
    """Two-sided p-value of ``probability_of_improvement`` (same cells: 2 or more runs a
    side) against 0.5: the null is that in each cell the runs of X and of Y are exchangeable,
    so the runs are permuted within each cell (scipy.stats.permutation_test permutes across
    every observation, not within cells). Exact over every arrangement when there are at
    most PERMUTATIONS, else PERMUTATIONS random ones per cell (fixed seed); nan without cells.
    """
    pairs = [(x, y) for x, y in ((_array(a), _array(b)) for a, b in zip(xs, ys))
             if len(x) >= 2 and len(y) >= 2]
    if not pairs:
        return NAN
    observed = abs(np.mean([_win_rate(x, y) for x, y in pairs]) - 0.5)
    count = math.prod(math.comb(len(x) + len(y), len(x)) for x, y in pairs)
    exact = count <= PERMUTATIONS
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    null = np.zeros(1) if exact else np.zeros(PERMUTATIONS)
    for x, y in pairs:
        rates = _split_win_rates(x, y, rng, exact) / len(pairs)
        null = np.add.outer(null, rates).ravel() if exact else null + rates
    hits = np.abs(null - 0.5) >= observed - 1e-12
    return float(hits.mean()) if exact else float((hits.sum() + 1) / (len(null) + 1))


def _fraction_above(a, t):
    """(a > t_j).mean over the last axis of ``a`` for every threshold t_j: shape a.shape[:-1]
    + (len(t),). Each value is counted once, by how many thresholds lie below it (a bincount
    per row), not compared with every threshold."""
    order = np.argsort(t, kind="stable")
    rows = a.reshape(-1, a.shape[-1])
    below = np.searchsorted(t[order], rows, side="left")  # thresholds < value
    width = len(t) + 1
    counts = np.bincount((below + width * np.arange(len(rows))[:, None]).ravel(),
                         minlength=width * len(rows)).reshape(len(rows), width)
    above = counts[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]  # values with more than j below
    frac = np.empty_like(above, dtype=float)
    frac[:, order] = above / a.shape[-1]
    return frac.reshape(a.shape[:-1] + (len(t),))


def performance_profile(samples: Sequence[Sequence[float]], taus: Sequence[float]):
    """Fraction of runs (over every cell) scoring above each threshold in ``taus`` and its
    95% stratified bootstrap band: (fractions, low, high) arrays; the band is None when no
    cell has 2 or more runs."""
    t = np.asarray(taus, dtype=float)
    xs = [_array(s) for s in samples]
    allx = np.concatenate(xs) if xs else np.array([])
    frac = (allx[:, None] > t[None, :]).mean(axis=0) if len(allx) else np.full(len(t), NAN)
    usable = _usable(samples)
    if not usable:
        return frac, None, None
    # thresholds with the same runs above them (the same number of distinct scores at or
    # below them) have the same fraction in every resample: each such group is computed once
    _, first, group = np.unique(np.searchsorted(np.unique(allx), t, side="right"),
                                return_index=True, return_inverse=True)
    t_once = t[first]

    def stat(*s, axis=-1):
        return np.moveaxis(_fraction_above(np.concatenate(s, axis=-1), t_once), -1, 0)

    ci = _stratified(usable, stat)
    return frac, np.asarray(ci.low, float)[group], np.asarray(ci.high, float)[group]


# --------------------------------------------------------------------------- formatting

def fmt_p(p: float) -> str:
    """3 decimals below 0.1 (0.048), 2 above (0.67), "< 0.001" below that; more digits
    when rounding would put p on the other side of ALPHA (0.0496, not 0.050)."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    digits = 3 if p < 0.1 else 2
    while digits < 8 and (round(p, digits) < ALPHA) != (p < ALPHA):
        digits += 1
    return f"{p:.{digits}f}"


def fmt_p_eq(p: float) -> str:
    """'p = 0.048' or 'p < 0.001'."""
    s = fmt_p(p)
    return f"p {s}" if s.startswith("<") else f"p = {s}"


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


def fmt_comparison(c: Comparison, digits: int = 2, p_adj: float | None = None) -> str:
    """'+0.60 [+0.20, +1.00] (95% CI), p = 0.010, adjusted p = 0.030' or the reason there
    is no test. Without ``p_adj`` the p-value is marked unadjusted; few seeds are said."""
    if c.identical:
        return (f"{c.diff:+.{digits}f} (identical on every seed to within {IDENTICAL_TOL:g}: "
                "the same network, no test)")
    if c.ci is None:
        return f"{c.diff:+.{digits}f} ({TOO_SMALL}: n = {c.n_a} vs {c.n_b})" if \
            min(c.n_a, c.n_b) < 2 else f"{c.diff:+.{digits}f} (no seed variance: no test)"
    text = (f"{c.diff:+.{digits}f} {fmt_interval(c.ci, digits, signed=True)} (95% CI"
            + (", paired by seed), " if c.paired else "), "))
    text += (f"{fmt_p_eq(c.p)}, adjusted {fmt_p_eq(p_adj)}" if p_adj is not None
             else f"unadjusted {fmt_p_eq(c.p)}")
    if min(c.n_a, c.n_b) < MIN_N_CONCLUDE:
        text += f", {TOO_SMALL}"
    elif c.few_seeds:
        text += f", only {c.n_a} vs {c.n_b} seeds"
    return text
