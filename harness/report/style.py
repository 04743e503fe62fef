"""How each row looks in every figure of a report, and which rows a panel highlights.

``row_styles(st)``: one colour, marker and line style per row, the same in every figure of
the report, told apart in greyscale by marker and dash, not by hue alone:

- fp (the full-precision reference): black, dotted, no marker;
- ours (its default variant): blue, solid, circles;
- every other row, in display order: the next colour of the Okabe-Ito palette (colour-blind
  safe) and marker, dashed for baselines, dash-dot for ours' other variants.

``highlight(st, setting, means)``: a crowded panel draws ours, the strongest baseline there
(the highest mean among the other methods' rows) and fp in full, with bands; the other rows
are thin grey context lines (``CONTEXT``), and the figures' "all rows" companion shows them
in their own styles. Without ours: the two best rows and fp.
"""
from __future__ import annotations

from typing import Any

from harness.report.load import StudyRecords

OURS_COLOR, FP_COLOR = "#0072B2", "#000000"
PALETTE = ("#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#8C510A", "#7F7F7F",
           "#999933", "#4D9221", "#B2182B", "#5E3C99", "#01665E")
MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "d")
CONTEXT = {"color": "#b0b0b0", "lw": 0.7, "ls": "-", "marker": "", "band": False}
FULL_LW, THIN_LW = 1.6, 0.9


def row_styles(st: StudyRecords) -> dict[str, dict[str, Any]]:
    """label -> {"color", "marker", "ls", "name"} for every row of the study."""
    ours = st.default_variant(st.ours, st.order) if st.ours else None
    out, i = {}, 0
    for lab in st.order:
        m = st.method_of.get(lab)
        if m == "fp" and lab == st.default_variant("fp", st.order):
            style = {"color": FP_COLOR, "marker": "", "ls": ":"}
        elif lab == ours:
            style = {"color": OURS_COLOR, "marker": "o", "ls": "-"}
        else:
            style = {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                     "ls": "-." if st.ours and m == st.ours else "--"}
            i += 1
        out[lab] = {**style, "name": st.display(lab)}
    return out


def highlight(st: StudyRecords, setting: str, means: dict[str, float]) -> list[str]:
    """The rows a panel draws in full, given each row's final mean there (fp's counted
    wherever it is drawn as the reference): ours, the strongest other-method row, fp."""
    labels = st.labels(setting)
    fp = [lab for lab in means if st.method_of.get(lab) == "fp"]
    ranked = sorted((lab for lab in means if st.method_of.get(lab) != "fp"),
                    key=lambda lab: -means[lab])
    ours = st.default_variant(st.ours, labels) if st.ours else None
    if ours in means:
        rival = next((lab for lab in ranked if st.method_of.get(lab) != st.ours), None)
        chosen = [ours] + ([rival] if rival else [])
    else:
        chosen = ranked[:2]
    return chosen + fp[:1]


def highlighted_rows(st: StudyRecords, score: str = "") -> str:
    """How a caption names the rows :func:`highlight` draws in full (``score``: e.g. " PSNR")."""
    if not st.ours:
        return "the two rows with the highest final mean"
    return f"ours and the strongest other method in the panel (highest final mean{score})"


def line_style(styles: dict[str, dict[str, Any]], label: str, full: bool) -> dict[str, Any]:
    """The plots.py line keys of a row: in full, or as a grey context line."""
    if not full:
        return dict(CONTEXT)
    s = styles[label]
    return {"color": s["color"], "ls": s["ls"], "marker": s["marker"], "lw": FULL_LW,
            "band": True}


def legend_entry(styles: dict[str, dict[str, Any]], label: str) -> dict[str, Any]:
    s = styles[label]
    return {"label": s["name"], "color": s["color"], "ls": s["ls"], "marker": s["marker"]}


CONTEXT_LEGEND = {"label": "other rows (thin grey)", "color": CONTEXT["color"], "ls": "-"}
