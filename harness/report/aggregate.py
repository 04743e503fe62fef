"""Across the cells of a setting, in the manner of rliable (Agarwal et al., NeurIPS 2021).

Data flow: the final deployed accuracies of the included runs (``st.groups``), per row and
cell -> harness.report.stats' stratified-bootstrap aggregates (each cell's seeds resampled on their
own):

- ``aggregate_rows``: per row, the interquartile mean (IQM) of all its runs over every cell
  it ran, with a 95% interval; against ours, on the cells both ran, both IQMs and the
  probability of improvement P(ours > row) (per cell the share of run pairs ours wins,
  averaged over the cells) with its 95% interval;
- ``aggregate_table`` and ``profile_figure`` (performance profiles: the share of runs above
  each accuracy, one panel per W/A pair, pooled over its budgets, with the rows that ran
  all of them).

Rows run different cells (a 1-bit-only method has no 2-bit cell), so IQMs over different
cell sets are not compared with each other: ours is compared with a row on the cells both
ran. Accuracies are on the same scale in every cell of a setting (the same test set), so
they are pooled without normalisation. Cells with fewer than 2 runs of a row are left out
(the bootstrap resamples within a cell).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.report import stats, style
from harness.report.figure import Figure, figure_width, make_figure
from harness.report.load import StudyRecords, cached_per_setting, cell_name
from harness.report.table import Table, plural
from harness.report.tables import setting_slug


def _samples(st: StudyRecords, setting: str, label: str, cells) -> list[list[float]]:
    return [st.group(setting, label, c)["acc"] for c in cells]


def _usable_cells(st: StudyRecords, setting: str, label: str) -> list:
    return [c for c in st.cells(setting, included_only=True)
            if st.group(setting, label, c)["summary"].n >= 2]


@cached_per_setting
def aggregate_rows(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    labels = st.labels(setting)
    ours = st.default_variant(st.ours, labels) if st.ours else None
    mine = _usable_cells(st, setting, ours) if ours else []
    out = []
    for lab in labels:
        cells = _usable_cells(st, setting, lab)
        if not cells:
            continue
        samples = _samples(st, setting, lab, cells)
        iqm, ci = stats.aggregate_iqm(samples)
        row = {"label": lab, "cells": cells, "runs": sum(len(x) for x in samples),
               "iqm": iqm, "ci": ci, "shared": [], "poi": None}
        shared = [c for c in cells if c in mine]
        if ours and lab != ours and st.method_of.get(lab) != st.ours and shared:
            a, b = _samples(st, setting, ours, shared), _samples(st, setting, lab, shared)
            poi, poi_ci, _ = stats.probability_of_improvement(a, b)
            row.update(shared=shared, poi=poi, poi_ci=poi_ci,
                       poi_p=stats.poi_permutation_p(a, b),
                       iqm_row_shared=stats.aggregate_iqm(b),
                       iqm_ours_shared=stats.aggregate_iqm(a))
        out.append(row)
    tested = [r for r in out if r["poi"] is not None]
    for r, p in zip(tested, stats.adjust_pvalues([r["poi_p"] for r in tested])):
        r["poi_p_adj"] = p
        r["poi_family"] = len(tested)
        r["poi_decision"] = poi_decision(r)
    return out


def poi_decision(r: dict[str, Any]) -> str:
    """"above" (the 95% interval of P(ours > row) lies above 0.5 and its permutation p,
    Benjamini-Hochberg adjusted over the setting's probabilities of improvement, is below
    ALPHA), "below" (likewise under 0.5) or "undecided"."""
    ci, p = r.get("poi_ci"), r.get("poi_p_adj", float("nan"))
    if ci is None or not p < stats.ALPHA:
        return "undecided"
    return "above" if ci[0] > 0.5 else "below" if ci[1] < 0.5 else "undecided"


POI_WORDS = {"above": "P(A>B) interval above 0.5", "below": "P(A>B) interval below 0.5",
             "undecided": "undecided"}


def _cells_text(cells) -> str:
    pairs = sorted({c[:2] for c in cells})
    n_budgets = len({c[2] for c in cells})
    return ", ".join(cell_name(*p) for p in pairs) + f" × {n_budgets} budget" + (
        "s" if n_budgets > 1 else "")


def _iqm_text(v: float, ci) -> str:
    return f"{v:.2f} {stats.fmt_interval(ci)}" if ci else f"{v:.2f}"


def _aggregate_data(st: StudyRecords, setting: str, r: dict[str, Any]) -> dict[str, Any]:
    cmp_ = r["poi"] is not None
    return {"setting": st.setting_labels[setting], "row": r["label"],
            "name": st.display(r["label"]),
            "cells": ";".join(cell_name(*c) for c in r["cells"]), "runs": r["runs"],
            "iqm": r["iqm"], "iqm_low": r["ci"][0] if r["ci"] else None,
            "iqm_high": r["ci"][1] if r["ci"] else None, "shared_cells": len(r["shared"]),
            "iqm_row_shared": r["iqm_row_shared"][0] if cmp_ else None,
            "iqm_ours_shared": r["iqm_ours_shared"][0] if cmp_ else None,
            "p_improvement": r["poi"] if cmp_ else None,
            "p_improvement_low": r["poi_ci"][0] if cmp_ and r["poi_ci"] else None,
            "p_improvement_high": r["poi_ci"][1] if cmp_ and r["poi_ci"] else None,
            "p_permutation": r["poi_p"] if cmp_ else None,
            "p_adj": r["poi_p_adj"] if cmp_ else None,
            "decision": r["poi_decision"] if cmp_ else None}


def _aggregate_notes(st: StudyRecords, setting: str, rows_: list[dict[str, Any]],
                     oname: str) -> list[str]:
    tested = [r for r in rows_ if r["poi"] is not None]
    notes = [f"IQM: interquartile mean of the final deployed accuracy (%) of every run of the "
             f"row over the cells it ran (cells with at least 2 seeds); 95% percentile "
             f"interval from the stratified bootstrap (each cell's seeds resampled on their "
             f"own, {stats.AGG_RESAMPLES} resamples, fixed seed), as rliable computes it. "
             f"IQMs over different cells are not comparable: {oname} and each row are "
             f"compared on the cells both ran (shared)."]
    if tested:
        notes.append(
            f"P({oname} > row): per shared cell the share of run pairs {oname} wins (ties "
            f"½), averaged over the cells, with its stratified-bootstrap interval; 0.5 is a "
            f"tie. p (adj.): the chance of a P this far from 0.5 if each cell's runs were "
            f"exchangeable (runs permuted within each cell), Benjamini-Hochberg adjusted over "
            f"the {plural(len(tested), 'probability', 'probabilities')} of improvement of this "
            f"table. \"{POI_WORDS['above']}\": the interval lies above 0.5 and p (adj.) < "
            f"{stats.ALPHA:g} (\"below\" likewise); anything else is undecided.")
    if any(r["poi_ci"] and r["poi_ci"][0] == r["poi_ci"][1] for r in tested):
        notes.append("An interval of zero width (e.g. [1.00, 1.00]): every bootstrap resample "
                     "gave the same value, as happens when one row wins every run pair of "
                     "few runs; it is not certainty: p (adj.) says how often chance gives as "
                     "much.")
    ns = {st.group(setting, r["label"], c)["summary"].n for r in rows_ for c in r["cells"]}
    if min(ns) <= stats.FEW_SEEDS:
        notes.append(f"With {min(ns)} seeds per cell the bootstrap sees few distinct "
                     "resamples: these intervals are narrower than the uncertainty is.")
    return notes


def aggregate_table(st: StudyRecords, setting: str) -> Table | None:
    rows_ = aggregate_rows(st, setting)
    if not rows_:
        return None
    oname = st.ours_name or "ours"
    rows = []
    for r in rows_:
        cmp_ = r["poi"] is not None
        rows.append([st.display(r["label"]), _cells_text(r["cells"]), str(r["runs"]),
                     _iqm_text(r["iqm"], r["ci"]),
                     str(len(r["shared"])) if cmp_ else "",
                     _iqm_text(*r["iqm_row_shared"]) if cmp_ else "",
                     _iqm_text(*r["iqm_ours_shared"]) if cmp_ else "",
                     _iqm_text(r["poi"], r["poi_ci"]) if cmp_ else "",
                     stats.fmt_p(r["poi_p_adj"]) if cmp_ else "",
                     POI_WORDS[r["poi_decision"]] if cmp_ else ""])
    notes = _aggregate_notes(st, setting, rows_, oname)
    name = f"aggregate_{setting_slug(st, setting)}"
    caption = f"Across cells: IQM and probability of improvement, {st.setting_name(setting)}"
    tex = Table(name, caption, ["Method", "IQM [95% CI]", f"P({oname} > row) [95% CI]",
                                "p (adj.)"],
                [[r[0], r[3], r[7], r[8]] for r in rows], n_label_cols=1, wide=True,
                wrap=True, notes=[notes[0] + " The cells each row ran: in the markdown and CSV "
                                  "versions of this table."] + notes[1:])
    return Table(name, caption,
                 ["Method", "cells", "runs", "IQM [95% CI]", "shared cells", "IQM row (shared)",
                  f"IQM {oname} (shared)", f"P({oname} > row) [95% CI]", "p (adj.)",
                  "Conclusion"], rows,
                 pd.DataFrame([_aggregate_data(st, setting, r) for r in rows_]), notes=notes,
                 n_label_cols=2, left_extra=(-1,), tex=tex)


# --------------------------------------------------------------------------- profiles

def _profile_panel(st: StudyRecords, setting: str, w: int, a: int, styles) -> dict | None:
    cells = [c for c in st.cells(setting, included_only=True) if c[:2] == (w, a)]
    rows = {}
    for lab in st.labels(setting):
        if st.method_of.get(lab) == "fp":
            continue
        samples = _samples(st, setting, lab, cells)
        if all(len(x) for x in samples):  # every budget of the pair
            rows[lab] = samples
    if len(rows) < 2:
        return None
    allv = np.concatenate([np.asarray(x, float) for s in rows.values() for x in s])
    # the exact staircase: every run's accuracy and a hair below it, and the two ends
    eps = 1e-6 * max(1.0, float(np.ptp(allv)))
    taus = np.unique(np.concatenate([allv, allv - eps, [max(0.0, allv.min() - 1),
                                                        min(100.0, allv.max() + 1)]]))
    iqm = {lab: stats.aggregate_iqm(s)[0] for lab, s in rows.items()}
    means = {lab: v if np.isfinite(v) else float(np.mean(np.concatenate(rows[lab])))
             for lab, v in iqm.items()}
    full = style.highlight(st, setting, means)
    lines = []
    for lab in sorted(rows, key=lambda x: x in full):  # context first
        frac, lo, hi = stats.performance_profile(rows[lab], taus)
        look = style.line_style(styles, lab, lab in full)
        lines.append({"x": taus, "mean": frac * 100, "lo": None if lo is None else lo * 100,
                      "hi": None if hi is None else hi * 100, **look})
    return {"title": f"{cell_name(w, a)}, {len(cells)} budget" + ("s" if len(cells) > 1 else ""),
            "lines": lines, "ylim": (-2, 102), "full": full, "context": len(full) < len(rows)}


def profile_figure(st: StudyRecords, setting: str) -> Figure | None:
    styles = style.row_styles(st)
    pairs = sorted({c[:2] for c in st.cells(setting, included_only=True)})
    panels = [p for p in (_profile_panel(st, setting, w, a, styles) for w, a in pairs) if p]
    if not panels:
        return None
    full = [lab for lab in st.order if any(lab in p["full"] for p in panels)]
    legend = [style.legend_entry(styles, lab) for lab in full]
    if any(p["context"] for p in panels):
        legend.append(style.CONTEXT_LEGEND)
    sl = st.setting_name(setting)
    name = f"profile_{setting_slug(st, setting)}"
    spec = {"kind": "curves", "name": name, "panels": panels, "legend": legend,
            "width": figure_width(st), "int_x": False, "sharex": False,
            "xlabel": "final deployed test accuracy τ (%)",
            "ylabel": "runs with accuracy > τ (%)", "title": f"Performance profiles, {sl}"}
    lead = (f"Performance profiles ({sl}): the share of a row's runs whose final deployed "
            "accuracy exceeds τ, pooled over the budgets of each W/A cell (rows that ran all of "
            "them); ours and the row with the highest IQM among the others in their styles. A "
            "curve to the right is better everywhere; crossing curves mean the ranking depends "
            "on the threshold.")
    return make_figure(name, spec, lead, {
        "band": "Shaded bands: 95% stratified-bootstrap intervals.",
        "context": "Thin grey lines: the other rows."})


def aggregate_blocks(st: StudyRecords, setting: str) -> list:
    return [b for b in (aggregate_table(st, setting), profile_figure(st, setting)) if b]
