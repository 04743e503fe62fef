"""Figures at print size: every figure kind drawn for 1x1, 1x3 and 3x4 panel grids at the
column and text widths has its text at 7 pt or more (at the figure's own size, which is its
size on the page), legend, titles and tick labels inside the figure and not on each other
nor on the panels, and TrueType fonts in the PDF (pdffonts, from poppler-utils, which
slurm/install.sh installs); rows stay apart in greyscale; every caption describes exactly
the artists drawn; a study of one budget, one cell and two variants lays out cleanly."""
from __future__ import annotations

import itertools
import shutil
import subprocess

import matplotlib
import numpy as np
import pytest
from report_records import write_run
from test_sr_report import write_sr_run

from harness import files
from harness import report as report_pkg
from harness.report import layout, plots, render, style

matplotlib.use("Agg")
PDFFONTS = shutil.which("pdffonts")
GRIDS = (1, 3, 12)            # panels: a 1x1, a 1x3 and a 3x4 grid
LONG = "STE sign + channel scale (BWN), a long display name"


def _line(k: int, n: int = 12, **kw) -> dict:
    x = np.arange(1, n + 1)
    mean = 10 + 80 * (1 - np.exp(-x / 4)) - 3 * k
    return {"x": x.tolist(), "mean": mean, "lo": mean - 4, "hi": np.minimum(mean + 4, 100),
            "color": style.PALETTE[k], "ls": style.DASHES[k % 6], "marker": "s", "lw": 1.4,
            "clip_hi": [n] if k == 0 else [], **kw}


def _legend(n: int) -> list[dict]:
    return [{"label": LONG if i == 0 else f"method {i}", "color": style.PALETTE[i], "ls": "-",
             "marker": "o"} for i in range(n)]


def spec_of(kind: str, n: int, width: float, tmp_path) -> dict:
    """A spec of ``kind`` with ``n`` panels, long titles and names, a legend."""
    base = {"kind": kind, "name": f"{kind}{n}", "width": width, "xlabel": "epoch",
            "ylabel": "deployed test accuracy (%)", "legend": _legend(5),
            "title": "Deployed test accuracy per epoch, CIFAR-10 (JPEG copy) / ResNet-20 at "
                     "half width, every row"}
    title = "W1/A32, 10 epochs, a panel title that is long"
    if kind == "curves":
        panels = [{"title": title, "lines": [_line(k) for k in range(3)]
                   + [_line(3, role="context", band=False, color="#b0b0b0")],
                   "vlines": [{"x": 6.5}], "marks": [{"x": 6.5, "y": 50.0, "color": "k"}]}
                  for _ in range(n)]
    elif kind == "points":
        panels = [{"title": title, "rows": [
            {"color": style.PALETTE[k], "marker": "o", "name": LONG if k == 0 else f"row {k}",
             "seeds": [80 + k, 81 + k, 82 + k], "mean": 81.0 + k,
             "lo": 79.0 + k if k else None, "hi": 83.0 + k if k else None}
            for k in range(4)]} for _ in range(n)]
    elif kind == "budget":
        panels = [{"title": title, "budgets": [10, 20], "rows": [
            {"color": style.PALETTE[k], "ls": "-", "marker": "s", "trained": {
                "x": [10, 20], "mean": [80.0 + k, 85.0 + k], "lo": [78.0, 83.0],
                "hi": [82.0, 87.0], "seeds": [[79, 81], [84, 86]], "clipped": [False, k == 0]},
             "readoff": {"x": [10], "mean": [83.0 + k]}} for k in range(3)]}
            for _ in range(n)]
    else:
        from PIL import Image

        img = tmp_path / "crop.png"
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(img)
        panels = [{"title": f"{LONG} (32.61 dB)", "image": str(img)} for _ in range(n)]
        base = {k: v for k, v in base.items() if k not in ("legend", "xlabel", "ylabel")}
    return {**base, "panels": panels}


# --------------------------------------------------------------------------- the checks

def _texts(fig) -> list:
    """Every visible, non-empty text of the figure (of its visible panels)."""
    return [t for t in fig.findobj(matplotlib.text.Text)
            if t.get_visible() and t.get_text().strip()
            and (t.axes is None or t.axes.get_visible())]


def _boxes(fig, renderer) -> dict[str, list]:
    """Bounding boxes (display units) of what must not collide."""
    boxes: dict[str, list] = {"title": [], "ticks": [], "label": [], "legend": [], "axes": []}
    if fig._suptitle is not None and fig._suptitle.get_text():
        boxes["title"].append(fig._suptitle.get_window_extent(renderer))
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        boxes["axes"].append(ax.get_window_extent(renderer))
        if ax.title.get_text():
            boxes["title"].append(ax.title.get_window_extent(renderer))
        for lab in (ax.xaxis.label, ax.yaxis.label):
            if lab.get_text():
                boxes["label"].append(lab.get_window_extent(renderer))
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted((lo, hi))
            for tick in axis.get_major_ticks():  # the ticks drawn: inside the view
                t = tick.label1
                if lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo) \
                        and t.get_visible() and t.get_text():
                    boxes["ticks"].append(t.get_window_extent(renderer))
    for leg in fig.legends:
        boxes["legend"].append(leg.get_window_extent(renderer))
    return boxes


def _overlap(a, b, tol: float = 0.5) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


def check_layout(fig, width: float) -> None:
    """Fonts at print size, everything inside the figure, no collisions."""
    assert fig.get_figwidth() == pytest.approx(width)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    small = [(t.get_text(), t.get_fontsize()) for t in _texts(fig)
             if t.get_fontsize() < layout.MIN_FONT - 1e-9]
    assert not small, f"text under {layout.MIN_FONT} pt: {small[:3]}"
    W, H = fig.bbox.width, fig.bbox.height
    b = _boxes(fig, renderer)
    for kind in ("title", "ticks", "label", "legend"):
        for box in b[kind]:
            assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= W + 1 and box.y1 <= H + 1, \
                f"{kind} outside the figure: {box} in {W}x{H}"
    labelled = b["title"] + b["ticks"] + b["label"]
    for leg in b["legend"]:
        assert not any(_overlap(leg, x) for x in labelled + b["axes"]), "legend over a panel"
    for t1, t2 in itertools.combinations(b["title"] + b["label"], 2):
        assert not _overlap(t1, t2), f"titles/labels overlap: {t1} {t2}"
    for t in b["title"]:
        assert not any(_overlap(t, x) for x in b["ticks"] + b["axes"]), "title over a panel"
    for t1, t2 in itertools.combinations(b["ticks"], 2):
        assert not _overlap(t1, t2, tol=1.0), "tick labels overlap"


@pytest.mark.parametrize("kind", ["curves", "points", "budget", "images"])
@pytest.mark.parametrize("n", GRIDS)
@pytest.mark.parametrize("width", ["column", "text"])
def test_every_kind_and_grid_fits_its_width(kind, n, width, tmp_path):
    inches = layout.width_inches(width)
    spec = spec_of(kind, n, inches, tmp_path)
    fig = plots.draw(spec)
    try:
        check_layout(fig, inches)
        assert {a.get_gid() for a in fig.findobj() if a.get_gid() in plots.KINDS} == \
            plots.planned(spec)
    finally:
        matplotlib.pyplot.close(fig)


@pytest.mark.skipif(PDFFONTS is None, reason="pdffonts not installed: install the Debian "
                    "package poppler-utils (bash slurm/install.sh, as root)")
def test_pdf_fonts_are_truetype_and_png_is_300_dpi(tmp_path):
    from PIL import Image

    spec = spec_of("curves", 3, layout.WIDTHS["text"], tmp_path)
    pdf, png = (p for p in sorted(plots.render(spec, tmp_path), key=lambda s: s[-3:] != "pdf"))
    out = subprocess.run([PDFFONTS, pdf], capture_output=True, text=True, check=True).stdout
    fonts = [line.split() for line in out.splitlines()[2:] if line.strip()]
    assert fonts and all("TrueType" in " ".join(f) for f in fonts), out
    assert "Type 3" not in out
    with Image.open(png) as im:
        assert im.size[0] == round(layout.WIDTHS["text"] * layout.DPI)
    assert plots.render(spec, tmp_path) and open(pdf, "rb").read() == open(pdf, "rb").read()


def test_rows_stay_apart_in_greyscale_up_to_12(tmp_path):
    root = tmp_path / "twelve"
    rows = [("fp", "", 32), ("ste", "", 1), ("ste", "ste-clip", 1), ("dorefa", "", 1),
            ("lqnet", "", 1), ("hashing", "", 1), ("bop", "", 1), ("lsq", "", 2),
            ("slb", "", 1), ("slb", "slb-a", 1), ("slb", "slb-b", 1), ("slb", "slb-c", 1)]
    for method, variant, w in rows:
        write_run(root, variant or method, method=method, variant=variant, w=w, acc=80.0)
    st = report_pkg.load_study(root, ours="slb")
    styles = style.row_styles(st)
    assert len(styles) == 12
    for (a, sa), (b, sb) in itertools.combinations(styles.items(), 2):
        assert style.distinct_in_greyscale(sa, sb), (a, b, sa, sb)
    assert styles["slb"]["marker"] == "o" and styles["slb"]["ls"] == "-"
    assert styles["fp"]["ls"] == ":" and styles["fp"]["color"] == "#000000"
    slb_hue = [styles[k]["color"] for k in ("slb", "slb-a", "slb-b", "slb-c")]
    assert len(set(slb_hue)) == 4 and all(_blue(c) for c in slb_hue)  # one family, shades
    assert style.luma("#ffffff") == pytest.approx(1) and style.luma("#000000") == 0


def _blue(color: str) -> bool:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return b >= r and b >= g


# --------------------------------------------------------------------------- whole studies

def _figures(st) -> list:
    built, wait = render.build_sections(st, st.dir / "figs", jobs=1)
    return [b for blocks in built.values() for b in blocks if isinstance(b, report_pkg.Figure)]


@pytest.fixture(scope="module")
def rich_study(tmp_path_factory):
    """Two budgets, two W/A cells, fp, ours with a variant, baselines, SLB's internal
    metrics, two seeds far apart (clipped bands), slower ours (equal compute), and an SR
    setting."""
    root = tmp_path_factory.mktemp("figs") / "rich"
    for e in (4, 8):
        for s, off in enumerate((-40.0, 40.0)):
            for w in (1, 2):
                write_run(root, f"slb{e}{w}{s}", method="slb", w=w, acc=50 + off, epochs=e,
                          seed=s, slb_scalars=True, epoch_time=2.0)
                write_run(root, f"sbn{e}{w}{s}", method="slb", variant="slb-none", w=w,
                          acc=49 + off / 10, epochs=e, seed=s, options={"bn": "none"},
                          slb_scalars=True, epoch_time=2.0)
                write_run(root, f"dor{e}{w}{s}", method="dorefa", w=w, acc=48 + off / 10,
                          epochs=e, seed=s)
                write_run(root, f"ste{e}{w}{s}", method="ste", w=w, acc=30 + off / 10,
                          epochs=e, seed=s)
            write_run(root, f"fp{e}{s}", method="fp", w=32, acc=60 + off / 10, epochs=e,
                      seed=s)
    for seed, p in enumerate((31.0, 31.2, 31.4)):
        for method, d in (("slb", 0.0), ("ste", -0.3), ("dorefa", -0.2), ("fp", 1.0)):
            write_sr_run(root, f"sr{method}{seed}", method=method, psnr=p + d, seed=seed,
                         w=32 if method == "fp" else 1)
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n'
                              'figure_width = "column"\n')
    return report_pkg.load_study(root)


def test_captions_describe_exactly_what_is_drawn(rich_study):
    figs = _figures(rich_study)
    names = {f.name.split("_")[0] for f in figs}
    assert {"convergence", "internals", "seeds", "budget", "equal", "profile", "sr"} <= names
    seen = set()
    for f in figs:
        fig = plots.draw(f.spec)
        try:
            drawn = {a.get_gid() for a in fig.findobj() if a.get_gid() in plots.KINDS}
            check_layout(fig, layout.WIDTHS["column"])
        finally:
            matplotlib.pyplot.close(fig)
        assert drawn == f.kinds == plots.planned(f.spec), f.name
        assert fig.get_figheight() <= layout.MAX_HEIGHT + 1e-9, f.name  # fits a page
        seen |= drawn
    # the kinds this study draws somewhere, each described where it is drawn
    assert {"band", "clipped", "context", "fp", "tstar", "hollow", "connector", "seeds",
            "ci_bar", "bicubic"} <= seen
    conv = next(f for f in figs if f.name.startswith("convergence_cifar"))
    assert "Triangles on a band's edge" in conv.caption and "Shaded bands" in conv.caption
    every = next(f for f in figs if f.name.startswith("convergence_all"))
    assert "Shaded bands" not in every.caption and "bands" not in every.kinds


def test_a_caption_leaves_out_what_is_not_drawn(tmp_path):
    root = tmp_path / "plain"
    for s, off in enumerate((-0.1, 0.0, 0.1)):
        write_run(root, f"s{s}", method="slb", acc=80 + off, seed=s, epochs=4)
        write_run(root, f"d{s}", method="dorefa", acc=79 + off, seed=s, epochs=4)
    st = report_pkg.load_study(root, ours="slb")
    conv = next(f for f in _figures(st) if f.name.startswith("convergence"))
    assert "clipped" not in conv.kinds and "Triangles" not in conv.caption
    assert "fp" not in conv.kinds and "Dotted black" not in conv.caption
    assert "context" not in conv.kinds and "Thin grey" not in conv.caption


def test_one_budget_one_cell_two_variants_lays_out_cleanly(tmp_path):
    """The layout the audit found broken: one budget, one cell, two variants of ours."""
    root = tmp_path / "small"
    for s, off in enumerate((-0.5, 0.0, 0.5)):
        write_run(root, f"a{s}", method="slb", acc=80 + off, seed=s, epoch_time=2.0,
                  slb_scalars=True)
        write_run(root, f"b{s}", method="slb", variant="slb-none", acc=79 + off, seed=s,
                  options={"bn": "none"}, epoch_time=1.5, slb_scalars=True)
    st = report_pkg.load_study(root, ours="slb")
    figs = _figures(st)
    assert {f.name.split("_")[0] for f in figs} >= {"convergence", "equal", "seeds"}
    for f in figs:
        fig = plots.draw(f.spec)
        try:
            check_layout(fig, layout.WIDTHS["text"])
            if f.spec.get("title"):  # the title whole, inside the figure
                box = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
                assert 0 <= box.x0 and box.x1 <= fig.bbox.width
        finally:
            matplotlib.pyplot.close(fig)


def test_figure_width_key_is_checked(tmp_path):
    from harness.errors import UserError
    from harness.report.keys import check_report_table

    for ok in ("column", "text", 6.75, 3):
        assert check_report_table({"figure_width": ok}) == [], ok
    for bad in ("wide", 1.0, 12, True):
        ((field, msg),) = check_report_table({"figure_width": bad})
        assert field == "report.figure_width" and '"column" (3.25 in)' in msg
    root = tmp_path / "w"
    write_run(root, "a", method="slb", acc=80.0)
    files.atomic_write_text(root / "study.toml", '[report]\nfigure_width = "wide"\n')
    with pytest.raises(UserError, match="report.figure_width"):
        report_pkg.load_study(root)
    files.atomic_write_text(root / "study.toml", '[report]\nfigure_width = 4.5\n')
    assert render.figures.figure_width(report_pkg.load_study(root)) == 4.5
