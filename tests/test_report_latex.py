"""Every .tex table a report writes compiles with a real LaTeX engine, and fits its place.

Each table is \\input into a minimal two-column article (booktabs and tabularx, as the .tex
header asks) and compiled with pdflatex. A ``table`` must fit one column and a ``table*``
the text width: LaTeX reports "Overfull \\hbox" when a tabular is wider than that, and
more than ``TOLERANCE_PT`` fails. The studies use long display names (renamed methods,
variants and settings) so that a name's length cannot push a table out of its place, and
the super-resolution tables are checked like the others.

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
from harness import report as R

PDFLATEX = shutil.which("pdflatex")
pytestmark = pytest.mark.skipif(
    PDFLATEX is None, reason="pdflatex not installed: install the Debian packages "
    "texlive-latex-base and texlive-latex-recommended (bash slurm/install.sh, as root)")
TOLERANCE_PT = 1.0   # an Overfull \hbox wider than this fails
DOCUMENT = r"""\documentclass[twocolumn]{article}
\usepackage[T1]{fontenc}
\usepackage{booktabs}
\usepackage{tabularx}
\begin{document}
\input{TABLE}
\end{document}
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
    out = R.write_report(root, jobs=1)
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
    sr_out = R.write_report(sr, jobs=1)
    return sorted([*(out.parent / "tables").glob("*.tex"),
                   *(sr_out.parent / "tables").glob("*.tex")])


# display names as long as a paper's (the committed example's STE row has 30 characters)
LONG = {"slb-recal": "SLB & recal_end (50%), BN statistics recalibrated after training",
        "dorefa": "DoReFa-Net (Zhou et al., 2016)", "ste": "STE sign + channel scale (BWN)",
        "cifar10": "CIFAR-10 (JPEG copy, 2,000 training images)",
        "slb-none": "SLB without State BN (bn = none)"}


def compile_table(tex: Path, tmp: Path) -> str:
    doc = tmp / f"{tex.stem}-doc.tex"
    doc.write_text(DOCUMENT.replace("TABLE", str(tex)))
    res = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error",
                          doc.name], cwd=tmp, capture_output=True, text=True, timeout=120)
    log = (tmp / f"{doc.stem}.log").read_text(errors="replace")
    assert res.returncode == 0, f"{tex.name} does not compile:\n{log[-2000:]}"
    assert (tmp / f"{doc.stem}.pdf").stat().st_size > 1000
    return log


def test_every_table_compiles_and_fits(tex_tables, tmp_path):
    names = {re.split(r"_(cifar10|sr_standin)", t.stem)[0] for t in tex_tables}
    assert {"main", "comparisons", "budget", "ablation_slb", "equal_compute", "aggregate",
            "uncertainty", "cost", "sr_main", "sr_comparisons", "sr_ablations"} <= names
    too_wide = []
    for tex in tex_tables:
        log = compile_table(tex, tmp_path)
        over = [float(x) for x in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
        if over and max(over) > TOLERANCE_PT:
            too_wide.append(f"{tex.name}: {max(over)}pt")
    assert not too_wide, f"wider than their place: {too_wide}"


def test_comparison_table_fits_one_column_without_prose(tex_tables):
    tex = next(t for t in tex_tables if t.name.startswith("comparisons")).read_text()
    assert r"\begin{table}[t]" in tex and "Verdict" not in tex
    assert r"\multicolumn{4}{l}{\textit{W1/A32, 4 ep}}" in tex  # each cell once, as a heading
    assert "$-$" in tex or "+" in tex
