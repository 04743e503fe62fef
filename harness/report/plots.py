"""Figures for the report, drawn with matplotlib (Agg) from plain-data figure specs.

harness/report/ computes every number and hands this module specs (built in
harness/report/figures.py: dicts of lists and arrays, titles, colours); this module only
draws them and writes NAME.png and NAME.pdf.
Plain-data specs let forked processes draw while the report computes its tables.

matplotlib spends most of its time per artist and per axis (ticks, text layout), so each
panel draws its lines as one LineCollection and its CI bands as one PolyCollection, axis
labels are written once per figure, and titles have a fixed position.

Spec kinds (all: "name", "title", "panels", optional "legend" [{label, color, ls, lw,
marker, mfc}], "ncols", "xlabel", "ylabel"; a panel's own "ylabel" names its row of panels;
keys a kind does not know are ignored):
- "curves": panel {"title", "lines": [{"x", "mean", "lo"|None, "hi"|None, "color", "ls",
  "lw", "marker", "band"}], "ylim", "logy", "vlines": [{"x", "color", "ls"}], "marks":
  [{"x", "y", "color", "marker"}]}: per-epoch means with optional CI bands (drawn unless
  "band" is False), a few markers along a line that has one (``MARKS_PER_LINE``; a
  one-point line without one gets a short bar, ``SINGLE_POINT``), vertical
  reference lines and hollow marks at read-off points; lines are drawn in the given order
  (context lines first);
- "points": panel {"title", "rows": [{"color", "marker", "name", "seeds", "mean", "lo",
  "hi"}]}: per-seed dots beside the mean and its CI bar (hollow mean and no bar: n = 1),
  the rows named under the axis;
- "budget": panel {"title", "budgets", "rows": [{"color", "ls", "lw", "marker",
  "trained": {"x", "mean", "lo", "hi", "seeds"}, "readoff": {"x", "mean"}}]}: accuracy vs
  budget, CI bars, seed dots, and accuracies read off longer runs (hollow markers, dashed);
- "images": panel {"title", "image": path of a PNG}: pictures side by side, pixels shown
  as they are (nearest neighbour, no axes), e.g. super-resolution crops.

Rows are told apart by marker and dash as well as colour, so a figure reads in greyscale.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from harness.records import atomic_write_bytes

Spec = dict[str, Any]
PANEL_W, PANEL_H = 3.2, 2.4   # inches per panel
MAX_COLS = 4
DPI = 110
BAND_ALPHA = 0.18
MAX_POINTS = 150  # per curve: a panel is ~350 px wide; longer curves are drawn every k-th epoch
MARKS_PER_LINE = 6
SINGLE_POINT = ("_", 160)   # marker and size of a one-point line that has no marker


def stride(n: int) -> int:
    return -(-n // MAX_POINTS)


def _thin(arr, k: int):
    """Every k-th point, always keeping the last one."""
    a = np.asarray(arr, dtype=float)
    if k <= 1 or len(a) < 2:
        return a
    idx = np.r_[np.arange(0, len(a) - 1, k), len(a) - 1]
    return a[idx]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A fixed title position skips a per-axes layout pass (see the module docstring).
    plt.rcParams.update({"axes.titley": 1.0, "axes.titlepad": 4.0, "pdf.compression": 1})
    return plt


def _grid(plt, n_panels: int, ncols: int | None, sharex: bool | str, below_in: float = 0.0,
          legend: bool = False):
    """Panels on a grid, ``below_in`` inches more under each row (tick labels); returns
    (figure, used axes, spare axes). A single panel with a legend gets a second slot for it
    (beside a one-panel figure, the legend would squeeze the panel and cut the title)."""
    ncols = 2 if legend and n_panels == 1 else ncols or min(MAX_COLS, n_panels)
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols,
                             figsize=(PANEL_W * ncols, (PANEL_H + below_in) * nrows + 0.8),
                             squeeze=False, sharex=sharex)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    if sharex:  # the lowest used panel of each column keeps its tick labels
        for ax in flat[max(0, n_panels - ncols):n_panels]:
            ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n_panels], flat[n_panels:]


def _legend_handles(spec: Spec) -> tuple[list, list]:
    from matplotlib.lines import Line2D

    entries = spec.get("legend") or []
    return ([Line2D([], [], color=h.get("color", "0.3"), ls=h.get("ls", "-"),
                    lw=h.get("lw", 1.4), marker=h.get("marker", ""), mfc=h.get("mfc"), ms=4)
             for h in entries],
            [h["label"] for h in entries])


def _style(ax, panel: Spec, int_x: bool = True) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(panel["title"], fontsize=9)
    if panel.get("ylabel"):  # names the row of panels it starts (the figure's ylabel: all)
        ax.set_ylabel(panel["ylabel"], fontsize=9, fontweight="bold")
    ax.tick_params(labelsize=7)
    if panel.get("logy"):
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_yscale("log")  # plain labels: matplotlib's default 10^k is slow mathtext
        ax.yaxis.set_major_locator(LogLocator(numticks=5))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.minorticks_off()
    else:
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_locator(MaxNLocator(4))
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


def _finish(fig, spec: Spec, spare, out_dir: Path, bottom_in: float = 0.6,
            hspace: float = 0.45) -> list[Path]:

    w, h = fig.get_figwidth(), fig.get_figheight()
    fig.suptitle(spec["title"], fontsize=10)
    if spec.get("xlabel"):
        fig.supxlabel(spec["xlabel"], fontsize=8)
    if spec.get("ylabel"):
        fig.supylabel(spec["ylabel"], fontsize=8)
    handles = _legend_handles(spec)
    right = 0.985
    if handles[1]:
        if spare:  # an empty grid slot holds the legend
            ax = spare[0]
            ax.set_visible(True)
            ax.axis("off")
            ax.legend(*handles, loc="center", fontsize=7, frameon=False,
                      ncol=1 if len(handles[1]) <= 9 else 2)
        else:
            longest = max(len(line) for lab in handles[1] for line in lab.split("\n"))
            right = 1 - min(0.4 * w, 0.06 * longest + 0.6) / w
            fig.legend(*handles, loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.75 / w, right=right, top=1 - 0.55 / h, bottom=bottom_in / h,
                        wspace=0.3, hspace=hspace)
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=DPI,  # fast PNG zlib level: size hardly matters
                    **({"pil_kwargs": {"compress_level": 1}} if ext == "png" else {}))
        data = buf.getvalue()
        path = out_dir / f"{spec['name']}.{ext}"
        atomic_write_bytes(path, data)
        paths.append(path)
    return paths


def _line_marks(ax, lines: list[Spec]) -> None:
    """A few markers along each line that has one: one scatter per marker shape. A line of
    one point (a 1-epoch run) draws nothing, so one without a marker of its own is drawn as
    a short bar (``SINGLE_POINT``), a level like its dotted or dashed line would show."""
    by_marker: dict[str, list] = {}
    single = [ln for ln in lines if not ln.get("marker") and len(ln["x"]) == 1]
    if single:
        ax.scatter([ln["x"][0] for ln in single], [ln["mean"][0] for ln in single],
                   s=SINGLE_POINT[1], marker=SINGLE_POINT[0], c=[ln["color"] for ln in single],
                   linewidths=1.8, zorder=3)
    for j, ln in enumerate(lines):
        if not ln.get("marker") or len(ln["x"]) == 0:
            continue
        n = len(ln["x"])
        idx = np.unique(np.linspace(0, n - 1, min(n, MARKS_PER_LINE)).round().astype(int))
        if n > MARKS_PER_LINE:  # stagger lines so their markers do not sit on each other
            idx = np.unique(np.clip(idx + j % 3 - 1, 0, n - 1))
        pts = by_marker.setdefault(ln["marker"], [[], [], []])
        pts[0] += list(np.asarray(ln["x"])[idx])
        pts[1] += list(np.asarray(ln["mean"])[idx])
        pts[2] += [ln["color"]] * len(idx)
    for marker, (x, y, c) in by_marker.items():
        ax.scatter(x, y, s=16, marker=marker, c=c, edgecolors="white", linewidths=0.4,
                   zorder=3)


def _panel_extras(ax, panel: Spec) -> None:
    """Vertical reference lines and hollow read-off marks of a curves panel."""
    for v in panel.get("vlines") or []:
        ax.axvline(v["x"], color=v.get("color", "0.3"), ls=v.get("ls", "--"), lw=0.8,
                   zorder=1)
    marks = panel.get("marks") or []
    for m in marks:
        ax.scatter([m["x"]], [m["y"]], s=34, marker=m.get("marker") or "o",
                   facecolors="white", edgecolors=m["color"], linewidths=1.1, zorder=4)


def draw_curves(plt, spec: Spec, out_dir: Path) -> list[Path]:
    from matplotlib.collections import LineCollection, PolyCollection

    fig, axes, spare = _grid(plt, len(spec["panels"]), spec.get("ncols"),
                             sharex=spec.get("sharex", True), legend=bool(spec.get("legend")))
    for ax, panel in zip(axes, spec["panels"]):
        lines = []
        for ln in panel["lines"]:
            k = stride(len(ln["x"]))
            lines.append({**ln, **{key: _thin(ln[key], k) for key in ("x", "mean", "lo", "hi")
                                   if ln.get(key) is not None}})
        bands = [ln for ln in lines if ln.get("lo") is not None and ln.get("band", True)]
        if bands:
            ax.add_collection(PolyCollection(
                [np.column_stack([np.r_[ln["x"], ln["x"][::-1]],
                                  np.r_[ln["lo"], np.asarray(ln["hi"])[::-1]]]) for ln in bands],
                facecolors=[ln["color"] for ln in bands], alpha=BAND_ALPHA, lw=0))
        if lines:
            ax.add_collection(LineCollection(
                [np.column_stack([ln["x"], ln["mean"]]) for ln in lines],
                colors=[ln["color"] for ln in lines],
                linestyles=[ln.get("ls", "-") for ln in lines],
                linewidths=[ln.get("lw", 1.1) for ln in lines]))
            _line_marks(ax, lines)
            ax.autoscale_view()
        _panel_extras(ax, panel)
        if not spec.get("int_x", True):  # a continuous x (time): a few readable ticks
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        _style(ax, panel, int_x=spec.get("int_x", True))
    return _finish(fig, spec, spare, out_dir)


def draw_points(plt, spec: Spec, out_dir: Path) -> list[Path]:
    longest = max((len(r.get("name", "")) for p in spec["panels"] for r in p["rows"]), default=0)
    below = 0.05 * longest  # vertical row names under each panel
    fig, axes, spare = _grid(plt, len(spec["panels"]), spec.get("ncols"), sharex=False,
                             below_in=below)
    for ax, panel in zip(axes, spec["panels"]):
        rows = panel["rows"]
        xs, ys, cs = [], [], []
        for i, row in enumerate(rows):
            k = len(row["seeds"])
            xs += list(i - 0.3 + 0.4 * np.arange(k) / max(k - 1, 1))
            ys += list(row["seeds"])
            cs += [row["color"]] * k
        ax.scatter(xs, ys, s=9, c=cs, alpha=0.7, lw=0)
        bars = [(i, r) for i, r in enumerate(rows) if r.get("lo") is not None]
        if bars:
            ax.vlines([i + 0.3 for i, _ in bars], [r["lo"] for _, r in bars],
                      [r["hi"] for _, r in bars], colors=[r["color"] for _, r in bars], lw=1.2)
        for i, r in enumerate(rows):  # the mean in the row's marker (hollow: n = 1)
            ax.scatter([i + 0.3], [r["mean"]], s=22, marker=r.get("marker") or "o",
                       c=r["color"] if r.get("lo") is not None else "white",
                       edgecolors=r["color"], lw=0.8, zorder=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r.get("name", "") for r in rows], rotation=90, fontsize=6)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        _style(ax, panel, int_x=False)
    rows_h = PANEL_H + below
    return _finish(fig, spec, spare, out_dir, bottom_in=0.6 + below,
                   hspace=(below + 0.45) / (rows_h - below))


def draw_budget(plt, spec: Spec, out_dir: Path) -> list[Path]:
    from matplotlib.collections import LineCollection

    fig, axes, spare = _grid(plt, len(spec["panels"]), spec.get("ncols"), sharex=True,
                             legend=bool(spec.get("legend")))
    for ax, panel in zip(axes, spec["panels"]):
        # one artist per kind of mark (see the module docstring)
        seg, segc, mx, my, mc = [], [], [], [], []
        bx, blo, bhi, bc = [], [], [], []
        sx, sy, sc = [], [], []
        rseg, rsegc, rx, ry, rc = [], [], [], [], []
        segw, segls, mm = [], [], []
        for row in panel["rows"]:
            c, t = row["color"], row["trained"]
            seg.append(list(zip(t["x"], t["mean"])))
            segc.append(c)
            segw.append(row.get("lw", 1.0))
            segls.append(row.get("ls", "-"))
            mx += t["x"]
            my += t["mean"]
            mc += [c] * len(t["x"])
            mm += [row.get("marker") or "o"] * len(t["x"])
            for x, lo, hi, seeds in zip(t["x"], t["lo"], t["hi"], t["seeds"]):
                if lo is not None:
                    bx.append(x)
                    blo.append(lo)
                    bhi.append(hi)
                    bc.append(c)
                sx += [x * 1.04] * len(seeds)  # beside the mean, not on it
                sy += list(seeds)
                sc += [c] * len(seeds)
            r = row.get("readoff") or {}
            if r.get("x"):
                rseg.append(list(zip(r["x"], r["mean"])))
                rsegc.append(c)
                rx += r["x"]
                ry += r["mean"]
                rc += [c] * len(r["x"])
        ax.add_collection(LineCollection(seg, colors=segc, linewidths=segw, linestyles=segls))
        if rseg:
            ax.add_collection(LineCollection(rseg, colors=rsegc, linewidths=0.8,
                                             linestyles="--"))
            ax.scatter(rx, ry, s=16, facecolors="white", edgecolors=rc, lw=0.8, zorder=3)
        if bx:
            ax.vlines(bx, blo, bhi, colors=bc, lw=1)
        for marker in dict.fromkeys(mm):
            pick = [i for i, m in enumerate(mm) if m == marker]
            ax.scatter([mx[i] for i in pick], [my[i] for i in pick], s=16, marker=marker,
                       c=[mc[i] for i in pick], zorder=3)
        if sx:
            ax.scatter(sx, sy, s=6, c=sc, alpha=0.5, lw=0)
        ax.set_xscale("log")
        ax.autoscale_view()
        ax.set_xticks(panel["budgets"])
        ax.set_xticklabels([str(b) for b in panel["budgets"]])
        ax.minorticks_off()
        _style(ax, panel, int_x=False)
    return _finish(fig, spec, spare, out_dir)


def draw_images(plt, spec: Spec, out_dir: Path) -> list[Path]:
    from PIL import Image

    fig, axes, spare = _grid(plt, len(spec["panels"]), spec.get("ncols"), sharex=False)
    for ax, panel in zip(axes, spec["panels"]):
        with Image.open(panel["image"]) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(panel["title"], fontsize=8)
    return _finish(fig, spec, spare, out_dir, bottom_in=0.2, hspace=0.3)


DRAW = {"curves": draw_curves, "points": draw_points, "budget": draw_budget,
        "images": draw_images}


def render(spec: Spec, out_dir: str | Path) -> list[str]:
    plt = _pyplot()
    try:
        return [str(p) for p in DRAW[spec["kind"]](plt, spec, Path(out_dir))]
    finally:
        plt.close("all")


def _render_star(args) -> list[str]:
    return render(*args)


def default_jobs() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


def start_render(specs: list[Spec], out_dir: Path, jobs: int = 0) -> Callable[[], list[str]]:
    """Start drawing every spec and return a function that waits and gives the written paths.

    With jobs > 1 (0 = one per core, at most 4) the figures are drawn by forked processes
    while the caller goes on (the report writes its tables meanwhile); otherwise they are
    drawn when the returned function is called.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = min(jobs or default_jobs(), len(specs))
    if jobs <= 1:
        return lambda: [p for s in specs for p in render(s, out_dir)]

    _pyplot()  # imported once here, inherited by the forked workers
    try:
        pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork"))
    except OSError:  # no processes to be had: draw them here, when asked
        return lambda: [p for s in specs for p in render(s, out_dir)]
    order = sorted(specs, key=lambda s: -len(s["panels"]))  # biggest first: even finish
    futures = [pool.submit(_render_star, (s, out_dir)) for s in order]

    def wait() -> list[str]:
        try:
            return [p for f in futures for p in f.result()]
        finally:
            pool.shutdown()

    return wait

