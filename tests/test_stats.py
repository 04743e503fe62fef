"""harness/report/stats.py on hand-made numbers with known answers."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from harness.report import stats as report_stats

A = [90.1, 90.3, 89.9, 90.4, 90.2]
B = [89.5, 89.8, 89.4, 89.9, 89.6]


def welch_by_hand(a, b):
    """Welch's t-test from its formula (Welch 1947): t, Welch-Satterthwaite df, p, 95% CI."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    t = (a.mean() - b.mean()) / se
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    p = 2 * sps.t.sf(abs(t), df)
    half = sps.t.ppf(0.975, df) * se
    return t, df, p, (a.mean() - b.mean() - half, a.mean() - b.mean() + half)


def test_t_interval_matches_formula():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    half = sps.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)  # sd = sqrt(2.5)
    lo, hi = report_stats.t_interval(x)
    assert lo == pytest.approx(3 - half) and hi == pytest.approx(3 + half)
    assert lo < 3 < hi


def test_t_interval_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    true_mean, hits, trials = 90.0, 0, 400
    for _ in range(trials):
        lo, hi = report_stats.t_interval(rng.normal(true_mean, 0.5, size=5))
        hits += lo <= true_mean <= hi
    assert 0.92 <= hits / trials <= 0.98


def test_describe_fields():
    s = report_stats.describe([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.n == 5 and s.mean == pytest.approx(22.0)
    assert s.std == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1))
    assert s.median == 3.0
    assert s.iqm == pytest.approx(3.0)  # 25% cut each side: mean of 2, 3, 4
    assert s.boot is not None and s.boot[0] <= s.mean <= s.boot[1]
    assert (s.min, s.max) == (1.0, 100.0)


def test_bootstrap_only_from_five_seeds_and_contains_mean():
    assert report_stats.describe(A[:4]).boot is None
    s = report_stats.describe(A)
    assert s.boot[0] < s.mean < s.boot[1]
    assert report_stats.describe(A).boot == s.boot  # fixed seed: reproducible


def test_single_seed_has_no_error_bar():
    s = report_stats.describe([91.0])
    assert s.n == 1 and math.isnan(s.std) and s.ci is None and s.boot is None
    assert not s.has_error_bar
    assert "no error bar" in report_stats.fmt_summary(s)
    assert report_stats.describe([]).n == 0


def test_welch_p_value_and_ci_by_hand():
    _, df, p, ci = welch_by_hand(A, B)
    c = report_stats.compare(A, B)
    assert c.diff == pytest.approx(np.mean(A) - np.mean(B))
    assert c.df == pytest.approx(df)
    assert c.p == pytest.approx(p, rel=1e-9)
    assert c.ci[0] == pytest.approx(ci[0]) and c.ci[1] == pytest.approx(ci[1])
    assert c.p < 0.05 and c.verdict("slb", "dorefa") == "slb higher"
    assert report_stats.compare(B, A).verdict("slb", "dorefa") == "dorefa higher"


def test_probability_a_beats_b_over_seed_pairs():
    # pairs (a, b): 1 beats only 0; 2 ties both 2s and beats 0; 3 beats all: (1 + 2 + 3) / 9
    assert report_stats.compare([1, 2, 3], [2, 2, 0]).p_a_greater == pytest.approx(6 / 9)
    assert report_stats.compare(A, B).p_a_greater == pytest.approx(  # one tie: 89.9 in both
        np.mean([(x > y) + 0.5 * (x == y) for x in A for y in B]))


def test_too_few_seeds_are_not_concluded():
    one = report_stats.compare([91.0], [89.0, 88.0, 89.5])
    assert one.ci is None and math.isnan(one.p)
    assert report_stats.TOO_SMALL in one.verdict() and not one.conclusive
    assert report_stats.TOO_SMALL in report_stats.fmt_comparison(one)
    two = report_stats.compare([91.0, 91.2], [89.0, 89.3])  # computable, but below MIN_N_CONCLUDE
    assert two.ci is not None and report_stats.TOO_SMALL in two.verdict()


def test_no_variance_and_identical_samples():
    same = report_stats.compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert same.ci is None and same.verdict() == "identical on every seed"
    assert "undefined" in report_stats.compare([2.0] * 3, [1.0] * 3).verdict()


def test_not_significant_when_ci_contains_zero():
    c = report_stats.compare([90.0, 91.0, 89.0], [90.5, 89.5, 90.2])
    assert c.ci[0] < 0 < c.ci[1] and c.p > 0.05
    assert c.verdict().startswith("no significant difference")


def test_interval_overlap():
    assert report_stats.intervals_overlap((1, 2), (1.5, 3))
    assert not report_stats.intervals_overlap((1, 2), (2.1, 3))
    assert report_stats.intervals_overlap(None, (0, 1))


def test_adjusted_pvalues_keep_nan():
    adj = report_stats.adjust_pvalues([0.01, float("nan"), 0.04, 0.03])
    assert math.isnan(adj[1])
    # BH by hand: sorted 0.01, 0.03, 0.04 -> 0.01*3/1, min(0.03*3/2, 0.04*3/3), 0.04*3/3
    assert adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.04) and adj[3] == pytest.approx(0.04)


def test_curve_band():
    m = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    mean, lo, hi = report_stats.curve_band(m)
    assert list(mean) == [2.0, 3.0, 4.0]
    half = sps.t.ppf(0.975, 1) * 1.0  # sem of two values 1 apart from the mean = 1
    assert lo[0] == pytest.approx(2 - half) and hi[0] == pytest.approx(2 + half)
    assert report_stats.curve_band(m[:1])[1] is None


def test_formatting():
    assert report_stats.fmt_p(0.0004) == "< 0.001" and report_stats.fmt_p(0.004) == "0.004"
    assert report_stats.fmt_p(0.2345) == "0.23" and report_stats.fmt_p(float("nan")) == "n/a"
    assert report_stats.fmt_interval((-0.5, 1.25), signed=True) == "[-0.50, +1.25]"
    assert report_stats.fmt_summary(report_stats.describe([1.0, 3.0])) == "2.00 ± 1.41 (n=2)"


def test_p_keeps_its_side_of_alpha():
    assert report_stats.fmt_p(0.048) == "0.048" and report_stats.fmt_p(0.67) == "0.67"
    assert report_stats.fmt_p(0.0496) == "0.0496"   # "0.050" would read as not below 0.05
    assert report_stats.fmt_p(0.0504) == "0.050" and report_stats.fmt_p(0.0009) == "< 0.001"
    assert report_stats.fmt_p_eq(0.0004) == "p < 0.001" and report_stats.fmt_p_eq(0.2) == "p = 0.20"


def test_intervals_clipped_to_bounds():
    vals = [10.0, 90.0, 99.0]
    half = sps.t.ppf(0.975, 2) * np.std(vals, ddof=1) / math.sqrt(3)
    s = report_stats.describe(vals, bounds=report_stats.PERCENT)
    assert s.ci == (0.0, 100.0) and s.clipped  # mean 66.3 +- 121.7 by hand
    assert half > 100 and not report_stats.describe(vals).clipped
    assert report_stats.describe(vals).ci[0] == pytest.approx(np.mean(vals) - half)
    assert report_stats.clip_interval((1.0, 2.0), report_stats.PERCENT) == ((1.0, 2.0), False)
    assert report_stats.clip_interval((-1.0, 2.0), (0.0, None)) == ((0.0, 2.0), True)
    lo, hi, clipped = report_stats.clip_band(np.array([-5.0, 1.0]), np.array([50.0, 120.0]),
                                             report_stats.PERCENT)
    assert list(lo) == [0.0, 1.0] and list(hi) == [50.0, 100.0] and clipped


def test_decision_on_the_adjusted_p_and_flip():
    c = report_stats.compare(A, B)                      # p ~ 1e-3: higher on its own p
    assert c.decide() == "higher" and c.decide(0.2) == "ns"
    assert c.verdict("slb", "dorefa", 0.2) == "no significant difference"
    f = report_stats.flip(c)
    assert f.diff == pytest.approx(-c.diff) and f.p == c.p
    assert f.ci == pytest.approx((-c.ci[1], -c.ci[0]))
    assert f.p_a_greater == pytest.approx(report_stats.compare(B, A).p_a_greater)
    assert f.decide() == "lower" and report_stats.compare(A[:3], B[:3]).few_seeds
    few = report_stats.compare(A[:3], B[:3])
    assert "only 3 vs 3 seeds" in report_stats.fmt_comparison(few, p_adj=0.01)
    assert "unadjusted p" in report_stats.fmt_comparison(c)


def test_probability_of_improvement_by_hand():
    # cell 1: every pair won (9/9); cell 2: (1,1) tie, (1,2) lost, (2,1) won, (2,2) tie: 2/4
    p, (lo, hi), k = report_stats.probability_of_improvement([[3, 4, 5], [1, 2]],
                                                             [[0, 1, 2], [1, 2]])
    assert k == 2 and p == pytest.approx((1.0 + 0.5) / 2)
    assert 0.5 <= lo <= p <= hi <= 1.0
    # a cell needs 2 runs
    assert report_stats.probability_of_improvement([[1.0]], [[0.0, 2.0]])[2] == 0


def test_aggregate_iqm_by_hand():
    cells = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    v, ci = report_stats.aggregate_iqm(cells)
    assert v == pytest.approx(np.mean([3, 4, 5, 6]))  # the middle half of 1..8
    assert 1.0 <= ci[0] <= v <= ci[1] <= 8.0
    assert report_stats.aggregate_iqm(cells) == (v, ci)      # fixed seed: reproducible


def test_one_constant_side_is_welch_on_the_other_side_without_a_warning():
    """Every seed of B at the same accuracy: B's variance is 0 and Welch's test reduces to a
    one-sample t-test of A (df = n_A - 1); scipy's precision-loss warning is not shown."""
    a, b = [83.11111111111111, 86.44444444444444, 89.77777777777777], [98.66666666666667] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = report_stats.compare(a, b)
    t = (np.mean(a) - b[0]) / (np.std(a, ddof=1) / np.sqrt(3))   # -8.0 / (3.333... / 1.732)
    assert c.df == pytest.approx(2.0)
    assert c.p == pytest.approx(2 * sps.t.sf(abs(t), 2), rel=1e-9)
    assert c.p == pytest.approx(0.0239078, abs=1e-6)
