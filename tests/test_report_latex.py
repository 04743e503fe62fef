"""Every .tex table a report writes compiles with a real LaTeX engine, and fits the pages of
a NeurIPS paper and of an IEEE two-column paper.

The templates are minimal preambles with the venues' page geometry (10 pt; NeurIPS: one
column, a 5.5 in x 9 in text block; IEEE conference: two 3.5 in columns 0.25 in apart, a
7.25 in x 9.25 in text block), not the venues' class files; the font is Computer Modern
(texlive-latex-base has no Times metrics), a little wider than the venues' Times, so what
fits here fits there. All tables of a
report are \\input into one document per template and compiled with pdflatex, which
reports, per table (``SLB-TABLE`` marks in the log):

- its width: "Overfull \\hbox" when a tabular is wider than its place (a column for a
  ``table``, the text for a ``table*``); more than ``TOLERANCE_PT`` fails;
- the height of every float it makes (a hook on LaTeX's float box): none may be taller
  than \\textheight (a tall table is split into several floats by the report);
- the width tabularx gives the wrapping name column (\\tracingtabularx): a second
  document typesets every name of the table in a box that wide at the table's size and
  counts its lines (\\prevgraf); a display name of up to ``NAME_CHARS`` characters (the
  committed example's longest has 30) may take at most 2 lines.

The studies use long display names (renamed methods, variants and settings, one of 63
characters, which only has to fit the width) and a study as tall as the committed example
(11 rows x 4 cells); the super-resolution tables are checked like the others.

pdflatex comes from the Debian packages texlive-latex-base and texlive-latex-recommended,
which the project's set-up for tests installs (slurm/install.sh, run by `make test`); the
test is skipped, saying so, only where pdflatex is not installed.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_records import write_run
from test_sr_report import write_sr_run

from harness import files
from harness import report as report_pkg

PDFLATEX = shutil.which("pdflatex")
pytestmark = pytest.mark.skipif(
    PDFLATEX is None, reason="pdflatex not installed: install the Debian packages "
    "texlive-latex-base and texlive-latex-recommended (bash slurm/install.sh, as root)")
TOLERANCE_PT = 1.0   # an Overfull \hbox wider than this fails
NAME_CHARS = 32      # display names up to this long wrap over at most 2 lines
TEMPLATES = {        # (class options, text width, text height, column separation)
    "neurips": ("", "5.5in", "9in", "0.25in"),
    "ieee": (",twocolumn", "7.25in", "9.25in", "0.25in"),
}
PREAMBLE = r"""\documentclass[10pt{opts}]{{article}}
\usepackage[T1]{{fontenc}}
\usepackage[letterpaper,textwidth={width},textheight={height},columnsep={sep}]{{geometry}}
\usepackage{{booktabs}}
\usepackage{{tabularx}}
\tracingtabularx
\makeatletter
\let\slbendfloatbox\@endfloatbox
\def\@endfloatbox{{\slbendfloatbox\typeout{{SLB-FLOAT \the\dimexpr\ht\@currbox+\dp\@currbox
  \relax}}}}
\makeatother
\begin{{document}}
\typeout{{SLB-TEXTHEIGHT \the\textheight}}
"""


@pytest.fixture(scope="module")
def tex_tables(tmp_path_factory) -> list[Path]:
    """A report with every kind of table: two budgets, variants of ours (ablation), fp,
    single-seed and clipped cells, reported numbers, long names with LaTeX specials; and an
    SR study's tables."""
    root = tmp_path_factory.mktemp("latex") / "study_tex"
    offs = [0.3, -0.3, 0.0]
    for e in (4, 8):
        for s, off in enumerate(offs):
            write_run(root, f"slb{e}{s}", method="slb", acc=90.0 + off - 8 + e, epochs=e,
                      seed=s, slb_scalars=True, epoch_time=2.0)
            write_run(root, f"rec{e}{s}", method="slb", variant="slb-recal", acc=89.5 + off,
                      epochs=e, seed=s, options={"bn": "recal_end"}, epoch_time=1.6)
            write_run(root, f"dor{e}{s}", method="dorefa", acc=89.0 + off, epochs=e, seed=s)
            write_run(root, f"lsq{e}{s}", method="lsq", w=2, acc=91.0 + off, epochs=e, seed=s)
            write_run(root, f"slb2{e}{s}", method="slb", w=2, acc=91.5 + off, epochs=e,
                      seed=s, epoch_time=2.0)
            write_run(root, f"bop{e}{s}", method="bop", acc=[99.9, 90.0, 99.99][s], epochs=e,
                      seed=s)
            write_run(root, f"fp{e}{s}", method="fp", w=32, acc=93.0 + off, epochs=e, seed=s)
    write_run(root, "one", method="ste", acc=85.0)
    ref = root.parent / "ref.csv"
    ref.write_text("method,dataset,model,w_bits,a_bits,top1,source\n"
                   "slb,cifar10,resnet20,1,32,90.6,paper table 1\n")
    files.atomic_write_text(root / "study.toml", '[report]\nours = "slb"\n'
                              'reference = "../ref.csv"\n[report.variants]\n'
                              f'"slb-recal" = "{LONG["slb-recal"]}"\n[report.methods]\n'
                              f'dorefa = "{LONG["dorefa"]}"\nste = "{LONG["ste"]}"\n'
                              f'[report.settings]\ncifar10 = "{LONG["cifar10"]}"\n')
    out = report_pkg.write_report(root, jobs=1)
    sr = tmp_path_factory.mktemp("latex_sr") / "study_sr"
    for method, psnr in (("fp", 32.0), ("slb", 31.0), ("ste", 30.5), ("dorefa", 30.9),
                         ("bop", 29.5)):
        for seed, off in enumerate(offs):
            write_sr_run(sr, f"{method}_{seed}", method=method, psnr=psnr + off, seed=seed,
                         w=32 if method == "fp" else 1)
            if method == "slb":
                write_sr_run(sr, f"slbnone_{seed}", method="slb", variant="slb-none",
                             psnr=psnr + off - 0.2, seed=seed, options={"bn": "none"})
    files.atomic_write_text(sr / "study.toml", '[report]\nours = "slb"\n'
                              f'[report.methods]\ndorefa = "{LONG["dorefa"]}"\n'
                              f'ste = "{LONG["ste"]}"\n[report.variants]\n'
                              f'"slb-none" = "{LONG["slb-none"]}"\n')
    sr_out = report_pkg.write_report(sr, jobs=1)
    tall = _tall_study(tmp_path_factory.mktemp("latex_tall") / "tall")
    tall_out = report_pkg.write_report(tall, jobs=1)
    return sorted([*(out.parent / "tables").glob("*.tex"),
                   *(sr_out.parent / "tables").glob("*.tex"),
                   *(tall_out.parent / "tables").glob("*.tex")])


def _tall_study(root: Path) -> Path:
    """As tall as the committed example: fp, six baselines, ours and three variants of it
    (the example's display names), W1/A32 and W2/A32 (LSQ W2 only), 5 and 10 epochs, 3
    seeds."""
    rows = [("fp", "", (32,)), ("ste", "", (1,)), ("dorefa", "", (1, 2)),
            ("lqnet", "", (1, 2)), ("hashing", "", (1,)), ("bop", "", (1,)),
            ("lsq", "", (2,)), ("slb", "", (1, 2)), ("slb", "slb-sbn4", (1, 2)),
            ("slb", "slb-recal-epoch", (1, 2)), ("slb", "slb-no-sbn", (1, 2))]
    for k, (method, variant, bits) in enumerate(rows):
        for w in bits:
            for e in (5, 10):
                for seed in range(3):
                    write_run(root, f"{variant or method}-{w}-{e}-{seed}", method=method,
                              variant=variant, w=w, epochs=e, seed=seed,
                              acc=30.0 + k + seed + e / 5, epoch_time=1.0 + k / 10 + seed / 7)
    files.atomic_write_text(root / "study.toml", """[report]
ours = "slb"
[report.settings]
cifar10 = "CIFAR-10 (JPEG copy)"
resnet20 = "ResNet-20"
[report.variants]
ste = "STE sign + channel scale (BWN)"
"slb-sbn4" = "SLB (SBN every 4 steps)"
"slb-recal-epoch" = "SLB (BN recal. per epoch)"
"slb-no-sbn" = "SLB (no SBN)"
""")
    return root


# display names as long as a paper's (the committed example's STE row has 30 characters)
LONG = {"slb-recal": "SLB & recal_end (50%), BN statistics recalibrated after training",
        "dorefa": "DoReFa-Net (Zhou et al., 2016)", "ste": "STE sign + channel scale (BWN)",
        "cifar10": "CIFAR-10 (JPEG copy, 2,000 training images)",
        "slb-none": "SLB without State BN (bn = none)"}


def compile_doc(body: str, template: str, tmp: Path, name: str) -> str:
    """The log of ``body`` compiled in ``template``'s preamble."""
    opts, width, height, sep = TEMPLATES[template]
    doc = tmp / f"{name}.tex"
    doc.write_text(PREAMBLE.format(opts=opts, width=width, height=height, sep=sep) + body
                   + "\n\\end{document}\n")
    res = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=tmp, capture_output=True, text=True, timeout=300)
    log = (tmp / f"{name}.log").read_text(errors="replace")
    assert res.returncode == 0, f"{name} does not compile:\n{log[-3000:]}"
    return log


def per_table(log: str) -> dict[str, str]:
    """The log of each table (between its SLB-TABLE marks)."""
    parts = re.split(r"^SLB-TABLE (\S+)$", log, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def x_width(log: str) -> float | None:
    """The narrowest final width tabularx gave the X (name) column in a table's log."""
    widths = []
    for block in log.split("Reached target.")[:-1]:
        rows = re.findall(r"\(tabularx\)\s+[\d.]+pt\s+([\d.]+)pt\s+\d+", block)
        if rows:
            widths.append(float(rows[-1]))
    return min(widths) if widths else None


def names_of(tex: str) -> list[str]:
    r"""The first cell of every data row (between \midrule and \bottomrule, no headings)."""
    out = []
    for block in re.findall(r"\\midrule\n(.*?)\\bottomrule", tex, flags=re.S):
        for line in block.splitlines():
            if line.endswith(r"\\") and not line.startswith(r"\multicolumn"):
                out.append(line.split(" & ")[0])
    return out


def test_every_table_fits_neurips_and_ieee_pages(tex_tables, tmp_path):
    names = {re.split(r"_(cifar10|sr_standin|imagefolder)", t.stem)[0] for t in tex_tables}
    assert {"main", "comparisons", "budget", "ablation_slb", "equal_compute", "aggregate",
            "uncertainty", "cost", "method_memory", "sr_main", "sr_comparisons",
            "sr_ablations"} <= names
    body = "\n".join(f"\\typeout{{SLB-TABLE {t.name}}}\n\\input{{{t}}}\n\\clearpage"
                     for t in tex_tables)
    problems = []
    for template in TEMPLATES:
        log = compile_doc(body, template, tmp_path, f"all-{template}")
        height = float(re.search(r"SLB-TEXTHEIGHT ([\d.]+)pt", log).group(1))
        assert "Float too large" not in log, template
        measure = []
        for tex in tex_tables:
            part = per_table(log)[tex.name]
            over = [float(x) for x in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", part)]
            if over and max(over) > TOLERANCE_PT:
                problems.append(f"{template} {tex.name}: {max(over)}pt too wide")
            floats = [float(x) for x in re.findall(r"SLB-FLOAT ([\d.]+)pt", part)]
            assert floats, tex.name
            if max(floats) > height:
                problems.append(f"{template} {tex.name}: a float {max(floats):.0f}pt tall, "
                                f"the page {height:.0f}pt")
            width = x_width(part)
            if width:
                measure += [(tex.name, n, width) for n in names_of(tex.read_text())]
        problems += _long_names(measure, template, tmp_path)
    assert not problems, "\n".join(problems)


def _long_names(measure: list[tuple[str, str, float]], template: str, tmp: Path) -> list[str]:
    """Names of at most NAME_CHARS characters that wrap over more than 2 lines."""
    body = "\n".join(
        f"\\setbox0\\vbox{{\\hsize={w}pt\\parindent=0pt\\footnotesize\\raggedright {n}\\par"
        f"\\xdef\\slblines{{\\the\\prevgraf}}}}\\typeout{{SLB-LINES {i} \\slblines}}"
        for i, (_, n, w) in enumerate(measure))
    log = compile_doc(body, template, tmp, f"names-{template}")
    lines = {int(i): int(k) for i, k in re.findall(r"SLB-LINES (\d+) (\d+)", log)}
    assert len(lines) == len(measure)
    return [f"{template} {t}: {n!r} takes {lines[i]} lines in {w:.0f}pt"
            for i, (t, n, w) in enumerate(measure)
            if lines[i] > 2 and len(re.sub(r"\\[a-z]+\{?|[{}$]", "", n)) <= NAME_CHARS]


def test_comparison_table_fits_one_column_without_prose(tex_tables):
    tex = next(t for t in tex_tables if t.name.startswith("comparisons")).read_text()
    assert r"\begin{table}[t]" in tex and "Verdict" not in tex
    assert r"\multicolumn{4}{l}{\textit{W1/A32, 4 ep}}" in tex  # each cell once, as a heading
    assert "$-$" in tex or "+" in tex
