"""python -m harness report results/<study>: run records -> tables, figures and answers.

Reads only what a study leaves behind (never today's method code, never torch):
runs/<id>/{config,summary}.json and metrics.csv (via harness.records), study.toml (its
optional [report] table: reference, reference_dataset, ours, figure_width, and the
display-name tables methods, variants, settings; see keys.REPORT_KEYS) and manifest.json (the
expected runs, so runs without a directory are reported as missing). Writes, under OUT
(default results/<study>/report):

  report.md                 the narrative, tables and figures embedded
  tables/NAME.{md,tex,csv}  markdown, booktabs/tabularx LaTeX (paste-ready), numbers as CSV
  figures/NAME.{png,pdf}    300 dpi PNG and vector PDF at the printed width

Every number is computed from the records (statistics in stats.py, drawing in plots.py).
Runs that failed, diverged, are corrupt, missing, still running or flagged unmatched are
listed and left out of every number.

The package, in the order data flows through it:

  keys.py       the [report] keys and their checks (also run by `sweep` on a spec)
  runs.py       run directories -> the runs table (status, cell, setting, recorded costs,
                seed fingerprints) and the included runs' metrics
  load.py       records -> StudyRecords (runs table, metrics, groups per setting/row/cell,
                display names)
  stats.py      statistics over seeds (scipy.stats): summaries, paired and Welch tests,
                BH, rliable-style aggregates and their permutation p
  timing.py     per-epoch training times -> every row's accuracy at equal compute
  verdicts.py   the one verdict rule: every comparison of a setting, paired where the seeds
                pair, BH-adjusted together
  design.py     what the design can detect (power, the test set's binomial error) and the
                Statistical methods section
  table.py      the Table class (md, tex split to fit a page, csv) and cell formatting
  tables.py     the main, uncertainty, comparison, budget, ablation, excluded-runs tables
  style.py      one colour, marker and dash per row, apart in greyscale; highlighted rows
  reproduction.py  the gap to the reported numbers (measured vs reference CSV)
  layout.py     figure geometry at print size: columns, heights, wrapping, saving
  plots.py      drawing figure specs (plain data) with matplotlib; what each draws
  figure.py     the Figure (spec + caption built from what it draws) and shared pieces
  figures.py    the convergence, internals, seeds and budget figures
  compute.py    the equal-compute table and figure
  aggregate.py  rliable-style aggregates across cells: table and performance profiles
  costs.py      the cost and method-memory tables and the cost answer, from the records
  questions.py  QUESTIONS: the reviewer questions, each with the function that answers it
  render.py     SECTIONS: report.md's sections in order; build_report, write_report
  sr.py         the super-resolution section (PSNR/SSIM tables, comparisons, curves, final
                PSNR per seed, crops) and its reviewer answer; the other sections see
                classification runs only

Add a report section: one ``Section`` in ``render.SECTIONS``. Add a reviewer question: one
``Question`` in ``questions.QUESTIONS``.

This module holds the command and the public names, importing a submodule (pandas, numpy,
scipy) only when one of its names is used.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# public name -> the submodule defining it, imported on first use
_EXPORTS = {
    "write_report": "render", "build_report": "render", "SECTIONS": "render",
    "Section": "render", "per_setting": "render",
    "load_study": "load", "load_record": "runs", "StudyRecords": "load",
    "add_bootstraps": "load",
    "Table": "table", "Figure": "figure",
    "QUESTIONS": "questions", "Question": "questions", "question": "questions",
    "reviewer_answers": "questions", "NOT_ANSWERED": "questions",
}
__all__ = ["cmd_report", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def cmd_report(args) -> int:
    from harness.errors import require
    from harness.report.render import write_report

    require(args.jobs >= 0, "--jobs", f"must be >= 0 (0 = one per core), got {args.jobs}")
    path = write_report(Path(args.study_dir), out=args.out and Path(args.out),
                        reference=args.reference, reference_dataset=args.reference_dataset,
                        ours=args.ours, jobs=args.jobs)
    print(f"report: {path}")
    return 0
