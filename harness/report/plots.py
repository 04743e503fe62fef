"""Figures for the report, drawn with matplotlib (Agg) from plain-data figure specs at print
size (layout.py: the figure's width is its width on the page).

harness/report/ computes every number and hands this module specs (built in figures.py,
compute.py, aggregate.py, sr.py: dicts of lists and arrays, titles, colours); this module
only draws them and writes NAME.pdf and NAME.png. Plain-data specs let forked processes draw
while the report computes its tables.

Spec kinds (all: "name", "width" (inches), "title", "panels", optional "legend" [{label,
color, ls, lw, marker, mfc}], "ncols", "xlabel" and "ylabel" (shared by every panel), a
panel's own "ylabel" (its axis alone); keys a kind does not know are ignored):

- "curves": panel {"title", "lines": [{"x", "mean", "lo"|None, "hi"|None, "color", "ls",
  "lw", "marker", "mfc", "band", "role", "clip_hi", "clip_lo"}], "ylim", "logy",
  "vlines": [{"x", "color", "ls"}], "marks": [{"x", "y", "color"}]}: per-epoch means with
  optional CI bands (unless "band" is False), a few markers along a line that has one
  (``MARKS_PER_LINE``; a one-point line without one gets a short bar), triangles where a
  band was clipped to its bounds (x positions in "clip_hi"/"clip_lo"), vertical reference
  lines and hollow circles at read-off points; a line's "role" ("context", "fp",
  "bicubic") says what it is;
- "points": panel {"title", "rows": [{"color", "marker", "mfc", "name", "seeds", "mean",
  "lo", "hi"}]}: per-seed dots beside the mean and its CI bar (no bar: n = 1), the rows
  named under the axis;
- "budget": panel {"title", "budgets", "rows": [{"color", "ls", "lw", "marker", "mfc",
  "role", "trained": {"x", "mean", "lo", "hi", "seeds", "clipped"}, "readoff": {"x",
  "mean"}}]}: accuracy vs budget with CI bars and seed dots; accuracies read off the
  longest runs' curves are hollow circles joined to that run's point by a dashed line;
- "images": panel {"title", "image": path of a PNG}: pictures side by side, pixels shown
  as they are (nearest neighbour, no axes, no legend or axis labels), e.g. super-resolution
  crops.

Every artist a caption may describe carries a gid naming its kind (``KINDS``), and
``planned(spec)`` says from the spec alone which kinds a figure draws: figures.py builds
each caption from ``planned``, and tests/test_report_figures.py checks the drawn gids
against it, so a caption cannot promise what is not drawn.

matplotlib spends most of its time per artist, so each panel draws its lines as one
LineCollection per role and its CI bands as one PolyCollection.
"""
from __future__ import annotations

import copy
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from harness.report import layout

Spec = dict[str, Any]
BAND_ALPHA = 0.18
MAX_POINTS = 150  # per curve: longer curves are drawn every k-th epoch
MARKS_PER_LINE = 6
SINGLE_POINT = ("_", 60)    # marker and size of a one-point line that has no marker
MARKER_SIZE = 12            # points², row markers along lines
# the artists a caption may describe, by gid
KINDS = ("band", "clipped", "context", "fp", "bicubic", "tstar", "hollow", "connector",
         "seeds", "ci_bar", "single")
ROLES = ("context", "fp", "bicubic")   # line roles drawn as their own (gid'd) collection


def stride(n: int) -> int:
    return -(-n // MAX_POINTS)


def _thin(arr, k: int):
    """Every k-th point, always keeping the last one."""
    a = np.asarray(arr, dtype=float)
    if k <= 1 or len(a) < 2:
        return a
    idx = np.r_[np.arange(0, len(a) - 1, k), len(a) - 1]
    return a[idx]


# --------------------------------------------------------------------------- what is drawn

def _thinned(ln: Spec) -> Spec:
    """A line as drawn: every ``stride``-th point of a long one."""
    k = stride(len(ln["x"]))
    return {**ln, **{key: _thin(ln[key], k) for key in ("x", "mean", "lo", "hi")
                     if ln.get(key) is not None}}


def _clip_points(ln: Spec) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(marker, x, y) of the triangles of a drawn (thinned) line: ▲ on the band's upper edge
    where it was clipped there, ▼ on the lower edge."""
    out = []
    if not ln.get("band", True):  # no band drawn: nothing to mark
        return out
    for key, edge, marker in (("clip_hi", "hi", "^"), ("clip_lo", "lo", "v")):
        if not len(ln.get(key) or ()) or ln.get(edge) is None:
            continue
        x = np.asarray(ln["x"], float)
        mask = np.isin(x, np.asarray(ln[key], float))
        if mask.any():
            out.append((marker, x[mask], np.asarray(ln[edge], float)[mask]))
    return out


def _curve_kinds(panel: Spec) -> set[str]:
    out = set()
    for ln in panel["lines"]:
        if len(ln["x"]) == 0:
            continue
        if ln.get("lo") is not None and ln.get("band", True):
            out.add("band")
        if ln.get("role") in ROLES:
            out.add(ln["role"])
        if _clip_points(_thinned(ln)):
            out.add("clipped")
    out |= {"tstar"} if panel.get("vlines") else set()
    return out | ({"hollow"} if panel.get("marks") else set())


def _budget_kinds(panel: Spec) -> set[str]:
    out = set()
    for row in panel["rows"]:
        t = row["trained"]
        if row.get("role") == "context":  # its means and line only
            out |= {"context"}
            continue
        out |= {"seeds"} if any(len(s) for s in t["seeds"]) else set()
        out |= {"ci_bar"} if any(lo is not None for lo in t["lo"]) else set()
        out |= {"clipped"} if any(t.get("clipped") or ()) else set()
        out |= {"hollow", "connector"} if (row.get("readoff") or {}).get("x") else set()
    return out


def _points_kinds(panel: Spec) -> set[str]:
    out = set()
    for row in panel["rows"]:
        out |= {"seeds"} if len(row["seeds"]) else set()
        out |= {"ci_bar"} if row.get("lo") is not None else {"single"}
    return out


def planned(spec: Spec) -> set[str]:
    """The kinds of artist (``KINDS``) drawing ``spec`` makes, from the spec alone."""
    per_panel = {"curves": _curve_kinds, "budget": _budget_kinds, "points": _points_kinds,
                 "images": lambda p: set()}[spec["kind"]]
    return set().union(set(), *(per_panel(p) for p in spec["panels"] if not p.get("blank")))


# --------------------------------------------------------------------------- shared pieces

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "pdf.fonttype": 42, "ps.fonttype": 42, "pdf.compression": 6,
        "font.size": layout.MIN_FONT, "axes.titlesize": layout.LABEL_FONT,
        "axes.labelsize": layout.LABEL_FONT, "xtick.labelsize": layout.MIN_FONT,
        "ytick.labelsize": layout.MIN_FONT, "legend.fontsize": layout.MIN_FONT,
        "axes.titlepad": 3.0, "axes.linewidth": 0.6, "xtick.major.width": 0.6,
        "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
        "xtick.major.pad": 1.5, "ytick.major.pad": 1.5, "lines.linewidth": 1.2})
    return plt


def _legend_handles(spec: Spec) -> tuple[list, list]:
    from matplotlib.lines import Line2D

    entries = spec.get("legend") or []
    return ([Line2D([], [], color=h.get("color", "0.3"), ls=h.get("ls", "-"),
                    lw=h.get("lw", 1.2), marker=h.get("marker", ""), ms=4,
                    mfc=h.get("mfc") or h.get("color", "0.3"), mew=0.8)
             for h in entries],
            [h["label"] for h in entries])


def _style(ax, panel: Spec, int_x: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

    ax.set_title(panel["title"])
    if panel.get("ylabel"):
        h = ax.get_position().height * ax.figure.get_figheight()
        ax.set_ylabel(layout.wrap(panel["ylabel"], 0.95 * h, layout.LABEL_FONT))
    if panel.get("logy"):
        ax.set_yscale("log")  # plain labels: matplotlib's default 10^k is slow mathtext
        ax.yaxis.set_major_locator(LogLocator(numticks=4))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.minorticks_off()
    else:
        ax.yaxis.set_major_locator(MaxNLocator(4, min_n_ticks=3))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
    if int_x:
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        lo, hi = ax.get_xlim()
        if hi - lo < 1:  # one epoch: its tick alone, not fractions of an epoch
            mid = round((lo + hi) / 2)
            ax.set_xlim(mid - 0.5, mid + 0.5)
            ax.set_xticks([mid])
    if panel.get("ylim"):
        ax.set_ylim(*panel["ylim"])
    lo, hi = ax.get_ylim()
    if not panel.get("logy") and hi - lo < 1e-6 * max(1.0, abs(hi)):  # a constant series
        ax.set_ylim(lo - 0.5, hi + 0.5)


def _scatter(ax, x, y, gid: str | None = None, **kw):
    art = ax.scatter(x, y, **kw)
    if gid:
        art.set_gid(gid)
    return art


# --------------------------------------------------------------------------- curves

def _line_marks(ax, lines: list[Spec]) -> None:
    """A few markers along each line that has one (hollow where its style says so); a
    one-point line without one is drawn as a short bar (``SINGLE_POINT``)."""
    single = [ln for ln in lines if not ln.get("marker") and len(ln["x"]) == 1]
    if single:
        ax.scatter([ln["x"][0] for ln in single], [ln["mean"][0] for ln in single],
                   s=SINGLE_POINT[1], marker=SINGLE_POINT[0], c=[ln["color"] for ln in single],
                   linewidths=1.5, zorder=3)
    for j, ln in enumerate(lines):
        n = len(ln["x"])
        if not ln.get("marker") or n == 0:
            continue
        idx = np.unique(np.linspace(0, n - 1, min(n, MARKS_PER_LINE)).round().astype(int))
        if n > MARKS_PER_LINE:  # stagger lines so their markers do not sit on each other
            idx = np.unique(np.clip(idx + j % 3 - 1, 0, n - 1))
        hollow = ln.get("mfc") == "white"
        ax.scatter(np.asarray(ln["x"])[idx], np.asarray(ln["mean"])[idx], s=MARKER_SIZE,
                   marker=ln["marker"], facecolors="white" if hollow else ln["color"],
                   edgecolors=ln["color"] if hollow else "white",
                   linewidths=0.8 if hollow else 0.3, zorder=3)


def _clip_marks(ax, lines: list[Spec]) -> None:
    """Triangles on a band's edge where it was clipped to its bounds (``_clip_points``)."""
    for ln in lines:
        for marker, x, y in _clip_points(ln):
            _scatter(ax, x, y, "clipped", s=14, marker=marker, c=[ln["color"]] * len(x),
                     linewidths=0, zorder=4, clip_on=False)


def _curve_panel(ax, panel: Spec) -> None:
    from matplotlib.collections import LineCollection, PolyCollection

    lines = [_thinned(ln) for ln in panel["lines"]]
    bands = [ln for ln in lines if ln.get("lo") is not None and ln.get("band", True)
             and len(ln["x"])]
    if bands:
        ax.add_collection(PolyCollection(
            [np.column_stack([np.r_[ln["x"], ln["x"][::-1]],
                              np.r_[ln["lo"], np.asarray(ln["hi"])[::-1]]]) for ln in bands],
            facecolors=[ln["color"] for ln in bands], alpha=BAND_ALPHA, lw=0, gid="band"))
    for role in (*ROLES, None):  # context lines first (under), then the rows in full
        group = [ln for ln in lines if ln.get("role") == role and len(ln["x"])]
        if group:
            ax.add_collection(LineCollection(
                [np.column_stack([ln["x"], ln["mean"]]) for ln in group],
                colors=[ln["color"] for ln in group],
                linestyles=[ln.get("ls", "-") for ln in group],
                linewidths=[ln.get("lw", 1.1) for ln in group], gid=role))
    _line_marks(ax, [ln for ln in lines if ln.get("role") != "context"])
    ax.autoscale_view()
    _clip_marks(ax, lines)
    for v in panel.get("vlines") or []:
        ax.axvline(v["x"], color=v.get("color", "0.3"), ls=v.get("ls", "--"), lw=0.8,
                   zorder=1, gid="tstar")
    marks = panel.get("marks") or []
    if marks:
        _scatter(ax, [m["x"] for m in marks], [m["y"] for m in marks], "hollow", s=30,
                 marker="o", facecolors="white", edgecolors=[m["color"] for m in marks],
                 linewidths=1.2, zorder=4)


def draw_curves(plt, spec: Spec):
    from matplotlib.ticker import MaxNLocator

    fig, axes, _ = layout.grid(plt, spec)
    for ax, panel in zip(axes, spec["panels"]):
        if panel.get("blank"):
            continue
        _curve_panel(ax, panel)
        if not spec.get("int_x", True):  # a continuous x (time): a few readable ticks
            ax.xaxis.set_major_locator(MaxNLocator(4, steps=[1, 2, 2.5, 5, 10]))
        _style(ax, panel, int_x=spec.get("int_x", True))
    return fig


# --------------------------------------------------------------------------- points

def draw_points(plt, spec: Spec):
    longest = max((len(r.get("name", "")) for p in spec["panels"] for r in p["rows"]), default=0)
    below = min(longest, 34) * layout.CHAR_EM * layout.MIN_FONT * layout.PT  # names, rotated
    fig, axes, _ = layout.grid(plt, spec, below_in=below)
    for ax, panel in zip(axes, spec["panels"]):
        rows = panel["rows"]
        xs, ys, cs = [], [], []
        for i, row in enumerate(rows):
            k = len(row["seeds"])
            xs += list(i - 0.3 + 0.3 * np.arange(k) / max(k - 1, 1))
            ys += list(row["seeds"])
            cs += [row["color"]] * k
        if xs:
            _scatter(ax, xs, ys, "seeds", s=7, c=cs, alpha=0.75, lw=0)
        bars = [(i, r) for i, r in enumerate(rows) if r.get("lo") is not None]
        if bars:
            ax.vlines([i + 0.25 for i, _ in bars], [r["lo"] for _, r in bars],
                      [r["hi"] for _, r in bars], colors=[r["color"] for _, r in bars],
                      lw=1.1, gid="ci_bar")
        for i, r in enumerate(rows):  # the mean in the row's marker
            hollow = r.get("mfc") == "white"
            _scatter(ax, [i + 0.25], [r["mean"]], None if r.get("lo") is not None else "single",
                     s=20, marker=r.get("marker") or "o",
                     facecolors="white" if hollow else r["color"], edgecolors=r["color"],
                     lw=0.8, zorder=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([layout.wrap(r.get("name", ""), 2.4, layout.MIN_FONT)
                            for r in rows], rotation=90)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        _style(ax, panel, int_x=False)
    return fig


# --------------------------------------------------------------------------- budget

def _budget_row(ax, row: Spec) -> None:
    c, t = row["color"], row["trained"]
    if row.get("role") == "context":  # a thin grey line through its means, nothing else
        ax.plot(t["x"], t["mean"], color=c, lw=row.get("lw", 0.7), marker="o", ms=2,
                gid="context", zorder=1)
        return
    ax.plot(t["x"], t["mean"], color=c, ls=row.get("ls", "-"), lw=row.get("lw", 1.0))
    hollow = row.get("mfc") == "white"
    ax.scatter(t["x"], t["mean"], s=16, marker=row.get("marker") or "o",
               facecolors="white" if hollow else c, edgecolors=c, lw=0.8, zorder=3)
    bars = [(x, lo, hi) for x, lo, hi in zip(t["x"], t["lo"], t["hi"]) if lo is not None]
    if bars:
        ax.vlines(*zip(*bars), colors=c, lw=1.0, gid="ci_bar")
    clipped = [(x, hi if hi >= 100 - 1e-9 else lo, "^" if hi >= 100 - 1e-9 else "v")
               for x, lo, hi, cl in zip(t["x"], t["lo"], t["hi"], t.get("clipped") or ())
               if cl and lo is not None]
    for x, y, marker in clipped:
        _scatter(ax, [x], [y], "clipped", s=14, marker=marker, c=[c], lw=0, zorder=4,
                 clip_on=False)
    sx = [x * 1.04 for x, seeds in zip(t["x"], t["seeds"]) for _ in seeds]  # beside the mean
    sy = [v for seeds in t["seeds"] for v in seeds]
    if sx:
        _scatter(ax, sx, sy, "seeds", s=5, c=[c] * len(sx), alpha=0.5, lw=0)
    r = row.get("readoff") or {}
    if r.get("x"):  # joined to the point of the runs it was read off (the longest budget)
        end = int(np.argmax(t["x"]))
        ax.plot(list(r["x"]) + [t["x"][end]], list(r["mean"]) + [t["mean"][end]], color=c,
                lw=0.8, ls=(0, (3, 2)), gid="connector", zorder=2)
        _scatter(ax, r["x"], r["mean"], "hollow", s=16, facecolors="white", edgecolors=c,
                 lw=0.9, zorder=3)


def draw_budget(plt, spec: Spec):
    fig, axes, _ = layout.grid(plt, spec)
    for ax, panel in zip(axes, spec["panels"]):
        for row in panel["rows"]:
            _budget_row(ax, row)
        ax.set_xscale("log")
        ax.autoscale_view()
        lo, hi = min(panel["budgets"]), max(panel["budgets"])
        ax.set_xlim(lo / 1.25, hi * 1.25)
        ax.set_xticks(panel["budgets"])
        ax.set_xticklabels([str(b) for b in panel["budgets"]])
        ax.minorticks_off()
        _style(ax, panel, int_x=False)
    return fig


# --------------------------------------------------------------------------- images

def draw_images(plt, spec: Spec):
    from PIL import Image

    fig, axes, _ = layout.grid(plt, spec)
    for ax, panel in zip(axes, spec["panels"]):
        with Image.open(panel["image"]) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(panel["title"])
    return fig


DRAW = {"curves": draw_curves, "points": draw_points, "budget": draw_budget,
        "images": draw_images}


def draw(spec: Spec):
    """The matplotlib figure of ``spec``, not saved (the caller closes it); ``spec`` itself is
    left as it is (its titles and legend labels are wrapped on a copy)."""
    plt = _pyplot()
    spec = copy.deepcopy(spec)
    fig = DRAW[spec["kind"]](plt, spec)
    layout.decorate(fig, spec, _legend_handles(spec))
    return fig


def render(spec: Spec, out_dir: str | Path) -> list[str]:
    plt = _pyplot()
    try:
        return [str(p) for p in layout.save(draw(spec), spec, Path(out_dir))]
    finally:
        plt.close("all")


def _render_star(args) -> list[str]:
    return render(*args)


def default_jobs() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


class Renderer:
    """Draws figure specs as they are handed over (``submit``), so the figures of the first
    sections are being drawn while later ones are computed; ``wait`` gives the written paths.

    With jobs > 1 (0 = one per core, at most 4) the figures are drawn by forked processes
    while the caller goes on; otherwise they are drawn when ``wait`` is called.
    """

    def __init__(self, out_dir: Path, jobs: int = 0):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jobs, self.pool, self.futures, self.here = jobs or default_jobs(), None, [], []

    def submit(self, specs: list[Spec]) -> None:
        if self.jobs > 1 and self.pool is None and specs:
            _pyplot()  # imported once here, inherited by the forked workers
            try:
                self.pool = ProcessPoolExecutor(self.jobs, mp_context=mp.get_context("fork"))
            except OSError:  # no processes to be had: draw them here, when asked
                self.jobs = 1
        if self.pool is None:
            self.here += specs
            return
        for s in sorted(specs, key=lambda s: -len(s["panels"])):  # biggest first: even finish
            self.futures.append(self.pool.submit(_render_star, (s, self.out_dir)))

    def cancel(self) -> None:
        """Drop the figures not yet started (a later section failed: no report is written)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def wait(self) -> list[str]:
        try:
            drawn = [p for f in self.futures for p in f.result()]
            return drawn + [p for s in self.here for p in render(s, self.out_dir)]
        finally:
            if self.pool is not None:
                self.pool.shutdown()
