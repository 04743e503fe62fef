"""report.md assembly: ``SECTIONS`` is the report's table of contents.

Data flow: ``write_report(STUDY_DIR)`` = ``load_study`` (load.py) then ``build_report``,
which

1. builds every figure section (figures.py specs) and starts drawing them in forked
   processes (harness/report/plots.py);
2. builds every other section in ``SECTIONS`` order: tables (tables.py), reviewer answers
   (questions.py) and the text sections below;
3. writes tables/NAME.{md,tex,csv}, report.md (the header, then each section that has
   something to show) and waits for the figures; files an earlier report wrote and this one
   did not are removed.

To add a section, add one ``Section`` to ``SECTIONS``, where report.md should show it. Its
``build(study)`` returns blocks: ``Table`` (written under tables/ and shown), ``Figure``
(drawn under figures/ and shown) or ``str`` (a markdown line). ``per_setting(fn)`` turns a
(study, setting) -> blocks builder into one over every setting. A section whose build
returns nothing (or only tables without rows) is left out.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import files
from harness.errors import UserError
from harness.files import atomic_write_json, atomic_write_text
from harness.report import (
    aggregate,
    compute,
    costs,
    design,
    figures,
    plots,
    reproduction,
    stats,
    tables,
    tuning,
)
from harness.report.figure import Figure
from harness.report.load import (
    OURS_NOT_SET,
    StudyRecords,
    add_bootstraps,
    cell_name,
    is_known,
    load_study,
    shown_path,
)
from harness.report.questions import NOT_ANSWERED, SR_ONLY, reviewer_answers
from harness.report.sr import sr_figure_blocks, sr_statistics_lines, sr_table_blocks
from harness.report.table import Table, md_escape
from harness.report.tables import where

Block = Table | Figure | str
TABLES_DIR, FIGURES_DIR = "tables", "figures"   # under the report folder, linked relatively


@dataclass(frozen=True)
class Section:
    """One "## title" part of report.md and how to build what it shows."""
    title: str | Callable[[StudyRecords], str]   # "## title" (a function when it varies)
    key: str                                     # names the section (build_report's result)
    build: Callable[[StudyRecords], list[Block]]
    intro: str = ""                              # a paragraph under the title
    figures: bool = False                        # built first, drawn while the rest is built

    def heading(self, st: StudyRecords) -> str:
        return self.title(st) if callable(self.title) else self.title


def per_setting(fn: Callable[[StudyRecords, str], list[Block]]
                ) -> Callable[[StudyRecords], list[Block]]:
    """A (study, setting) builder run over every setting, in the settings' order."""
    def build(st: StudyRecords) -> list[Block]:
        return [b for s in st.settings() for b in fn(st, s)]

    build.__name__ = f"per_setting({fn.__name__})"
    return build


# --------------------------------------------------------------------------- markdown pieces

def _table_md(t: Table, rel: str) -> list[str]:
    out = [f"**{md_escape(t.caption)}** ([md]({rel}/{t.name}.md) · [tex]({rel}/{t.name}.tex) "
           f"· [csv]({rel}/{t.name}.csv))", "", t.markdown(), ""]
    out += [f"<sub>{md_escape(n)}</sub>" + "\n" for n in t.notes]
    return out


def _figure_md(f: Figure, rel: str) -> list[str]:
    return [f"![{f.name}]({rel}/{f.name}.png)", "",
            f"*{md_escape(f.caption)}* ([pdf]({rel}/{f.name}.pdf))", ""]


def _block_md(b: Block) -> list[str]:
    if isinstance(b, Table):
        return _table_md(b, TABLES_DIR)
    if isinstance(b, Figure):
        return _figure_md(b, FIGURES_DIR)
    return [b]


# --------------------------------------------------------------------------- header

def _provenance(st: StudyRecords) -> dict[str, str]:
    """Hardware, software, commits and scale of the records, for the header."""
    runs = st.runs
    withsum = runs[runs["device_name"].fillna("") != ""]
    basis = st.included if not st.included.empty else withsum

    def counts(col: str) -> str:
        vc = basis[col].replace("", "unknown").value_counts()
        return "; ".join(f"{k} ({v} runs)" for k, v in vc.items()) or "unknown (no summaries)"

    commits = sorted({c for c in basis["commit"] if c})
    commit = ((", ".join(f"`{c}`" for c in commits) or "unknown")
              + (" (records come from more than one commit)" if len(commits) > 1 else "")
              + (" (some runs had uncommitted changes: -dirty)"
                 if any(c.endswith("-dirty") for c in commits) else ""))
    return {"scale": _scale_text(st, basis), "hardware": counts("device_name"),
            "torch": counts("torch"), "python": counts("python"), "commit": commit}


def _sizes(basis, part: str) -> list[int]:
    return sorted({int(x) for x in basis.get(f"n_{part}", []) if is_known(x)})


def _scale_text(st: StudyRecords, basis) -> str:
    """'smoke: 5 and 10 epochs; 2,000 training and 1,000 test images': the scale's name (the
    spec's [scales] table; "full" runs the grid as written) and what it amounts to."""
    names = sorted({str(x) for x in st.runs.get("scale", []) if is_known(x) and x}) or \
        ([str(st.manifest["scale"])] if st.manifest and st.manifest.get("scale") else [])
    epochs = sorted({int(e) for e in basis["epochs"] if is_known(e)})
    parts = []
    if epochs:
        parts.append((", ".join(map(str, epochs[:-1])) + " and " if len(epochs) > 1 else "")
                     + f"{epochs[-1]} epoch" + ("" if epochs == [1] else "s"))
    train, test = (", ".join(f"{n:,}" for n in _sizes(basis, x)) for x in ("train", "test"))
    images = ([f"{train} training"] if train else []) + ([f"{test} test"] if test else [])
    if images:
        parts.append(" and ".join(images) + " images"
                     + ("" if train and test else
                        f" ({'training' if test else 'test'} set size not recorded)"))
    name = ", ".join(names) or "not recorded"
    if name == "full":
        name = "full (the spec's grid as written)"
    return name + (": " + "; ".join(parts) if parts else "")


def _excluded_counts(st: StudyRecords) -> str:
    """'2 failed, 1 missing' over the runs left out of the numbers."""
    runs = st.runs
    done = runs["status"].eq("completed")
    status = runs["status"].where(~(done & runs["unmatched"]), "unmatched")
    status = status.where(~(done & ~runs["unmatched"] & runs["stale"].fillna(False).astype(bool)),
                          "stale")
    if "foreign" in runs:
        status = status.where(~runs["foreign"].fillna(False).astype(bool), "foreign")
    exc = status[~runs["included"]].value_counts()
    return ", ".join(f"{v} {k}" for k, v in exc.items()) or "none"


def _ours_line(st: StudyRecords) -> str:
    labels = st.order
    if not st.ours:
        return (f"- **Ours:** not set (name it with `ours = \"METHOD\"` in the [report] table "
                f"of study.toml, or pass `--ours METHOD`); rows: "
                f"{', '.join(map(st.display, labels)) or 'none'}")
    ours = [lab for lab in labels if st.method_of[lab] == st.ours]
    return (f"- **Ours:** {st.ours_name}" + (f" (rows: {', '.join(map(st.display, ours))})"
                                             if ours else " (no runs of it in this study)")
            + "; other rows: "
            + f"{', '.join(st.display(lab) for lab in labels if lab not in ours) or 'none'}")


def _header(st: StudyRecords) -> list[str]:
    runs = st.runs
    p = _provenance(st)
    dirs = sum(int((r["status"] != "missing").sum()) for r in (runs, st.stage_runs)
               if r is not None and not r.empty)
    lines = [f"# Study report: {st.name}", "",
             f"- **Records:** `{shown_path(st.dir)}` ({dirs} "
             f"run directories" + (f"; manifest.json lists {len(st.manifest.get('runs', []))} "
                                   "runs" if st.manifest else "; no manifest.json, so missing "
                                   "runs cannot be detected") + ")",
             f"- **Scale:** {p['scale']}",
             f"- **Hardware:** {p['hardware']}",
             f"- **torch:** {p['torch']}; **Python:** {p['python']}",
             f"- **Harness commit:** {p['commit']}",
             "- **Settings:** " + "; ".join(_setting_text(st, s)
                                            for s in st.settings() + st.settings("sr")),
             _ours_line(st),
             "- **Reported numbers:** " + (f"`{st.reference_path}` (reported "
                                            "elsewhere, not measured here; marked †)"
                                            if st.reference_path else "none"),
             f"- **In the numbers:** {int(runs['included'].sum())} of {len(runs)} runs; "
             f"excluded: {_excluded_counts(st)} (listed in [Runs excluded from the numbers]"
             f"(#runs-excluded-from-the-numbers))", *_stage_line(st), ""]
    lines += [f"> Note: {n}" for n in st.notes] + ([""] if st.notes else [])
    sr_only = not st.settings() and bool(st.settings("sr"))
    tests = ("t-tests for differences (paired by seed where both rows' runs share each "
             "seed's randomness, else Welch's; rows equal on every seed are reported as the "
             "same network, without a test).")
    lines += [("Every number is the final deployed test PSNR (dB) or SSIM on Y over seeds "
               "unless stated otherwise: mean ± sample std (n), " + tests
               if sr_only else
               "Every number is the final deployed test accuracy (%) over seeds unless stated "
               "otherwise: mean ± sample std (n), 95% t-intervals (clipped to [0, 100] where "
               "they reach past it, and marked), " + tests)
              + " Cells with n < 2 have no error bar and are marked. One verdict rule "
              f"everywhere: {stats.RULE}. See [Statistical methods](#statistical-methods).", ""]
    return lines


def _stage_line(st: StudyRecords) -> list[str]:
    """'Earlier stages: 24 tuning trials, 5 pretraining sources (...)', or nothing."""
    if st.stage_runs is None or st.stage_runs.empty:
        return []
    counts = st.stage_runs["stage"].value_counts()
    names = {"tune": ("tuning trial", "tuning trials"),
             "pretrain": ("pretraining source", "pretraining sources")}
    parts = [f"{n} {names.get(k, (k, k))[n != 1]}" for k, n in counts.items()]
    return [f"- **Earlier stages:** {', '.join(parts)}: in no result (the [Tuning protocol]"
            "(#tuning-protocol) shows the trials; the Cost section counts their compute)"]


def _setting_text(st: StudyRecords, s: str) -> str:
    """'CIFAR-10 (JPEG copy) / resnet20 (imagefolder / resnet20)': the id when renamed."""
    name, ids = st.setting_name(s), st.setting_labels[s]
    return name if name == ids else f"{name} (ids: {ids})"


# --------------------------------------------------------------------------- text sections

def answer_blocks(st: StudyRecords) -> list[Block]:
    """Every reviewer question (questions.QUESTIONS) with its answer."""
    md: list[Block] = []
    answers = reviewer_answers(st)
    classify_only = [a for a in answers if a["text"] == f"{NOT_ANSWERED}: {SR_ONLY}."]
    for a in answers:
        if a in classify_only:
            continue
        md += [f"**{a['title']}.** *{a['question']}* {a['text']}", ""]
        md += [f"- {b}" for b in a["bullets"]] + ([""] if a["bullets"] else [])
    if classify_only:
        md += [f"The other reviewer questions ({', '.join(a['title'] for a in classify_only)}) "
               "are answered from classification runs; this study has only super-resolution "
               "runs.", ""]
    return md


def _spec_exclusions(st: StudyRecords) -> list[str]:
    """Combinations the study spec leaves out (manifest.json "excluded")."""
    excluded = (st.manifest or {}).get("excluded", [])
    if not excluded:
        return []
    out = ["Combinations the study spec excludes (not run):", ""]
    for e in excluded:
        cell = cell_name(e.get("w_bits"), e.get("a_bits"), e.get("epochs"))
        out.append(f"- {e.get('variant', '?')} {cell}: {e.get('reason', '')}")
    return out + [""]


def _mismatch_lines(st: StudyRecords) -> list[str]:
    if not st.mismatches:
        return []
    out = ["Recipe differences inside a cell (these comparisons are not matched):", ""]
    for m in st.mismatches:
        vals = "; ".join(f"{v} ({', '.join(ls)})" for v, ls in m["values"].items())
        out.append(f"- {where(st, m['setting'], m['cell'])}: `{m['key']}` = {vals}")
    return out + [""]


def excluded_blocks(st: StudyRecords) -> list[Block]:
    """The runs left out of every number, and why; spec exclusions, recipe differences,
    single-seed cells and run directories the manifest does not list."""
    t = tables.excluded_table(st)
    out: list[Block] = (["These runs are not in any table, figure or answer above.", "", t]
                        if t.rows else
                        ["None: every run record found is completed and matched.", ""])
    out += _spec_exclusions(st) + _mismatch_lines(st)
    small = [(k, g["summary"].n) for k, g in st.groups.items() if g["summary"].n < 2]
    if small:
        out += ["Cells with a single seed (shown without error bars, not compared): "
                + ", ".join(f"{st.display(k[1])} at {where(st, k[0], k[2:])}"
                            for k, _ in sorted(small)) + ".", ""]
    if st.manifest and "in_manifest" in st.runs and not st.runs["in_manifest"].all():
        extra = st.runs.loc[~st.runs["in_manifest"], "run_id"].tolist()
        out += [f"Run directories not in manifest.json (excluded from every number): "
                f"{', '.join(extra[:20])}" + (" …" if len(extra) > 20 else "") + ".", ""]
    return out


# --------------------------------------------------------------------------- the sections

def _comparisons_title(st: StudyRecords) -> str:
    return f"Comparisons: {st.ours_name} minus each baseline" if st.ours else "Comparisons"


def main_blocks(st: StudyRecords, setting: str) -> list[Block]:
    """A setting's main table and what its design can detect."""
    return [*tables.main_tables(st, setting), *design.design_lines(st, setting)]


def comparison_blocks(st: StudyRecords) -> list[Block]:
    """Ours minus each baseline, per setting; without ours, why there are none."""
    if not st.ours:
        return [f"None: {OURS_NOT_SET}.", ""]
    return per_setting(tables.comparison_tables)(st)


SECTIONS: tuple[Section, ...] = (
    Section("Reviewer questions", "questions", answer_blocks),
    Section("Main results", "main", per_setting(main_blocks)),
    Section("Reproduction: measured vs reported", "reproduction",
            per_setting(reproduction.reproduction_tables)),
    Section(_comparisons_title, "comparisons", comparison_blocks),
    Section("Super-resolution", "sr", sr_table_blocks),
    Section("Super-resolution figures", "sr_figures", sr_figure_blocks, figures=True),
    Section("Convergence", "convergence", per_setting(figures.convergence_figures), figures=True),
    Section("Per-seed final accuracy", "seeds", per_setting(figures.seed_figures), figures=True),
    Section("Budget study", "budget", per_setting(tables.budget_tables)),
    Section("Budget figures", "budget_figures", per_setting(figures.budget_figures), figures=True),
    Section("Equal compute", "equal_compute", per_setting(compute.equal_compute_blocks),
            figures=True,
            intro="Accuracy against training time, and each row's accuracy once it had used "
                  "the time the cheapest row's whole budget took (T*)."),
    Section("Across cells", "aggregate", per_setting(aggregate.aggregate_blocks), figures=True,
            intro="Aggregates over every cell of a setting, in the manner of rliable: "
                  "interquartile mean, probability of improvement and performance profiles, "
                  "with stratified-bootstrap intervals."),
    Section("Ablations", "ablations", per_setting(tables.ablation_tables),
            intro="Named variants of one method against its default variant (the variant "
                  "named like the method, else the first)."),
    Section("Tuning protocol", "tuning", tuning.tuning_blocks),
    Section("Cost", "cost",
            lambda st: per_setting(costs.cost_tables)(st) + tuning.stage_cost_blocks(st)),
    Section("Uncertainty details", "uncertainty", per_setting(tables.uncertainty_tables)),
    Section("Runs excluded from the numbers", "excluded", excluded_blocks),
    Section("Statistical methods", "statistics",
            lambda st: design.statistics_blocks(st, sr_statistics_lines(st))),
)
assert len({s.key for s in SECTIONS}) == len(SECTIONS), "section keys must be unique"


# --------------------------------------------------------------------------- build

def _shown(blocks: list[Block]) -> list[Block]:
    """Tables without rows are neither written nor shown."""
    return [b for b in blocks if not (isinstance(b, Table) and not b.rows)]


def build_sections(st: StudyRecords, fdir: Path, jobs: int = 0
                   ) -> tuple[dict[str, list[Block]], Callable[[], list[str]]]:
    """Every section's blocks, by key; figure sections first, so their drawing (started
    here, in other processes) overlaps the rest. Returns (blocks, wait for the figures)."""

    built: dict[str, list[Block]] = {}
    renderer = plots.Renderer(fdir, jobs)
    try:
        for sec in SECTIONS:
            if sec.figures:  # each section's figures are drawn while the next is computed
                built[sec.key] = _shown(sec.build(st))
                renderer.submit([b.spec for b in built[sec.key] if isinstance(b, Figure)])
        add_bootstraps(st)  # figures do not need them; the uncertainty tables do
        for sec in SECTIONS:
            if not sec.figures:
                built[sec.key] = _shown(sec.build(st))
    except BaseException:
        renderer.cancel()
        raise
    return built, renderer.wait


def report_markdown(st: StudyRecords, built: dict[str, list[Block]]) -> str:
    md = _header(st)
    for sec in SECTIONS:
        blocks = built[sec.key]
        if not blocks:
            continue
        md += [f"## {sec.heading(st)}", ""] + ([sec.intro, ""] if sec.intro else [])
        for b in blocks:
            md += _block_md(b)
    return "\n".join(md).rstrip() + "\n"


def build_report(st: StudyRecords, out: Path, jobs: int = 0) -> Path:
    """Write every table, figure and report.md for a loaded study; returns report.md."""
    tdir, fdir = out / TABLES_DIR, out / FIGURES_DIR
    for folder in (tdir, fdir):  # never written through a link, never outside OUT
        files.make_dir(folder, out)
    for name in ("report.md", ".report-files.json"):
        files.check_target(out / name)
    built, wait_figures = build_sections(st, fdir, jobs)
    by_name = {b.name: b for blocks in built.values() for b in blocks if isinstance(b, Table)}
    for t in by_name.values():
        t.write(tdir)
    md = report_markdown(st, built)
    written = wait_figures()
    report = out / "report.md"
    atomic_write_text(report, md)
    _prune_stale(out, [report] + [Path(p) for p in written]
                 + [tdir / f"{n}.{x}" for n in by_name for x in ("md", "tex", "csv")])
    return report


def _prune_stale(out: Path, written: list[Path]) -> None:
    """Remove outputs an earlier report wrote and this one did not (a removed cell's
    figure, say): only files listed in our own index, only relative paths to regular files
    inside OUT (never through a link, never outside it)."""

    index = out / ".report-files.json"
    now = sorted(str(Path(f).resolve().relative_to(out.resolve())) for f in written)
    try:
        before = files.read_json(index)
    except (OSError, ValueError):
        before = []
    listed = [r for r in before if isinstance(r, str)] if isinstance(before, list) else []
    for rel in set(listed) - set(now):
        if rel and not Path(rel).is_absolute() and ".." not in Path(rel).parts:
            files.remove_file(out / rel, out)
    atomic_write_json(index, now, out)


def write_report(study_dir: Path, out: Path | None = None, reference: str | None = None,
                 reference_dataset: str | None = None, ours: str | None = None,
                 jobs: int = 0) -> Path:
    """Load a study's records and write its report (default STUDY_DIR/report)."""
    out = Path(out) if out else Path(study_dir) / "report"
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError("--out", f"{str(out)!r} is {'a link' if out.is_symlink() else 'a file'}"
                        "; the report writes a folder there: move it away or pass --out DIR")
    st = load_study(Path(study_dir), reference, reference_dataset, ours, jobs, bootstrap=False)
    files.ensure_writable_dir(out, "--out", "pass a writable --out DIR")
    return build_report(st, out, jobs)

