"""The report's super-resolution section on planted SR records with known answers.

Records are written through the contract (config.to_dict, records.write_metrics with the SR
columns, RunSummary with the task fields, the three crop PNGs a run saves).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_records import write_run
from scipy import stats

from harness import config, files, records
from harness import report as report_pkg
from harness.run import resolve
from harness.tasks.sr import SrOptions, SuperResolution
from methods.base import get as get_method

BICUBIC = (30.0, 0.85)
PSNR = {"fp": [32.0, 32.2, 32.4], "slb": [31.0, 31.2, 31.4], "ste": [30.5, 30.6, 30.7],
        "dorefa": [30.9, 31.0, 31.1], "bop": [29.0, 29.5, 30.0]}


def write_sr_run(root, run_id: str, *, method: str, psnr: float, seed: int, w: int = 1,
                 epochs: int = 4, status: str = "completed", manifest: list | None = None,
                 variant: str = "", options: dict | None = None):
    variant = variant or method
    cfg = config.RunConfig(method=method, method_options=dict(options or {}), w_bits=w, a_bits=32,
                      epochs=epochs, seed=seed,
                      task="sr", task_options=SrOptions(scale=2, patch_size=32),
                      model=config.ModelConfig(name="srresnet", width=0.25),
                      data=config.DataConfig(name="sr_standin", augment=True),
                      meta=config.MetaConfig(study="t", variant=variant, scale="test"))
    d = config.to_dict(cfg)
    d["config_hash"] = resolve.config_hash(cfg)
    run = root / "runs" / run_id
    files.atomic_write_json(run / "config.json", d)
    rows = [{"epoch": e, "train_loss": 0.1 / e, "test_loss": 0.05 / e,
             "test_psnr": psnr - 0.5 * (epochs - e), "test_ssim": 0.9 - 0.01 * (epochs - e),
             "lr": 1e-3, "epoch_time_s": 2.0, "samples_per_s": 500.0} for e in range(1, epochs + 1)]
    if method == "slb":  # SLB logs its continuous-state score: here PSNR, 0.3 dB above
        for r in rows:
            r["test_acc_continuous"] = r["test_psnr"] + 0.3
    records.write_metrics(run, rows, list(SuperResolution.columns))
    final = {"test_loss": 0.05 / epochs, "test_psnr": psnr, "test_ssim": psnr / 35.0,
             "bicubic_psnr": BICUBIC[0], "bicubic_ssim": BICUBIC[1]}
    done = status == "completed"
    records.write_summary(run, records.RunSummary(
        status=status, epochs=epochs, epochs_completed=epochs if done else 1,
        wall_time_s=8.0, mean_epoch_time_s=2.0, config_hash=d["config_hash"],
        env={"device": "cpu", "device_name": "cpu: test", "torch": "2.14.1",
             "python": "3.11.7", "harness_commit": "abc1234"},
        task="sr", metric="test_psnr", final_metric=psnr if done else None,
        best_metric=psnr, final_metrics=final if done else {},
        method_info=get_method(method).info(), error="" if done else "RuntimeError: boom"))
    shade = int(np.clip(psnr * 6, 0, 255))
    for name, v in (("sr_crop", shade), ("sr_crop_hr", 200), ("sr_crop_bicubic", 100)):
        Image.fromarray(np.full((16, 16, 3), v, np.uint8)).save(run / f"{name}.png")
    if manifest is not None:
        manifest.append({"run_id": run_id, "variant": variant, "method": method, "w_bits": w,
                         "a_bits": 32, "epochs": epochs, "seed": seed, "unmatched": False})
    return run


@pytest.fixture
def sr_study(tmp_path):
    root, manifest = tmp_path / "study", []
    for method, values in PSNR.items():
        for seed, p in enumerate(values):
            write_sr_run(root, f"{method}_s{seed}", method=method, psnr=p, seed=seed,
                         w=32 if method == "fp" else 1, manifest=manifest)
    write_sr_run(root, "lqnet_s0", method="lqnet", psnr=0.0, seed=0, status="failed",
                 manifest=manifest)
    for seed, p in enumerate(PSNR["slb"]):  # a variant of ours: 0.2 dB lower
        write_sr_run(root, f"slbnone_s{seed}", method="slb", variant="slb-none", psnr=p - 0.2,
                     seed=seed, options={"bn": "none"}, manifest=manifest)
    (root / "study.toml").write_text('[study]\nname = "t"\n[report]\nours = "slb"\n'
                                     '[report.settings]\nsr_standin = "skimage stand-in"\n'
                                     'srresnet = "SRResNet"\n'
                                     '[report.variants]\n"slb-none" = "SLB without BN"\n')
    files.atomic_write_json(root / "manifest.json", {"study": "t", "runs": manifest})
    return root


def _table(path) -> pd.DataFrame:
    return pd.read_csv(path)


def test_sr_main_table_has_floor_ceiling_and_seed_statistics(sr_study):
    report = report_pkg.write_report(sr_study).read_text()
    tables = sr_study / "report" / "tables"
    main = _table(next(tables.glob("sr_main_*_e4.csv")))
    assert main["method"].tolist()[:2] == ["bicubic", "fp"]   # floor, then the ceiling
    row = main.set_index("method")
    assert row.loc["bicubic", "psnr_mean"] == BICUBIC[0]
    for m, v in PSNR.items():
        assert row.loc[m, "psnr_mean"] == pytest.approx(np.mean(v))
        assert row.loc[m, "psnr_std"] == pytest.approx(np.std(v, ddof=1))
        assert row.loc[m, "n"] == 3
    assert "lqnet" not in row.index  # failed: out of the numbers, listed as excluded
    md = next(tables.glob("sr_main_*_e4.md")).read_text()
    assert "| SLB | W1/A32 | 31.20 ± 0.20 (3) |" in md        # display names, ids in the CSV
    assert "bicubic (floor)" in md and "FP (32-bit) (ceiling)" in md
    assert "Super-resolution, skimage stand-in / SRResNet x2, 4 epochs" in md
    assert "| +1.20 | -1.00 |" in md       # slb: over bicubic, to fp
    assert "not Set5/Set14" in md
    assert "## Super-resolution" in report and "lqnet" in report.split(
        "## Runs excluded from the numbers")[1]


def test_sr_comparisons_are_welch_in_db(sr_study):
    report_pkg.write_report(sr_study)
    comp = _table(next((sr_study / "report" / "tables").glob("sr_comparisons_*.csv")))
    assert set(comp["baseline"]) == {"ste", "dorefa", "bop"}  # ours' variants: ablations
    r = comp.set_index("baseline").loc["dorefa"]
    res = stats.ttest_ind(PSNR["slb"], PSNR["dorefa"], equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    assert r["diff_db"] == pytest.approx(0.2)
    assert (r["ci_low"], r["ci_high"], r["p"]) == pytest.approx((lo, hi, res.pvalue))
    # of 9 seed pairs slb wins 7 and ties one (31.0 = 31.0): (7 + 0.5) / 9
    assert r["p_a_greater"] == pytest.approx(7.5 / 9)


def test_sr_tables_name_rows_and_settings_by_display_name(sr_study):
    report_pkg.write_report(sr_study)
    tables = sr_study / "report" / "tables"
    comp = next(tables.glob("sr_comparisons_*.md")).read_text()
    assert "skimage stand-in / SRResNet x2: SLB minus each baseline" in comp
    assert "| SLB | DoReFa-Net | W1/A32, 4 ep |" in comp and "| slb |" not in comp
    abl = next(tables.glob("sr_ablations_*.md")).read_text()
    assert "| SLB without BN − SLB | bn=none |" in abl
    csv = _table(next(tables.glob("sr_comparisons_*.csv")))   # the ids stay in the CSVs
    assert set(csv["ours"]) == {"slb"} and "DoReFa-Net" in set(csv["baseline_name"])


def test_sr_ablation_compares_variants_of_ours_with_its_default(sr_study):
    report_pkg.write_report(sr_study)
    abl = _table(next((sr_study / "report" / "tables").glob("sr_ablations_*.csv")))
    assert abl["variant"].tolist() == ["slb-none"] and abl["default"].tolist() == ["slb"]
    assert abl["final_diff_db"].iloc[0] == pytest.approx(-0.2)
    assert abl["mean_diff_db"].iloc[0] == pytest.approx(-0.2)  # every epoch 0.2 dB lower


def test_sr_reviewer_answer_names_the_best_ste_baseline(sr_study):
    st = report_pkg.load_study(sr_study)
    ans = {a["key"]: a for a in report_pkg.reviewer_answers(st)}["sr"]
    assert ans["answered"]
    assert "SLB 31.20 ± 0.20 (n=3) dB vs the best STE baseline DoReFa-Net" in ans["bullets"][0]
    assert "DoReFa-Net +0.20" in ans["bullets"][0] and "dorefa" not in ans["bullets"][0]
    assert "of SLB minus the STE baselines" in ans["text"]
    assert "over 2 comparisons" in ans["text"]  # ste and dorefa; bop is not an STE method


def test_sr_figures_are_drawn(sr_study):
    report_pkg.write_report(sr_study)
    figs = sr_study / "report" / "figures"
    assert next(figs.glob("sr_psnr_*.png")).stat().st_size > 0
    assert next(figs.glob("sr_crops_*.png")).stat().st_size > 0
    st = report_pkg.load_study(sr_study)
    from harness.report import sr

    s = sr.sr_settings(st)[0]
    fig = sr.crops_figure(st, s)
    titles = [p["title"] for p in fig.spec["panels"]]
    # HR, bicubic, then the median-PSNR seed of fp, ours and the best STE baseline
    assert titles == ["HR", "bicubic", "FP (32-bit)\n(32.20 dB)", "SLB\n(31.20 dB)",
                      "DoReFa-Net\n(31.00 dB)"]
    assert fig.spec["title"] == "Super-resolution crops, skimage stand-in / SRResNet x2, " \
        "W1/A32, 4 ep" and "best STE baseline (DoReFa-Net)" in fig.caption
    curves = sr.curves_figure(st, s).spec["panels"]
    assert [p["title"] for p in curves] == ["W1/A32, 4 ep", "SLB: continuous − deployed",
                                            "SLB without BN: continuous − deployed"]
    assert np.allclose(curves[1]["lines"][0]["mean"], 0.3)


def test_sr_psnr_figure_uses_the_shared_styles_and_highlight(sr_study):
    """Ours, the strongest other row (dorefa: 31.0 dB, above ste and bop) and fp in their
    report-wide styles, the other rows thin grey, bicubic its own line; every row in its own
    style in the all-rows companion."""
    from harness.report import sr
    from harness.report import style as report_style

    st = report_pkg.load_study(sr_study)
    s = sr.sr_settings(st)[0]
    styles = report_style.row_styles(st)
    fig = sr.curves_figure(st, s)
    lines = fig.spec["panels"][0]["lines"]
    by_color = {ln["color"]: ln for ln in lines}
    for lab in ("slb", "dorefa", "fp"):   # in full: colour, dash and marker of the row
        ln = by_color[styles[lab]["color"]]
        assert (ln["ls"], ln["marker"]) == (styles[lab]["ls"], styles[lab]["marker"])
    assert by_color[styles["slb"]["color"]]["band"] and not by_color["#000000"]["band"]
    grey = [ln for ln in lines if ln["color"] == report_style.CONTEXT["color"]]
    assert len(grey) == 3 and not any(ln["band"] for ln in grey)   # ste, bop, slb-none
    assert sum(ln["color"] == sr.BICUBIC_LINE["color"] for ln in lines) == 1
    assert len({(ln["color"], str(ln["ls"])) for ln in lines}) == 5   # 4 in full, 1 grey
    legend = [e["label"] for e in fig.spec["legend"]]
    assert legend == ["FP (32-bit)", "DoReFa-Net", "SLB", "SLB without BN",
                      "other rows (thin grey)", "bicubic (floor)"]
    every = sr.curves_figure(st, s, all_rows=True)
    assert every.name.startswith("sr_psnr_all_")
    colors = {ln["color"] for ln in every.spec["panels"][0]["lines"]}
    assert {styles[k[0]]["color"] for k in sr.sr_groups(st, s)} <= colors
    assert report_style.CONTEXT["color"] not in colors
    report_pkg.write_report(sr_study)
    assert next((sr_study / "report" / "figures").glob("sr_psnr_all_*.png")).stat().st_size


def test_classification_sections_never_see_sr_runs(sr_study):
    man = files.read_json(sr_study / "manifest.json")
    for seed in range(2):
        write_run(sr_study, f"cls_fp_s{seed}", method="fp", acc=80.0 + seed, w=32, seed=seed,
                  manifest=man["runs"], study="t")
        write_run(sr_study, f"cls_slb_s{seed}", method="slb", acc=70.0 + seed, seed=seed,
                  manifest=man["runs"], study="t")
    files.atomic_write_json(sr_study / "manifest.json", man)
    st = report_pkg.load_study(sr_study)
    assert len(st.settings()) == 1 and len(st.settings("sr")) == 1
    assert all(k[0] == st.settings()[0] for k in st.groups)  # accuracy groups: classification
    report = report_pkg.write_report(sr_study).read_text()
    main = report.split("## Main results")[1].split("## ")[0]
    assert "31.20" not in main and "70.50" in main
    assert "super-resolution runs" in report.split("## ")[0]   # the header says so
    assert "only super-resolution runs" not in report   # its classification questions answer


def test_sr_only_study_says_so_in_every_classification_question(sr_study):
    from harness.report.questions import SR_ONLY

    answers = report_pkg.reviewer_answers(report_pkg.load_study(sr_study))
    for a in answers:
        if a["key"] == "sr":
            assert a["answered"]
            continue
        assert a["text"] == f"{report_pkg.NOT_ANSWERED}: {SR_ONLY}.", a["key"]  # no false reason
        assert not a["bullets"]
    assert "only super-resolution runs" in SR_ONLY
    head = report_pkg.write_report(sr_study).read_text().split("## ")[0]
    assert "final deployed test PSNR (dB) or SSIM" in head and "accuracy" not in head
