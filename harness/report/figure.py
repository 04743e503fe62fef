"""One figure of the report: its spec (plain data for plots.py), its caption, and the pieces
every figure builder shares (figures.py, compute.py, aggregate.py, sr.py).

A caption is built from what is drawn: ``make_figure(name, spec, lead, clauses)`` asks
plots.planned which kinds of artist the spec draws (bands, clipped triangles, grey context
lines, fp's dotted line, T* lines, hollow read-off circles, dashed connectors, seed dots, CI
bars, single seeds) and appends the clause of each, in a fixed order; a kind drawn without
a clause is a programming error, a clause without its kind is left out. So a caption never
promises what is not there (tests/test_report_figures.py checks the drawn artists).

The rules every figure follows:

- it is drawn at its width on the page (``figure_width``, study.toml ``[report]
  figure_width``: "column", "text" or inches; layout.py), text at least 7 pt there;
- a row looks the same in every figure (style.py: colour, marker, dash; legible in
  greyscale) and is named by its display name;
- a crowded panel draws ours, the strongest baseline and fp in full with their 95% bands,
  the other rows as thin grey lines; the "all rows" companion draws every row in its style;
- a band or interval of a bounded quantity is clipped to its bounds ([0, 100] for
  accuracies, the declared ones for internal metrics), marked by triangles where it was;
  y-limits hold every drawn line and band whole, and panels of more than
  ``ZOOM_MIN_EPOCHS`` epochs all start at the same share of training (``ZOOM_SKIP``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.report import layout, plots, stats, style
from harness.report.load import StudyRecords, cell_name

ZOOM_MIN_EPOCHS = 20     # longer curves are drawn from the end of their first quarter
ZOOM_SKIP = 0.25


@dataclass
class Figure:
    """One figure: ``spec`` for plots.Renderer (written as figures/NAME.{png,pdf}), the
    caption report.md shows under it, and the kinds of artist the caption describes."""

    name: str
    spec: dict[str, Any]
    caption: str
    kinds: set[str] = field(default_factory=set)


def figure_width(st: StudyRecords) -> float:
    """The study's figure width in inches ([report] figure_width; default: the text)."""
    return layout.width_inches(st.options.get("figure_width"))


def make_figure(name: str, spec: dict[str, Any], lead: str, clauses: dict[str, str],
                tail: str = "") -> Figure:
    """The Figure with its caption: ``lead``, the clause of each kind of artist the spec
    draws (``plots.KINDS`` order), ``tail``."""
    kinds = plots.planned(spec)
    missing = kinds - set(clauses)
    if missing:
        raise ValueError(f"figure {name} draws {sorted(missing)} without a caption clause")
    text = " ".join([lead.strip()] + [clauses[k].strip() for k in plots.KINDS if k in kinds]
                    + ([tail.strip()] if tail.strip() else []))
    return Figure(name, spec, text, kinds)


def clipped_clause(what: str = "[0, 100]", interval: str = "95% t-interval") -> str:
    return (f"Triangles on a band's edge (▲ top, ▼ bottom) mark the epochs where its {interval} "
            f"reached past {what} (few seeds, wide spread) and was clipped to it.")


BAND_CLAUSE = "Shaded bands: 95% t-intervals over seeds."
CONTEXT_CLAUSE = ("Thin grey lines: the other rows (each in its own style in the all-rows "
                  "figure).")


def fp_clause(elsewhere: bool = True) -> str:
    return ("Dotted black line: fp, the full-precision reference (W32/A32)"
            + (", drawn in every panel of its budget." if elsewhere else "."))


# --------------------------------------------------------------------------- curves

def curve(st: StudyRecords, setting: str, label: str, cell, column: str = "test_acc",
          bounds=stats.PERCENT) -> dict[str, Any] | None:
    """Mean and 95% band (clipped to ``bounds``) over the seeds of one group, per epoch;
    "clip_hi"/"clip_lo": the epochs where the band had to be clipped."""
    g = st.group(setting, label, cell)
    mats = [st.metrics[r][column] for r in g["run_ids"] if column in st.metrics[r]]
    if not mats:
        return None
    n = min(len(m) for m in mats)
    line = band_line(np.stack([m[:n] for m in mats]), bounds)
    first = st.metrics[g["run_ids"][0]].get("epoch")   # after its fp epochs: a pretrained row
    shift = int(first[0]) - 1 if first is not None and len(first) and first[0] > 1 else 0
    if shift:
        for k in ("x", "clip_hi", "clip_lo"):
            line[k] = [x + shift for x in line[k]]
    return line


def band_line(matrix, bounds) -> dict[str, Any]:
    """A (seeds x epochs) matrix as a line: mean per epoch and its clipped 95% band."""
    mean, lo, hi = stats.curve_band(matrix)
    x = np.arange(1, matrix.shape[1] + 1)
    clip_hi = clip_lo = []
    if lo is not None and bounds:
        if bounds[1] is not None:
            clip_hi = x[hi > bounds[1]].tolist()
        if bounds[0] is not None:
            clip_lo = x[lo < bounds[0]].tolist()
    lo, hi, clipped = stats.clip_band(lo, hi, bounds)
    return {"x": x.tolist(), "mean": mean, "lo": lo, "hi": hi, "n": matrix.shape[0],
            "clipped": clipped, "clip_hi": clip_hi, "clip_lo": clip_lo}


def first_shown(n_epochs: int) -> int:
    """Index of the first epoch a curve panel shows (0: all of them)."""
    return int(n_epochs * ZOOM_SKIP) if n_epochs > ZOOM_MIN_EPOCHS else 0


def cut(line: dict[str, Any], start: int) -> dict[str, Any]:
    """A line from its ``start``-th point on."""
    if not start:
        return line
    x0 = np.asarray(line["x"])[start] if len(line["x"]) > start else np.inf
    return {**line, **{k: np.asarray(line[k])[start:] for k in ("x", "mean", "lo", "hi")
                       if line.get(k) is not None},
            **{k: [x for x in line[k] if x >= x0] for k in ("clip_hi", "clip_lo")
               if line.get(k)}}


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
    return ("n = 1 (no band, no error bar): " + ", ".join(single) + ".") if single else ""


def thinning_note(st: StudyRecords, setting: str) -> str:
    bs = budgets(st, setting)
    step = plots.stride(bs[-1]) if bs else 1
    return f"Drawn at every {step}-th epoch (and the last)." if step > 1 else ""


def zoom_note(panels: list[dict]) -> str:
    if any(p.get("from_epoch", 1) > 1 for p in panels):
        return (f"Panels of more than {ZOOM_MIN_EPOCHS} epochs start after the first "
                f"{ZOOM_SKIP:.0%} of training (same rule in every panel); y-limits hold every "
                "band whole.")
    return "y-limits hold every line and band whole."


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


def grid(n_panels: int, n_budgets: int, width: float) -> dict[str, Any]:
    """Panels of one W/A pair side by side, one column per budget (sharing the x-axis
    down a column) when the budgets fit in a row at ``width``; else as many columns as fit
    (layout.py)."""
    if n_budgets <= layout.max_cols(width, "curves") and n_panels % n_budgets == 0:
        return {"ncols": n_budgets, "sharex": "col"}
    return {"ncols": None, "sharex": False}


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
    for lab in [lab for lab in st.labels(setting) if st.method_of.get(lab) == "fp"]:
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
