"""Figure builders: convergence (highlighted rows, every row), the methods' internal
metrics, the final accuracy of every seed, and accuracy against the epoch budget.

Data flow: a builder reads a ``StudyRecords`` (load.py) for one setting and returns
``Figure``s (figure.py: a plots spec, drawn at the study's figure width, and a caption built
from the artists the spec draws). render.py hands every spec to ``plots.Renderer``
first, so forked processes draw while the tables are computed.

render.SECTIONS names the builders at the end of this module (study, setting) -> [Figure];
to add a figure to the report, write its builder here and add a ``Section``. The rules
every figure follows are in figure.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.report import layout, style
from harness.report.figure import (
    BAND_CLAUSE,
    CONTEXT_CLAUSE,
    Figure,
    band_line,
    budgets,
    clipped_clause,
    curve,
    cut,
    figure_width,
    first_shown,
    fp_clause,
    grid,
    legend_for,
    make_figure,
    panel_cells,
    panel_lines,
    single_seed_note,
    thinning_note,
    ylim,
    zoom_note,
)
from harness.report.load import StudyRecords, cell_name
from harness.report.table import n_epochs
from harness.report.tables import budget_rows, setting_slug

# The one derived companion panel: a declared continuous-state (not deployable) accuracy
# minus the deployed one, drawn right after that accuracy.
CONTINUOUS_ACC = "test_acc_continuous"
GAP_PANEL = ("gap", "continuous − deployed acc (points)")
GAP_BOUNDS = (-100.0, 100.0)


# --------------------------------------------------------------------------- convergence

def _curve_panels(st: StudyRecords, setting: str, styles, all_rows: bool, get_curve,
                  title_of) -> tuple[list[dict], list[str], bool]:
    """One panel per cell of ``panel_cells``: (panels, rows in full, any context rows)."""
    panels, full_all, context_any = [], [], False
    for cell in panel_cells(st, setting):
        lines, full, context = panel_lines(st, setting, cell, styles, all_rows, get_curve)
        if not lines:
            continue
        start = first_shown(cell[2])
        lines = [cut(ln, start) for ln in lines]
        full_all += [lab for lab in full if lab not in full_all]
        context_any |= bool(context)
        panels.append({"title": title_of(cell), "lines": lines, "ylim": ylim(lines),
                       "from_epoch": start + 1})
    return panels, full_all, context_any


def _convergence(st: StudyRecords, setting: str, all_rows: bool = False) -> Figure | None:
    """Deployed accuracy per epoch, one panel per (W/A pair, budget)."""
    styles = style.row_styles(st)
    sl = st.setting_name(setting)
    width = figure_width(st)

    def get(lab, cell):
        return curve(st, setting, lab, cell)

    panels, full, context = _curve_panels(
        st, setting, styles, all_rows, get, lambda c: f"{cell_name(*c[:2])}, {n_epochs(c[2])}")
    if not panels:
        return None
    name = f"convergence{'_all' if all_rows else ''}_{setting_slug(st, setting)}"
    spec = {"kind": "curves", "name": name, "panels": panels, "width": width,
            **grid(len(panels), len(budgets(st, setting)), width),
            "legend": legend_for(st, styles, full, context), "context_rows": context,
            "xlabel": "epoch", "ylabel": "deployed test accuracy (%)",
            "title": f"Deployed test accuracy per epoch, {sl}"
                     + (", every row" if all_rows else "")}
    what = ("every row in its own colour, marker and dash (the same in every figure of this "
            "report), mean over seeds, without bands (they are in the convergence figure)."
            if all_rows else
            f"{style.highlighted_rows(st)}, mean over seeds.")
    lead = (f"Deployed test accuracy per epoch ({sl}), one panel per W/A cell and epoch "
            f"budget: {what}")
    tail = " ".join(x for x in (
        "A shorter budget's curve is not the start of a longer one's: the schedules differ."
        if len(budgets(st, setting)) > 1 else "", zoom_note(panels),
        thinning_note(st, setting), single_seed_note(st, setting)) if x)
    return make_figure(name, spec, lead, {"band": BAND_CLAUSE, "clipped": clipped_clause(),
                                          "context": CONTEXT_CLAUSE, "fp": fp_clause()}, tail)


# --------------------------------------------------------------------------- internals

def _panel_defs(st: StudyRecords, has_col) -> list[tuple[str, str, Any]]:
    """(column, title, bounds) per companion panel, in ``st.internal_metrics``' order, the
    derived gap panel right after the continuous-state accuracy when it is logged."""
    defs = []
    for col, (title, bounds) in st.internal_metrics.items():
        bounds = tuple(bounds) if isinstance(bounds, (list, tuple)) else None
        defs.append((col, title, bounds))
        if col == CONTINUOUS_ACC and has_col(col):
            defs.append((GAP_PANEL[0], GAP_PANEL[1], GAP_BOUNDS))
    return defs


def _internal_line(st: StudyRecords, setting: str, lab: str, cell, col: str, bounds):
    """A row's line of one companion panel: the metric, or for the gap panel the
    continuous-state minus the deployed accuracy, mean and band over seeds."""
    if col != GAP_PANEL[0]:
        return curve(st, setting, lab, cell, col, bounds)
    runs = [r for r in st.group(setting, lab, cell)["run_ids"] if CONTINUOUS_ACC in st.metrics[r]]
    if not runs:
        return None
    mats = [st.metrics[r][CONTINUOUS_ACC] - st.metrics[r]["test_acc"] for r in runs]
    n = min(len(m) for m in mats)
    return band_line(np.stack([m[:n] for m in mats]), GAP_BOUNDS)


def _internal_panel(st: StudyRecords, cell, col: str, title: str, bounds, lines: list[dict],
                    several: bool) -> dict[str, Any]:
    """One companion panel (``several``: the study has several cells: the title names it)."""
    start = first_shown(cell[2])
    lines = [cut(ln, start) for ln in lines]
    vals = np.concatenate([np.asarray(ln["mean"], float) for ln in lines])
    vals = vals[np.isfinite(vals)]
    logy = bool(col in st.log_scale and len(vals) and vals.min() > 0
                and vals.max() / vals.min() > 20)
    if len(lines) > 2:  # crowded: lines only (the bands are in the tables' intervals)
        lines = [{**ln, "band": False} for ln in lines]
    return {"title": (f"{cell_name(*cell[:2])}: " if several else "") + title,
            "lines": lines, "logy": logy, "ylim": None if logy else ylim(lines, bounds),
            "from_epoch": start + 1, "cell": cell}


MAX_INTERNAL_ROWS = 4    # more rows of panels: one internals figure per W/A pair


def _internals(st: StudyRecords, setting: str) -> list[Figure]:
    """Companion panels of the internal metrics the methods declare (summary.json
    method_info; ``st.internal_metrics``) at the longest budget: per W/A pair one panel per
    metric (titled with the pair when there are several), one line per row that logs it;
    one figure per pair when together they would need more than MAX_INTERNAL_ROWS rows."""
    styles = style.row_styles(st)

    def has(lab, c, col):
        return any(col in st.metrics[r] for r in st.group(setting, lab, c)["run_ids"])

    longest = budgets(st, setting)[-1] if budgets(st, setting) else None
    keys = [(lab, c) for c in st.cells(setting, True) if c[2] == longest
            for lab in st.labels(setting) if any(has(lab, c, k) for k in st.internal_metrics)]
    if not keys:
        return []
    defs = _panel_defs(st, lambda col: any(has(lab, c, col) for lab, c in keys))
    cells = list(dict.fromkeys(c for _, c in keys))
    panels, shown = [], []
    for cell in cells:
        for col, title, bounds in defs:
            src = CONTINUOUS_ACC if col == GAP_PANEL[0] else col
            lines = []
            for lab in [lab for lab, c in keys if c == cell and has(lab, c, src)]:
                cur = _internal_line(st, setting, lab, cell, col, bounds)
                if cur:
                    lines.append({**cur, **style.line_style(styles, lab, True), "lw": 1.1})
                    shown += [lab] if lab not in shown else []
            if lines:
                panels.append(_internal_panel(st, cell, col, title, bounds, lines, True))
    if not panels:
        return []
    laid, ncols = _cell_rows(panels, figure_width(st))
    if len(cells) == 1 or len(laid) // ncols <= MAX_INTERNAL_ROWS:
        return [_internals_figure(st, setting, panels, shown, longest, styles,
                                  several=len(cells) > 1)]
    return [_internals_figure(st, setting, [p for p in panels if p["cell"] == c], shown,
                              longest, styles, cell=c) for c in cells]


def _cell_rows(panels: list[dict], width: float) -> tuple[list[dict], int]:
    """(panels, columns): each cell's panels start a new row of the grid (blank slots fill
    the last row of a cell), as many columns as fit."""
    per_cell: dict[Any, list[dict]] = {}
    for p in panels:
        per_cell.setdefault(p["cell"], []).append(p)
    ncols = min(max(len(ps) for ps in per_cell.values()), layout.max_cols(width, "curves"))
    out = []
    for ps in per_cell.values():
        out += ps + [{"blank": True}] * (-len(ps) % ncols)
    return out, ncols


def _internals_figure(st: StudyRecords, setting: str, panels: list[dict], shown: list[str],
                      longest: int, styles, several: bool = False, cell=None) -> Figure:
    """The internals figure of ``panels`` (``cell``: of that W/A pair alone)."""
    sl = st.setting_name(setting) + (f", {cell_name(*cell[:2])}" if cell else "")
    name = f"internals_{setting_slug(st, setting)}" + (f"_w{cell[0]}a{cell[1]}" if cell else "")
    width = figure_width(st)
    if not several:  # the cell is in the figure's title, not in every panel's
        panels = [{**p, "title": p["title"].split(": ", 1)[-1]} for p in panels]
    panels, ncols = _cell_rows(panels, width)
    spec = {"kind": "curves", "name": name, "panels": panels, "width": width,
            "ncols": ncols, "xlabel": "epoch",
            "legend": [style.legend_entry(styles, lab) for lab in st.order if lab in shown],
            "title": f"Internal metrics per epoch, {sl}, {n_epochs(longest)}"}
    titles = list(dict.fromkeys(p["title"].split(": ", 1)[-1] for p in panels
                                if not p.get("blank")))
    listed = ", ".join(titles[:-1]) + " and " + titles[-1] if len(titles) > 1 else titles[0]
    gap = (f"The gap panel ({GAP_PANEL[1]}) is the continuous-state (not deployable) accuracy "
           "minus the deployed one." if GAP_PANEL[1] in titles else "")
    lead = (f"Internal metrics the methods declare ({sl}, the {longest}-epoch runs), per "
            f"epoch, for the rows that log them: {listed}; each row of the study in its own "
            f"style, mean over seeds. {gap}")
    return make_figure(name, spec, lead, {
        "band": BAND_CLAUSE,
        "clipped": clipped_clause("the metric's declared range"), "fp": fp_clause(False)},
        " ".join(x for x in (zoom_note(panels), thinning_note(st, setting)) if x))


# --------------------------------------------------------------------------- seeds

def _main_budget(st: StudyRecords, setting: str) -> int:
    """The budget with the most included runs, then the longest."""
    per_budget = st.included[st.included["setting"] == setting]["epochs"].value_counts()
    return int(max(per_budget.index, key=lambda e: (per_budget[e], e)))


def seed_rows(st: StudyRecords, styles, groups: list[tuple[str, dict]]) -> list[dict]:
    """A points panel's rows: (label, group with "values" and its "summary") in order."""
    out = []
    for lab, g in groups:
        sm = g["summary"]
        if sm.n:
            out.append({"color": styles[lab]["color"], "marker": styles[lab]["marker"] or "o",
                        "mfc": styles[lab].get("mfc"), "name": styles[lab]["name"],
                        "seeds": g["values"], "mean": sm.mean,
                        "lo": sm.ci[0] if sm.ci else None, "hi": sm.ci[1] if sm.ci else None})
    return out


SEED_CLAUSES = {"seeds": "Small dots: the seeds.",
                "ci_bar": "Beside them, the mean in the row's marker with its 95% t-interval.",
                "single": "A mean without a bar: a single seed (n = 1)."}


def _seeds(st: StudyRecords, setting: str) -> Figure:
    """Final accuracy of every seed at the main budget, beside the mean and its CI."""
    styles = style.row_styles(st)
    sl = st.setting_name(setting)
    main_e = _main_budget(st, setting)
    panels, clipped = [], False
    for c in [c for c in st.cells(setting, included_only=True) if c[2] == main_e]:
        groups = [(lab, {**st.group(setting, lab, c), "values": st.group(setting, lab, c)["acc"]})
                  for lab in st.labels(setting)]
        clipped |= any(g["summary"].clipped for _, g in groups)
        panels.append({"title": cell_name(*c[:2]), "rows": seed_rows(st, styles, groups)})
    name = f"seeds_{setting_slug(st, setting)}"
    spec = {"kind": "points", "name": name, "panels": panels, "width": figure_width(st),
            "ylabel": "final deployed test accuracy (%)",
            "title": f"Final accuracy per seed, {sl}, {n_epochs(main_e)}"}
    tail = " ".join(x for x in (
        "Intervals that reached past [0, 100] are clipped to it." if clipped else "",
        "The other budgets' seeds are in the budget figure." if _budget_spec(st, setting)
        else "", single_seed_note(st, setting)) if x)
    return make_figure(name, spec, f"Final deployed accuracy of every seed ({sl}, "
                       f"{n_epochs(main_e)}), one column per row (named below it).",
                       SEED_CLAUSES, tail)


# --------------------------------------------------------------------------- budget

def _budget_panel_row(lab: str, mine: list[dict], look: dict[str, Any]) -> dict | None:
    """One row of a budget panel: its trained budgets, and the accuracies read off its
    longest runs' curves."""
    tr = [r for r in mine if r["source"] == "trained"]
    if not tr:
        return None
    longest = max(r["epoch"] for r in tr)
    ro = [r for r in mine if r["source"] == "readoff" and r["from"] == longest]
    return {"label": lab, **look,
            "trained": {
                "x": [r["epoch"] for r in tr], "mean": [r["summary"].mean for r in tr],
                "lo": [r["summary"].ci[0] if r["summary"].ci else None for r in tr],
                "hi": [r["summary"].ci[1] if r["summary"].ci else None for r in tr],
                "clipped": [r["summary"].clipped for r in tr],
                "seeds": [r["values"] for r in tr]},
            "readoff": {"x": [r["epoch"] for r in ro],
                        "mean": [r["summary"].mean for r in ro]}}


def _budget_panel(st: StudyRecords, setting: str, rows_: list[dict], w: int, a: int,
                  styles) -> tuple[list[dict], list[str], bool]:
    """(rows, rows in full, any context rows) of the budget panel of one W/A pair."""
    mine = {lab: [r for r in rows_ if r["row"] == lab and (r["w"], r["a"]) == (w, a)]
            for lab in st.labels(setting)}
    trained = {lab: [r for r in rs if r["source"] == "trained"] for lab, rs in mine.items()}
    # highlighted by the mean at the longest budget each row trained for
    means = {lab: max(tr, key=lambda r: r["epoch"])["summary"].mean
             for lab, tr in trained.items() if tr}
    full = style.highlight(st, setting, means)
    prow = []
    for lab in sorted(means, key=lambda x: x in full):  # context first, then in full
        look = ({**style.line_style(styles, lab, True), "lw": 1.1} if lab in full else
                {**style.CONTEXT, "marker": "o"})
        p = _budget_panel_row(lab, mine[lab], look)
        if p is not None:
            prow.append(p)
    return prow, full, len(full) < len(means)


def _budget_spec(st: StudyRecords, setting: str):
    rows_ = budget_rows(st, setting)
    if not rows_:
        return None
    styles = style.row_styles(st)
    bs = sorted({r["epoch"] for r in rows_})
    panels, full_all, context_any = [], [], False
    for w, a in sorted({(r["w"], r["a"]) for r in rows_}):
        prow, full, context = _budget_panel(st, setting, rows_, w, a, styles)
        if any(len(p["trained"]["x"]) > 1 for p in prow):
            panels.append({"title": cell_name(w, a), "rows": prow, "budgets": bs})
            full_all += [lab for lab in full if lab not in full_all]
            context_any |= context
    if not panels:
        return None
    legend = legend_for(st, styles, full_all, context_any)
    if any(r["readoff"]["x"] for p in panels for r in p["rows"]):
        legend.append({"label": "read off the longest runs (not trained for that budget)",
                       "color": "0.4", "ls": (0, (3, 2)), "marker": "o", "mfc": "white"})
    return {"kind": "budget", "name": f"budget_{setting_slug(st, setting)}",
            "panels": panels, "legend": legend, "width": figure_width(st),
            "xlabel": "epoch budget", "ylabel": "final deployed test accuracy (%)",
            "title": f"Accuracy vs epoch budget, {st.setting_name(setting)}"}


def _budget(st: StudyRecords, setting: str) -> Figure | None:
    spec = _budget_spec(st, setting)
    if spec is None:
        return None
    sl = st.setting_name(setting)
    lead = (f"Final accuracy vs epoch budget ({sl}): markers on lines in the row's style are "
            f"runs trained for that budget; {style.highlighted_rows(st)} and fp in their "
            "styles.")
    return make_figure(spec["name"], spec, lead, {
        "seeds": "Small dots beside a marker: the seeds.",
        "ci_bar": "Vertical bars: 95% t-intervals of the mean.",
        "clipped": "A triangle at a bar's end: that interval reached past [0, 100] and was "
                   "clipped to it.",
        "hollow": "Hollow circles: accuracies read off the longest runs' curves at the shorter "
                  "budgets (their schedule had not finished: not the same as training for that "
                  "budget),",
        "connector": "joined by a dashed line to the point of the runs they were read off.",
        "context": "Thin grey: the other rows."})


# --------------------------------------------------------------------------- section builders
# (study, setting) -> the figures a report section shows for that setting; render.SECTIONS
# names them. A setting without included runs has no figures.

def convergence_figures(st: StudyRecords, setting: str) -> list[Figure]:
    """The deployed-accuracy curves (highlighted rows, then every row), then the companion
    panels of the methods' internal metrics when any row logs them."""
    if not st.cells(setting, included_only=True):
        return []
    figs = [_convergence(st, setting)]
    if figs[0] and figs[0].spec["context_rows"]:  # rows drawn grey: show them all, too
        figs.append(_convergence(st, setting, all_rows=True))
    return [f for f in figs if f] + _internals(st, setting)


def seed_figures(st: StudyRecords, setting: str) -> list[Figure]:
    return [_seeds(st, setting)] if st.cells(setting, included_only=True) else []


def budget_figures(st: StudyRecords, setting: str) -> list[Figure]:
    if not st.cells(setting, included_only=True):
        return []
    return [f for f in (_budget(st, setting),) if f]
