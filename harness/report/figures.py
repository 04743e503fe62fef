"""Figure specs: what each figure shows, as plain data for harness/plots.py to draw.

Data flow: a builder reads a ``StudyRecords`` (load.py) for one setting and returns
``Figure``s, each a plots spec (a dict of panels, lines, colours; see harness/plots.py for
the spec kinds) plus the caption report.md shows under it. render.py hands every spec to
``plots.start_render`` first, so forked processes draw while the tables are computed.

render.SECTIONS names the figure builders at the end of this module (study, setting) ->
[Figure]; to add a figure to the report, write its builder here and add a ``Section``.

Rows keep one colour across figures (``color_map``: the display order over ``COLORS``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness import plots
from harness import stats as S
from harness.report.load import StudyRecords, is_percentage
from harness.report.tables import budget_rows, cell_name, slug

# Colours per row, stable across figures (matplotlib's tab10 then tab20 odd shades).
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
          "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
BUDGET_STYLES = ("-", "--", ":", "-.")  # longest budget solid, then shorter ones
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))
# Internal metrics annealed over orders of magnitude: log y-axis when they span over 20x.
LOG_SCALE_COLUMNS = ("temperature",)
# The one derived companion panel: a declared continuous-state (not deployable) accuracy
# minus the deployed one, drawn right after that accuracy.
CONTINUOUS_ACC = "test_acc_continuous"
GAP_PANEL = ("gap", "continuous − deployed acc (points)")


@dataclass
class Figure:
    """One figure: ``spec`` for plots.start_render (written as figures/NAME.{png,pdf}) and
    the caption report.md shows under it."""

    name: str
    spec: dict[str, Any]
    caption: str


def color_map(st: StudyRecords) -> dict[str, str]:
    return {lab: COLORS[i % len(COLORS)] for i, lab in enumerate(st.order)}


def _curves(st: StudyRecords, setting: str, label: str, cell, column: str):
    """Mean and 95% band over the seeds of one group, for one metrics column."""
    g = st.group(setting, label, cell)
    mats = [st.metrics[r][column] for r in g["run_ids"] if column in st.metrics[r]]
    if not mats:
        return None
    n = min(len(m) for m in mats)
    mean, lo, hi = S.curve_band(np.stack([m[:n] for m in mats]))
    return {"x": list(range(1, n + 1)), "mean": mean, "lo": lo, "hi": hi, "n": len(mats)}


def _zoom(lines: list[dict]) -> tuple[float, float] | None:
    """y-limits that skip the first quarter of the epochs, where accuracy is still low."""
    vals = []
    for ln in lines:
        k = len(ln["mean"]) // 4
        for arr in (ln["mean"], ln.get("lo"), ln.get("hi")):
            if arr is not None:
                vals.append(np.asarray(arr, dtype=float)[k:])
    vals = np.concatenate(vals) if vals else np.array([])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    lo, hi = float(vals.min()), float(vals.max())
    pad = max(0.5, 0.05 * (hi - lo))
    return (lo - pad, hi + pad)


def _budgets(st: StudyRecords, setting: str) -> list[int]:
    """The setting's epoch budgets with included runs, longest first."""
    return sorted({c[2] for c in st.cells(setting, included_only=True)}, reverse=True)


def _single_seed_note(st: StudyRecords, setting: str) -> str:
    labels = st.labels(setting)
    cells = st.cells(setting, included_only=True)
    single = sorted({f"{lab} {cell_name(*c)}" for c in cells for lab in labels
                     if st.group(setting, lab, c)["summary"].n == 1})
    return (" n = 1 (no band, no error bar): " + ", ".join(single) + ".") if single else ""


def _thinning_note(st: StudyRecords, setting: str) -> str:
    stride = plots.stride(_budgets(st, setting)[0])
    return f" Drawn at every {stride}-th epoch (and the last)." if stride > 1 else ""


# --------------------------------------------------------------------------- convergence

def _convergence(st: StudyRecords, setting: str) -> Figure:
    """Deployed accuracy per epoch: one panel per W/A pair, budgets told apart by line style."""
    colors = color_map(st)
    sl = st.setting_labels[setting]
    labels = st.labels(setting)
    budgets = _budgets(st, setting)
    style = {e: BUDGET_STYLES[i % len(BUDGET_STYLES)] for i, e in enumerate(budgets)}
    panels, shown = [], []
    for w, a in sorted({c[:2] for c in st.cells(setting, included_only=True)}):
        lines = []
        for lab in labels:
            for e in budgets:
                cur = _curves(st, setting, lab, (w, a, e), "test_acc")
                if cur:
                    lines.append({**cur, "color": colors[lab], "ls": style[e]})
                    shown.append(lab)
        panels.append({"title": cell_name(w, a), "lines": lines, "ylim": _zoom(lines)})
    legend = [{"label": lab, "color": colors[lab]} for lab in labels if lab in shown]
    if len(budgets) > 1:
        legend += [{"label": f"{e} epochs", "color": "0.3", "ls": style[e]} for e in budgets]
    name = f"convergence_{slug(sl)}"
    spec = {"kind": "curves", "name": name, "panels": panels, "legend": legend,
            "xlabel": "epoch", "ylabel": "deployed test accuracy (%)",
            "title": f"Deployed test accuracy per epoch, {sl} (mean, 95% CI band)"}
    caption = (f"Deployed test accuracy per epoch ({sl}): mean over seeds with a "
               f"95% t-interval band, one panel per W/A cell"
               + (", one line style per epoch budget (a shorter run's curve is "
                  "not the start of a longer run's: the schedules differ)"
                  if len(budgets) > 1 else "")
               + "; the y-axis is zoomed to the last three quarters of training."
               + _thinning_note(st, setting) + _single_seed_note(st, setting))
    return Figure(name, spec, caption)


def _internals(st: StudyRecords, setting: str) -> Figure | None:
    """Companion panels of the internal metrics the methods declare (summary.json
    method_info; ``st.internal_metrics``): one line per (variant, cell, budget) that logs
    them; colour = cell, line style = variant (and budget)."""
    sl = st.setting_labels[setting]
    budgets = _budgets(st, setting)
    spec = _internals_spec(st, setting, st.labels(setting), budgets, f"internals_{slug(sl)}",
                           sl)
    if spec is None:
        return None
    titles = [p["title"] for p in spec["panels"]]
    shown = ", ".join(titles[:-1]) + " and " + titles[-1] if len(titles) > 1 else titles[0]
    gap = (f" The gap panel ({GAP_PANEL[1]}) is the continuous-state (not deployable) "
           "accuracy minus the deployed one." if GAP_PANEL[1] in titles else "")
    caption = (f"Companion panels ({sl}): the internal metrics the methods declare, per "
               f"epoch, for the rows that log them: {shown}; colour: W/A cell, line style: "
               "variant"
               + (" and budget" if len(budgets) > 1 else "")
               + "; mean over seeds with a 95% CI band." + gap + _thinning_note(st, setting))
    return Figure(spec["name"], spec, caption)


def _panel_defs(st: StudyRecords, has_col) -> list[tuple[str, str, bool]]:
    """(column, title, percentage) per companion panel, in ``st.internal_metrics``' order,
    the derived gap panel right after the continuous-state accuracy when it is logged."""
    defs = []
    for col, (title, bounds) in st.internal_metrics.items():
        defs.append((col, title, is_percentage(bounds)))
        if col == CONTINUOUS_ACC and has_col(col):
            defs.append((GAP_PANEL[0], GAP_PANEL[1], False))
    return defs


def _internal_panel(st: StudyRecords, setting: str, keys, col: str, title: str,
                    percent: bool, color, styles, has) -> dict | None:
    """One companion panel: a line per (variant, cell) whose runs log ``col``."""
    lines = []
    for lab, c in keys:
        src = CONTINUOUS_ACC if col == GAP_PANEL[0] else col
        if not has(lab, c, src):
            continue
        if col == GAP_PANEL[0]:
            cur = _gap_curve(st, setting, lab, c)
        else:
            cur = _curves(st, setting, lab, c, col)
        lines.append({**cur, "color": color[c[:2]], "ls": styles[(lab, c[2])]})
    if not lines:
        return None
    vals = np.concatenate([np.asarray(ln["mean"], float) for ln in lines])
    vals = vals[np.isfinite(vals)]
    logy = bool(col in LOG_SCALE_COLUMNS and len(vals) and vals.min() > 0
                and vals.max() / vals.min() > 20)
    return {"title": title, "lines": lines, "logy": logy,
            "ylim": _zoom(lines) if percent else None}


def _internals_spec(st: StudyRecords, setting: str, labels, budgets, name: str, title: str):
    def has(lab, c, col):
        return any(col in st.metrics[r] for r in st.group(setting, lab, c)["run_ids"])

    keys = [(lab, c) for lab in labels for c in st.cells(setting, True)
            if any(has(lab, c, k) for k in st.internal_metrics)]
    if not keys:
        return None
    combos = sorted({(lab, c[2]) for lab, c in keys},
                    key=lambda t: (labels.index(t[0]), -t[1]))  # (variant, budget)
    pairs = list(dict.fromkeys(c[:2] for _, c in keys))
    color = {p: COLORS[i % len(COLORS)] for i, p in enumerate(pairs)}
    styles = {k: LINE_STYLES[i % len(LINE_STYLES)] for i, k in enumerate(combos)}
    panel_defs = _panel_defs(st, lambda col: any(has(lab, c, col) for lab, c in keys))
    panels = []
    for col, ptitle, percent in panel_defs:
        panel = _internal_panel(st, setting, keys, col, ptitle, percent, color, styles, has)
        if panel is not None:
            panels.append(panel)
    legend = [{"label": cell_name(*p), "color": color[p]} for p in pairs]
    legend += [{"label": lab + (f", {e} ep" if len(budgets) > 1 else ""), "color": "0.3",
                "ls": styles[(lab, e)]} for lab, e in combos]
    return {"kind": "curves", "name": name, "panels": panels,
            "ncols": min(len(panels), 4), "legend": legend, "xlabel": "epoch",
            "title": f"Companion panels, {title}"}


def _gap_curve(st: StudyRecords, setting: str, label: str, cell) -> dict[str, Any]:
    """Continuous-state minus deployed test accuracy per epoch, mean and band over seeds."""
    g = st.group(setting, label, cell)
    runs = [r for r in g["run_ids"] if CONTINUOUS_ACC in st.metrics[r]]
    mats = [st.metrics[r][CONTINUOUS_ACC] - st.metrics[r]["test_acc"] for r in runs]
    n = min(len(m) for m in mats)
    mean, lo, hi = S.curve_band(np.stack([m[:n] for m in mats]))
    return {"x": list(range(1, n + 1)), "mean": mean, "lo": lo, "hi": hi}


# --------------------------------------------------------------------------- seeds

def _main_budget(st: StudyRecords, setting: str) -> int:
    """The budget with the most included runs, then the longest."""
    per_budget = st.included[st.included["setting"] == setting]["epochs"].value_counts()
    return int(max(per_budget.index, key=lambda e: (per_budget[e], e)))


def _seeds(st: StudyRecords, setting: str) -> Figure:
    """Final accuracy of every seed at the main budget, beside the mean and its CI."""
    colors = color_map(st)
    sl = st.setting_labels[setting]
    labels = st.labels(setting)
    main_e = _main_budget(st, setting)
    panels, shown = [], []
    for c in [c for c in st.cells(setting, included_only=True) if c[2] == main_e]:
        prow = []
        for lab in labels:
            g = st.group(setting, lab, c)
            sm = g["summary"]
            if sm.n:
                shown.append(lab)
                prow.append({"color": colors[lab], "seeds": g["acc"], "mean": sm.mean,
                             "lo": sm.ci[0] if sm.ci else None, "hi": sm.ci[1] if sm.ci else None})
        panels.append({"title": cell_name(*c[:2]), "rows": prow})
    name = f"seeds_{slug(sl)}"
    spec = {"kind": "points", "name": name, "panels": panels,
            "legend": [{"label": lab, "color": colors[lab], "marker": "o", "ls": ""}
                       for lab in labels if lab in shown],
            "ylabel": "final deployed test accuracy (%)",
            "title": f"Final accuracy per seed, {sl}, {main_e} epochs (dots: seeds; "
                     "bar: mean with 95% CI)"}
    other = (" The other budgets' seeds are in the budget figure."
             if _budget_spec(st, setting) else "")
    caption = (f"Final deployed accuracy of every seed ({sl}, {main_e} epochs), one "
               f"colour per row; the larger marker beside the dots is the mean with "
               f"its 95% t-interval (hollow, no bar: n = 1).{other}"
               f"{_single_seed_note(st, setting)}")
    return Figure(name, spec, caption)


# --------------------------------------------------------------------------- budget

def _budget_panel_row(st: StudyRecords, lab: str, mine: list[dict], color: str) -> dict | None:
    """One row of a budget panel: its trained budgets, and the accuracies read off its
    longest runs' curves."""
    tr = [r for r in mine if r["source"] == "trained"]
    if not tr:
        return None
    longest = max(r["epoch"] for r in tr)
    ro = [r for r in mine if r["source"] == "readoff" and r["from"] == longest]
    return {"label": lab, "color": color, "trained": {
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
    colors = color_map(st)
    budgets = sorted({r["epoch"] for r in rows_})
    panels = []
    for w, a in sorted({(r["w"], r["a"]) for r in rows_}):
        prow = []
        for lab in st.labels(setting):
            mine = [r for r in rows_ if r["row"] == lab and (r["w"], r["a"]) == (w, a)]
            p = _budget_panel_row(st, lab, mine, colors[lab])
            if p is not None:
                prow.append(p)
        if any(len(p["trained"]["x"]) > 1 for p in prow):
            panels.append({"title": cell_name(w, a), "rows": prow, "budgets": budgets,
                           "wa": (w, a)})
    if not panels:
        return None
    have = {r["label"] for p in panels for r in p["rows"]}
    shown = [lab for lab in st.labels(setting) if lab in have]
    legend = [{"label": lab, "color": colors[lab], "marker": "o"} for lab in shown]
    if any(r["readoff"]["x"] for p in panels for r in p["rows"]):
        legend.append({"label": "read off the longest runs' curves\n(not trained for that "
                                "budget)", "color": "0.4", "ls": "--", "marker": "o",
                       "mfc": "white"})
    return {"kind": "budget", "name": f"budget_{slug(st.setting_labels[setting])}",
            "panels": panels, "legend": legend,
            "xlabel": "epoch budget", "ylabel": "final deployed test accuracy (%)",
            "title": f"Accuracy vs epoch budget, {st.setting_labels[setting]}"}


def _budget(st: StudyRecords, setting: str) -> Figure | None:
    spec = _budget_spec(st, setting)
    if spec is None:
        return None
    sl = st.setting_labels[setting]
    caption = (f"Final accuracy vs epoch budget ({sl}): filled markers and CI "
               "bars are runs trained for that budget (dots: seeds); hollow "
               "markers on dashed lines are accuracies read off the longest "
               "runs' curves at the shorter budgets (their schedule had not "
               "finished: not the same as training for that budget).")
    return Figure(spec["name"], spec, caption)


# --------------------------------------------------------------------------- section builders
# (study, setting) -> the figures a report section shows for that setting; render.SECTIONS
# names them. A setting without included runs has no figures.

def convergence_figures(st: StudyRecords, setting: str) -> list[Figure]:
    """The deployed-accuracy curves, then the companion panels of the methods' internal
    metrics when any row logs them."""
    if not st.cells(setting, included_only=True):
        return []
    return [f for f in (_convergence(st, setting), _internals(st, setting)) if f]


def seed_figures(st: StudyRecords, setting: str) -> list[Figure]:
    return [_seeds(st, setting)] if st.cells(setting, included_only=True) else []


def budget_figures(st: StudyRecords, setting: str) -> list[Figure]:
    if not st.cells(setting, included_only=True):
        return []
    return [f for f in (_budget(st, setting),) if f]
