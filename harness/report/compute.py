"""The comparison at equal compute: a table, a figure and the reviewer answer's numbers.

Data flow: timing.py turns the records' per-epoch times into each row's accuracy once it
had used the cheapest row's whole budget (T*) per cell; verdicts.py tests ours against
every other row there (kind ``equal_compute``, in the setting's one family). This module
lays those out:

- ``equal_compute_table``: per cell, T*, every row's budget time, the epoch it had reached
  by T*, its accuracy then (read off its curve, marked †, t-interval clipped to [0, 100])
  and its shorter-budget runs that fit in T*; ours minus the row with the verdict;
- ``time_figure``: deployed accuracy against cumulative training time per cell, T* drawn
  as a vertical line and each highlighted row's accuracy at T* as a hollow mark.

Times are the records' wall-clock training times (evaluation excluded); the caption says
when they come from a CPU the local executor shared between several runs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.report import stats, style, timing, verdicts
from harness.report.figure import (
    BAND_CLAUSE,
    CONTEXT_CLAUSE,
    Figure,
    budgets,
    clipped_clause,
    cut,
    figure_width,
    first_shown,
    fp_clause,
    grid,
    legend_for,
    make_figure,
    panel_cells,
    panel_lines,
    ylim,
    zoom_note,
)
from harness.report.load import StudyRecords, cell_name
from harness.report.table import (
    CLIPPED,
    Table,
    clipped_note,
    fmt_cell,
    fmt_ci,
    fmt_diff,
    grouped,
    n_epochs,
    plural,
)
from harness.report.tables import rule_note, setting_slug

NOT_REACHED = "not reached"   # a seed had not finished one epoch by T*


def shared_hardware_note(st: StudyRecords, kind: str) -> str:
    """What the reader must know about CPU wall-clock times from the local executor."""
    conc = (st.spec.get("executor") or {}).get("local_concurrency")
    if kind != "CPU":
        return ""
    if isinstance(conc, int) and conc > 1:
        return (f" These are CPU wall-clock times on shared hardware: the local executor ran "
                f"up to {conc} runs at once on the machine, so they are noisy and longer than "
                "on an idle machine.")
    return " These are CPU wall-clock times; other work on the machine lengthens them."


def _unit(cells: list[dict[str, Any]]) -> tuple[str, float]:
    kinds = {c["kind"] for c in cells}
    kind = "GPU" if kinds == {"GPU"} else "CPU"
    top = max((r["budget_time"] for c in cells for r in c.get("rows", [])), default=0.0)
    return timing.time_unit(top, kind)


def _epochs_text(r: dict[str, Any], budget: int) -> str:
    ep = r["epochs_reached"]
    if r["not_reached"]:
        return f"none by {r['not_reached']} of {plural(len(r['runs']), 'seed')}"
    if not ep:
        return "none"
    if r["full"]:
        return f"{budget} (full)"
    span = f"{min(ep)}" if min(ep) == max(ep) else f"{min(ep)}–{max(ep)}"
    return f"{span} of {budget}"


def _trained_text(r: dict[str, Any]) -> str:
    tw = r["trained_within"]
    return f"{tw[0]} ep: {fmt_cell(tw[1])}" if tw else "–"


def _row_test(st: StudyRecords, setting: str, ours: str | None, lab: str, cell,
              have: set) -> verdicts.Test | None:
    if ours is None or ours not in have or lab == ours or lab not in have \
            or st.method_of.get(lab) == st.ours:
        return None
    return verdicts.test(st, setting, (ours, cell), (lab, cell), kind=verdicts.EQUAL_COMPUTE)


def equal_compute_table(st: StudyRecords, setting: str) -> Table | None:
    cells = timing.equal_compute_cells(st, setting)
    usable = [c for c in cells if not c["skipped"]]
    if not usable:
        return None
    unit = _unit(usable)
    ours = st.default_variant(st.ours, st.labels(setting)) if st.ours else None
    oname = st.display(ours) if ours else "ours"
    rows, data, bold, tex_rows, tests = [], [], set(), [], []
    for c in usable:
        cell, t_star = c["cell"], c["t_star"]
        have = {r["label"] for r in c["rows"] if r["values"]}
        for r in sorted(c["rows"], key=lambda r: st.order.index(r["label"])):
            s, lab = r["summary"], r["label"]
            t = _row_test(st, setting, ours, lab, cell, have)
            tests += [t] if t else []
            acc = (NOT_REACHED if r["not_reached"] else
                   fmt_cell(s) + ("" if r["full"] else " †"))
            cheapest = f"{fmt_t(t_star, c, unit)} ({st.display(c['cheapest'])})"
            rows.append([cell_name(*cell), cheapest, st.display(lab),
                         fmt_t(r["budget_time"], c, unit),
                         f"×{r['budget_time'] / t_star:.2f}", _epochs_text(r, cell[2]), acc,
                         fmt_ci(s), _trained_text(r),
                         fmt_diff(t.cmp) if t else "", stats.fmt_p(t.p_adj) if t else "",
                         t.verdict(oname, st.display(lab)) if t else ""])
            tex_rows.append((f"{cell_name(*cell)}, T* = {fmt_t(t_star, c, unit)}",
                             [st.display(lab), f"×{r['budget_time'] / t_star:.2f}",
                              _epochs_text(r, cell[2]), acc, fmt_diff(t.cmp) if t else "",
                              stats.fmt_p(t.p_adj) if t else ""]))
            if t and t.decision in ("higher", "lower"):
                bold.add((len(tex_rows) - 1, 4))
            data.append(_data_row(st, setting, c, r, t))
    notes = _table_notes(st, setting, cells, usable, oname, unit, rows, tests)
    name = f"equal_compute_{setting_slug(st, setting)}"
    caption = f"Accuracy at equal training time, {st.setting_name(setting)}"
    tex_rows, groups = grouped(tex_rows)
    tex = Table(name, caption, ["Method", "time × T*", "epochs by T*", "acc. at T*",
                                f"Δ ({oname} − row)", "p (adj.)"], tex_rows, bold=bold,
                n_label_cols=1, groups=groups, wide=True, wrap=True,
                notes=[notes[0] + (" Bold Δ: significant under the report's verdict rule."
                                   if bold else "")]
                + [n for n in notes[1:] if n != clipped_note()])
    return Table(name, caption, ["Cell", "T* (cheapest)", "Method", "budget time",
                                 "× T*", "epochs by T*", "accuracy at T*", "95% CI",
                                 "trained within T*", f"Δ ({oname} − row)", "p (adj.)",
                                 "Verdict"], rows, pd.DataFrame(data), notes=notes,
                 n_label_cols=3, left_extra=(-1,), tex=tex)


def _data_row(st: StudyRecords, setting: str, c: dict[str, Any], r: dict[str, Any],
              t: verdicts.Test | None) -> dict[str, Any]:
    """The CSV row (seconds, ids) of one row of one cell."""
    s, tw, cell = r["summary"], r["trained_within"], c["cell"]
    return {"setting": st.setting_labels[setting], "w_bits": cell[0], "a_bits": cell[1],
            "epochs": cell[2], "row": r["label"], "name": st.display(r["label"]),
            "t_star_s": c["t_star"], "cheapest": c["cheapest"],
            "budget_time_s": r["budget_time"], "epoch_time_s": r["epoch_time"],
            "full": r["full"], "epochs_reached": ";".join(map(str, r["epochs_reached"])),
            "n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci[0] if s.ci else None,
            "ci_high": s.ci[1] if s.ci else None, "ci_clipped": s.clipped,
            "trained_within_epochs": tw[0] if tw else None,
            "trained_within_mean": tw[1].mean if tw else None,
            "diff_ours_minus_row": t.cmp.diff if t else None,
            **verdicts.test_data(t),
            "decision": t.decision if t else None, "hardware": c["hardware"][0],
            "device_kind": c["kind"]}


def fmt_t(seconds: float, cell: dict[str, Any], unit: tuple[str, float]) -> str:
    return timing.fmt_time(seconds, cell["kind"], unit)


def _table_notes(st, setting, cells, usable, oname, unit, rows, tests) -> list[str]:
    kind = usable[0]["kind"]
    design = verdicts.design_note(tests)
    notes = [f"T*: the training time of the cheapest row's whole budget in the cell (the "
             f"records' per-epoch training times summed, evaluation excluded, mean over "
             f"seeds), in {unit[0]}. Accuracy at T*: the deployed test accuracy at the last "
             f"epoch each run had finished within T* (+{timing.TIME_TOLERANCE:.0%} for timing "
             f"noise); † read off its curve: its schedule (learning rate, temperature) had not "
             f"finished, so a run trained for that many epochs would do better. Trained "
             f"within T*: the row's shorter budget whose whole run fits in T*. Δ: {oname} "
             f"minus the row at T*" + (f", {design}. " if design else ". ")
             + rule_note(st, setting)
             + shared_hardware_note(st, kind)]
    if kind == "GPU":
        notes.append("GPU time counts one GPU per run (the records do not say how many a "
                     "multi-GPU run used).")
    if any(CLIPPED in r[7] for r in rows):
        notes.append(clipped_note())
    caveat = timing.spread_caveat(st, setting)
    if caveat:
        notes.append(caveat)
    if any(r[6] == NOT_REACHED for r in rows):
        notes.append(f"{NOT_REACHED}: a seed of the row had not finished one epoch by T*; the "
                     "row's other seeds alone would be a biased sample (its fastest runs), so "
                     "it has no accuracy at T* and is not compared there.")
    notes += [f"{cell_name(*c['cell'])}: not compared, {c['skipped']}." for c in cells
              if c["skipped"]]
    return notes


# --------------------------------------------------------------------------- figure

def _time_panel(st: StudyRecords, setting: str, c: dict[str, Any], styles, unit,
                get) -> tuple[dict[str, Any], list[str], bool]:
    """(panel, rows in full, any context rows) of one cell: the curves, T* and each
    highlighted row's accuracy at T* (rows whose whole budget fits have none)."""
    cell = c["cell"]
    lines, full, context = panel_lines(st, setting, cell, styles, False, get)
    start = first_shown(cell[2])
    lines = [cut(ln, start) for ln in lines]
    t_star = c["t_star"] / unit[1]
    marks = [{"x": t_star, "y": r["summary"].mean, "color": styles[r["label"]]["color"],
              "label": r["label"]} for r in c["rows"]
             if r["label"] in full and r["summary"].n and not r["full"]]
    return ({"title": f"{cell_name(*cell[:2])}, {n_epochs(cell[2])}", "lines": lines,
             "ylim": ylim(lines), "from_epoch": start + 1,
             "vlines": [{"x": t_star, "color": "0.35", "ls": (0, (4, 2))}], "marks": marks},
            full, bool(context))


def time_figure(st: StudyRecords, setting: str) -> Figure | None:
    cells = {c["cell"]: c for c in timing.equal_compute_cells(st, setting)}
    usable = [c for c in cells.values() if not c["skipped"]]
    if not usable:
        return None
    styles = style.row_styles(st)
    unit = _unit(usable)

    def get(lab, cell):
        cur = timing.time_curve(st, setting, lab, cell)
        return cur and {**cur, "x": np.asarray(cur["x"]) / unit[1],
                        **{k: [x / unit[1] for x in cur[k]] for k in ("clip_hi", "clip_lo")}}

    panels, full_all, context_any = [], [], False
    for cell in panel_cells(st, setting):
        if cells.get(cell) and not cells[cell]["skipped"]:
            panel, full, context = _time_panel(st, setting, cells[cell], styles, unit, get)
            panels.append(panel)
            full_all += [lab for lab in full if lab not in full_all]
            context_any |= context
    return _time_figure(st, setting, panels, full_all, context_any, styles, unit,
                        usable[0]["kind"]) if panels else None


def _time_figure(st: StudyRecords, setting: str, panels, full_all, context_any, styles, unit,
                 kind: str) -> Figure:
    sl = st.setting_name(setting)
    width = figure_width(st)
    name = f"equal_compute_{setting_slug(st, setting)}"
    legend = legend_for(st, styles, full_all, context_any) + [
        {"label": "T*: the cheapest row's full budget", "color": "0.35", "ls": (0, (4, 2))}]
    if any(p["marks"] for p in panels):
        legend.append({"label": "mean accuracy at T* (each run read off at T*)",
                       "color": "0.35", "ls": "", "marker": "o", "mfc": "white"})
    spec = {"kind": "curves", "name": name, "panels": panels, "int_x": False, "width": width,
            **{**grid(len(panels), len(budgets(st, setting)), width), "sharex": False},
            "legend": legend, "xlabel": f"cumulative training time ({unit[0]})",
            "ylabel": "deployed test accuracy (%)",
            "title": f"Deployed test accuracy against training time, {sl}"}
    marked = [st.display(lab) for lab in st.order
              if any(m["label"] == lab for p in panels for m in p["marks"])]
    lead = (f"Deployed test accuracy against cumulative training time ({sl}, {unit[0]}; one "
            f"point per epoch, mean time and mean accuracy over seeds), one panel per W/A cell "
            f"and budget: {style.highlighted_rows(st)} and fp in their styles."
            + shared_hardware_note(st, kind))
    return make_figure(name, spec, lead, {
        "band": BAND_CLAUSE, "clipped": clipped_clause(), "context": CONTEXT_CLAUSE,
        "fp": fp_clause(),
        "tstar": "The dashed vertical line is T*, the time the cheapest row's whole budget "
                 "took.",
        "hollow": f"Hollow circles ({', '.join(marked)}): the mean over seeds of each run's "
                  "accuracy at the last epoch it had finished within T* (each run read at its "
                  "own times, so a circle can sit off the curve of mean time against mean "
                  "accuracy); a row whose whole budget fits in T* has none (its curve ends "
                  "there)."}, zoom_note(panels))


def equal_compute_blocks(st: StudyRecords, setting: str) -> list:
    """The section's blocks for one setting: the figure, then the table."""
    out = [b for b in (time_figure(st, setting), equal_compute_table(st, setting)) if b]
    skipped = [c for c in timing.equal_compute_cells(st, setting) if c["skipped"]]
    if not out and skipped:
        out = [f"{st.setting_name(setting)}: no cell can be compared at equal compute: "
               + "; ".join(f"{cell_name(*c['cell'])} {c['skipped']}" for c in skipped) + ".",
               ""]
    return out
