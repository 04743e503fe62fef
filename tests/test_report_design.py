"""Statistics that use the design: paired tests where the seeds pair (the runs' recorded
seed fingerprints), identical networks reported as identical, the probability-of-improvement
family adjusted, the power line and the test set's binomial error; and the honest context
of time ratios, two-valued medians and the scale line. Golden values by hand or from
scipy.stats and G*Power."""
from __future__ import annotations

import math

import numpy as np
import pytest
from report_records import write_run
from scipy import stats as sps

from harness import records
from harness import report as report_pkg
from harness.report import aggregate, costs, design, stats, verdicts
from harness.report import tables as report_tables

# per-seed accuracies: B follows A's seed-to-seed swings (shared data order), 0.5 lower
# with a little noise, so pairing by seed removes the swings
SLB = [90.0, 92.0, 88.0, 91.0, 89.0]
DOREFA = [89.6, 91.4, 87.5, 90.6, 88.4]


def _paired_study(root, fingerprint: bool):
    for seed, (a, b) in enumerate(zip(SLB, DOREFA)):
        write_run(root, f"s{seed}", method="slb", acc=a, seed=seed, fingerprint=fingerprint)
        write_run(root, f"d{seed}", method="dorefa", acc=b, seed=seed, fingerprint=fingerprint)
    return report_pkg.load_study(root, ours="slb")


def _comparison(st):
    (setting,) = st.settings()
    (row,) = report_tables.comparisons(st, setting)
    return setting, row


def test_a_seeded_paired_design_gets_the_paired_test(tmp_path):
    st = _paired_study(tmp_path / "paired", fingerprint=True)
    setting, row = _comparison(st)
    paired = sps.ttest_rel(SLB, DOREFA)
    c = row["cmp"]
    assert c.paired and c.p == pytest.approx(paired.pvalue, rel=1e-12)
    lo, hi = paired.confidence_interval(0.95)
    assert c.ci == pytest.approx((lo, hi)) and c.df == 4
    assert c.p < 0.001 < sps.ttest_ind(SLB, DOREFA, equal_var=False).pvalue  # pairing matters
    assert c.p_a_greater == 1.0                                 # every seed: A above B
    table = report_tables.comparison_table(st, setting, [row])
    design_part = table.notes[0].split("Verdicts and bold")[0]
    assert "paired t-test by seed" in design_part and "Welch" not in design_part
    assert table.data.loc[0, "test"] == "paired"
    assert row["test"].decision == "higher"


def test_records_without_fingerprints_fall_back_to_welch(tmp_path):
    st = _paired_study(tmp_path / "unpaired", fingerprint=False)
    setting, row = _comparison(st)
    welch = sps.ttest_ind(SLB, DOREFA, equal_var=False)
    assert not row["cmp"].paired and row["cmp"].p == pytest.approx(welch.pvalue, rel=1e-12)
    table = report_tables.comparison_table(st, setting, [row])
    assert "Welch's t-test (unpaired: the records hold no seed fingerprint" in table.notes[0]
    assert table.data.loc[0, "test"] == "welch"


def test_other_data_orders_do_not_pair(tmp_path):
    root = tmp_path / "orders"
    st = _paired_study(root, fingerprint=True)
    run = root / "runs" / "d3"
    summ = records.read_summary(run)
    summ.seed_fingerprint = {"data_order": "another", "init": "x"}
    records.write_summary(run, summ)
    st = report_pkg.load_study(root, ours="slb")
    assert not _comparison(st)[1]["cmp"].paired


def test_identical_networks_are_reported_identical_without_a_test(tmp_path):
    """Two SLB variants whose final accuracies agree on every seed to 3e-6 (the same network,
    float rounding apart): identical, no p-value, not counted in the adjusted family."""
    root = tmp_path / "same"
    for seed, a in enumerate(SLB):
        write_run(root, f"s{seed}", method="slb", acc=a, seed=seed, fingerprint=True)
        write_run(root, f"n{seed}", method="slb", variant="slb-none", acc=a + 3e-6, seed=seed,
                  options={"bn": "none"}, fingerprint=True)
        write_run(root, f"d{seed}", method="dorefa", acc=DOREFA[seed], seed=seed,
                  fingerprint=True)
    st = report_pkg.load_study(root, ours="slb")
    (setting,) = st.settings()
    (abl,) = [r for r in report_tables.ablations(st, setting) if r["test"]]
    c = abl["cmp"]
    assert c.identical and math.isnan(c.p) and c.ci is None
    assert abl["test"].decision == "identical"
    assert abl["test"].verdict("a", "b") == "identical on every seed (the same network): no test"
    fam = verdicts.family(st, setting)
    assert verdicts.family_size(st, setting) == sum(math.isfinite(t.cmp.p) for t in fam.values())
    assert verdicts.family_size(st, setting) < len(fam)
    table = report_tables.ablation_table(st, setting, report_tables.ablations(st, setting), "slb")
    assert "identical" in table.rows[-1] and "1 identical on every seed" in table.notes[0]
    assert stats.compare(SLB, [a + 2e-4 for a in SLB], aligned=True).identical is False


def test_probability_of_improvement_permutation_p_by_hand():
    # one cell: every arrangement of 3 + 3 runs, P(X > Y) = 1 for 2 of the 20 (all low or
    # all high): p = 0.1, which is the exact two-sided Mann-Whitney test
    assert stats.poi_permutation_p([[4, 5, 6]], [[1, 2, 3]]) == pytest.approx(0.1)
    x, y = [1, 2, 3, 4, 5, 6, 7], [3.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    assert stats.poi_permutation_p([x], [y]) == pytest.approx(
        sps.mannwhitneyu(x, y, method="exact").pvalue)
    # two cells, X wins every pair in both: 2 of 20 x 20 arrangements are as extreme
    assert stats.poi_permutation_p([[4, 5, 6]] * 2, [[1, 2, 3]] * 2) == pytest.approx(2 / 400)


def test_probability_of_improvement_family_and_wording(tmp_path):
    root = tmp_path / "poi"
    for w in (1, 2):
        for seed in range(3):
            write_run(root, f"s{w}{seed}", method="slb", w=w, acc=90 + seed, seed=seed)
            write_run(root, f"d{w}{seed}", method="dorefa", w=w, acc=80 + seed, seed=seed)
            write_run(root, f"l{w}{seed}", method="lqnet", w=w, acc=90.5 + seed, seed=seed)
    st = report_pkg.load_study(root, ours="slb")
    (setting,) = st.settings()
    rows = {r["label"]: r for r in aggregate.aggregate_rows(st, setting) if r["poi"] is not None}
    assert rows["dorefa"]["poi_p"] == pytest.approx(2 / 400)
    ps = [rows[k]["poi_p"] for k in rows]
    adj = sps.false_discovery_control(ps, method="bh")
    assert [rows[k]["poi_p_adj"] for k in rows] == pytest.approx(list(adj))
    assert rows["dorefa"]["poi_ci"] == (1.0, 1.0) and rows["dorefa"]["poi_decision"] == "above"
    assert rows["lqnet"]["poi_decision"] == "undecided"
    table = aggregate.aggregate_table(st, setting)
    text = " ".join(table.notes)
    assert "P(A>B) interval above 0.5" in text and "zero width" in text
    assert "consistent advantage" not in text
    answer = report_pkg.question("aggregate").ask(st)["text"]
    assert "P(A>B) interval above 0.5 against 1 of 2 rows" in answer


def test_power_matches_g_power_and_inverts():
    # G*Power 3.1, two-tailed t-tests at alpha 0.05: two groups of 26, d = 0.8: 0.8075;
    # of 64, d = 0.5: 0.8015; matched pairs n = 10, dz = 1: 0.8031
    assert design.t_power(0.8, 26, 1.0) == pytest.approx(0.8075, abs=1e-4)
    assert design.t_power(0.5, 64, 1.0) == pytest.approx(0.8015, abs=1e-4)
    assert design.t_power(1.0, 10, 1.0, paired=True) == pytest.approx(0.8031, abs=1e-4)
    d = design.detectable(3, 2.0)
    assert design.t_power(d, 3, 2.0) == pytest.approx(0.8)
    assert design.detectable(3, 2.0, paired=True) > design.detectable(3, 2.0) / 3
    assert math.isnan(design.detectable(1, 2.0)) and math.isnan(design.detectable(3, 0.0))
    assert design.binomial_se(25.0, 1000) == pytest.approx(100 * math.sqrt(0.25 * 0.75 / 1000))


def test_design_line_states_power_and_binomial_error(tmp_path):
    st = _paired_study(tmp_path / "design", fingerprint=True)
    (setting,) = st.settings()
    line = design.design_lines(st, setting)[0]
    sd = design.pooled_sd([np.std(SLB, ddof=1), np.std(DOREFA, ddof=1)])
    sd_d = np.std(np.subtract(SLB, DOREFA), ddof=1)
    assert f"5 seeds per cell, pooled seed SD {sd:.2f} points" in line
    assert f"{design.detectable(5, sd):.2f} points between two rows (Welch, unpaired)" in line
    assert f"{design.detectable(5, sd_d, paired=True):.2f} points paired by seed" in line
    # the configured test subset (report_records: none) gives no size: said so
    assert "do not say how many test images" in line
    md = report_pkg.write_report(tmp_path / "design", jobs=1).read_text()
    assert "**Design, cifar10 / resnet20.**" in md


def test_ratio_values_states_two_values_as_they_are():
    assert costs.ratio_values([2.0, 2.0, 4.0, 4.0]) == "×2.00 or ×4.00 (by cell)"
    assert costs.ratio_values([2.0, 2.0]) == "×2.00"
    assert costs.ratio_values([1.0, 2.0, 4.0]) == "×2.00 (median over cells; range ×1.00–×4.00)"
    assert costs.ratio_values([]) == "n/a"


def test_scale_line_says_epochs_and_images(tmp_path):
    root = tmp_path / "scale"
    for seed in range(2):
        for e in (5, 10):
            run = write_run(root, f"s{e}{seed}", method="slb", acc=90.0, seed=seed, epochs=e)
            summ = records.read_summary(run)
            summ.data_fingerprint = {"n_train": 2000, "n_test": 1000}
            records.write_summary(run, summ)
    md = report_pkg.write_report(root, jobs=1).read_text()
    assert "- **Scale:** test: 5 and 10 epochs; 2,000 training and 1,000 test images" in md
    assert "binomial standard error of 1.2" in md or "binomial standard error of 0.9" in md
