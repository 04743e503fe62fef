"""Figure geometry at print size: every figure is drawn at the width it will have on the page
(``[report] figure_width``: "column" 3.25 in, "text" 5.5 in, the default, or a number of
inches), so its point sizes are the printed ones: no text under ``MIN_FONT`` (7 pt).

- ``grid``: the panels on as many columns as fit the width (each at least
  ``MIN_PANEL_W`` wide; a panel {"blank": True} keeps its slot empty), the figure as tall as
  its rows, title, tick labels and legend need; the x-axis label under the lowest panel of
  each column, the y-axis label beside the first of each row; matplotlib's constrained
  layout places the title and the legend (under the panels, never over data or labels)
  without overlaps;
- ``wrap``: titles and legend labels broken into lines that fit their width at their size
  (DejaVu Sans averages under ``CHAR_EM`` em per character);
- ``save``: vector PDF with TrueType (Type 42) fonts, as venues' checkers ask, and a PNG at
  ``DPI``, both written atomically; the PDF carries no creation date, so an unchanged figure
  is an unchanged file.
"""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any

from harness.files import atomic_write_bytes

WIDTHS = {"column": 3.25, "text": 5.5}   # inches: a two-column venue's column, NeurIPS' text
DEFAULT_WIDTH = "text"
MIN_WIDTH, MAX_WIDTH = 2.0, 10.0         # a number of inches must lie in this range
MIN_FONT = 7.0                           # tick labels, legend, notes in panels
LABEL_FONT = 7.5                         # axis labels and panel titles
TITLE_FONT = 8.5                         # the figure's title
CHAR_EM = 0.56                           # DejaVu Sans: mean glyph width (em) of labels
MIN_PANEL_W = {"images": 1.05}           # inches per panel; other kinds: DEFAULT_PANEL_W
DEFAULT_PANEL_W = 1.55
DPI = 300
PT = 1 / 72                              # inches per point
MAX_HEIGHT = 8.2                         # inches: a page of text (9 in) with its caption
MIN_PANEL_H = 0.9


def width_inches(value: Any) -> float:
    """``[report] figure_width`` in inches (keys.py checks the value)."""
    if value is None:
        value = DEFAULT_WIDTH
    return float(WIDTHS[value]) if isinstance(value, str) else float(value)


def wrap(text: str, width_in: float, size: float) -> str:
    """``text`` broken into lines no wider than ``width_in`` at ``size`` points (existing
    line breaks kept)."""
    chars = max(8, int(width_in / (CHAR_EM * size * PT)))
    return "\n".join(textwrap.fill(part, chars, break_long_words=False, break_on_hyphens=False)
                     for part in str(text).split("\n"))


def lines(text: str) -> int:
    return str(text).count("\n") + 1 if text else 0


def max_cols(width: float, kind: str) -> int:
    """Panels side by side at ``width``: each at least MIN_PANEL_W wide, and two from a
    column's width up (a column of one panel per row runs off the page)."""
    fit = int((width - (0.15 if kind == "images" else 0.3)) // MIN_PANEL_W.get(kind,
                                                                            DEFAULT_PANEL_W))
    return max(2 if width >= 3.0 else 1, fit)


def columns(spec: dict[str, Any], n_panels: int) -> int:
    """The spec's columns (default: all panels in a row), as many as fit its width."""
    want = spec.get("ncols") or n_panels
    return max(1, min(want, n_panels, max_cols(spec["width"], spec["kind"])))


LEGEND_COL_W = 1.6     # inches per legend column (handle, gap and label)
LEGEND_HANDLE_W = 0.55  # inches of a legend column taken by the handle and the gap


def legend_columns(labels: list[str], width: float) -> tuple[int, float]:
    """(columns, label width in inches): as many columns as ``LEGEND_COL_W`` allows, fewer
    when every label fits on one line in fewer."""
    n = max(1, min(len(labels), int(width // LEGEND_COL_W)))
    longest = max((len(s) for lab in labels for s in lab.split("\n")), default=1)
    while n > 1 and longest * CHAR_EM * MIN_FONT * PT < width / (n - 1) - LEGEND_HANDLE_W \
            and -(-len(labels) // (n - 1)) == -(-len(labels) // n):
        n -= 1  # fewer columns, same rows: roomier
    return n, width / n - LEGEND_HANDLE_W


def panel_size(width: float, ncols: int, kind: str) -> tuple[float, float]:
    """(width, height) of one panel in inches."""
    if kind == "images":  # no tick labels or axis labels: the whole width
        w = (width - 0.15) / ncols - 0.08
        return w, w
    w = (width - 0.55) / ncols - (0.3 if ncols > 1 else 0.0)
    return w, min(max(0.68 * w, 1.05), 1.9)


def figure_height(spec: dict[str, Any], nrows: int, panel_h: float, title_lines: int,
                  panel_title_lines: int, legend_rows: int, below_in: float = 0.0) -> float:
    """The height the panels, their titles and tick labels, the figure's title, the x-axis
    label and the legend need (constrained layout then places them)."""
    per_row = panel_h + panel_title_lines * LABEL_FONT * 1.35 * PT + below_in
    # tick labels; a picture keeps its aspect, so its row gets slack instead
    per_row += 0.15 if spec["kind"] == "images" else MIN_FONT * 2.0 * PT
    extra = title_lines * TITLE_FONT * 1.35 * PT + 0.12
    extra += LABEL_FONT * 2.2 * PT if spec.get("xlabel") else 0.0
    extra += legend_rows * MIN_FONT * 1.5 * PT + (0.12 if legend_rows else 0.0)
    return nrows * per_row + extra + 0.1


def grid(plt, spec: dict[str, Any], below_in: float = 0.0):
    """The figure and its panels: (figure, used axes, panel width). Titles and legend
    labels in ``spec`` are wrapped to fit here (``spec`` is changed)."""
    n = len(spec["panels"])
    ncols = columns(spec, n)
    nrows = math.ceil(n / ncols)
    width = spec["width"]
    pw, ph = panel_size(width, ncols, spec["kind"])
    spec["title"] = wrap(spec.get("title", ""), width - 0.2, TITLE_FONT)
    for p in spec["panels"]:
        p["title"] = wrap(p.get("title", ""), pw, LABEL_FONT)
    legend = spec.get("legend") or []
    ncol_legend, label_w = legend_columns([h["label"] for h in legend], width)
    for h in legend:
        h["label"] = wrap(h["label"], label_w, MIN_FONT)
    spec["legend_ncol"] = ncol_legend
    legend_rows = sum(max(lines(h["label"]) for h in legend[i:i + ncol_legend])
                      for i in range(0, len(legend), ncol_legend))
    args = (lines(spec["title"]), max((lines(p["title"]) for p in spec["panels"]), default=0),
            legend_rows, below_in)
    height = figure_height(spec, nrows, ph, *args)
    if height > MAX_HEIGHT and spec["kind"] != "images":  # flatter panels, to fit a page
        ph = max(MIN_PANEL_H, ph - (height - MAX_HEIGHT) / nrows)
        height = figure_height(spec, nrows, ph, *args)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                             sharex=spec.get("sharex", False), layout="constrained")
    fig.get_layout_engine().set(w_pad=2 * PT, h_pad=3 * PT, wspace=0.02, hspace=0.02)
    flat = list(axes.flat)
    used = [i for i, p in enumerate(spec["panels"]) if not p.get("blank")]
    for i, ax in enumerate(flat):
        if i not in used:
            ax.set_visible(False)
    for i in used:  # the first panel of each row: the shared y label, wrapped to its height
        if i % ncols == 0 and spec.get("ylabel") and not spec["panels"][i].get("ylabel"):
            flat[i].set_ylabel(wrap(spec["ylabel"], 0.95 * ph, LABEL_FONT))
    for col in range(ncols):  # the lowest used panel of each column: tick labels, x label
        lowest = max((i for i in used if i % ncols == col), default=None)
        if lowest is None:
            continue
        flat[lowest].xaxis.set_tick_params(labelbottom=True)
        if spec.get("xlabel"):
            flat[lowest].set_xlabel(wrap(spec["xlabel"], pw, LABEL_FONT))
    return fig, flat[:n], pw


def decorate(fig, spec: dict[str, Any], handles: tuple[list, list]) -> None:
    """The figure's title and legend (under the panels)."""
    if spec.get("title"):
        fig.suptitle(spec["title"], fontsize=TITLE_FONT)
    if handles[1]:
        fig.legend(*handles, loc="outside lower center", ncol=spec.get("legend_ncol", 1),
                   fontsize=MIN_FONT, frameon=False, handlelength=2.6, columnspacing=1.2,
                   borderaxespad=0.2)


def save(fig, spec: dict[str, Any], out_dir: Path) -> list[Path]:
    """NAME.png (DPI) and NAME.pdf (Type 42 fonts, no creation date), atomically. The
    layout is computed once, for the PNG, and kept for the PDF."""
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        kw = ({"pil_kwargs": {"compress_level": 1}} if ext == "png" else  # fast zlib level
              {"metadata": {"CreationDate": None}})
        fig.savefig(buf, format=ext, dpi=DPI, **kw)
        fig.set_layout_engine("none")  # the positions stay where the layout put them
        path = Path(out_dir) / f"{spec['name']}.{ext}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
