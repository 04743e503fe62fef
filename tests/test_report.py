"""`python -m harness report` over hand-written run records with known answers.

Records are written as the trainer writes them (tests/report_records.py), so the report is
tested against the contract and not against the benchmark's synthetic-data helper. The
report's rules (bounded intervals, names, one verdict rule, fitted questions, equal compute,
aggregates) are tested on planted records in test_report_rules.py; LaTeX in
test_report_latex.py.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_records import write_run

from harness import config, files, records
from harness import report as report_pkg
from harness.cli import main
from harness.report import stats as report_stats

ROOT = Path(__file__).resolve().parents[1]
SHARED_REF = ROOT.parent / "shared" / "reference" / "slb_reported.csv"


OFFSETS = [0.1, -0.1, 0.2, -0.2, 0.0]  # mean 0, sample std sqrt(0.025)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """slb 91 vs dorefa 89 (5 seeds) at W1/A32, ste with 3 good runs plus failed, diverged,
    corrupt, partial, unmatched and missing runs, a single-seed row, fp at W32/A32."""
    root = tmp_path_factory.mktemp("mixed") / "mixed"
    man: list = []
    for s, off in enumerate(OFFSETS):
        write_run(root, f"slb{s}", method="slb", acc=91.0 + off, seed=s, slb_scalars=True,
                  epoch_time=2.0, manifest=man)
        write_run(root, f"dorefa{s}", method="dorefa", acc=89.0 + off, seed=s, manifest=man)
    for s in range(3):
        write_run(root, f"ste{s}", method="ste", acc=88.0 + s * 0.1, seed=s, manifest=man)
    write_run(root, "fp0", method="fp", w=32, acc=93.0, manifest=man)
    write_run(root, "fp1", method="fp", w=32, acc=93.2, seed=1, manifest=man)
    write_run(root, "lonely0", method="ste", variant="ste-clip", acc=87.0, manifest=man)
    write_run(root, "failed0", method="ste", acc=None, seed=3, status="failed", rows=2,
              error="Traceback ...\nRuntimeError: CUDA out of memory", manifest=man)
    write_run(root, "diverged0", method="ste", acc=None, seed=4, status="diverged", rows=1,
              error="non-finite loss in epoch 2", manifest=man)
    bad = write_run(root, "corrupt0", method="dorefa", acc=89.0, seed=5, manifest=man)
    files.atomic_write_text(bad / "summary.json", '{"status": "completed", "final_te')
    write_run(root, "partial0", method="dorefa", acc=10.0, seed=6, rows=2, manifest=man)
    write_run(root, "unmatched0", method="dorefa", acc=10.0, seed=7, unmatched=True,
              manifest=man)
    man.append({"run_id": "missing0", "variant": "slb", "method": "slb", "w_bits": 1,
                "a_bits": 32, "epochs": 4, "seed": 9, "unmatched": False})
    # from an earlier version of the spec: a record that no longer belongs, a run never made
    write_run(root, "stale0", method="slb", acc=10.0, seed=8, manifest=man)
    man[-1]["current"] = False
    man.append({"run_id": "gone0", "variant": "slb", "method": "slb", "w_bits": 1,
                "a_bits": 32, "epochs": 4, "seed": 10, "unmatched": False, "current": False})
    ref = root.parent / "reported.csv"
    ref.write_text("# reported numbers, not measured\nmethod,dataset,model,w_bits,a_bits,top1,"
                   "source\nslb,cifar10,resnet20,1,32,90.6,paper table 1\n"
                   "slb,cifar10,vgg_small,1,32,93.8,paper table 1\n")
    files.atomic_write_json(root / "manifest.json", {
        "study": "mixed", "scale": "test", "runs": man,
        "excluded": [{"variant": "bop", "w_bits": 2, "a_bits": 32, "epochs": 4,
                      "reason": "bop is binary only"}]})
    files.atomic_write_text(root / "study.toml", 'name = "mixed"\n[report]\n'
                              'reference = "../reported.csv"\nours = "slb"\n')
    return root


@pytest.fixture(scope="module")
def mixed_report(mixed) -> Path:
    return report_pkg.write_report(mixed, jobs=1)


def read_csv(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report.parent / "tables" / f"{name}.csv")


def test_cli_prints_report_path(mixed, tmp_path, capsys):
    assert main(["report", str(mixed), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'out' / 'report.md'}" in out
    assert (tmp_path / "out" / "report.md").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: study:")


def test_excluded_runs_listed_and_left_out(mixed_report):
    md = mixed_report.read_text()
    section = md[md.index("## Runs excluded from the numbers"):]
    for run_id, status in [("failed0", "failed"), ("diverged0", "diverged"),
                           ("corrupt0", "corrupt"), ("partial0", "corrupt"),
                           ("missing0", "missing"), ("unmatched0", "unmatched"),
                           ("stale0", "stale")]:
        assert re.search(rf"\| {run_id} \|[^\n]*\| {status} \|", section), run_id
    assert "CUDA out of memory" in section and "summary.json unreadable" in section
    assert "bop is binary only" in section
    main_csv = read_csv(mixed_report, "main_cifar10_resnet20")
    m = main_csv[main_csv["kind"] == "measured"].set_index(["row", "w_bits"])
    assert m.loc[("dorefa", 1), "n"] == 5  # corrupt, partial and unmatched runs left out
    assert m.loc[("dorefa", 1), "mean"] == pytest.approx(89.0)
    assert m.loc[("slb", 1), "n"] == 5 and m.loc[("slb", 1), "mean"] == pytest.approx(91.0)
    assert m.loc[("ste", 1), "n"] == 3
    assert m.loc[("slb", 1), "std"] == pytest.approx(np.std(OFFSETS, ddof=1))
    assert "gone0" not in md  # dropped from the spec and never run: not missing
    assert "In the numbers:** 16 of 23 runs" in md


def test_header_states_provenance(mixed_report):
    head = mixed_report.read_text().split("## Reviewer questions")[0]
    for text in ("cpu: test (2 threads)", "2.14.1", "**Scale:** test", "`abc1234`",
                 "cifar10 / resnet20"):
        assert text in head


def test_main_table_bold_reported_and_single_seed(mixed_report):
    md = (mixed_report.parent / "tables" / "main_cifar10_resnet20.md").read_text()
    slb_row = next(line for line in md.splitlines() if line.startswith("| SLB |"))
    # higher than dorefa and ste (5 and 3 seeds) under the rule; ste-clip's one seed is lower
    assert "**91.00 ± 0.16**" in slb_row  # 5 seeds, the usual n: stated in the notes
    assert "over 5 seeds, or over the n seeds in parentheses" in md
    assert "88.10 ± 0.10 (3)" in md  # ste: 3 seeds
    assert "W1/A32 reported†" in md and "| 90.6 |" in slb_row
    assert "reported, not measured" in md
    lonely = next(line for line in md.splitlines()
                  if line.startswith("| STE sign (BNN/BWN) (clip) |"))
    assert "87.00 (1)*" in lonely and "no error bar" in md
    assert "excl." not in slb_row  # slb's missing run does not hide its 5 good ones


def test_no_bold_when_intervals_overlap(tmp_path):
    root = tmp_path / "close"
    for s, off in enumerate(OFFSETS):
        write_run(root, f"a{s}", method="slb", acc=90.0 + off, seed=s)
        write_run(root, f"b{s}", method="ste", acc=90.05 + off, seed=s)
    md = (report_pkg.write_report(root, jobs=1).parent / "tables" / "main_cifar10_resnet20.md")
    assert "**" not in md.read_text().split("\n\n")[1]


def test_comparisons_known_answer(mixed_report):
    df = read_csv(mixed_report, "comparisons_cifar10_resnet20").set_index("baseline")
    row = df.loc["dorefa"]
    assert row["diff"] == pytest.approx(2.0)
    expected = report_stats.compare([91.0 + o for o in OFFSETS], [89.0 + o for o in OFFSETS])
    assert row["p"] == pytest.approx(expected.p)
    assert row["ci_low"] == pytest.approx(expected.ci[0])
    assert row["p_ours_greater"] == 1.0 and row["verdict"] == "SLB higher"
    assert row["decision"] == "higher" and row["p_adj"] >= row["p"]
    assert row["baseline_name"] == "DoReFa-Net"  # display name beside the id
    assert report_stats.TOO_SMALL in df.loc["ste-clip", "verdict"]


def test_figures_and_tables_written(mixed_report):
    figs = mixed_report.parent / "figures"
    for name in ("convergence_cifar10_resnet20", "internals_cifar10_resnet20",
                 "seeds_cifar10_resnet20"):
        for ext in ("png", "pdf"):
            assert (figs / f"{name}.{ext}").stat().st_size > 1000, name
    md = mixed_report.read_text()
    assert "![convergence_cifar10_resnet20](figures/convergence_cifar10_resnet20.png)" in md
    tables = mixed_report.parent / "tables"
    for name in ("main", "uncertainty", "comparisons", "cost"):
        for ext in ("md", "tex", "csv"):
            assert (tables / f"{name}_cifar10_resnet20.{ext}").is_file()


def _strip_escapes(line: str) -> str:
    return re.sub(r"\\[{}&%$#_]", "", line)


def test_latex_tables_are_well_formed(mixed_report):
    texs = sorted((mixed_report.parent / "tables").glob("*.tex"))
    assert len(texs) >= 5
    for tex in texs:
        text = tex.read_text()
        body = _strip_escapes(text)
        assert body.count("{") == body.count("}"), tex.name
        env = "table*" if r"\begin{table*}" in body else "table"
        tabular = "tabularx" if r"\begin{tabularx}" in body else "tabular"
        for env in (env, tabular):
            assert body.count(rf"\begin{{{env}}}") == body.count(rf"\end{{{env}}}") == 1
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert body.count(rule) == 1, (tex.name, rule)
        # a tabularx's name column is one X (ragged right): one column like l or r
        spec = re.search(r"\\begin\{tabularx?\}(?:\{\\linewidth\})?\{(.+)\}\n", body).group(1)
        spec = re.sub(r">\{.*?\}X", "X", spec)
        assert re.fullmatch("X?[lr]+", spec), (tex.name, spec)
        lines = body.split(r"\toprule")[1].split(r"\bottomrule")[0].splitlines()
        rows = [ln for ln in lines if ln.strip().endswith(r"\\")]
        assert rows, tex.name
        for ln in rows:  # every row spans every column (a \multicolumn{k} spans k)
            spans = sum(int(k) - 1 for k in re.findall(r"\\multicolumn\{(\d+)\}", ln))
            assert ln.count("&") + 1 + spans == len(spec), (tex.name, ln)
        assert r"\pm" in text or "main" not in tex.name
        assert text.isascii(), tex.name  # unicode symbols written as LaTeX
        assert not re.search(r"(?<![A-Za-z0-9.$-])-\d", text), tex.name  # minus signs: $-$


def test_reference_flag_and_shared_format(mixed, tmp_path):
    if not SHARED_REF.is_file():
        pytest.skip(f"{SHARED_REF} not present")
    out = report_pkg.write_report(mixed, out=tmp_path / "r", reference=str(SHARED_REF), jobs=1)
    main_csv = read_csv(out, "main_cifar10_resnet20")
    rep = main_csv[main_csv["kind"].str.startswith("reported")]
    assert rep.set_index(["row", "w_bits", "a_bits"]).loc[("slb", 1, 32), "mean"] == 90.6
    with pytest.raises(Exception, match="reference"):
        report_pkg.write_report(mixed, out=tmp_path / "r2", reference=str(tmp_path / "none.csv"))


def test_reference_dataset_label(tmp_path):
    root = tmp_path / "folder"
    for s in range(2):
        write_run(root, f"a{s}", method="slb", acc=80.0 + s, seed=s, dataset="imagefolder")
    ref = tmp_path / "ref.csv"
    ref.write_text("method,dataset,model,w_bits,a_bits,top1\nslb,cifar10,resnet20,1,32,90.6\n")
    plain = report_pkg.write_report(root, out=tmp_path / "p", reference=str(ref), jobs=1)
    assert "reported†" not in (plain.parent / "tables" / "main_imagefolder_resnet20.md").read_text()
    matched = report_pkg.write_report(root, out=tmp_path / "m", reference=str(ref),
                             reference_dataset="cifar10", jobs=1)
    assert "90.6" in (matched.parent / "tables" / "main_imagefolder_resnet20.md").read_text()


# --------------------------------------------------------------------------- answers

@pytest.fixture(scope="module")
def answered(tmp_path_factory) -> Path:
    """slb is 2 points above dorefa at 4 and 8 epochs (4 seeds); slb-recal_end (bn option)
    is 1.5 below slb; fp is twice as fast per epoch as slb; no schedule/candidate/bop runs."""
    root = tmp_path_factory.mktemp("answers") / "answers"
    offs = [0.1, -0.1, 0.05, -0.05]
    for e, gain in ((4, 0.0), (8, 0.5)):
        for s, off in enumerate(offs):
            write_run(root, f"slb{e}_{s}", method="slb", options={"bn": "sbn"}, acc=91 + gain + off,
                      epochs=e, seed=s, epoch_time=2.0, slb_scalars=True)
            write_run(root, f"dorefa{e}_{s}", method="dorefa", acc=89 + gain + off, epochs=e,
                      seed=s)
    for s, off in enumerate(offs):
        write_run(root, f"recal{s}", method="slb", variant="slb-recal_end",
                  options={"bn": "recal_end"}, acc=89.5 + off, epochs=4, seed=s,
                  epoch_time=1.5, slb_scalars=True)
        write_run(root, f"fp{s}", method="fp", w=32, acc=93 + off, epochs=4, seed=s)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n')
    return root


@pytest.fixture(scope="module")
def answers(answered):
    st = report_pkg.load_study(answered)
    return {a["key"]: a for a in report_pkg.reviewer_answers(st)}


def test_budget_answer(answers):
    a = answers["budget"]
    assert a["answered"]
    assert "over 2 cell×budget comparisons SLB is significantly higher in 2" in a["text"]
    assert "adjusted p < 0.05, Benjamini-Hochberg over the" in a["text"]
    bullet = a["bullets"][0]
    assert bullet.startswith("W1/A32: at 4 epochs SLB 91.00 ± 0.09 (n=4) vs DoReFa-Net 89.00")
    assert "at 8 epochs SLB 91.50" in bullet and "+2.00 [" in bullet
    assert "SLB at 8 minus 4 epochs: +0.50" in bullet


def test_bn_answer(answers):
    a = answers["bn"]
    assert a["answered"]
    assert "the default is significantly higher in 1" in a["text"]
    assert "SLB (recal_end) [bn=recal_end]" in a["bullets"][0]
    assert "vs SLB [bn=sbn]" in a["bullets"][0] and ": -1.50 [" in a["bullets"][0]


def test_unanswered_questions_say_so(answers):
    for key in ("schedule", "candidates", "bop"):
        assert answers[key]["text"].startswith("Not answered by this study"), key
        assert not answers[key]["answered"]
    assert "no bop runs" in answers["bop"]["text"]


def test_seed_and_cost_answers(answers):
    seeds = answers["seeds"]["text"]
    assert seeds.startswith("Over 6 method×cell groups with n ≥ 2")
    assert f"median {np.std([0.1, -0.1, 0.05, -0.05], ddof=1):.2f} points" in seeds
    cost = answers["cost"]["bullets"][0]
    assert "SLB takes 2.00 s per epoch" in cost and "×2.00 fp's epoch time" in cost
    assert "method parameters ×2.00" in cost and "×2.00 DoReFa-Net" in cost  # display names


def test_single_budget_study_does_not_answer_budget(mixed):
    st = report_pkg.load_study(mixed)
    text = report_pkg.question("budget").ask(st)["text"]
    assert text.startswith("Not answered by this study") and "4 epochs" in text


def test_answers_and_budget_in_report(answered, tmp_path):
    md = report_pkg.write_report(answered, out=tmp_path / "r", jobs=1).read_text()
    assert "## Reviewer questions" in md and "**SBN vs recalibration.**" in md
    assert "read off the curve)†" in md  # budget table: 4-epoch accuracy of the 8-epoch runs
    budget = pd.read_csv(tmp_path / "r" / "tables" / "budget_cifar10_resnet20.csv")
    ro = budget[(budget["source"] == "readoff") & (budget["row"] == "slb")]
    # epoch 4 of an 8-epoch run: final - 2 * (8 - 4) points, by write_run's curve
    assert ro["mean"].iloc[0] == pytest.approx(91.5 - 8.0)
    assert (tmp_path / "r" / "figures" / "budget_cifar10_resnet20.pdf").is_file()
    abl = pd.read_csv(tmp_path / "r" / "tables" / "ablation_slb_cifar10_resnet20.csv")
    assert abl.set_index("variant").loc["slb-recal_end", "diff_vs_default"] == pytest.approx(-1.5)


def test_option_questions_match_declared_options(tmp_path):
    # recal_batches is one of the bn question's options: a variant differing only in it
    root = tmp_path / "recal"
    for s, off in enumerate(OFFSETS[:3]):
        write_run(root, f"a{s}", method="slb", acc=90.0 + off, seed=s)
        write_run(root, f"b{s}", method="slb", variant="slb-few", acc=89.0 + off, seed=s,
                  options={"recal_batches": 5})
    st = report_pkg.load_study(root, ours="slb")
    assert "recal_batches" in report_pkg.question("bn").options
    bn = report_pkg.question("bn").ask(st)
    assert bn["answered"] and "SLB (few) [recal_batches=5]" in bn["bullets"][0]
    assert not report_pkg.question("schedule").ask(st)["answered"]


# --------------------------------------------------------------------------- ours

def test_report_without_ours_says_how_to_set_it(tmp_path):
    root = tmp_path / "noours"
    for s, off in enumerate(OFFSETS[:3]):
        write_run(root, f"a{s}", method="slb", acc=90.0 + off, seed=s)
        write_run(root, f"b{s}", method="dorefa", acc=89.0 + off, seed=s)
    out = report_pkg.write_report(root, jobs=1)
    md = out.read_text()
    assert "**Ours:** not set" in md and "--ours METHOD" in md
    section = md[md.index("## Comparisons"):md.index("## Convergence")]
    assert "no `[report] ours` is set" in section and "ours = \"METHOD\"" in section
    answers = {a["key"]: a for a in report_pkg.reviewer_answers(report_pkg.load_study(root))}
    for key in ("budget", "cost", "bop"):
        assert not answers[key]["answered"]
        assert "no `[report] ours` is set" in answers[key]["text"], key
    assert answers["seeds"]["answered"]
    assert not (out.parent / "tables" / "comparisons_cifar10_resnet20.csv").exists()
    assert (out.parent / "tables" / "main_cifar10_resnet20.csv").exists()
    # --ours names it without a study.toml
    st = report_pkg.load_study(root, ours="slb")
    assert st.ours == "slb" and report_pkg.question("cost").ask(st)["answered"]


# --------------------------------------------------------------------------- method_info

def test_internal_metrics_and_display_name_come_from_method_info(tmp_path):
    root = tmp_path / "info"
    info = {"display_name": "My Method",
            "internal_metrics": {"temperature": ["my temperature", [0.0, None]]}}
    for s in range(2):
        write_run(root, f"m{s}", method="ste", acc=88.0 + s, seed=s, slb_scalars=True,
                  method_info=info)
        write_run(root, f"d{s}", method="dorefa", acc=89.0 + s, seed=s)
    st = report_pkg.load_study(root)
    assert st.internal_metrics == {"temperature": ("my temperature", [0.0, None])}
    # declared only (and the epoch times equal compute reads)
    assert set(st.metrics["m0"]) == {"epoch", "test_acc", "epoch_time_s", "temperature"}
    names = st.runs.set_index("run_id")["display_name"]
    assert names["m0"] == "My Method" and names["d0"] == "DoReFa-Net"
    md = report_pkg.write_report(root, jobs=1).read_text()
    assert "Internal metrics the methods declare" in md and "my temperature" in md
    assert "gap panel" not in md  # no continuous-state accuracy declared
    assert "hold no method_info" not in md


def test_records_without_method_info_are_named_by_id_not_by_todays_code(mixed, tmp_path):
    """The report reads only records: a method whose records predate method_info is named by
    its id and has no internal metrics (today's method classes are never asked), and the
    header says why; a record without it takes another record's of the same method."""
    root = tmp_path / "old"
    for s in range(2):
        run = write_run(root, f"s{s}", method="slb", acc=90.0 + s, seed=s, slb_scalars=True,
                        method_info={})
        write_run(root, f"d{s}", method="dorefa", acc=89.0 + s, seed=s)
    st = report_pkg.load_study(root)
    assert st.internal_metrics == {}
    assert set(st.metrics["s0"]) == {"epoch", "test_acc", "epoch_time_s"}
    assert dict(zip(st.runs["run_id"], st.runs["display_name"]))["s0"] == "slb"
    assert st.display("dorefa") == "DoReFa-Net"
    (note,) = [n for n in st.notes if "method_info" in n]
    assert note.startswith("the records of slb hold no method_info") and "dorefa" not in note
    # one slb record with method_info: the others take its declaration
    summ = records.read_summary(run)
    summ.method_info = {"display_name": "SLB",
                        "internal_metrics": {"quant_gap": ["gap", None]}}
    records.write_summary(run, summ)
    st = report_pkg.load_study(root)
    assert set(st.runs["display_name"]) == {"SLB", "DoReFa-Net"}
    assert list(st.internal_metrics) == ["quant_gap"] and "quant_gap" in st.metrics["s0"]
    assert not [n for n in st.notes if "method_info" in n]
    with_info = report_pkg.load_study(mixed)  # its slb runs record method_info
    assert list(with_info.internal_metrics) == ["test_acc_continuous", "temperature",
                                                "quant_gap"]
    assert with_info.runs.set_index("run_id").loc["slb0", "display_name"] == "SLB"


# --------------------------------------------------------------------------- plumbing

def test_recipe_difference_inside_a_cell_is_reported(tmp_path):
    root = tmp_path / "mm"
    for s in range(2):
        write_run(root, f"a{s}", method="slb", acc=90.0, seed=s)
        run = write_run(root, f"b{s}", method="ste", acc=89.0, seed=s)
    cfg = files.read_json(run / "config.json")
    cfg["optim"]["lr"] = 0.5
    files.atomic_write_json(run / "config.json", cfg)
    md = report_pkg.write_report(root, jobs=1).read_text()
    section = md[md.index("Recipe differences inside a cell"):]
    assert "`optim.lr` = 0.1 (slb, ste); 0.5 (ste)" in section.splitlines()[2]


def test_load_record_agrees_with_load_run(mixed, tmp_path):
    bad_cols = write_run(tmp_path, "nocols", method="ste", acc=80.0)
    (bad_cols / "metrics.csv").write_text("epoch,test_acc\n1,1\n2,2\n3,3\n4,4\n")
    dirs = sorted((mixed / "runs").iterdir()) + [bad_cols]
    for d in dirs:
        a, b = records.load_run(d), report_pkg.load_record(d)
        assert (a.status, a.problem) == (b.status, b.problem), d.name


def test_rerun_removes_stale_outputs(tmp_path):
    root = tmp_path / "s"
    for s in range(2):
        write_run(root, f"a{s}", method="slb", acc=90.0 + s, seed=s)
        write_run(root, f"b{s}", method="slb", acc=90.0 + s, seed=s, model="vgg_small")
    out = report_pkg.write_report(root, jobs=1).parent
    assert (out / "figures" / "convergence_cifar10_vgg_small.png").exists()
    import shutil

    shutil.rmtree(root / "runs" / "b0")
    shutil.rmtree(root / "runs" / "b1")
    report_pkg.write_report(root, jobs=1)
    assert not (out / "figures" / "convergence_cifar10_vgg_small.png").exists()
    assert not (out / "tables" / "main_cifar10_vgg_small.tex").exists()
    assert (out / "figures" / "convergence_cifar10_resnet20.png").exists()


def test_import_is_cheap():
    code = ("import sys, harness.report; heavy = [m for m in ('pandas', 'matplotlib', "
            "'scipy', 'torch') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"


def test_non_semantic_keys_mirror_config():
    # the report groups settings without these keys; they must stay those of the hash
    assert set(config.NON_SEMANTIC) >= {"device", "data.root"}


@pytest.mark.slow
def test_bench_report_runs():
    from harness.tools.bench_records import bench_report

    assert bench_report(40) > 0


def test_a_failing_section_cancels_the_figures_and_writes_no_report(mixed, tmp_path,
                                                                      monkeypatch):
    """Figures start drawing (forked) as soon as their section is built; a later section that
    fails stops them and no report.md is written."""
    import dataclasses

    from harness.report import render

    def boom(st):
        raise RuntimeError("a later section failed")

    sections = tuple(dataclasses.replace(s, build=boom) if s.key == "statistics" else s
                     for s in render.SECTIONS)
    monkeypatch.setattr(render, "SECTIONS", sections)
    with pytest.raises(RuntimeError, match="a later section failed"):
        report_pkg.write_report(mixed, out=tmp_path / "rep", jobs=2)
    assert not (tmp_path / "rep" / "report.md").exists()
