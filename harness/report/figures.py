"""Figure specs: what each figure shows, as plain data for harness/plots.py to draw.

Data flow: a builder reads a ``StudyRecords`` (load.py) for one setting and returns
``Figure``s, each a plots spec (a dict of panels, lines, colours; see harness/plots.py for
the spec kinds) plus the caption report.md shows under it. render.py hands every spec to
``plots.start_render`` first, so forked processes draw while the tables are computed.

render.SECTIONS names the figure builders at the end of this module (study, setting) ->
[Figure]; to add a figure to the report, write its builder here and add a ``Section``.

The rules every figure follows:

- a row looks the same in every figure (style.py: colour, marker, dash; legible in
  greyscale) and is named by its display name;
- a crowded panel draws ours, the strongest baseline and fp in full with their 95% bands,
  the other rows as thin grey lines; the "all rows" companion draws every row in its style;
- a band or interval of a bounded quantity is clipped to its bounds ([0, 100] for
  accuracies, the declared ones for internal metrics), and the caption says when that
  happened; y-limits hold every drawn line and band whole, and panels of more than
  ``ZOOM_MIN_EPOCHS`` epochs all start at the same share of training (``ZOOM_SKIP``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.report import plots, stats, style
from harness.report.load import StudyRecords, cell_name
from harness.report.table import n_epochs
from harness.report.tables import budget_rows, setting_slug

# The one derived companion panel: a declared continuous-state (not deployable) accuracy
# minus the deployed one, drawn right after that accuracy.
CONTINUOUS_ACC = "test_acc_continuous"
GAP_PANEL = ("gap", "continuous − deployed acc (points)")
GAP_BOUNDS = (-100.0, 100.0)
ZOOM_MIN_EPOCHS = 20     # longer curves are drawn from the end of their first quarter
ZOOM_SKIP = 0.25


@dataclass
class Figure:
    """One figure: ``spec`` for plots.start_render (written as figures/NAME.{png,pdf}) and
    the caption report.md shows under it."""

    name: str
    spec: dict[str, Any]
    caption: str


# --------------------------------------------------------------------------- shared pieces

def curve(st: StudyRecords, setting: str, label: str, cell, column: str = "test_acc",
          bounds=stats.PERCENT) -> dict[str, Any] | None:
    """Mean and 95% band (clipped to ``bounds``) over the seeds of one group, per epoch."""
    g = st.group(setting, label, cell)
    mats = [st.metrics[r][column] for r in g["run_ids"] if column in st.metrics[r]]
    if not mats:
        return None
    n = min(len(m) for m in mats)
    mean, lo, hi = stats.curve_band(np.stack([m[:n] for m in mats]))
    lo, hi, clipped = stats.clip_band(lo, hi, bounds)
    return {"x": list(range(1, n + 1)), "mean": mean, "lo": lo, "hi": hi, "n": len(mats),
            "clipped": clipped}


def first_shown(n_epochs: int) -> int:
    """Index of the first epoch a curve panel shows (0: all of them)."""
    return int(n_epochs * ZOOM_SKIP) if n_epochs > ZOOM_MIN_EPOCHS else 0


def cut(line: dict[str, Any], start: int) -> dict[str, Any]:
    """A line from its ``start``-th point on."""
    if not start:
        return line
    return {**line, **{k: np.asarray(line[k])[start:] for k in ("x", "mean", "lo", "hi")
                       if line.get(k) is not None}}


def ylim(lines: list[dict], bounds=stats.PERCENT) -> tuple[float, float] | None:
    """Limits holding every line and band whole, padded, never past ``bounds``."""
    vals = [np.asarray(ln[k], dtype=float) for ln in lines for k in ("mean", "lo", "hi")
            if ln.get(k) is not None and (k == "mean" or ln.get("band", True))]
    vals = np.concatenate(vals) if vals else np.array([])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    lo, hi = float(vals.min()), float(vals.max())
    pad = max(0.5, 0.05 * (hi - lo)) if bounds == stats.PERCENT else 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if bounds:
        lo = lo if bounds[0] is None else max(lo, bounds[0])
        hi = hi if bounds[1] is None else min(hi, bounds[1])
    return (lo, hi) if hi > lo else None


def budgets(st: StudyRecords, setting: str) -> list[int]:
    """The setting's epoch budgets with included runs, shortest first."""
    return sorted({c[2] for c in st.cells(setting, included_only=True)})


def single_seed_note(st: StudyRecords, setting: str) -> str:
    labels = st.labels(setting)
    cells = st.cells(setting, included_only=True)
    single = sorted({f"{st.display(lab)} {cell_name(*c)}" for c in cells for lab in labels
                     if st.group(setting, lab, c)["summary"].n == 1})
    return (" n = 1 (no band, no error bar): " + ", ".join(single) + ".") if single else ""


def thinning_note(st: StudyRecords, setting: str) -> str:
    bs = budgets(st, setting)
    stride = plots.stride(bs[-1]) if bs else 1
    return f" Drawn at every {stride}-th epoch (and the last)." if stride > 1 else ""


def clipped_caption(lines: list[dict], what: str = "[0, 100]") -> str:
    if any(ln.get("clipped") for ln in lines):
        return (f" Bands that reached past {what} (wide t-intervals from few seeds) are "
                "clipped to it.")
    return ""


def zoom_caption(panels: list[dict]) -> str:
    if any(p.get("from_epoch", 1) > 1 for p in panels):
        return (f" Panels of more than {ZOOM_MIN_EPOCHS} epochs start after the first "
                f"{ZOOM_SKIP:.0%} of training (same rule in every panel); y-limits hold every "
                "band whole.")
    return " y-limits hold every line and band whole."


def panel_cells(st: StudyRecords, setting: str) -> list[tuple[int, int, int]]:
    """Cells with a row other than fp (fp is drawn in them as the reference); fp's own
    cells when it is alone."""
    cells = st.cells(setting, included_only=True)
    quant = [c for c in cells if any(st.method_of.get(lab) != "fp" and
                                     st.group(setting, lab, c)["acc"]
                                     for lab in st.labels(setting))]
    return quant or cells


def fp_reference(st: StudyRecords, setting: str, cell) -> tuple[str, tuple] | None:
    """fp's default row and its cell at the same budget (same activation bits when it has
    them), to draw beside a quantized cell; None without fp runs at that budget."""
    fp = st.default_variant("fp", st.labels(setting))
    if fp is None:
        return None
    mine = [c for c in st.cells(setting, True) if c[2] == cell[2] and
            st.group(setting, fp, c)["acc"]]
    if not mine or cell in mine:
        return None
    same_a = [c for c in mine if c[1] == cell[1]]
    return fp, (same_a or mine)[0]


def layout(n_panels: int, n_budgets: int) -> dict[str, Any]:
    """Panels of one W/A pair side by side, one column per budget (sharing the x-axis
    down a column) when the budgets fit in a row; else as many columns as fit."""
    if n_budgets <= plots.MAX_COLS and n_panels % n_budgets == 0:
        return {"ncols": n_budgets, "sharex": "col"}
    return {"ncols": min(plots.MAX_COLS, n_panels), "sharex": False}


# --------------------------------------------------------------------------- convergence

def panel_lines(st: StudyRecords, setting: str, cell, styles, all_rows: bool,
                 get_curve) -> tuple[list[dict], list[str], list[str]]:
    """(lines, rows drawn in full, rows drawn as context) of one panel; ``get_curve(label,
    cell)`` gives a row's line."""
    curves = {}
    for lab in st.labels(setting):
        if st.method_of.get(lab) == "fp":
            continue
        cur = get_curve(lab, cell)
        if cur:
            curves[lab] = cur
    ref = fp_reference(st, setting, cell)
    fp_here = [lab for lab in st.labels(setting) if st.method_of.get(lab) == "fp"]
    for lab in fp_here:
        cur = get_curve(lab, cell)
        if cur:
            curves[lab] = cur
    if ref and ref[0] not in curves:
        cur = get_curve(*ref)
        if cur:
            curves[ref[0]] = {**cur, "reference": True}
    means = {lab: float(np.asarray(c["mean"])[-1]) for lab, c in curves.items()}
    full = list(curves) if all_rows else style.highlight(st, setting, means)
    context = [lab for lab in curves if lab not in full]
    lines = [{**c, **style.line_style(styles, lab, False)} for lab, c in curves.items()
             if lab in context]
    for lab in [lab for lab in st.order if lab in full]:
        ls = style.line_style(styles, lab, True)
        if all_rows:
            ls.update(lw=1.0, band=False)
        elif st.method_of.get(lab) == "fp":  # the reference: a line, its band in the tables
            ls.update(band=False)
        lines.append({**curves[lab], **ls})
    return lines, full, context


def legend_for(st: StudyRecords, styles, full: list[str], context: bool) -> list[dict]:
    out = [style.legend_entry(styles, lab) for lab in st.order if lab in full]
    return out + ([style.CONTEXT_LEGEND] if context else [])


def _curve_panels(st: StudyRecords, setting: str, styles, all_rows: bool, get_curve,
                  title_of) -> tuple[list[dict], list[str], bool, list[dict]]:
    """One panel per cell of ``panel_cells``: (panels, rows in full, any context rows,
    every line)."""
    panels, full_all, context_any, every = [], [], False, []
    for cell in panel_cells(st, setting):
        lines, full, context = panel_lines(st, setting, cell, styles, all_rows, get_curve)
        if not lines:
            continue
        start = first_shown(cell[2])
        lines = [cut(ln, start) for ln in lines]
        every += lines
        full_all += [lab for lab in full if lab not in full_all]
        context_any |= bool(context)
        panels.append({"title": title_of(cell), "lines": lines, "ylim": ylim(lines),
                       "from_epoch": start + 1})
    return panels, full_all, context_any, every


def _convergence(st: StudyRecords, setting: str, all_rows: bool = False) -> Figure | None:
    """Deployed accuracy per epoch, one panel per (W/A pair, budget)."""
    styles = style.row_styles(st)
    sl = st.setting_name(setting)

    def get(lab, cell):
        return curve(st, setting, lab, cell)

    panels, full, context, lines = _curve_panels(
        st, setting, styles, all_rows, get, lambda c: f"{cell_name(*c[:2])}, {n_epochs(c[2])}")
    if not panels:
        return None
    name = f"convergence{'_all' if all_rows else ''}_{setting_slug(st, setting)}"
    spec = {"kind": "curves", "name": name, "panels": panels,
            **layout(len(panels), len(budgets(st, setting))),
            "legend": legend_for(st, styles, full, context), "context_rows": context,
            "xlabel": "epoch", "ylabel": "deployed test accuracy (%)",
            "title": (f"Deployed test accuracy per epoch, {sl}" +
                      (", every row" if all_rows else " (mean, 95% CI band)"))}
    has_fp = any(st.method_of.get(lab) == "fp" for lab in full)
    if all_rows:
        what = ("every row in its own colour, marker and dash (the same as in every figure "
                "of this report), mean over seeds, no bands (they are in the convergence "
                "figure)")
    else:
        what = (style.highlighted_rows(st) + " as mean over seeds with a 95% t-interval band"
                + (", the full-precision reference (fp) as a dotted line" if has_fp else "")
                + "; the other rows as thin grey lines (each in its own style in the "
                  "all-rows figure)")
    caption = (f"Deployed test accuracy per epoch ({sl}), one panel per W/A cell and epoch "
               f"budget: {what}."
               + (" fp (W32/A32) is drawn in every panel of its budget as the reference."
                  if has_fp else "")
               + (" A shorter budget's curve is not the start of a longer one's: the "
                  "schedules differ." if len(budgets(st, setting)) > 1 else "")
               + zoom_caption(panels) + clipped_caption(lines)
               + thinning_note(st, setting) + single_seed_note(st, setting))
    return Figure(name, spec, caption)


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


def _gap_curve(st: StudyRecords, setting: str, label: str, cell) -> dict[str, Any] | None:
    """Continuous-state minus deployed test accuracy per epoch, mean and band over seeds."""
    g = st.group(setting, label, cell)
    runs = [r for r in g["run_ids"] if CONTINUOUS_ACC in st.metrics[r]]
    if not runs:
        return None
    mats = [st.metrics[r][CONTINUOUS_ACC] - st.metrics[r]["test_acc"] for r in runs]
    n = min(len(m) for m in mats)
    mean, lo, hi = stats.curve_band(np.stack([m[:n] for m in mats]))
    lo, hi, clipped = stats.clip_band(lo, hi, GAP_BOUNDS)
    return {"x": list(range(1, n + 1)), "mean": mean, "lo": lo, "hi": hi,
            "clipped": clipped}


def _internal_line(st: StudyRecords, setting: str, lab: str, cell, col: str, bounds):
    if col == GAP_PANEL[0]:
        return _gap_curve(st, setting, lab, cell)
    return curve(st, setting, lab, cell, col, bounds)


def _internal_panel(st: StudyRecords, cell, col: str, title: str, bounds, lines: list[dict],
                    first: bool) -> dict[str, Any]:
    """One companion panel (``first``: the first of its cell's row, which it names)."""
    start = first_shown(cell[2])
    lines = [cut(ln, start) for ln in lines]
    vals = np.concatenate([np.asarray(ln["mean"], float) for ln in lines])
    vals = vals[np.isfinite(vals)]
    logy = bool(col in st.log_scale and len(vals) and vals.min() > 0
                and vals.max() / vals.min() > 20)
    return {"title": title, "lines": lines, "cell": cell,
            "ylabel": cell_name(*cell[:2]) if first else "",
            "logy": logy, "ylim": None if logy else ylim(lines, bounds), "from_epoch": start + 1}


def _internals(st: StudyRecords, setting: str) -> Figure | None:
    """Companion panels of the internal metrics the methods declare (summary.json
    method_info; ``st.internal_metrics``): one row of panels per W/A pair at the longest
    budget, one panel per metric, one line per row (variant) that logs it."""
    sl = st.setting_name(setting)
    styles = style.row_styles(st)

    def has(lab, c, col):
        return any(col in st.metrics[r] for r in st.group(setting, lab, c)["run_ids"])

    longest = budgets(st, setting)[-1] if budgets(st, setting) else None
    cells = [c for c in st.cells(setting, True) if c[2] == longest]
    keys = [(lab, c) for c in cells for lab in st.labels(setting)
            if any(has(lab, c, k) for k in st.internal_metrics)]
    if not keys:
        return None
    defs = _panel_defs(st, lambda col: any(has(lab, c, col) for lab, c in keys))
    panels, every, shown = [], [], []
    for cell in dict.fromkeys(c for _, c in keys):
        for col, title, bounds in defs:
            src = CONTINUOUS_ACC if col == GAP_PANEL[0] else col
            lines = []
            for lab in [lab for lab, c in keys if c == cell and has(lab, c, src)]:
                cur = _internal_line(st, setting, lab, cell, col, bounds)
                if cur:
                    lines.append({**cur, **style.line_style(styles, lab, True), "lw": 1.2})
                    shown += [lab] if lab not in shown else []
            if not lines:
                continue
            first = not panels or panels[-1]["cell"] != cell
            panels.append(_internal_panel(st, cell, col, title, bounds, lines, first))
            every += panels[-1]["lines"]
    if not panels:
        return None
    n_metrics = len({p["title"] for p in panels})
    name = f"internals_{setting_slug(st, setting)}"
    spec = {"kind": "curves", "name": name, "panels": panels,
            "ncols": n_metrics if n_metrics <= plots.MAX_COLS else plots.MAX_COLS,
            "legend": [style.legend_entry(styles, lab) for lab in st.order if lab in shown],
            "xlabel": "epoch", "title": f"Companion panels, {sl}, {n_epochs(longest)}"}
    titles = list(dict.fromkeys(p["title"] for p in panels))
    listed = ", ".join(titles[:-1]) + " and " + titles[-1] if len(titles) > 1 else titles[0]
    gap = (f" The gap panel ({GAP_PANEL[1]}) is the continuous-state (not deployable) "
           "accuracy minus the deployed one." if GAP_PANEL[1] in titles else "")
    caption = (f"Companion panels ({sl}, the {longest}-epoch runs): the internal metrics the "
               f"methods declare, per epoch, for the rows that log them: {listed}; one row "
               "of panels per W/A cell (named on its left), each row of the study in its own "
               "style; mean over "
               f"seeds with a 95% CI band.{gap}" + zoom_caption(panels)
               + clipped_caption(every, "the metric's declared range")
               + thinning_note(st, setting))
    return Figure(name, spec, caption)


# --------------------------------------------------------------------------- seeds

def _main_budget(st: StudyRecords, setting: str) -> int:
    """The budget with the most included runs, then the longest."""
    per_budget = st.included[st.included["setting"] == setting]["epochs"].value_counts()
    return int(max(per_budget.index, key=lambda e: (per_budget[e], e)))


def _seeds(st: StudyRecords, setting: str) -> Figure:
    """Final accuracy of every seed at the main budget, beside the mean and its CI."""
    styles = style.row_styles(st)
    sl = st.setting_name(setting)
    labels = st.labels(setting)
    main_e = _main_budget(st, setting)
    panels, shown, clipped = [], [], False
    for c in [c for c in st.cells(setting, included_only=True) if c[2] == main_e]:
        prow = []
        for lab in labels:
            g = st.group(setting, lab, c)
            sm = g["summary"]
            if sm.n:
                shown.append(lab)
                clipped |= sm.clipped
                prow.append({"color": styles[lab]["color"], "marker": styles[lab]["marker"]
                             or "o", "name": styles[lab]["name"], "seeds": g["acc"],
                             "mean": sm.mean, "lo": sm.ci[0] if sm.ci else None,
                             "hi": sm.ci[1] if sm.ci else None})
        panels.append({"title": cell_name(*c[:2]), "rows": prow})
    name = f"seeds_{setting_slug(st, setting)}"
    spec = {"kind": "points", "name": name, "panels": panels,
            "ylabel": "final deployed test accuracy (%)",
            "title": f"Final accuracy per seed, {sl}, {n_epochs(main_e)} (dots: seeds; "
                     "bar: mean with 95% CI)"}
    other = (" The other budgets' seeds are in the budget figure."
             if _budget_spec(st, setting) else "")
    caption = (f"Final deployed accuracy of every seed ({sl}, {n_epochs(main_e)}), one "
               f"column per row (named below it); the larger marker beside the dots is the "
               f"mean with its 95% t-interval (hollow, no bar: n = 1)."
               + (" Intervals that reached past [0, 100] are clipped to it." if clipped else "")
               + f"{other}{single_seed_note(st, setting)}")
    return Figure(name, spec, caption)


# --------------------------------------------------------------------------- budget

def _budget_panel_row(lab: str, mine: list[dict], look: dict[str, Any]) -> dict | None:
    """One row of a budget panel: its trained budgets, and the accuracies read off its
    longest runs' curves."""
    tr = [r for r in mine if r["source"] == "trained"]
    if not tr:
        return None
    longest = max(r["epoch"] for r in tr)
    ro = [r for r in mine if r["source"] == "readoff" and r["from"] == longest]
    return {"label": lab, **look, "clipped": any(r["summary"].clipped for r in tr),
            "trained": {
                "x": [r["epoch"] for r in tr], "mean": [r["summary"].mean for r in tr],
                "lo": [r["summary"].ci[0] if r["summary"].ci else None for r in tr],
                "hi": [r["summary"].ci[1] if r["summary"].ci else None for r in tr],
                "seeds": [r["values"] for r in tr]},
            "readoff": {"x": [r["epoch"] for r in ro],
                        "mean": [r["summary"].mean for r in ro]}}


def _budget_spec(st: StudyRecords, setting: str):
    rows_ = budget_rows(st, setting)
    if not rows_:
        return None
    styles = style.row_styles(st)
    bs = sorted({r["epoch"] for r in rows_})
    panels, full_all, context_any = [], [], False
    for w, a in sorted({(r["w"], r["a"]) for r in rows_}):
        mine = {lab: [r for r in rows_ if r["row"] == lab and (r["w"], r["a"]) == (w, a)]
                for lab in st.labels(setting)}
        trained = {lab: [r for r in rs if r["source"] == "trained"] for lab, rs in mine.items()}
        # highlighted by the mean at the longest budget each row trained for
        means = {lab: max(tr, key=lambda r: r["epoch"])["summary"].mean
                 for lab, tr in trained.items() if tr}
        full = style.highlight(st, setting, means)
        prow = []
        for lab in sorted(means, key=lambda x: x in full):  # context first, then in full
            look = ({**style.line_style(styles, lab, True), "lw": 1.2} if lab in full else
                    {**style.CONTEXT, "marker": "o"})
            p = _budget_panel_row(lab, mine[lab], look)
            if p is not None:
                prow.append(p)
        if any(len(p["trained"]["x"]) > 1 for p in prow):
            panels.append({"title": cell_name(w, a), "rows": prow, "budgets": bs})
            full_all += [lab for lab in full if lab not in full_all]
            context_any |= len(full) < len(means)
    if not panels:
        return None
    legend = legend_for(st, styles, full_all, context_any)
    if any(r["readoff"]["x"] for p in panels for r in p["rows"]):
        legend.append({"label": "read off the longest runs' curves\n(not trained for that "
                                "budget)", "color": "0.4", "ls": "--", "marker": "o",
                       "mfc": "white"})
    return {"kind": "budget", "name": f"budget_{setting_slug(st, setting)}",
            "panels": panels, "legend": legend,
            "xlabel": "epoch budget", "ylabel": "final deployed test accuracy (%)",
            "title": f"Accuracy vs epoch budget, {st.setting_name(setting)}"}


def _budget(st: StudyRecords, setting: str) -> Figure | None:
    spec = _budget_spec(st, setting)
    if spec is None:
        return None
    sl = st.setting_name(setting)
    clipped = any(r["clipped"] for p in spec["panels"] for r in p["rows"])
    caption = (f"Final accuracy vs epoch budget ({sl}): filled markers and CI bars are runs "
               "trained for that budget (dots: seeds); hollow markers on dashed lines are "
               "accuracies read off the longest runs' curves at the shorter budgets (their "
               "schedule had not finished: not the same as training for that budget). Ours, "
               "the strongest other method and fp in their styles, the other rows thin grey."
               + (" CI bars that reached past [0, 100] are clipped to it." if clipped else ""))
    return Figure(spec["name"], spec, caption)


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
    return [f for f in figs + [_internals(st, setting)] if f]


def seed_figures(st: StudyRecords, setting: str) -> list[Figure]:
    return [_seeds(st, setting)] if st.cells(setting, included_only=True) else []


def budget_figures(st: StudyRecords, setting: str) -> list[Figure]:
    if not st.cells(setting, included_only=True):
        return []
    return [f for f in (_budget(st, setting),) if f]
