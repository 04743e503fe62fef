"""How each row looks in every figure of a report, and which rows a panel highlights.

``row_styles(st)``: one colour, marker (shape and fill) and dash per row, the same in every
figure of the report, told apart in greyscale, not by hue alone:

- fp (the full-precision reference): black, dotted, no marker;
- ours' default row a filled circle, every other row in display order a marker of its own
  (``MARKERS``: seven shapes filled, then four hollow; a hollow circle is never a row's
  marker: figures use it for read-off points), so up to 12 rows never share one;
- the variants of one method are grouped: they share the method's hue (ours: blue), in
  shades of different lightness, next to each other in every legend;
- a dash pattern (``DASHES``; ours' default solid) chosen so that any two rows differ in
  dash or in grey level (luma, ``luma``) by at least ``MIN_LUMA_STEP``, besides their
  markers: ``distinct_in_greyscale`` is the rule, and tests/test_report_figures.py checks
  it for 12 rows.

``highlight(st, setting, means)``: a crowded panel draws ours, the strongest baseline there
(the highest mean among the other methods' rows) and fp in full, with bands; the other rows
are thin grey context lines (``CONTEXT``), and the figures' "all rows" companion shows them
in their own styles. Without ours: the two best rows and fp.
"""
from __future__ import annotations

from typing import Any

from matplotlib.colors import to_hex, to_rgb

from harness.report.load import StudyRecords

OURS_COLOR, FP_COLOR = "#0072B2", "#000000"
# one base hue per method (Okabe-Ito first, colour-blind safe); ours takes OURS_COLOR
PALETTE = ("#D55E00", "#009E73", "#E69F00", "#CC79A7", "#8C510A", "#999933", "#882255",
           "#44AA99", "#B2182B", "#4D9221", "#332288", "#AA4499")   # no grey: context lines
# (shape, filled): ours' default the filled circle, the others in order; the hollow circle
# is kept for read-off marks
OURS_MARKER = ("o", True)
MARKERS = (("s", True), ("^", True), ("D", True), ("v", True), ("P", True), ("X", True),
           ("*", True), ("s", False), ("^", False), ("D", False), ("v", False))
# solid, dashed, dash-dot, long dash, dash-dot-dot, dash-dash-dot: none dotted (fp's alone)
DASHES = ("-", (0, (4, 1.6)), (0, (6, 1.5, 1.2, 1.5)), (0, (8, 2.5)),
          (0, (2.5, 1.2, 1, 1.2, 1, 1.2)), (0, (4, 1.2, 4, 1.2, 1.2, 1.2)))
FP_DASH = ":"
SHADES = (0.0, 0.45, -0.4, 0.7, -0.65)   # a method's variants: mixed with white (+) or black
MIN_LUMA_STEP = 0.12
CONTEXT = {"color": "#b0b0b0", "lw": 0.7, "ls": "-", "marker": "", "band": False,
           "role": "context"}
FULL_LW, THIN_LW = 1.4, 0.9


def luma(color: str) -> float:
    """The grey level (0 black, 1 white) a colour prints at: ITU-R 601 luma, as greyscale
    conversion (and PIL's convert("L")) computes it."""
    r, g, b = to_rgb(color)
    return 0.299 * r + 0.587 * g + 0.114 * b


def shade(color: str, amount: float) -> str:
    """``color`` mixed with white (amount > 0) or black (< 0)."""
    rgb = to_rgb(color)
    target = 1.0 if amount > 0 else 0.0
    return to_hex(tuple(c + abs(amount) * (target - c) for c in rgb))


def distinct_in_greyscale(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two row styles tell apart without colour: other marker (shape or fill), and other
    dash or a grey level at least MIN_LUMA_STEP apart."""
    other_marker = (a["marker"], a.get("mfc")) != (b["marker"], b.get("mfc"))
    other_line = a["ls"] != b["ls"] or abs(luma(a["color"]) - luma(b["color"])) >= MIN_LUMA_STEP
    return other_marker and other_line


def _pick(taken: list[dict[str, Any]], colors: list[str], marker: tuple[str, bool],
          first_dash: int) -> dict[str, Any]:
    """The first (colour, dash) that keeps the new row distinct from every row so far."""
    shape, filled = marker
    for color in colors:
        for k in range(len(DASHES)):
            dash = DASHES[(first_dash + k) % len(DASHES)]
            style = {"color": color, "marker": shape, "mfc": None if filled else "white",
                     "ls": dash}
            if all(distinct_in_greyscale(style, t) for t in taken):
                return style
    return {"color": colors[0], "marker": shape, "mfc": None if filled else "white",
            "ls": DASHES[first_dash % len(DASHES)]}


def row_styles(st: StudyRecords) -> dict[str, dict[str, Any]]:
    """label -> {"color", "marker", "mfc", "ls", "name"} for every row of the study."""
    ours = st.default_variant(st.ours, st.order) if st.ours else None
    fp = st.default_variant("fp", st.order)
    methods = list(dict.fromkeys(st.method_of.get(lab) for lab in st.order
                                 if lab != fp and st.method_of.get(lab) != st.ours))
    base = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    if st.ours:
        base[st.ours] = OURS_COLOR
    out: dict[str, dict[str, Any]] = {}
    taken: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    others = [lab for lab in st.order if lab not in (fp, ours)]
    for lab in ([ours] if ours else []) + others:
        m = st.method_of.get(lab)
        k = seen.get(m, 0)
        seen[m] = k + 1
        colors = [shade(base.get(m, PALETTE[0]), SHADES[(k + j) % len(SHADES)])
                  for j in range(len(SHADES))]
        i = others.index(lab) if lab != ours else -1
        style = _pick(taken, colors, OURS_MARKER if lab == ours else MARKERS[i % len(MARKERS)],
                      0 if lab == ours else 1 + i)
        taken.append(style)
        out[lab] = {**style, "name": st.display(lab)}
    if fp:
        out[fp] = {"color": FP_COLOR, "marker": "", "mfc": None, "ls": FP_DASH,
                   "name": st.display(fp)}
    return {lab: out[lab] for lab in st.order if lab in out}


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
    return {"color": s["color"], "ls": s["ls"], "marker": s["marker"], "mfc": s.get("mfc"),
            "lw": FULL_LW, "band": True, **({"role": "fp"} if s["ls"] == FP_DASH else {})}


def legend_entry(styles: dict[str, dict[str, Any]], label: str) -> dict[str, Any]:
    s = styles[label]
    return {"label": s["name"], "color": s["color"], "ls": s["ls"], "marker": s["marker"],
            "mfc": s.get("mfc")}


CONTEXT_LEGEND = {"label": "other rows (thin grey)", "color": CONTEXT["color"], "ls": "-"}
