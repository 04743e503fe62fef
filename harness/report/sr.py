"""The super-resolution part of a report: PSNR/SSIM tables, comparisons, curves, crops.

Reads the SR settings of a ``StudyRecords`` (load.py: settings whose identity holds
``sr.scale``; runs of ``task = "sr"``) and nothing else; classification sections never see
these runs, so PSNR is never averaged with accuracy. The statistics are the ones of the
accuracy tables (harness/report/stats.py: mean ± sample std over seeds, Welch's t-test and its 95%
interval, P(A > B) over seed pairs, Benjamini-Hochberg across a table), in dB for PSNR.

- main table per setting and budget: the bicubic floor (deterministic, recorded by every run
  in summary.json ``final_metrics``), fp as the ceiling, then every row at every W/A;
  PSNR (dB) and SSIM on Y, the gain over bicubic and the gap to fp;
- comparisons: ours minus each baseline per cell (PSNR dB, Welch 95% CI, p, adjusted p);
  ablations: ours' other variants minus its default (final PSNR, and PSNR averaged over
  the epochs);
- PSNR-vs-epoch curves (mean and 95% band over seeds), bicubic as a flat line;
- the crop figure: HR, bicubic, fp, ours and the best STE baseline (``STE_METHODS``) on the
  same window of the first test image (``sr_crop*.png`` written by each run, the seed whose
  final PSNR is the median of its row);
- the reviewer answer of ``sr_answer`` ("is SLB better than STE methods on SR at the same
  budget, and by how many dB ± what?"), registered in questions.QUESTIONS.

The test set is named as its dataset describes it: the offline default is a scikit-image
stand-in, never called Set5/Set14 (harness/tasks/sr/data.py).
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from harness.report import design, stats, style, verdicts
from harness.report.answers import NOT_ANSWERED, bullets, tally
from harness.report.figure import (
    BAND_CLAUSE,
    CONTEXT_CLAUSE,
    Figure,
    band_line,
    cut,
    figure_width,
    first_shown,
    fp_clause,
    legend_for,
    make_figure,
    panel_lines,
    ylim,
    zoom_note,
)
from harness.report.figures import SEED_CLAUSES, seed_rows
from harness.report.load import StudyRecords, cached_per_setting, cell_name
from harness.report.table import (
    Table,
    fmt_cell,
    fmt_diff_ci,
    fmt_opts,
    grouped,
    n_epochs,
    plural,
    same_n,
)
from harness.report.tables import option_diff, setting_slug, where

# the baselines trained with a straight-through estimator (see each methods/<name>.py)
STE_METHODS = ("ste", "dorefa", "lqnet", "hashing", "lsq")
# a method's continuous-state score: <headline>_continuous (SLB: test_psnr_continuous, dB);
# SR records written before it was named after the task's headline call it test_acc_continuous
CONTINUOUS = ("test_psnr_continuous", "test_acc_continuous")
TEST_SETS = {"sr_standin": "skimage stand-in (6 photographs shipped with scikit-image; "
                           "not Set5/Set14)"}


def sr_settings(st: StudyRecords) -> list[str]:
    return st.settings("sr")


def _ident(setting: str) -> dict[str, Any]:
    return dict(json.loads(setting))


def test_set(setting: str) -> str:
    d = _ident(setting)
    name = d.get("data.name")
    return TEST_SETS.get(name, f"the test/ images of the {name} data root")


# --------------------------------------------------------------------------- groups

@cached_per_setting
def sr_groups(st: StudyRecords, setting: str) -> dict[tuple, dict[str, Any]]:
    """(label, w, a, epochs) -> final PSNR/SSIM per seed (sorted by seed), their summaries,
    run ids."""
    inc = st.included[st.included["setting"] == setting]
    out = {}
    for (lab, w, a, e), df in inc.groupby(["label", "w_bits", "a_bits", "epochs"]):
        df = df.sort_values("seed")
        psnr = [float(m.get("test_psnr", np.nan)) for m in df["final_metrics"]]
        ssim = [float(m.get("test_ssim", np.nan)) for m in df["final_metrics"]]
        out[(lab, int(w), int(a), int(e))] = {
            "psnr": psnr, "ssim": ssim, "seeds": df["seed"].tolist(),
            "run_ids": df["run_id"].tolist(), "p": stats.describe(psnr, bootstrap=False),
            "s": stats.describe(ssim, bootstrap=False)}
    return out


def bicubic(st: StudyRecords, setting: str) -> tuple[float, float] | None:
    """(PSNR, SSIM) of bicubic upscaling on the setting's test set, from the records."""
    inc = st.included[st.included["setting"] == setting]
    vals = {(round(m["bicubic_psnr"], 6), round(m.get("bicubic_ssim", np.nan), 6))
            for m in inc["final_metrics"] if "bicubic_psnr" in m}
    if not vals:
        return None
    p, s = sorted(vals)[0]
    return float(p), float(s)


def _cells(st: StudyRecords, setting: str) -> list[tuple[int, int, int]]:
    return sorted({k[1:] for k in sr_groups(st, setting)})


def _rows(st: StudyRecords, setting: str, epochs: int) -> list[tuple[str, int, int]]:
    """(label, w, a) in display order (fp first), W/A by bits."""
    keys = {(k[0], k[1], k[2]) for k in sr_groups(st, setting) if k[3] == epochs}
    order = {lab: i for i, lab in enumerate(st.labels(setting))}
    return sorted(keys, key=lambda k: (order.get(k[0], len(order)), k[1], k[2]))


def _fp_row(st: StudyRecords, setting: str, epochs: int) -> tuple[str, dict[str, Any]] | None:
    """(label, group) of the fp row at this budget."""
    g = [(k[0], v) for k, v in sr_groups(st, setting).items()
         if k[3] == epochs and st.method_of.get(k[0]) == "fp"]
    return g[0] if g else None


def _fp(st: StudyRecords, setting: str, epochs: int) -> dict[str, Any] | None:
    row = _fp_row(st, setting, epochs)
    return row[1] if row else None


# --------------------------------------------------------------------------- tables

def main_table(st: StudyRecords, setting: str, epochs: int) -> Table:
    groups, floor, fp = sr_groups(st, setting), bicubic(st, setting), _fp(st, setting, epochs)
    name = f"sr_main_{setting_slug(st, setting)}_e{epochs}"
    header = ["Method", "W/A", "PSNR (dB)", "SSIM", "vs bicubic (dB)", "vs fp (dB)"]
    keys = _rows(st, setting, epochs)
    n_all = same_n([groups[(lab, w, a, epochs)]["p"] for lab, w, a in keys])
    rows, data, tex_rows, tex_groups = [], [], [], {}
    if floor:
        rows.append(["bicubic (floor)", "–", f"{floor[0]:.2f}", f"{floor[1]:.4f}", "0.00",
                     f"{floor[0] - fp['p'].mean:+.2f}" if fp else "–"])
        tex_rows.append([rows[-1][0], *rows[-1][2:]])
        data.append({"method": "bicubic", "name": "bicubic", "w_bits": None, "a_bits": None,
                     "n": 0, "psnr_mean": floor[0], "psnr_std": None, "ssim_mean": floor[1],
                     "ssim_std": None})
    for lab, w, a in keys:
        g = groups[(lab, w, a, epochs)]
        is_fp = st.method_of.get(lab) == "fp"
        diffs = [f"{g['p'].mean - floor[0]:+.2f}" if floor else "–",
                 "0.00" if is_fp else (f"{g['p'].mean - fp['p'].mean:+.2f}" if fp else "–")]
        shown = st.display(lab) + (" (ceiling)" if is_fp else "")
        rows.append([shown, f"W{w}/A{a}", fmt_cell(g["p"]), fmt_cell(g["s"], digits=4), *diffs])
        if not is_fp and cell_name(w, a) not in tex_groups.values():
            tex_groups[len(tex_rows)] = cell_name(w, a)   # a heading per W/A pair
        tex_rows.append([shown, fmt_cell(g["p"], not n_all),
                         fmt_cell(g["s"], not n_all, digits=4), *diffs])
        data.append({"method": lab, "name": st.display(lab), "w_bits": w, "a_bits": a,
                     "n": g["p"].n,
                     "psnr_mean": g["p"].mean, "psnr_std": g["p"].std,
                     "ssim_mean": g["s"].mean, "ssim_std": g["s"].std})
    seeds = f"over {n_all} seeds" if n_all else "over seeds (n)"
    notes = [f"Final deployed network, {n_epochs(epochs)}; PSNR and SSIM on Y with a "
             f"{_ident(setting).get('sr.scale')}-pixel border cropped, mean over the test "
             f"images of {test_set(setting)}; mean ± sample std over seeds (n); (1)* one seed, "
             "no error bar. Bicubic: MATLAB-style bicubic upscaling of the same LR images."]
    caption = (f"Super-resolution, {st.setting_name(setting)}, {n_epochs(epochs)}: final PSNR "
               "(dB) and SSIM")
    tex = Table(name, caption, ["Method", "PSNR (dB)", "SSIM", "Δ bic.", "Δ fp"], tex_rows,
                groups=tex_groups, wide=False, wrap=True,
                notes=[f"Final deployed network; PSNR and SSIM on Y ({test_set(setting)}), "
                       f"mean ± sample std {seeds}; Δ bic., Δ fp: PSNR minus bicubic's, fp's (dB)."
                       + (" (1)* one seed." if any("(1)*" in v for r in tex_rows for v in r)
                          else "")])
    return Table(name, caption, header, rows, pd.DataFrame(data), notes=notes, n_label_cols=2,
                 tex=tex)


@cached_per_setting
def sr_comparisons(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """Ours minus every other non-fp row, per cell, on final PSNR (dB)."""
    if not st.ours:
        return []
    groups, out = sr_groups(st, setting), []
    for (lab, w, a, e), g in groups.items():
        if st.method_of.get(lab) != st.ours or lab != st.default_variant(st.ours, [
                k[0] for k in groups if k[1:] == (w, a, e)]):
            continue
        for (blab, bw, ba, be), b in groups.items():
            if (bw, ba, be) != (w, a, e) or st.method_of.get(blab) in ("fp", st.ours):
                continue  # ours' other variants: sr_ablations
            out.append({"ours": lab, "baseline": blab, "cell": (w, a, e),
                        "a": g["p"], "b": b["p"],
                        "cmp": verdicts.compare_runs(st, g["run_ids"], g["psnr"],
                                                     b["run_ids"], b["psnr"]),
                        "ssim_diff": g["s"].mean - b["s"].mean})
    order = {lab: i for i, lab in enumerate(st.order)}
    return sorted(out, key=lambda r: (r["cell"], order.get(r["baseline"], 0)))


@cached_per_setting
def sr_tests(st: StudyRecords, setting: str) -> list[tuple[dict[str, Any], verdicts.Test]]:
    """Every SR comparison of a setting with its Benjamini-Hochberg adjusted p over the
    setting's SR comparisons: the report's one verdict rule (verdicts.py) for PSNR."""
    comps = sr_comparisons(st, setting)
    tests = verdicts.adjusted({i: r["cmp"] for i, r in enumerate(comps)})
    return [(r, tests[i]) for i, r in enumerate(comps)]


def comparison_table(st: StudyRecords, setting: str) -> Table:
    tests = sr_tests(st, setting)
    comps, adj = [r for r, _ in tests], [t.p_adj for _, t in tests]
    header = ["Ours", "Baseline", "Cell", "Δ PSNR (dB)", "95% CI", "p", "p (BH)", "P(A>B)",
              "Δ SSIM", "Verdict"]
    rows, data, keyed, bold = [], [], [], set()
    for i, (r, pa) in enumerate(zip(comps, adj)):
        c = r["cmp"]
        ours, base = st.display(r["ours"]), st.display(r["baseline"])
        rows.append([ours, base, cell_name(*r["cell"]), f"{c.diff:+.2f}",
                     fmt_diff_ci(c), stats.fmt_p(c.p), stats.fmt_p(pa),
                     f"{c.p_a_greater:.2f}", f"{r['ssim_diff']:+.4f}",
                     c.verdict(ours, base, pa)])
        keyed.append((cell_name(*r["cell"]), [base, *rows[-1][3:5], stats.fmt_p(pa),
                                              rows[-1][8]]))
        if tests[i][1].decision in ("higher", "lower"):
            bold.add((i, 1))
        data.append({"ours": r["ours"], "baseline": r["baseline"], "ours_name": ours,
                     "baseline_name": base, "w_bits": r["cell"][0],
                     "a_bits": r["cell"][1], "epochs": r["cell"][2], "diff_db": c.diff,
                     "ci_low": c.ci[0] if c.ci else None, "ci_high": c.ci[1] if c.ci else None,
                     **verdicts.test_data(tests[i][1]), "p_a_greater": c.p_a_greater,
                     "ssim_diff": r["ssim_diff"]})
    name = f"sr_comparisons_{setting_slug(st, setting)}"
    caption = (f"Super-resolution, {st.setting_name(setting)}: {st.ours_name} minus each "
               "baseline, final PSNR (dB)")
    tex_rows, groups = grouped(keyed)
    design = verdicts.design_note([t for _, t in tests])
    family = plural(tests[0][1].family_size if tests else 0, "test")
    tex = Table(name, caption, ["Baseline", "Δ PSNR", "95% CI", "p (adj.)", "Δ SSIM"],
                tex_rows, bold=bold, groups=groups, wide=False, wrap=True,
                notes=[f"Δ: {st.ours_name} minus the baseline (PSNR in dB, on Y); 95% CI and p: "
                       f"{design}; p Benjamini-Hochberg adjusted over the {family} of this "
                       "table." + (" Bold Δ: significant under that rule." if bold else "")])
    paired = any(r["cmp"].paired for r in comps)
    return Table(name, caption, header, rows, pd.DataFrame(data),
                 notes=[f"{design[0].upper() + design[1:]}; 95% CI of the difference in dB; "
                        f"p (BH): Benjamini-Hochberg over the {family} of this table; P(A>B): "
                        "share of seed pairs" + (" (of seeds, where paired)" if paired else "")
                        + " where ours is higher."] if design else [],
                 n_label_cols=3, left_extra=(-1,), tex=tex)


def _mean_psnr(st: StudyRecords, run_ids: list[str]) -> tuple[list[str], list[float]]:
    """(runs, each run's deployed test PSNR averaged over its epochs: how early it got
    there)."""
    ids = [r for r in run_ids if r in st.metrics and "test_psnr" in st.metrics[r]]
    return ids, [float(np.mean(st.metrics[r]["test_psnr"])) for r in ids]


@cached_per_setting
def sr_ablations(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """Every other variant of ours minus ours' default variant, per cell: on the final PSNR
    and on the PSNR averaged over the epochs."""
    groups, out = sr_groups(st, setting), []
    for (lab, w, a, e), g in groups.items():
        if st.method_of.get(lab) != st.ours:
            continue
        default = st.default_variant(st.ours, [k[0] for k in groups if k[1:] == (w, a, e)])
        if lab == default:
            continue
        d = groups[(default, w, a, e)]
        out.append({"variant": lab, "default": default, "cell": (w, a, e),
                    "final": verdicts.compare_runs(st, g["run_ids"], g["psnr"], d["run_ids"],
                                                   d["psnr"]),
                    "mean": verdicts.compare_runs(st, *_mean_psnr(st, g["run_ids"]),
                                                  *_mean_psnr(st, d["run_ids"])),
                    "options": option_diff(st.options_of.get(lab, {}),
                                            st.options_of.get(default, {}))})
    return sorted(out, key=lambda r: (r["cell"], r["variant"]))


def ablation_table(st: StudyRecords, setting: str) -> Table:
    header = ["Variant", "Options", "Cell", "Δ final PSNR (dB)", "95% CI", "p",
              "Δ mean-over-epochs PSNR (dB)", "95% CI", "p"]
    rows, data, keyed = [], [], []
    for r in sr_ablations(st, setting):
        f, m = r["final"], r["mean"]
        rows.append([f"{st.display(r['variant'])} − {st.display(r['default'])}",
                     fmt_opts(r["options"]),
                     cell_name(*r["cell"]),
                     f"{f.diff:+.2f}", fmt_diff_ci(f), stats.fmt_p(f.p),
                     f"{m.diff:+.2f}", fmt_diff_ci(m), stats.fmt_p(m.p)])
        keyed.append((cell_name(*r["cell"]), [rows[-1][0], *rows[-1][3:]]))
        data.append({"variant": r["variant"], "default": r["default"],
                     "name": st.display(r["variant"]), "w_bits": r["cell"][0],
                     "a_bits": r["cell"][1], "epochs": r["cell"][2], "final_diff_db": f.diff,
                     "final_p": f.p, "mean_diff_db": m.diff, "mean_p": m.p})
    name = f"sr_ablations_{setting_slug(st, setting)}"
    caption = (f"Super-resolution, {st.setting_name(setting)}: variants of {st.ours_name} "
               "minus its default variant")
    abl = sr_ablations(st, setting)
    design = verdicts.design_note([verdicts.Test(r[k], r[k].p, 1) for r in abl
                                   for k in ("final", "mean")])
    notes = [(f"{design[0].upper() + design[1:]}; p unadjusted. " if design else "")
             + "Mean-over-epochs: each run's deployed test PSNR averaged over its epochs, "
             "which shows a difference during training that the final epoch may no longer "
             "show."]
    tex_rows, groups = grouped(keyed)
    tex = Table(name, caption, ["Variant", "Δ", "95% CI", "p", "Δ", "95% CI", "p"], tex_rows,
                groups=groups, wide=True, wrap=True,
                header_groups=[("", 1), ("final PSNR (dB)", 3), ("mean over epochs (dB)", 3)],
                notes=[notes[0] + " Options of each variant: in the markdown and CSV versions "
                       "of this table."])
    return Table(name, caption, header, rows, pd.DataFrame(data), notes=notes, n_label_cols=3,
                 tex=tex)


# --------------------------------------------------------------------------- figures

def _curve(st: StudyRecords, run_ids: list[str]) -> dict[str, Any] | None:
    mats = [st.metrics[r]["test_psnr"] for r in run_ids
            if r in st.metrics and "test_psnr" in st.metrics[r]]
    if not mats:
        return None
    n = min(len(m) for m in mats)
    return band_line(np.stack([m[:n] for m in mats]), None)


BICUBIC_LINE = {"color": "0.55", "ls": (0, (1, 3)), "lw": 1.2, "marker": "", "band": False,
                "role": "bicubic"}
PSNR_LABEL = "deployed test PSNR (dB, Y)"


def _psnr_cells(st: StudyRecords, setting: str) -> list[tuple[int, int, int]]:
    """Cells with a row other than fp (fp is drawn in each of its budget); fp's when alone."""
    cells = _cells(st, setting)
    quant = [c for c in cells if any(k[1:] == c and st.method_of.get(k[0]) != "fp"
                                     for k in sr_groups(st, setting))]
    return quant or cells


def _psnr_panels(st: StudyRecords, setting: str, styles, all_rows: bool
                 ) -> tuple[list[dict], list[str], bool]:
    """(PSNR panels, rows in full, any context rows): a panel per (W/A, budget), fp and
    bicubic in each, each panel with its own y-label."""
    groups, floor = sr_groups(st, setting), bicubic(st, setting)

    def get(lab, cell):
        w, a, e = cell
        g = (next((v for k, v in groups.items() if k[0] == lab and k[3] == e), None)
             if st.method_of.get(lab) == "fp" else groups.get((lab, w, a, e)))
        return _curve(st, g["run_ids"]) if g else None

    panels, full_all, context_any = [], [], False
    for cell in _psnr_cells(st, setting):
        lines, full, context = panel_lines(st, setting, cell, styles, all_rows, get)
        if not lines:
            continue
        if floor:
            x = lines[0]["x"]
            lines.append({"x": x, "mean": [floor[0]] * len(x), "lo": None, "hi": None,
                          **BICUBIC_LINE})
        start = first_shown(cell[2])
        lines = [cut(ln, start) for ln in lines]
        full_all += [lab for lab in full if lab not in full_all]
        context_any |= bool(context)
        panels.append({"title": cell_name(*cell), "lines": lines, "ylim": ylim(lines, None),
                       "ylabel": PSNR_LABEL, "from_epoch": start + 1})
    return panels, full_all, context_any


def curves_figure(st: StudyRecords, setting: str, all_rows: bool = False) -> Figure | None:
    """Deployed test PSNR per epoch, a panel per (W/A, budget) with fp and bicubic in each,
    in the report's shared styles (style.py): ours, the strongest other row and fp in full,
    the others thin grey (``all_rows``: every row in its own style, no bands); then ours'
    continuous-minus-deployed panels (their own y-label and range)."""
    styles = style.row_styles(st)
    panels, full_all, context_any = _psnr_panels(st, setting, styles, all_rows)
    if not panels:
        return None
    gap_panels, gap_rows = ([], []) if all_rows else _continuous_panels(st, setting, styles)
    legend = legend_for(st, styles, full_all + [lab for lab in gap_rows if lab not in full_all],
                        context_any)
    if bicubic(st, setting):
        legend.append({"label": "bicubic (floor)", **BICUBIC_LINE})
    sl = st.setting_name(setting)
    name = f"sr_psnr{'_all' if all_rows else ''}_{setting_slug(st, setting)}"
    spec = {"kind": "curves", "name": name, "panels": panels + gap_panels, "legend": legend,
            "width": figure_width(st), "context_rows": context_any, "xlabel": "epoch",
            "title": f"Super-resolution PSNR per epoch, {sl}" + (", every row" if all_rows
                                                                  else "")}
    what = ("every row in its own colour, marker and dash (the same in every figure of this "
            "report), mean over seeds, without bands." if all_rows else
            style.highlighted_rows(st, " PSNR") + ", mean over seeds.")
    lead = (f"Deployed test PSNR (dB, Y channel) on {test_set(setting)} per epoch ({sl}), one "
            f"panel per W/A cell and budget: {what}"
            + (f" Panels named 'continuous − deployed' (their own scale): {st.ours_name}'s PSNR "
               "with its continuous (training-state) weights minus the deployed network's, per "
               "variant that logs it." if gap_panels else "")
            + " The final-PSNR figure shows the differences the tables test, at their scale.")
    return make_figure(name, spec, lead, {
        "band": BAND_CLAUSE, "context": CONTEXT_CLAUSE, "fp": fp_clause(),
        "bicubic": "Grey, loosely dotted line: bicubic upscaling (the floor)."},
        zoom_note(panels))


def final_figure(st: StudyRecords, setting: str) -> Figure | None:
    """Final deployed PSNR of every seed per row, one panel per cell (fp beside the
    quantized rows), on an axis as narrow as the values: the differences the tables test."""
    styles = style.row_styles(st)
    groups = sr_groups(st, setting)
    panels = []
    for cell in _psnr_cells(st, setting):
        rows = [(lab, {"values": g["psnr"], "summary": g["p"]}) for lab in st.labels(setting)
                for (glab, *c), g in groups.items() if glab == lab and (
                    tuple(c) == cell or (st.method_of.get(lab) == "fp" and c[2] == cell[2]))]
        if rows:
            panels.append({"title": cell_name(*cell), "rows": seed_rows(st, styles, rows),
                           "ylabel": "final PSNR (dB, Y)"})
    if not panels:
        return None
    sl = st.setting_name(setting)
    name = f"sr_final_{setting_slug(st, setting)}"
    spec = {"kind": "points", "name": name, "panels": panels, "width": figure_width(st),
            "title": f"Final PSNR per seed, {sl}"}
    return make_figure(name, spec, f"Final deployed test PSNR (dB, Y) of every seed ({sl}), "
                       "one column per row (named below it), on an axis as narrow as the "
                       "values, so the differences the comparison tables test are visible.",
                       SEED_CLAUSES)


def _continuous(columns) -> str | None:
    """The run's continuous-state score column, if it logged one."""
    return next((c for c in CONTINUOUS if c in columns), None)


def _continuous_panels(st: StudyRecords, setting: str, styles
                       ) -> tuple[list[dict[str, Any]], list[str]]:
    """Per W/A of ours' variants: its continuous-state PSNR minus the deployed one per epoch
    (dB), for methods that log a continuous-state score (SLB's ``test_psnr_continuous``;
    older records: ``test_acc_continuous``). Returns (panels, rows drawn)."""
    out, rows = [], []
    for (lab, w, a, e), g in sr_groups(st, setting).items():
        if st.method_of.get(lab) != st.ours:
            continue
        mats = [st.metrics[r][col] - st.metrics[r]["test_psnr"] for r in g["run_ids"]
                if (col := _continuous(st.metrics.get(r, {}))) is not None]
        if not mats:
            continue
        n = min(len(m) for m in mats)
        line = cut({**band_line(np.stack([m[:n] for m in mats]), None),
                    **style.line_style(styles, lab, True)}, first_shown(e))
        where = f", {cell_name(w, a, e)}" if len(_psnr_cells(st, setting)) > 1 else ""
        out.append({"title": f"{st.display(lab)}{where}: continuous − deployed",
                    "lines": [line], "ylim": ylim([line], None),
                    "ylabel": "continuous − deployed (dB)"})
        rows += [lab] if lab not in rows else []
    return out, rows


def _median_run(st: StudyRecords, g: dict[str, Any]) -> str | None:
    """The run whose final PSNR is the median of its row (the lower middle for even n),
    among those that saved their crops."""
    runs = [(p, r) for p, r in zip(g["psnr"], g["run_ids"])
            if (st.dir / "runs" / r / "sr_crop.png").is_file()]
    if not runs:
        return None
    runs.sort()
    return runs[(len(runs) - 1) // 2][1]


def best_ste(st: StudyRecords, setting: str, cell) -> str | None:
    """The STE-baseline row with the highest mean final PSNR in a cell."""
    cands = [(g["p"].mean, lab) for (lab, *c), g in sr_groups(st, setting).items()
             if tuple(c) == tuple(cell) and st.method_of.get(lab) in STE_METHODS and g["p"].n]
    return max(cands)[1] if cands else None


def crops_figure(st: StudyRecords, setting: str) -> Figure | None:
    """HR, bicubic, fp, ours and the best STE baseline on one window, per ours-cell."""
    groups, panels_all = sr_groups(st, setting), []
    ours_cells = sorted({k[1:] for k in groups if st.method_of.get(k[0]) == st.ours})
    if not ours_cells:
        return None
    w, a, e = ours_cells[0]
    ours = st.default_variant(st.ours, [k[0] for k in groups if k[1:] == (w, a, e)])
    ste = best_ste(st, setting, (w, a, e))
    fp = _fp_row(st, setting, e)
    fp_lab = fp[0] if fp else None
    picks = ([fp] if fp else []) + [(lab, groups[(lab, w, a, e)]) for lab in (ours, ste) if lab]
    runs = [(lab, g, _median_run(st, g)) for lab, g in picks]
    runs = [(lab, g, r) for lab, g, r in runs if r]
    if not runs:
        return None
    first = st.dir / "runs" / runs[0][2]
    panels_all.append({"title": "HR", "image": str(first / "sr_crop_hr.png")})
    panels_all.append({"title": "bicubic", "image": str(first / "sr_crop_bicubic.png")})
    for lab, g, r in runs:
        p = dict(zip(g["run_ids"], g["psnr"]))[r]
        panels_all.append({"title": f"{st.display(lab)}\n({p:.2f} dB)",
                           "image": str(st.dir / "runs" / r / "sr_crop.png")})
    name = f"sr_crops_{setting_slug(st, setting)}"
    spec = {"kind": "images", "name": name, "panels": panels_all, "ncols": len(panels_all),
            "width": figure_width(st),
            "title": f"Super-resolution crops, {st.setting_name(setting)}, "
                     f"{cell_name(w, a, e)}"}
    return make_figure(name, spec, "The same window (centre of the first test image of "
                  f"{test_set(setting)}) from the HR image, its bicubic upscaling, and the "
                  f"deployed {st.display(fp_lab) if fp_lab else 'fp'}, {st.display(ours)} and "
                  f"best STE baseline ({st.display(ste) if ste else 'none'}) networks, each "
                  "the seed with the median final PSNR of its row; the dB in each title is "
                  "that run's PSNR on the whole test set.", {})


# --------------------------------------------------------------------------- sections

def sr_table_blocks(st: StudyRecords) -> list:
    out: list = []
    for s in sr_settings(st):
        out.append(f"{st.setting_name(s)} (scale x{_ident(s).get('sr.scale')}); test set: "
                   f"{test_set(s)}.")
        out.append("")
        for e in sorted({c[2] for c in _cells(st, s)}):
            out.append(main_table(st, s, e))
        out += design.sr_design_lines(st, s, [g["p"] for g in sr_groups(st, s).values()],
                                      [t for _, t in sr_tests(st, s)])
        if st.ours:
            out += [comparison_table(st, s), ablation_table(st, s)]
    return out


def sr_statistics_lines(st: StudyRecords) -> list[str]:
    """The Statistical methods section's super-resolution bullet ([] without SR runs)."""
    sizes = {s: sum(math.isfinite(t.cmp.p) for _, t in sr_tests(st, s)) for s in sr_settings(st)}
    if not sizes:
        return []
    listed = ", ".join(f"{n} tests in {st.setting_name(s)}" for s, n in sizes.items())
    return [f"- Super-resolution: final deployed PSNR (dB) and SSIM on Y per seed; "
            f"{st.ours_name or 'ours'} against each baseline per cell, Benjamini-Hochberg "
            f"adjusted over the setting's super-resolution comparisons ({listed}); the "
            f"same verdict rule decides."]


def sr_figure_blocks(st: StudyRecords) -> list:
    out: list = []
    for s in sr_settings(st):
        psnr = curves_figure(st, s)
        every = curves_figure(st, s, all_rows=True) if psnr and psnr.spec["context_rows"] \
            else None
        out += [f for f in (psnr, every, final_figure(st, s), crops_figure(st, s))
                if f is not None]
    return out


# --------------------------------------------------------------------------- the answer

def sr_answer(st: StudyRecords, q) -> tuple[str, list[str]]:
    """Ours against the STE baselines on SR, cell by cell, in dB with 95% intervals."""
    if not sr_settings(st):
        return f"{NOT_ANSWERED}: the study has no super-resolution runs.", []
    items, cmps = [], []
    for s in sr_settings(st):
        by_cell: dict[tuple, list] = {}
        for r, t in sr_tests(st, s):
            if st.method_of.get(r["baseline"]) in STE_METHODS:
                by_cell.setdefault(r["cell"], []).append({**r, "test": t})
        for cell, rs in sorted(by_cell.items()):
            cmps += [r["test"] for r in rs]
            best = max(rs, key=lambda r: r["b"].mean)
            items.append(f"{where(st, s, cell)}: {st.display(best['ours'])} "
                         f"{stats.fmt_summary(best['a'])} dB vs the best STE baseline "
                         f"{st.display(best['baseline'])} {stats.fmt_summary(best['b'])} dB, "
                         f"difference in dB {best['test'].fmt()}; against every STE baseline "
                         "(dB): " + "; ".join(f"{st.display(r['baseline'])} "
                                              f"{r['cmp'].diff:+.2f}" for r in rs) + ".")
    if not items:
        return (f"{NOT_ANSWERED}: no SR cell has both {st.ours_name} and an STE baseline "
                f"({', '.join(STE_METHODS)}).", [])
    summary = tally(cmps, st.ours_name, "the STE baseline")
    text = (f"Final deployed test PSNR (Y) of {st.ours_name} minus the STE baselines at the "
            f"same budget and bits, over {plural(len(cmps), 'comparison')}: {summary}. The test "
            "sets are named in the Super-resolution section (the offline default is "
            "a scikit-image stand-in, not Set5/Set14).")
    return text, bullets(items, "the super-resolution comparison tables")
