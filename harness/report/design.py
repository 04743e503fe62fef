"""What the study's design can detect, and how every number of the report is computed.

- ``detectable(n, sd, paired)``: the smallest difference a two-sided t-test at ALPHA finds
  with POWER (80%) probability, from n seeds a side and a seed standard deviation sd: the
  noncentral t distribution (scipy.stats.nct) solved for the difference
  (scipy.optimize.brentq). Unpaired: Welch's test with equal n and sd (df = 2n - 2,
  standard error sd·sqrt(2/n)); paired by seed: the per-seed differences' sd (df = n - 1,
  standard error sd_d/sqrt(n));
- ``binomial_se(acc, n_test)``: the test set's own sampling error of one accuracy,
  100·sqrt(p(1-p)/n_test) points at accuracy p: what a run's accuracy would vary by on
  another test set of that size, next to the seed-to-seed spread;
- ``design_lines(st, setting)`` (classification) and ``sr_design_lines`` (PSNR, dB): one
  paragraph per setting with both, shown under its main table;
- ``statistics_blocks``: the "Statistical methods" section, for the tasks the study has
  (sr.py adds its own bullet).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

from harness.report import stats, verdicts
from harness.report.load import StudyRecords

POWER = 0.8


def t_power(delta: float, n: int, sd: float, paired: bool = False,
            alpha: float = stats.ALPHA) -> float:
    """Power of the two-sided t-test at ``alpha`` for a true difference ``delta``."""
    df = n - 1 if paired else 2 * n - 2
    se = sd / math.sqrt(n) if paired else sd * math.sqrt(2 / n)
    crit = scipy_stats.t.ppf(1 - alpha / 2, df)
    nc = delta / se
    return float(scipy_stats.nct.sf(crit, df, nc) + scipy_stats.nct.cdf(-crit, df, nc))


def detectable(n: int, sd: float, paired: bool = False, power: float = POWER,
               alpha: float = stats.ALPHA) -> float:
    """The smallest difference detected with ``power``; nan without a test (n < 2, sd not
    positive)."""
    if n < 2 or not sd > 0 or not math.isfinite(sd):
        return float("nan")
    hi = sd
    while t_power(hi, n, sd, paired, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: t_power(d, n, sd, paired, alpha) - power, 0.0, hi,
                                 xtol=1e-9 * sd))


def binomial_se(acc: float, n_test: int | None) -> float:
    """Binomial standard error (points) of an accuracy (%) measured on n_test images."""
    if not n_test or not math.isfinite(acc):
        return float("nan")
    p = min(max(acc / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1 - p) / n_test)


def pooled_sd(sds: list[float]) -> float:
    """The root mean square of standard deviations (their variances averaged)."""
    sds = [s for s in sds if math.isfinite(s)]
    return math.sqrt(float(np.mean(np.square(sds)))) if sds else float("nan")


def test_set_size(st: StudyRecords, setting: str) -> int | None:
    """The test set's size the setting's runs recorded (the most common one), else None."""
    inc = st.included[st.included["setting"] == setting]
    sizes = [int(x) for x in inc.get("n_test", []) if x is not None and x == x]
    return Counter(sizes).most_common(1)[0][0] if sizes else None


# --------------------------------------------------------------------------- the lines

def _power_text(groups: list[stats.Summary], tests: list[verdicts.Test], unit: str,
                family: int) -> tuple[str, float]:
    """'n seeds per cell, pooled seed SD ...: detects X unpaired (Y paired)' and that SD."""
    ns = Counter(g.n for g in groups if g.n >= 2)
    if not ns:
        return "fewer than 2 seeds in every cell: no test, no power to state", float("nan")
    n = ns.most_common(1)[0][0]
    sd = pooled_sd([g.std for g in groups if g.n >= 2])
    text = (f"{n} seeds per cell" + ("" if len(ns) == 1 else " (most cells)")
            + f", pooled seed SD {sd:.2f} {unit} over {len(groups)} row×cell groups: a "
            f"two-sided test at α = {stats.ALPHA:g} has {POWER:.0%} power for a difference of "
            f"{detectable(n, sd):.2f} {unit} between two rows (Welch, unpaired)")
    paired = [t.cmp.sd_diff for t in tests if t.cmp.paired and math.isfinite(t.cmp.sd_diff)]
    if paired:
        sd_d = pooled_sd(paired)
        text += (f", {detectable(n, sd_d, paired=True):.2f} {unit} paired by seed (pooled SD "
                 f"of the per-seed differences {sd_d:.2f} over {len(paired)} paired tests)")
    return text + (f"; before the Benjamini-Hochberg adjustment over {family} tests, which "
                   "asks for more" if family > 1 else "") + ".", sd


def design_lines(st: StudyRecords, setting: str) -> list[str]:
    """The power and test-set paragraph of a classification setting."""
    groups = [g["summary"] for k, g in st.groups.items() if k[0] == setting and g["summary"].n]
    if not groups:
        return []
    fam = verdicts.family(st, setting)
    tests = [t for k, t in fam.items() if k[0] == verdicts.FINAL]
    power, sd = _power_text(groups, tests, "points", verdicts.family_size(st, setting))
    n_test = test_set_size(st, setting)
    if n_test:
        ses = [binomial_se(g.mean, n_test) for g in groups]
        span = f"{min(ses):.2f}" if f"{min(ses):.2f}" == f"{max(ses):.2f}" else \
            f"{min(ses):.2f}–{max(ses):.2f}"
        test = (f" Test set: {n_test:,} images, so the test set alone gives one run's "
                f"accuracy a binomial standard error of {span} points (100·√(p(1−p)/n) at the "
                f"rows' accuracies)" + (f", next to the seed SD of {sd:.2f}." if sd == sd
                                        else "."))
    else:
        test = (" The records do not say how many test images there were (written before "
                "runs recorded data_fingerprint), so no binomial standard error is given.")
    return [f"**Design, {st.setting_name(setting)}.** {power[0].upper()}{power[1:]}{test}", ""]


def sr_design_lines(st: StudyRecords, setting: str, groups: list[stats.Summary],
                    tests: list[verdicts.Test]) -> list[str]:
    """The power paragraph of a super-resolution setting (PSNR in dB)."""
    groups = [g for g in groups if g.n]
    if not groups:
        return []
    power, _ = _power_text(groups, tests, "dB", tests[0].family_size if tests else 0)
    return [f"**Design, {st.setting_name(setting)}.** {power[0].upper()}{power[1:]}", ""]


# --------------------------------------------------------------------------- the section

def _shared_lines() -> list[str]:
    return [
        f"- Differences: the paired t-test (`scipy.stats.ttest_rel`) by seed where both rows "
        f"ran the same seeds and each seed's runs share their data order (the trainer records "
        f"what the seed controlled: summary.json `seed_fingerprint`), else Welch's t-test "
        f"(`scipy.stats.ttest_ind(equal_var=False)`), each with its 95% interval of the "
        f"difference. Rows equal on every seed to within {stats.IDENTICAL_TOL:g} (points or "
        f"dB) are the same network: reported as identical, with no test. P(A > B) is the "
        f"Mann-Whitney U statistic over all seed pairs divided by n_A·n_B (over the seeds "
        f"where paired; ties ½).",
        "- p-values: 3 decimals below 0.1 (2 above), \"< 0.001\" below that, and more "
        "digits where rounding would put p on the other side of 0.05 (0.0496, not 0.050).",
        f"- Fewer than {stats.MIN_N_CONCLUDE} seeds on a side: the difference is shown but "
        f"marked \"{stats.TOO_SMALL}\"; with one seed there is no interval and no test; with "
        f"{stats.FEW_SEEDS} or fewer a sentence that concludes says so.",
        f"- Power: the smallest difference a two-sided t-test at α = {stats.ALPHA:g} detects "
        f"with {POWER:.0%} probability, from the usual seeds per cell and the pooled seed SD "
        f"(noncentral t, `scipy.stats.nct`), is stated under each main table."]


def _classify_lines(st: StudyRecords) -> list[str]:
    sizes = ", ".join(f"{verdicts.family_size(st, s)} tests in {st.setting_name(s)}"
                      for s in st.settings())
    return [
        f"- One verdict rule: {stats.RULE}. The family is every comparison the report makes "
        f"in a setting (ours against each baseline, the best row of each main-table column "
        f"against the others, each variant against its default, ours' longest budget against "
        f"its shortest, ours against each baseline at equal compute, and each pretrained row "
        f"against its row from scratch and, between two methods, pretrained against "
        f"pretrained and scratch against scratch): {sizes}, "
        "Benjamini-Hochberg adjusted (`scipy.stats.false_discovery_control`). Bold cells, "
        "verdict columns and the reviewer answers all read it; tables show the unadjusted p "
        "beside the adjusted one.",
        "- Bounded quantities: an accuracy lies in [0, 100], so a t-interval or band that "
        "reaches past it (few seeds, wide spread) is clipped to it and marked ‡ in tables "
        "and by a triangle on the band's edge in figures; internal metrics are clipped to the "
        "range their method declares.",
        "- Test set: the binomial standard error of one accuracy, 100·√(p(1−p)/n) points for "
        "n test images, is stated beside the seed SD (the uncertainty tables give it per row "
        "and cell).",
        "- Curves: per-epoch mean with a 95% t-interval band over seeds (none for n = 1).",
        "- Equal compute: a row's accuracy once it had used the training time of the "
        "cheapest row's whole budget in the cell, read off its curve (see the equal-compute "
        "tables for the exact rule).",
        f"- Across cells (rliable-style, computed with scipy): interquartile mean of every run "
        f"over the cells, the probability of improvement (per cell the share of run pairs "
        f"won, averaged) and performance profiles, each with a 95% percentile interval from "
        f"the stratified bootstrap (`scipy.stats.bootstrap` over one sample per cell, "
        f"{stats.AGG_RESAMPLES} resamples). Each probability of improvement also has a "
        f"p-value (runs permuted within each cell: exact up to {stats.PERMUTATIONS:,} "
        f"arrangements), Benjamini-Hochberg adjusted over the setting's probabilities of "
        f"improvement; \"P(A>B) interval above 0.5\" needs both the interval above 0.5 and "
        f"that adjusted p below {stats.ALPHA:g}."]


def statistics_blocks(st: StudyRecords, task_lines: list[str] = ()) -> list[Any]:
    """How every number is computed (the constants come from stats.py), for the tasks the
    study has: classification bullets only with classification runs; ``task_lines``: other
    tasks' bullets (sr.py: ``sr_statistics_lines``)."""
    head = [f"- Per method and cell: mean, sample std (ddof = 1), 95% t-interval of the mean "
            f"(`scipy.stats.t.interval` with `scipy.stats.sem`), median and interquartile mean "
            f"(`scipy.stats.trim_mean`, 25% cut); a BCa bootstrap interval "
            f"(`scipy.stats.bootstrap`, {stats.BOOTSTRAP_RESAMPLES} resamples, seed "
            f"{stats.BOOTSTRAP_SEED}) when n ≥ {stats.BOOTSTRAP_MIN_N}."]
    return (head + _shared_lines() + (_classify_lines(st) if st.settings() else [])
            + list(task_lines) + [""])
