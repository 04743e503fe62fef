"""The report's rules on planted records with known answers: bounded intervals, readable
figures, display names and renames, one verdict rule, questions fitted to the study, no
machine paths, the comparison at equal compute and the aggregates across cells.

Figures are checked on their specs (plain data: what harness/report/plots.py is asked to draw).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from report_records import write_run
from scipy import stats as sps

from harness import files
from harness import report as report_pkg
from harness.errors import UserError
from harness.report import aggregate as report_aggregate
from harness.report import compute as report_compute
from harness.report import figures as report_figures
from harness.report import stats as report_stats
from harness.report import timing
from harness.report import verdicts as report_verdicts

OFFS3 = [0.1, -0.1, 0.0]


def only_setting(st) -> str:
    (s,) = st.settings()
    return s


def table(report, name: str) -> pd.DataFrame:
    return pd.read_csv(report.parent / "tables" / f"{name}.csv")


# --------------------------------------------------------------------------- bounds

@pytest.fixture(scope="module")
def near_100(tmp_path_factory):
    """dorefa's three seeds end at 99.9, 90 and 99.99: its t-interval (mean 96.63, half
    width 14.1) crosses 100; slb's continuous-state accuracy is above 100 - its band too."""
    root = tmp_path_factory.mktemp("bounds") / "bounds"
    for s, acc in enumerate([99.9, 90.0, 99.99]):
        write_run(root, f"d{s}", method="dorefa", acc=acc, seed=s)
        write_run(root, f"s{s}", method="slb", acc=97.0 + OFFS3[s], seed=s, slb_scalars=True)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n')
    return root


def test_interval_crossing_100_is_clipped_and_marked(near_100):
    vals = [99.9, 90.0, 99.99]
    half = sps.t.ppf(0.975, 2) * np.std(vals, ddof=1) / math.sqrt(3)
    assert np.mean(vals) + half > 100  # the planted interval does cross 100
    st = report_pkg.load_study(near_100)
    s = st.group(only_setting(st), "dorefa", (1, 32, 4))["summary"]
    assert s.clipped and s.ci == (pytest.approx(np.mean(vals) - half), 100.0)
    out = report_pkg.write_report(near_100, jobs=1)
    unc = (out.parent / "tables" / "uncertainty_cifar10_resnet20.md").read_text()
    assert f"[{np.mean(vals) - half:.2f}, 100.00] ‡" in unc and "clipped to it" in unc
    assert table(out, "uncertainty_cifar10_resnet20")["ci_high"].max() <= 100.0


def test_bands_never_leave_bounds_and_limits_hold_them(near_100):
    st = report_pkg.load_study(near_100)
    s = only_setting(st)
    figs = report_figures.convergence_figures(st, s)
    conv = figs[0]
    lines = [ln for p in conv.spec["panels"] for ln in p["lines"]]
    bands = [ln for ln in lines if ln.get("lo") is not None and ln.get("band", True)]
    assert bands and all(np.max(ln["hi"]) <= 100 and np.min(ln["lo"]) >= 0 for ln in bands)
    assert any(ln["clipped"] for ln in bands) and "clipped to it" in conv.caption
    for fig in figs:  # every panel's y-limits hold every band it draws whole
        for p in fig.spec["panels"]:
            if p.get("ylim"):
                for ln in p["lines"]:
                    if ln.get("lo") is not None and ln.get("band", True):
                        assert p["ylim"][0] <= np.min(ln["lo"]) and np.max(ln["hi"]) <= \
                            p["ylim"][1], (fig.name, p["title"])
    internals = next(f for f in figs if f.name.startswith("internals"))
    acc_panel = next(p for p in internals.spec["panels"] if "continuous-state" in p["title"])
    assert all(np.max(ln["hi"]) <= 100 for ln in acc_panel["lines"] if ln["hi"] is not None)


def test_curve_panels_zoom_alike_and_only_long_runs(tmp_path):
    root = tmp_path / "long"
    for s in range(2):
        write_run(root, f"a{s}", method="slb", acc=90.0 + s, seed=s, epochs=40)
        write_run(root, f"b{s}", method="dorefa", acc=89.0 + s, seed=s, epochs=40)
        write_run(root, f"c{s}", method="slb", acc=80.0 + s, seed=s, epochs=8)
        write_run(root, f"d{s}", method="dorefa", acc=79.0 + s, seed=s, epochs=8)
    st = report_pkg.load_study(root, ours="slb")
    conv = report_figures.convergence_figures(st, only_setting(st))[0]
    by_title = {p["title"]: p for p in conv.spec["panels"]}
    assert by_title["W1/A32, 40 epochs"]["from_epoch"] == 11  # after the first quarter
    assert by_title["W1/A32, 40 epochs"]["lines"][0]["x"][0] == 11
    assert by_title["W1/A32, 8 epochs"]["from_epoch"] == 1    # short runs: all of it
    assert "start after the first 25% of training" in conv.caption


# --------------------------------------------------------------------------- figures

@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """Eight rows at W1/A32 with 3 seeds and 4 epochs, fp at W32/A32."""
    root = tmp_path_factory.mktemp("crowded") / "crowded"
    rows = [("fp", "", 93.0, 32), ("ste", "", 85.0, 1), ("dorefa", "", 88.0, 1),
            ("lqnet", "", 88.5, 1), ("hashing", "", 84.0, 1), ("bop", "", 83.0, 1),
            ("slb", "", 89.0, 1), ("slb", "slb-none", 88.8, 1)]
    for m, variant, acc, w in rows:
        for s, off in enumerate(OFFS3):
            write_run(root, f"{variant or m}{s}", method=m, variant=variant, acc=acc + off,
                      w=w, seed=s, options={"bn": "none"} if variant else None)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n')
    return root


def test_crowded_panels_highlight_a_handful_in_greyscale_safe_styles(crowded):
    st = report_pkg.load_study(crowded)
    s = only_setting(st)
    conv, conv_all, *_ = report_figures.convergence_figures(st, s)
    (panel,) = conv.spec["panels"]  # fp is drawn in the W1/A32 panel, not on its own
    full = [ln for ln in panel["lines"] if ln.get("marker") or ln["ls"] == ":"]
    assert len(full) == 3  # ours, the strongest baseline (lqnet), fp
    assert len(panel["lines"]) == 8 and conv.spec["context_rows"]
    assert len({(ln["ls"], ln["marker"]) for ln in full}) == 3  # told apart without colour
    names = [e["label"] for e in conv.spec["legend"]]
    assert names == ["FP (32-bit)", "LQ-Net", "SLB", "other rows (thin grey)"]
    assert conv_all.name.startswith("convergence_all")


def test_one_style_per_row_across_figures(crowded):
    st = report_pkg.load_study(crowded)
    s = only_setting(st)
    seeds = report_figures.seed_figures(st, s)[0].spec
    conv = report_figures.convergence_figures(st, s)[1].spec  # every row in its style
    in_seeds = {r["name"]: (r["color"], r["marker"]) for p in seeds["panels"] for r in p["rows"]}
    in_legend = {e["label"]: (e["color"], e["marker"]) for e in conv["legend"]}
    shared = set(in_seeds) & set(in_legend) - {"FP (32-bit)"}
    assert len(shared) == 7
    assert all(in_seeds[n] == in_legend[n] for n in shared)
    assert len({in_legend[n] for n in shared}) == len(shared)


# --------------------------------------------------------------------------- names

def test_renames_in_tables_figures_and_answers_ids_in_csv(crowded, tmp_path):
    import shutil

    root = tmp_path / "renamed"
    shutil.copytree(crowded, root)
    files.atomic_write_text(root / "study.toml", '''[report]
ours = "slb"
[report.methods]
dorefa = "DoReFa"
[report.variants]
"slb-none" = "SLB without BN"
[report.settings]
cifar10 = "CIFAR-10 (JPEG copy)"
resnet20 = "ResNet-20"
''')
    out = report_pkg.write_report(root, jobs=1)
    md = out.read_text()
    assert "Main results, CIFAR-10 (JPEG copy) / ResNet-20" in md
    main_md = (out.parent / "tables" / "main_cifar10_resnet20.md").read_text()
    assert "| DoReFa |" in main_md and "| SLB without BN |" in main_md
    assert "| dorefa |" not in main_md and "| slb-none |" not in main_md
    main = table(out, "main_cifar10_resnet20")
    assert {"dorefa", "slb-none"} <= set(main["row"]) and "DoReFa" in set(main["name"])
    st = report_pkg.load_study(root)
    spec = report_figures.convergence_figures(st, only_setting(st))[1].spec
    legend = [e["label"] for e in spec["legend"]]
    assert "DoReFa" in legend and "SLB without BN" in legend
    assert "DoReFa" in report_pkg.question("aggregate").ask(st)["bullets"][1]


def test_report_table_is_checked(crowded, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(crowded, root)
    files.atomic_write_text(root / "study.toml", '[report]\nsettings = "CIFAR-10"\n')
    with pytest.raises(UserError, match="report.settings") as e:
        report_pkg.load_study(root)
    assert "\n" not in str(e.value)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\ncolour = 1\n'
                              '[report.variants]\nslb-typo = "x"\n')
    with pytest.raises(UserError, match="report.variants.slb-typo: names no variant of this "
                       "study; did you mean 'slb-none'"):
        report_pkg.load_study(root)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\ncolour = 1\n')
    notes = " ".join(report_pkg.load_study(root).notes)
    assert "`colour` is not one the report reads" in notes


def test_no_machine_paths_anywhere(tmp_path):
    root = tmp_path / "paths"
    for s in range(2):
        write_run(root, f"a{s}", method="slb", acc=90.0 + s, seed=s)
    ref = tmp_path / "reported.csv"
    ref.write_text("method,dataset,model,w_bits,a_bits,top1\nslb,cifar10,resnet20,1,32,90.6\n")
    out = report_pkg.write_report(root, reference=str(ref), jobs=1)
    texts = [p.read_text() for p in out.parent.rglob("*") if p.suffix in (".md", ".tex", ".csv")]
    assert len(texts) > 5
    for t in texts:
        assert str(tmp_path) not in t
    assert "`reported.csv`" in out.read_text()


# --------------------------------------------------------------------------- verdicts

A048 = [91.22, 91.72, 92.22]
B048 = [90.0, 90.4, 91.1]


def welch_p(a, b) -> float:
    """Welch's two-sided p from its formula (Welch 1947)."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(2 * sps.t.sf(abs(t), df))


def test_p_0048_is_printed_as_0048():
    p = welch_p(A048, B048)
    assert 0.0475 < p < 0.0485
    assert report_stats.fmt_p(p) == "0.048"
    assert report_stats.compare(A048, B048).p == pytest.approx(p)


@pytest.mark.parametrize("extra_rows, significant", [(0, True), (3, False)])
def test_bold_verdict_and_answer_agree(tmp_path, extra_rows, significant):
    """slb vs dorefa has Welch p = 0.048 (3 seeds each). Alone, its adjusted p is 0.048:
    bold, 'higher' and 'significantly' everywhere, with the few-seeds caveat. With three
    more baselines far below, the family has more tests and the adjusted p of this one
    rises above 0.05: no bold, 'no significant difference', nowhere significant."""
    root = tmp_path / "verdict"
    for s in range(3):
        write_run(root, f"s{s}", method="slb", acc=A048[s], seed=s)
        write_run(root, f"d{s}", method="dorefa", acc=B048[s], seed=s)
        for k, m in enumerate(["ste", "hashing", "bop"][:extra_rows]):
            write_run(root, f"{m}{s}", method=m, acc=90.0 + 0.1 * k + OFFS3[s] * 10, seed=s)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n')
    out = report_pkg.write_report(root, jobs=1)
    st = report_pkg.load_study(root)
    t = report_verdicts.test(st, only_setting(st), ("slb", (1, 32, 4)), ("dorefa", (1, 32, 4)))
    assert t.cmp.p == pytest.approx(welch_p(A048, B048))
    assert (t.p_adj < 0.05) is significant
    cmp_ = table(out, "comparisons_cifar10_resnet20").set_index("baseline").loc["dorefa"]
    main = (out.parent / "tables" / "main_cifar10_resnet20.md").read_text()
    bold = "**91.72 ± 0.50" in main
    assert bold is significant
    assert (cmp_["verdict"] == "SLB higher") is significant
    assert cmp_["p"] == pytest.approx(welch_p(A048, B048))
    md = out.read_text()
    assert "| 0.048 |" in md  # the unadjusted p beside the adjusted one
    seeds = report_pkg.question("seeds").ask(st)["text"]
    if significant:  # the one comparison, in words, with its caveat
        assert "difference is +1.22 points, significant (" in seeds
        assert "adjusted p = 0.048, only 3 vs 3 seeds" in seeds
    else:
        assert "0 of them are significant under the report's rule" in seeds
        assert "every comparison rests on 3 seeds a side or fewer" in seeds


def test_the_family_is_stated_and_unadjusted_p_never_decides(tmp_path):
    root = tmp_path / "fam"
    for s in range(3):
        write_run(root, f"s{s}", method="slb", acc=A048[s], seed=s)
        write_run(root, f"d{s}", method="dorefa", acc=B048[s], seed=s)
    st = report_pkg.load_study(root, ours="slb")
    fam = report_verdicts.family(st, only_setting(st))
    assert all(t.family_size == len(fam) for t in fam.values())
    c = report_stats.compare([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    assert c.decide() == "ns" and c.decide(0.01) == "higher" and c.decide(0.2) == "ns"


# --------------------------------------------------------------------------- questions

def test_questions_fit_the_study_budgets(tmp_path):
    root = tmp_path / "b24"
    for e in (2, 4):
        for s, off in enumerate(OFFS3):
            write_run(root, f"s{e}{s}", method="slb", acc=80.0 + e + off, epochs=e, seed=s)
            write_run(root, f"d{e}{s}", method="dorefa", acc=79.0 + e + off, epochs=e, seed=s)
    st = report_pkg.load_study(root, ours="slb")
    a = report_pkg.question("budget").ask(st)
    assert "(2 vs 4 epochs in this study)" in a["question"] and "500" not in a["question"]
    assert "3 seeds a side or fewer" in a["text"]
    assert "(3 seeds per cell here)" in report_pkg.question("seeds").ask(st)["question"]
    one = tmp_path / "b4"
    for s, off in enumerate(OFFS3):
        write_run(one, f"s{s}", method="slb", acc=80.0 + off, seed=s)
    st1 = report_pkg.load_study(one, ours="slb")
    b = report_pkg.question("budget").ask(st1)
    assert "(this study has one budget: 4 epochs)" in b["question"]
    assert not b["answered"] and "epochs = [4, 8]" in b["text"]
    sched = report_pkg.question("schedule").ask(st1)
    assert "variants of slb that set `schedule`" in sched["text"]


# --------------------------------------------------------------------------- equal compute

@pytest.fixture(scope="module")
def slow_twice(tmp_path_factory):
    """slb takes 2 s per epoch, dorefa 1 s, with the same accuracy at every epoch (8-epoch
    budget), and slb also has 4-epoch runs (8 s in all: they fit dorefa's budget time)."""
    root = tmp_path_factory.mktemp("compute") / "compute"
    for s, off in enumerate(OFFS3):
        write_run(root, f"s{s}", method="slb", acc=90.0 + off, epochs=8, seed=s, epoch_time=2.0)
        write_run(root, f"d{s}", method="dorefa", acc=90.0 + off, epochs=8, seed=s,
                  epoch_time=1.0)
        write_run(root, f"s4{s}", method="slb", acc=86.0 + off, epochs=4, seed=s,
                  epoch_time=2.0)
        write_run(root, f"d4{s}", method="dorefa", acc=86.0 + off, epochs=4, seed=s,
                  epoch_time=1.0)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n'
                              '[executor]\nlocal_concurrency = 2\n')
    return root


def test_twice_as_slow_reads_off_half_its_budget(slow_twice):
    st = report_pkg.load_study(slow_twice)
    s = only_setting(st)
    (cell,) = [c for c in timing.equal_compute_cells(st, s) if c["cell"] == (1, 32, 8)]
    assert cell["t_star"] == pytest.approx(8.0) and cell["cheapest"] == "dorefa"
    slb = next(r for r in cell["rows"] if r["label"] == "slb")
    assert slb["epochs_reached"] == [4, 4, 4] and not slb["full"]
    # epoch 4 of an 8-epoch curve: final - 2 * (8 - 4) points, by write_run's curve
    assert slb["summary"].mean == pytest.approx(90.0 - 8.0)
    assert slb["trained_within"][0] == 4
    assert slb["trained_within"][1].mean == pytest.approx(86.0)
    t = report_verdicts.test(st, s, ("slb", (1, 32, 8)), ("dorefa", (1, 32, 8)),
                             kind=report_verdicts.EQUAL_COMPUTE)
    assert t.cmp.diff == pytest.approx(-8.0) and t.decision == "lower"
    # at the final epoch (equal epochs) the two are identical: no difference there
    assert report_verdicts.test(st, s, ("slb", (1, 32, 8)), ("dorefa", (1, 32, 8))).cmp.diff == \
        pytest.approx(0.0)


def test_equal_compute_table_figure_and_answer(slow_twice):
    st = report_pkg.load_study(slow_twice)
    s = only_setting(st)
    t = report_compute.equal_compute_table(st, s)
    df = t.data.set_index(["epochs", "row"])
    assert df.loc[(8, "slb"), "budget_time_s"] == pytest.approx(16.0)
    assert df.loc[(8, "dorefa"), "full"] and not df.loc[(8, "slb"), "full"]
    row = next(r for r in t.rows if r[0] == "W1/A32, 8 ep" and r[2] == "SLB")
    assert row[1] == "0.13 CPU-min (DoReFa-Net)" and row[4] == "×2.00"
    assert row[5] == "4 of 8" and row[6].endswith("†")
    assert "shared hardware" in t.notes[0] and "up to 2 runs at once" in t.notes[0]
    fig = report_compute.time_figure(st, s)
    panel = next(p for p in fig.spec["panels"] if p["title"] == "W1/A32, 8 epochs")
    assert panel["vlines"][0]["x"] == pytest.approx(8.0 / 60)
    assert fig.spec["xlabel"] == "cumulative training time (CPU-min)"
    a = report_pkg.question("compute").ask(st)
    assert a["answered"] and "×2.00 the other methods' training time per epoch" in a["question"]
    assert "DoReFa-Net is" not in a["text"]
    assert "the other method is significantly higher in 2" in a["text"]
    assert any("by T* it had finished 4 of its 8 epochs" in b for b in a["bullets"])
    assert any("own 4-epoch runs fit in T*" in b for b in a["bullets"])


def test_a_seed_not_reached_by_t_star_marks_its_row_instead_of_dropping_it(tmp_path):
    """One slb seed is fast (1 s per epoch), the other slow (9 s): by T* (dorefa's 4-epoch
    budget, 4 s) the slow one has not finished an epoch. Reading the row off its fast seed
    alone would show n = 1 from a biased sample: the row is "not reached" and not compared."""
    root = tmp_path / "fast_slow"
    for s, off in enumerate([0.1, -0.1]):
        write_run(root, f"d{s}", method="dorefa", acc=90.0 + off, seed=s, epoch_time=1.0)
        write_run(root, f"s{s}", method="slb", acc=95.0 + off, seed=s,
                  epoch_time=[1.5, 9.0][s])
    st = report_pkg.load_study(root, ours="slb")
    s = only_setting(st)
    (cell,) = timing.equal_compute_cells(st, s)
    assert cell["t_star"] == pytest.approx(4.0) and cell["cheapest"] == "dorefa"
    slb = next(r for r in cell["rows"] if r["label"] == "slb")
    assert not slb["full"] and slb["not_reached"] == 1
    assert slb["values"] == [] and slb["summary"].n == 0          # not n = 1 of the fast seed
    # no test on a subset
    assert not any(k[0] == report_verdicts.EQUAL_COMPUTE for k in report_verdicts.family(st, s))
    t = report_compute.equal_compute_table(st, s)
    row = next(r for r in t.rows if r[2] == "SLB")
    assert row[5] == "none by 1 of 2 seeds" and row[6] == report_compute.NOT_REACHED
    assert row[9] == ""
    assert any("biased sample" in n for n in t.notes)
    assert t.data.set_index("row").loc["slb", "n"] == 0
    a = report_pkg.question("compute").ask(st)
    assert not a["answered"] and "faster seeds" in a["text"]
    assert "1 of its 2 seeds had not finished one epoch by T*" in a["bullets"][0]


def test_noisy_epoch_times_of_one_row_carry_a_caveat(tmp_path):
    """fp's three seeds took 1, 1.5 and 2.5 s per epoch for the same work (CV 0.45): the
    cost and equal-compute answers and tables say so beside their ratios; dorefa's and
    slb's steady times are not named, and a study without such spread has no caveat."""
    root = tmp_path / "noisy"
    fp_times = [1.0, 1.5, 2.5]
    for s, off in enumerate(OFFS3):
        write_run(root, f"f{s}", method="fp", w=32, acc=93 + off, seed=s,
                  epoch_time=fp_times[s])
        write_run(root, f"s{s}", method="slb", acc=90 + off, seed=s, epoch_time=2.0)
        write_run(root, f"d{s}", method="dorefa", acc=89 + off, seed=s, epoch_time=1.0 + s / 50)
    st = report_pkg.load_study(root, ours="slb")
    s = only_setting(st)
    (row,) = timing.time_spread(st, s)
    cv = np.std(fp_times, ddof=1) / np.mean(fp_times)
    assert row["label"] == "fp" and row["cv"] == pytest.approx(cv) and row["n"] == 3
    caveat = timing.spread_caveat(st, s)
    assert f"FP (32-bit) W32/A32: 1.0–2.5 s (CV {cv:.2f}, 3 runs)" in caveat
    assert "DoReFa-Net" not in caveat and "SLB" not in caveat
    cost = report_pkg.question("cost").ask(st)
    bullet = cost["bullets"][0]
    assert caveat in cost["text"]
    # a ratio to fp's unsteady epoch time is not stated as a finding; the steady ones are,
    # with the machine's caveat in the same sentence
    assert f"no ratio to fp's epoch time (its own runs took 1.0–2.5 s per epoch, coefficient " \
           f"of variation {cv:.2f}" in bullet and "fp's epoch time" not in bullet.replace(
               "no ratio to fp's epoch time", "")
    assert "(W1/A32, 4 ep; CPU wall-clock)" in bullet and "×1.96 DoReFa-Net" in bullet
    assert caveat in report_pkg.question("compute").ask(st)["text"]
    from harness.report import costs

    assert caveat in costs.cost_tables(st, s)[0].notes
    assert caveat in report_compute.equal_compute_table(st, s).notes
    calm = tmp_path / "calm"
    for seed, off in enumerate(OFFS3):
        write_run(calm, f"f{seed}", method="fp", w=32, acc=93 + off, seed=seed)
        write_run(calm, f"s{seed}", method="slb", acc=90 + off, seed=seed, epoch_time=2.0)
    st = report_pkg.load_study(calm, ours="slb")
    assert timing.spread_caveat(st, only_setting(st)) == ""
    assert "coefficient of variation" not in report_pkg.question("cost").ask(st)["text"]


def test_equal_compute_gpu_hours_and_other_hardware(tmp_path):
    root = tmp_path / "gpu"
    for s, off in enumerate(OFFS3):
        write_run(root, f"s{s}", method="slb", acc=90 + off, seed=s, epoch_time=900.0,
                  device="cuda:0", device_name="cuda: H100")
        write_run(root, f"d{s}", method="dorefa", acc=89 + off, seed=s, epoch_time=450.0,
                  device="cuda:0", device_name="cuda: H100")
    st = report_pkg.load_study(root, ours="slb")
    t = report_compute.equal_compute_table(st, only_setting(st))
    assert t.rows[0][1] == "0.50 GPU-h (DoReFa-Net)" and "one GPU per run" in " ".join(t.notes)
    mixed = tmp_path / "mixed_hw"
    for s, off in enumerate(OFFS3):
        write_run(mixed, f"s{s}", method="slb", acc=90 + off, seed=s, device_name="cpu: A")
        write_run(mixed, f"d{s}", method="dorefa", acc=89 + off, seed=s, device_name="cpu: B")
    st = report_pkg.load_study(mixed, ours="slb")
    (cell,) = timing.equal_compute_cells(st, only_setting(st))
    assert "different hardware" in cell["skipped"]
    assert not report_pkg.question("compute").ask(st)["answered"]


def test_time_formats():
    assert timing.fmt_time(30, "CPU") == "0.50 CPU-min"
    assert timing.fmt_time(0.9, "CPU") == "0.015 CPU-min"
    assert timing.fmt_time(5 * 3600, "CPU") == "5.0 CPU-h"
    assert timing.fmt_time(1234 * 3600, "GPU") == "1200 GPU-h"


# --------------------------------------------------------------------------- aggregates

def test_aggregates_against_hand_values(slow_twice, tmp_path):
    root = tmp_path / "agg"
    # two cells; slb wins every pair in the first, ties in the second: P = (1 + 0.5) / 2
    for s, off in enumerate(OFFS3):
        write_run(root, f"a{s}", method="slb", acc=91.0 + off, seed=s)
        write_run(root, f"b{s}", method="dorefa", acc=89.0 + off, seed=s)
        write_run(root, f"c{s}", method="slb", acc=80.0 + off, seed=s, w=2)
        write_run(root, f"d{s}", method="dorefa", acc=80.0 + off, seed=s, w=2)
    st = report_pkg.load_study(root, ours="slb")
    rows = {r["label"]: r for r in report_aggregate.aggregate_rows(st, only_setting(st))}
    assert rows["dorefa"]["poi"] == pytest.approx(0.75)
    lo, hi = rows["dorefa"]["poi_ci"]
    assert 0.5 <= lo <= 0.75 <= hi <= 1.0
    pooled = [91.0 + o for o in OFFS3] + [80.0 + o for o in OFFS3]
    assert rows["slb"]["iqm"] == pytest.approx(sps.trim_mean(pooled, 0.25))
    a = report_pkg.question("aggregate").ask(st)
    assert a["answered"] and "P(SLB > DoReFa-Net) = 0.75" in a["bullets"][0]
    fig = report_aggregate.profile_figure(st, only_setting(st))
    assert [p["title"] for p in fig.spec["panels"]] == ["W1/A32, 1 budget", "W2/A32, 1 budget"]


def test_stratified_bootstrap_resamples_within_cells():
    # a cell is never mixed with another: every resample's IQM lies between the cells'
    x = [[10.0, 10.5, 11.0], [50.0, 50.5, 51.0]]
    v, (lo, hi) = report_stats.aggregate_iqm(x)
    assert v == pytest.approx(sps.trim_mean(sum(x, []), 0.25))
    assert 10.0 <= lo <= v <= hi <= 51.0
    frac, flo, fhi = report_stats.performance_profile(x, [5.0, 30.0, 50.75, 60.0])
    assert list(frac) == [1.0, 0.5, pytest.approx(1 / 6), 0.0]
    assert flo[1] == fhi[1] == 0.5  # three runs of each cell, always: exactly half above 30


# --------------------------------------------------------------------------- 1-epoch budgets

def test_one_epoch_budget_reads_in_the_singular_and_draws_its_single_points(tmp_path):
    """A 1-epoch study: no "1 epochs" anywhere, and the fp reference (a dotted line without
    marker, here a single point) is drawn as a visible mark."""
    import re

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report import plots

    root = tmp_path / "one_epoch"
    for s, off in enumerate(OFFS3):
        write_run(root, f"s{s}", method="slb", acc=60 + off, epochs=1, seed=s, epoch_time=2.0)
        write_run(root, f"d{s}", method="dorefa", acc=55 + off, epochs=1, seed=s)
        write_run(root, f"f{s}", method="fp", w=32, acc=65 + off, epochs=1, seed=s)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n')
    report = report_pkg.write_report(root, jobs=1)
    texts = [report.read_text()] + [p.read_text() for p in
                                     (report.parent / "tables").glob("*.[mt][de]*")]
    assert not any(re.search(r"\b1 epochs\b", t) for t in texts)
    assert "(this study has one budget: 1 epoch)" in texts[0]
    st = report_pkg.load_study(root)
    (fig, *_) = report_figures.convergence_figures(st, only_setting(st))
    assert fig.spec["panels"][0]["title"] == "W1/A32, 1 epoch"
    lines = fig.spec["panels"][0]["lines"]
    fp = next(ln for ln in lines if ln["color"] == "#000000")
    assert len(fp["x"]) == 1 and not fp["marker"]       # nothing to draw as a line
    _, ax = plt.subplots()
    plots._line_marks(ax, lines)
    drawn = [(tuple(np.round(o, 6)), c) for col in ax.collections
             for o, c in zip(col.get_offsets(), col.get_facecolors())]
    assert any(o == (1.0, pytest.approx(65.0)) for o, _ in drawn)   # fp's point is marked
    plt.close("all")
