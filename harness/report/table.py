"""One table of the report, written three ways: markdown (report.md and tables/NAME.md),
booktabs LaTeX (tables/NAME.tex, paste-ready) and CSV (tables/NAME.csv, the numbers and ids);
and the cell formatting every table builder shares (mean ± std, intervals, counts).

A table may carry a compact ``tex`` version for papers (the comparison table drops its prose
verdict there, and rows of one cell sit under one ``groups`` heading instead of repeating
it); a ``wide`` table (by default one of more than ``TEX_NARROW_COLUMNS`` columns) is a
``table*`` (both columns of a two-column paper), any other fits one column. A table whose
first column holds names (``wrap``) is a ``tabularx`` as wide as its place, that column
wrapping (ragged right), so a long display name cannot push it out of its place.
tests/test_report_latex.py compiles every table, with long names, and checks exactly that.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.files import atomic_write_text
from harness.report import stats

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "−": "$-$", "†": r"$^\dagger$",
        "‡": r"$^\ddagger$",
        "×": r"$\times$", "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$", "<": r"$<$",
        ">": r"$>$", "·": r"$\cdot$", "τ": r"$\tau$", "*": r"$^*$", "½": r"$\frac{1}{2}$",
        "…": r"\ldots{}", "≈": r"$\approx$", "→": r"$\to$", "—": "---", "√": r"$\surd$",
        "α": r"$\alpha$", "§": r"\S{}"}
# a hyphen that is a minus sign: before a digit, not inside a word ("-0.50", "[-1.2")
_MINUS = re.compile(r"(?<![A-Za-z0-9.])-(?=\.?\d)")
_PM = re.compile(r"(\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")   # mean ± std
# a quoted phrase: "a" (double) or 'a' (single, not an apostrophe: no letter before it)
_DQUOTE = re.compile(r'"([^"]*)"')
_SQUOTE = re.compile(r"(?<![A-Za-z0-9])'([^']*)'(?![A-Za-z0-9])")
TEX_NARROW_COLUMNS = 6        # wider tables are table* (full text width)
TEX_MAX_LINES = 36            # lines of rows per float: a page holds about 55 at footnotesize
TEX_MIN_LAST = 6              # rows the float with the notes keeps at least
TEX_LONG_NAME = 24            # characters of a name that may wrap to a second line
TEX_NOTE_CHARS = 75           # characters per line of a note in a column at footnotesize
CLIPPED = "‡"                 # marks an interval clipped to [0, 100]


def tex_escape(text: str) -> str:
    """LaTeX-safe ASCII: specials escaped, known symbols as math, a minus sign as $-$,
    quotation marks as LaTeX's (``a'' and `a'), other non-ASCII as '?'."""
    text = _MINUS.sub("−", str(text))
    text = _DQUOTE.sub("\x01\\1\x02", text)
    text = _SQUOTE.sub("\x03\\1'", text)
    out = "".join(_TEX.get(c, c if c.isascii() else "?") for c in text)
    return out.replace("\x01", "``").replace("\x02", "''").replace("\x03", "`")


def tex_cell(text: str) -> str:
    r"""A table cell: tex_escape, and 'mean ± std' written as mean with the std below it
    (mean$_{\pm std}$), the compact form of papers."""
    parts = _PM.split(str(text))
    out = []
    for i in range(0, len(parts), 3):
        out.append(tex_escape(parts[i]))
        if i + 2 < len(parts):
            out.append(rf"{parts[i + 1]}$_{{\pm {parts[i + 2]}}}$")
    return "".join(out)


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


@dataclass
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    data: Any = None                     # DataFrame written as NAME.csv (numbers)
    bold: set = field(default_factory=set)   # (row index, column index)
    notes: list[str] = field(default_factory=list)
    n_label_cols: int = 1                # left-aligned leading columns
    left_extra: tuple[int, ...] = ()     # other left-aligned (text) columns
    tex: "Table | None" = None           # the compact version written as NAME.tex
    groups: dict[int, str] = field(default_factory=dict)  # tex: a heading before row i
    wide: bool | None = None             # tex: table* (None: more than TEX_NARROW_COLUMNS)
    header_groups: list[tuple[str, int]] = field(default_factory=list)  # tex: (label, span)
    wrap: bool = False                   # tex: the first column (names) wraps, tabularx

    def _left(self, j: int) -> bool:
        return j < self.n_label_cols or j in self.left_extra or j - len(self.header) in \
            self.left_extra

    def markdown(self) -> str:
        def cell(i: int, j: int, v: str) -> str:
            v = md_escape(v)
            return f"**{v}**" if (i, j) in self.bold else v

        align = [":--" if self._left(j) else "--:" for j in range(len(self.header))]
        lines = ["| " + " | ".join(md_escape(h) for h in self.header) + " |",
                 "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(cell(i, j, v) for j, v in enumerate(r)) + " |"
                  for i, r in enumerate(self.rows)]
        return "\n".join(lines)

    def latex(self) -> str:
        """booktabs LaTeX (of the compact version when there is one): a table, or a table*
        when it has more than TEX_NARROW_COLUMNS columns; a table too tall for a page is
        split into several floats ("continued"), the notes under the last."""
        if self.tex is not None:
            return self.tex.latex()
        parts = self.parts()
        return "\n".join(self._float(rows, k, len(parts)) for k, rows in enumerate(parts))

    def parts(self) -> list[range]:
        """The rows of each float: at most TEX_MAX_LINES lines of rows (a name longer than
        TEX_LONG_NAME characters counts two, a group heading one), the last part leaving
        room for the notes (TEX_NOTE_CHARS characters a line)."""
        def cost(i: int) -> int:
            return 1 + (i in self.groups) + (len(str(self.rows[i][0])) > TEX_LONG_NAME)

        notes = sum(-(-len(n) // TEX_NOTE_CHARS) for n in self.notes)
        parts, start, used = [], 0, 0
        for i in range(len(self.rows)):
            if used + cost(i) > TEX_MAX_LINES:
                parts.append(range(start, i))
                start, used = i, 0
            used += cost(i)
        room = max(TEX_MIN_LAST, TEX_MAX_LINES - notes)
        cut, tail = len(self.rows), 0
        while cut > start and tail + cost(cut - 1) <= room:  # the rows beside the notes
            cut -= 1
            tail += cost(cut)
        if start < cut < len(self.rows):
            parts.append(range(start, cut))
            start = cut
        parts.append(range(start, len(self.rows)))
        return parts

    def _float(self, rows: range, k: int, n: int) -> str:
        """The k-th of n floats, holding ``rows``."""
        def cell(i: int, j: int, v: str) -> str:
            v = tex_cell(v)
            return rf"\textbf{{{v}}}" if (i, j) in self.bold and v else v

        wide = self.wide if self.wide is not None else len(self.header) > TEX_NARROW_COLUMNS
        env = "table*" if wide else "table"
        spec = "".join("l" if self._left(j) else "r" for j in range(len(self.header)))
        if self.wrap:
            spec = r">{\raggedright\arraybackslash}X" + spec[1:]
        tabular = (rf"\begin{{tabularx}}{{\linewidth}}{{{spec}}}" if self.wrap else
                   rf"\begin{{tabular}}{{{spec}}}")
        caption = self.caption + (f" (continued, {k + 1} of {n})" if k else "")
        out = ([f"% {tex_escape(self.caption)}",
                "% generated by `python -m harness report`; needs \\usepackage{booktabs"
                + (",tabularx}" if self.wrap else "}")] if k == 0 else []) + [
            rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize",
            r"\setlength{\tabcolsep}{3pt}", rf"\caption{{{tex_escape(caption)}}}"]
        if k == 0:
            out.append(rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', self.name)}}}")
        out += [tabular, r"\toprule", *self._header_group_lines(),
                " & ".join(tex_escape(h) for h in self.header) + r" \\", r"\midrule"]
        heading = next((self.groups[i] for i in range(rows.start, -1, -1) if i in self.groups),
                       None)
        for i in rows:
            if i in self.groups or (i == rows.start and heading is not None):
                out.append(rf"\multicolumn{{{len(self.header)}}}{{l}}"
                           rf"{{\textit{{{tex_escape(self.groups.get(i, heading))}}}}} \\")
            out.append(" & ".join(cell(i, j, v) for j, v in enumerate(self.rows[i])) + r" \\")
        out += [r"\bottomrule", r"\end{tabularx}" if self.wrap else r"\end{tabular}"]
        if k == n - 1:
            out += [rf"\par\smallskip{{\footnotesize {tex_escape(note)}}}"
                    for note in self.notes]
        out.append(rf"\end{{{env}}}")
        return "\n".join(out) + "\n"

    def _header_group_lines(self) -> list[str]:
        """A header row above the header: each label centred over its columns, ruled."""
        if not self.header_groups:
            return []
        cells, rules, col = [], [], 1
        for label, span in self.header_groups:
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{tex_escape(label)}}}" if label
                         else " & ".join([""] * span))
            if label:
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        return [" & ".join(cells) + r" \\", " ".join(rules)]

    def csv(self) -> str:
        df = self.data if self.data is not None else pd.DataFrame(self.rows, columns=self.header)
        return df.to_csv(index=False)

    def write(self, folder: Path) -> None:
        caption = f"**{md_escape(self.caption)}**\n\n"
        notes = "".join(f"\n\n{md_escape(n)}" for n in self.notes)
        atomic_write_text(folder / f"{self.name}.md", caption + self.markdown() + notes + "\n")
        atomic_write_text(folder / f"{self.name}.tex", self.latex())
        atomic_write_text(folder / f"{self.name}.csv", self.csv())


def plural(n: int, word: str, words: str = "") -> str:
    """'1 epoch', '2 epochs'; ``words`` where the plural is not word + 's'."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def n_epochs(n: int) -> str:
    return plural(n, "epoch")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def fmt_cell(s: stats.Summary, with_n: bool = True, digits: int = 2) -> str:
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{s.mean:.{digits}f} (1)*"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f}" + (f" ({s.n})" if with_n else "")


def same_n(summaries: list[stats.Summary]) -> int | None:
    """The seed count when every summary has the same one (2 or more), else None: tables
    then state it once instead of in every cell."""
    ns = {s.n for s in summaries if s.n}
    return ns.pop() if len(ns) == 1 and min(ns) >= 2 else None


def fmt_diff(c: stats.Comparison) -> str:
    return f"{c.diff:+.2f}"


def fmt_diff_ci(c: stats.Comparison, digits: int = 2) -> str:
    """The 95% interval of a difference, or "identical" for the same network (no test)."""
    return "identical" if c.identical else stats.fmt_interval(c.ci, digits, signed=True)


def fmt_ci(s: stats.Summary) -> str:
    """A summary's t-interval, marked when it was clipped to [0, 100]."""
    return stats.fmt_interval(s.ci) + (f" {CLIPPED}" if s.clipped else "")


def clipped_note(what: str = "t-interval") -> str:
    return (f"{CLIPPED} the {what} reached past [0, 100] (too few seeds for its width) and is "
            "clipped to it.")


def fmt_opts(d: dict[str, Any]) -> str:
    def v(x):
        return "[" + ", ".join(map(str, x)) + "]" if isinstance(x, list) else str(x)

    return ", ".join(f"{k}={v(x)}" for k, x in d.items()) or "(same options)"


def grouped(keyed_rows: list[tuple[str, list[str]]]) -> tuple[list[list[str]], dict[int, str]]:
    """(rows, tex group headings) from (heading, row) pairs in order: a heading where it
    changes (a LaTeX table states each cell once instead of in every row)."""
    rows, groups, prev = [], {}, None
    for key, row in keyed_rows:
        if not rows or key != prev:
            groups[len(rows)] = key
        rows.append(row)
        prev = key
    return rows, groups
