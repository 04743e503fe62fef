"""Table builders: the main, uncertainty, comparison, budget, ablation and excluded-runs
tables (the Table class and the cell formatting they share: table.py).

Data flow: a builder reads a ``StudyRecords`` (load.py) for one setting and returns Tables;
the row computations they share with the reviewer answers (``comparisons``,
``budget_rows``, ``ablations``) are memoised per setting on the study, and every verdict and
bold cell comes from the setting's one family of tests (verdicts.py). The cost section
(``cost_rows``, ``cost_tables``) lives in costs.py.
render.py lists the report's sections; a table section names one of the ``*_tables``
builders at the end of this module (study, setting) -> [Table]. To add a table to the
report: write its builder here and add a ``Section`` to ``render.SECTIONS``.

Every Table is written as tables/NAME.{md,tex,csv} (``Table.write``): the .csv holds the
numbers (``data``) and the internal ids (row, method, setting) beside the display names;
md and tex print display names (``st.display``).
"""
from __future__ import annotations

import json
from typing import Any

import pandas as pd

from harness.report import design, stats, verdicts
from harness.report.load import (
    StudyRecords,
    cached_per_setting,
    cell_name,
    is_known,
    reported,
    task_of,
)
from harness.report.table import (
    CLIPPED,
    Table,
    clipped_note,
    fmt_cell,
    fmt_ci,
    fmt_diff,
    fmt_diff_ci,
    fmt_opts,
    grouped,
    n_epochs,
    plural,
    same_n,
    slug,
)

# --------------------------------------------------------------------------- formatting


def where(st: StudyRecords, setting: str, c) -> str:
    """A cell, and its setting when the study has several: 'W1/A32, CIFAR-10 / ResNet-20'."""
    multi = len(st.settings(task_of(setting))) > 1
    return cell_name(*c) + (f", {st.setting_name(setting)}" if multi else "")


def setting_slug(st: StudyRecords, setting: str) -> str:
    """A setting's part of file names: from its ids, stable under renames."""
    return slug(st.setting_labels[setting])


def rule_note(st: StudyRecords, setting: str) -> str:
    n = plural(verdicts.family_size(st, setting), "test")
    return f"Verdicts and bold: {stats.RULE} (here {n})."


def _stat_row(st: StudyRecords, setting: str, label: str, cell: tuple[int, int, int]) -> dict:
    s = st.group(setting, label, cell)["summary"]
    return {"setting": st.setting_labels.get(setting, setting), "row": label,
            "name": st.display(label),
            "method": st.method_of.get(label), "w_bits": cell[0], "a_bits": cell[1],
            "epochs": cell[2], "n": s.n, "mean": s.mean, "std": s.std,
            "ci_low": s.ci[0] if s.ci else None, "ci_high": s.ci[1] if s.ci else None,
            "ci_clipped": s.clipped, "median": s.median, "iqm": s.iqm,
            "boot_low": s.boot[0] if s.boot else None, "boot_high": s.boot[1] if s.boot else None,
            "min": s.min, "max": s.max}


# --------------------------------------------------------------------------- main results

def _main_columns(st: StudyRecords, setting: str, labels: list[str]) -> list[tuple[str, Any]]:
    """("measured", cell) per cell, each W/A pair followed by ("reported", (w, a)) when the
    reference has a number for one of its rows."""
    cells = st.cells(setting)
    columns: list[tuple[str, Any]] = []
    for i, c in enumerate(cells):
        columns.append(("measured", c))
        last_of_pair = i + 1 == len(cells) or cells[i + 1][:2] != c[:2]
        if last_of_pair and any(reported(st, setting, lab, *c[:2]) for lab in labels):
            columns.append(("reported", c[:2]))
    return columns


def _usual_n(st: StudyRecords, setting: str, labels: list[str]) -> tuple[int | None, bool]:
    """(the most common number of seeds of a cell, 2 or more, else None; whether every cell
    has it): the main table states it once and gives n only where a cell differs."""
    ns = [st.group(setting, lab, c)["summary"].n for lab in labels for c in st.cells(setting)]
    ns = [n for n in ns if n]
    if not ns:
        return None, False
    usual = max(sorted(set(ns), reverse=True), key=ns.count)
    return (usual, len(set(ns)) == 1) if usual >= 2 else (None, False)


def _main_notes(st: StudyRecords, setting: str, rows: list[list[str]], columns, sources: set,
                n_usual: tuple[int | None, bool], bold: bool) -> list[str]:
    n, every = n_usual
    seeds = (f"mean ± sample std over {n} seeds in every cell" if every else
             f"mean ± sample std over {n} seeds, or over the n seeds in parentheses" if n else
             "mean ± sample std (n seeds)")
    notes = [f"Final deployed test accuracy (%): {seeds}. "
             + (f"Bold: the best row of its column when it is higher than every other row "
                f"with {stats.MIN_N_CONCLUDE} or more seeds, and no row with fewer seeds has as "
                f"high a mean. {rule_note(st, setting)}" if bold else
                "No row is higher than every other in its column under the report's verdict "
                "rule, so none is bold.")]
    if any("(1)*" in v for r in rows for v in r):
        notes.append("* n = 1: a single seed, no error bar, not compared.")
    if any(v == "–" for r in rows for v in r):
        notes.append("– not run in this study.")
    if any(v.startswith("excl.") for r in rows for v in r):
        notes.append("excl. (k): k runs, none usable (failed, diverged, corrupt, missing or "
                     "unmatched; see the excluded runs).")
    if sources or any(k == "reported" for k, _ in columns):
        src = "; ".join(sorted(x for x in sources if x)) or "the reference CSV"
        notes.append(f"† reported, not measured: copied from {st.reference_path} ({src}).")
    return notes


def main_table(st: StudyRecords, setting: str) -> Table:
    labels = st.labels(setting)
    columns = _main_columns(st, setting, labels)
    multi = len({c[2] for c in st.cells(setting)}) > 1
    n_usual = _usual_n(st, setting, labels)
    header = ["Method"] + [cell_name(*c[:2], c[2] if multi else None) if k == "measured"
                           else f"{cell_name(*c)} reported†" for k, c in columns]
    rows, data, sources, bold = [], [], set(), set()
    exc = st.runs[(st.runs["setting"] == setting) & ~st.runs["included"]]
    n_exc = exc.groupby(["label", "w_bits", "a_bits", "epochs"]).size().to_dict()
    for lab in labels:
        row = [st.display(lab)]
        for kind, c in columns:
            if kind == "measured":
                s = st.group(setting, lab, c)["summary"]
                k = n_exc.get((lab, *c), 0)
                row.append(f"excl. ({k})" if s.n == 0 and k else
                           fmt_cell(s, s.n != n_usual[0]))
                data.append({**_stat_row(st, setting, lab, c), "kind": "measured"})
            else:
                r = reported(st, setting, lab, *c)
                row.append(f"{r[0]:.1f}" if r else "")
                if r:
                    sources.add(r[1])
                    data.append({"setting": st.setting_labels[setting], "row": lab,
                                 "name": st.display(lab), "method": st.method_of[lab],
                                 "w_bits": c[0], "a_bits": c[1],
                                 "kind": "reported (not measured)", "mean": r[0], "source": r[1]})
        rows.append(row)
    for j, (kind, c) in enumerate(columns, start=1):
        if kind == "measured":
            winner = bold_winner(st, setting, labels, c)
            if winner is not None:
                bold.add((labels.index(winner), j))
    cap = f"Main results, {st.setting_name(setting)}"
    name = f"main_{setting_slug(st, setting)}"
    notes = _main_notes(st, setting, rows, columns, sources, n_usual, bool(bold))
    pairs = list(dict.fromkeys(c[:2] for _, c in columns))
    tex = Table(name, cap, ["Method"] + [f"{c[2]} ep" if k == "measured" else "rep.†"
                                         for k, c in columns], rows, bold=bold, notes=notes,
                wrap=True,
                header_groups=[("", 1)] + [(cell_name(*p), sum(c[:2] == p for _, c in columns))
                                           for p in pairs])
    return Table(name, cap, header, rows, pd.DataFrame(data), bold, notes, tex=tex)


def bold_winner(st: StudyRecords, setting: str, labels: list[str], cell) -> str | None:
    """The row to bold in a column: ``verdicts.bold_candidate`` when the verdict rule calls
    it higher than every other row with enough seeds."""
    top = verdicts.bold_candidate(st, setting, labels, cell)
    if top is None:
        return None
    others = [lab for lab in labels if lab != top and
              st.group(setting, lab, cell)["summary"].n >= stats.MIN_N_CONCLUDE]
    ok = all(verdicts.test(st, setting, (top, cell), (lab, cell)).decision == "higher"
             for lab in others)
    return top if ok else None


def uncertainty_table(st: StudyRecords, setting: str) -> Table:
    rows, data, keyed = [], [], []
    n_test = design.test_set_size(st, setting)
    for lab in st.labels(setting):
        for c in st.cells(setting, included_only=True):
            s = st.group(setting, lab, c)["summary"]
            if s.n == 0:
                continue
            se = design.binomial_se(s.mean, n_test)
            data.append({**_stat_row(st, setting, lab, c), "test_set_se": se, "n_test": n_test})
            rows.append([st.display(lab), cell_name(*c), str(s.n), f"{s.mean:.2f}",
                         f"{s.std:.2f}" if s.n > 1 else "–",
                         f"{se:.2f}" if se == se else "n/a", fmt_ci(s),
                         stats.fmt_interval(s.boot), f"{s.median:.2f}", f"{s.iqm:.2f}",
                         f"{s.min:.2f}–{s.max:.2f}"])
            keyed.append((c, [rows[-1][0], *rows[-1][2:8], rows[-1][9]]))
    header = ["Method", "Cell", "n", "mean", "std", "test SE", "95% t-CI", "95% bootstrap CI",
              "median", "IQM", "min–max"]
    notes = ["std: over seeds. test SE: the binomial standard error of one run's accuracy from "
             "the test set's size alone, 100·√(p(1−p)/n), "
             + (f"n = {n_test:,} test images." if n_test else
                "n/a: the records do not say how many test images there were.")
             + " t-CI: t-interval of the mean (n ≥ 2). Bootstrap: BCa, 9999 resamples, fixed "
             f"seed, only when n ≥ {stats.BOOTSTRAP_MIN_N}. IQM: mean of the middle 50% of "
             "seeds."]
    if any(CLIPPED in r[6] for r in rows):
        notes.append(clipped_note())
    name = f"uncertainty_{setting_slug(st, setting)}"
    caption = f"Uncertainty per method and cell, {st.setting_name(setting)}"
    boot = any(r[7] != "n/a" for r in rows)
    tex_rows, groups = grouped([(cell_name(*c), r if boot else r[:6] + r[7:])
                                for c, r in sorted(keyed, key=lambda t: t[0])])
    tex = Table(name, caption, ["Method", "n", "mean", "std", "test SE", "95% t-CI"]
                + (["bootstrap CI"] if boot else []) + ["IQM"], tex_rows, groups=groups,
                wide=True, wrap=True, notes=notes)
    return Table(name, caption, header, rows, pd.DataFrame(data), notes=notes, n_label_cols=2,
                 wrap=True, tex=tex)


# --------------------------------------------------------------------------- comparisons

@cached_per_setting
def comparisons(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """Ours (its default variant) minus every row of another method, per shared cell, with
    its test from the setting's verdict family."""
    labels = st.labels(setting)
    ours = st.default_variant(st.ours, labels)
    if ours is None:
        return []
    out = []
    for c in st.cells(setting, included_only=True):
        a = st.group(setting, ours, c)
        if not a["acc"]:
            continue
        for lab in labels:
            if st.method_of.get(lab) == st.ours:
                continue
            b = st.group(setting, lab, c)
            if b["acc"]:
                t = verdicts.test(st, setting, (ours, c), (lab, c))
                out.append({"cell": c, "ours": ours, "baseline": lab, "cmp": t.cmp,
                            "test": t, "p_adj": t.p_adj, "a": a["summary"],
                            "b": b["summary"]})
    return out


def _comparison_data(st: StudyRecords, setting: str, r: dict[str, Any]) -> dict[str, Any]:
    c: stats.Comparison = r["cmp"]
    return {"setting": st.setting_labels[setting], "w_bits": r["cell"][0],
            "a_bits": r["cell"][1], "epochs": r["cell"][2], "ours": r["ours"],
            "baseline": r["baseline"], "baseline_name": st.display(r["baseline"]),
            "n_ours": c.n_a, "n_baseline": c.n_b,
            "mean_ours": c.mean_a, "mean_baseline": c.mean_b, "diff": c.diff,
            "ci_low": c.ci[0] if c.ci else None, "ci_high": c.ci[1] if c.ci else None,
            **verdicts.test_data(r["test"]), "p_ours_greater": c.p_a_greater,
            "decision": r["test"].decision,
            "verdict": r["test"].verdict(st.display(r["ours"]), st.display(r["baseline"]))}


def _compact_comparison(st: StudyRecords, setting: str, comps, name: str, caption: str,
                        notes: list[str]) -> Table:
    """The paper version, one column wide: per cell (a heading), each baseline's Δ, its CI
    and adjusted p; Δ bold when significant."""
    keyed, bold = [], set()
    for i, r in enumerate(comps):
        c: stats.Comparison = r["cmp"]
        keyed.append((cell_name(*r["cell"]), [st.display(r["baseline"]), fmt_diff(c),
                                              fmt_diff_ci(c),
                                              stats.fmt_p(r["p_adj"])]))
        if r["test"].decision in ("higher", "lower"):
            bold.add((i, 1))
    rows, groups = grouped(keyed)
    ours = st.display(comps[0]["ours"]) if comps else st.ours_name
    design = verdicts.design_note([r["test"] for r in comps])
    return Table(name, caption, ["Baseline", "Δ", "95% CI", "p (adj.)"], rows,
                 bold=bold, n_label_cols=1, groups=groups, wide=False, wrap=True,
                 notes=[f"Δ: {ours} minus the baseline, mean final deployed accuracy (points); "
                        f"95% CI and p: {design}; p Benjamini-Hochberg adjusted over the "
                        f"{plural(verdicts.family_size(st, setting), 'test')} of the report's "
                        "setting." + (" Bold Δ: significant under that rule." if bold else "")]
                 + notes[1:])


def comparison_table(st: StudyRecords, setting: str, comps: list[dict[str, Any]]) -> Table:
    rows, data = [], []
    ours = st.display(comps[0]["ours"]) if comps else st.ours_name
    for r in comps:
        c: stats.Comparison = r["cmp"]
        rows.append([cell_name(*r["cell"]), st.display(r["baseline"]), fmt_cell(r["a"]),
                     fmt_cell(r["b"]), fmt_diff(c), fmt_diff_ci(c),
                     stats.fmt_p(c.p), stats.fmt_p(r["p_adj"]), f"{c.p_a_greater:.2f}",
                     r["test"].verdict(ours, st.display(r["baseline"]))])
        data.append(_comparison_data(st, setting, r))
    header = ["Cell", "Baseline", ours, "baseline", f"Δ ({ours} − baseline)", "95% CI",
              "p", "p (adj.)", f"P({ours} > baseline)", "Verdict"]
    few = [r for r in comps if r["cmp"].few_seeds]
    paired = any(r["cmp"].paired for r in comps)
    notes = [f"Δ: difference of mean final deployed accuracy (points). CI and p: "
             f"{verdicts.design_note([r['test'] for r in comps])}; p unadjusted. p (adj.): "
             f"Benjamini-Hochberg adjusted over the "
             f"{plural(verdicts.family_size(st, setting), 'test')} this report makes in the "
             f"setting. P({ours} > baseline): share of seed pairs where {ours} wins (ties ½)"
             + (", of the seeds where paired. " if paired else ". ") + rule_note(st, setting)]
    if few:
        notes.append(f"{len(few)} of {len(comps)} comparisons rest on {stats.FEW_SEEDS} seeds a "
                     "side or fewer: a verdict there is fragile (one seed moves it).")
    name = f"comparisons_{setting_slug(st, setting)}"
    caption = f"{ours} minus each baseline, {st.setting_name(setting)}"
    return Table(name, caption, header, rows, pd.DataFrame(data), notes=notes, n_label_cols=2,
                 left_extra=(-1,),
                 tex=_compact_comparison(st, setting, comps, name, caption, notes))


# --------------------------------------------------------------------------- budgets

def readoff(st: StudyRecords, setting: str, label: str, w: int, a: int, at: int,
            from_epochs: int) -> list[float]:
    """Deployed test accuracy at epoch ``at`` of the ``from_epochs``-epoch runs."""
    g = st.group(setting, label, (w, a, from_epochs))
    out = []
    for rid in g["run_ids"]:
        m = st.metrics.get(rid) or {}
        acc, ep = m.get("test_acc", ()), m.get("epoch")
        i = at - 1 if ep is None else next((j for j, e in enumerate(ep) if e == at), -1)
        if 0 <= i < len(acc):   # by the epoch column: a pretrained run's start after its fp
            out.append(float(acc[i]))
    return out


@cached_per_setting
def budget_rows(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """Per row and W/A pair trained at two or more budgets: the runs trained for each budget,
    and the accuracy read off every longer run's curve at that epoch."""
    cells = st.cells(setting, included_only=True)
    budgets = sorted({c[2] for c in cells})
    if len(budgets) < 2:
        return []
    out = []
    for lab in st.labels(setting):
        for w, a in sorted({c[:2] for c in cells}):
            have = [e for e in budgets if st.group(setting, lab, (w, a, e))["acc"]]
            if len(have) < 2:
                continue
            for e in budgets:
                g = st.group(setting, lab, (w, a, e))
                if g["acc"]:
                    out.append({"row": lab, "w": w, "a": a, "epoch": e, "source": "trained",
                                "from": e, "values": g["acc"], "summary": g["summary"]})
                for longer in [x for x in have if x > e]:
                    vals = readoff(st, setting, lab, w, a, e, longer)
                    if vals:
                        out.append({"row": lab, "w": w, "a": a, "epoch": e, "source": "readoff",
                                    "from": longer, "values": vals,
                                    "summary": stats.describe(vals, bounds=stats.PERCENT)})
    return out


def budget_table(st: StudyRecords, setting: str, rows_: list[dict[str, Any]]) -> Table:
    rows, data = [], []
    for r in rows_:
        s = r["summary"]
        src = (f"trained for {n_epochs(r['epoch'])}" if r["source"] == "trained" else
               f"epoch {r['epoch']} of the {r['from']}-epoch runs (read off the curve)†")
        rows.append([st.display(r["row"]), cell_name(r["w"], r["a"]), str(r["epoch"]), src,
                     fmt_cell(s), fmt_ci(s)])
        data.append({"setting": st.setting_labels[setting], "row": r["row"],
                     "name": st.display(r["row"]), "w_bits": r["w"],
                     "a_bits": r["a"], "epoch": r["epoch"], "source": r["source"],
                     "run_epochs": r["from"], "n": s.n, "mean": s.mean, "std": s.std,
                     "ci_low": s.ci[0] if s.ci else None, "ci_high": s.ci[1] if s.ci else None,
                     "ci_clipped": s.clipped})
    notes = ["Trained: final deployed accuracy of runs whose whole schedule had this budget. "
             "† Read off: the deployed test accuracy logged at that epoch by longer runs; their "
             "learning-rate (and temperature) schedule had not finished, so this is not the "
             "accuracy of a run trained with that budget. 95% CI: t-interval of the mean."]
    if any(r["summary"].clipped for r in rows_):
        notes.append(clipped_note())
    name = f"budget_{setting_slug(st, setting)}"
    caption = f"Accuracy vs epoch budget, {st.setting_name(setting)}"
    order = {lab: i for i, lab in enumerate(st.order)}
    n_all = same_n([r["summary"] for r in rows_])
    keyed, prev = [], None
    for r in sorted(rows_, key=lambda r: (r["w"], r["a"], order.get(r["row"], 0))):
        first = (r["row"], r["w"], r["a"]) != prev   # the name once per row and W/A pair
        prev = (r["row"], r["w"], r["a"])
        keyed.append((cell_name(r["w"], r["a"]), [
            st.display(r["row"]) if first else "", str(r["epoch"]),
            "trained" if r["source"] == "trained" else f"read off {r['from']} ep†",
            fmt_cell(r["summary"], not n_all), fmt_ci(r["summary"])]))
    tex_rows, groups = grouped(keyed)
    tex = Table(name, caption, ["Method", "Epochs", "Source", "Accuracy", "95% CI"], tex_rows,
                groups=groups, wide=True, n_label_cols=1, left_extra=(2,), wrap=True,
                notes=["Trained: runs with that budget. † Read off: the accuracy the longer "
                       "runs had at that epoch (their schedule unfinished)."
                       + (f" Accuracy: mean ± std over {n_all} seeds." if n_all else "")]
                + notes[1:])
    return Table(name, caption, ["Method", "W/A", "Epochs", "Source", "Accuracy", "95% CI"],
                 rows, pd.DataFrame(data), notes=notes, n_label_cols=4, tex=tex)


# --------------------------------------------------------------------------- ablations

def option_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: a.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@cached_per_setting
def ablations(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """For each method with several variants in this setting: every non-default variant
    against the default one, per shared cell, with its test from the verdict family."""
    labels = st.labels(setting)
    out = []
    for m in dict.fromkeys(st.method_of[lab] for lab in labels):
        variants = [lab for lab in labels if st.method_of[lab] == m]
        if len(variants) < 2:
            continue
        default = st.default_variant(m, labels)
        base_opts = st.options_of.get(default, {})
        for c in st.cells(setting, included_only=True):
            d = st.group(setting, default, c)
            for lab in variants:
                g = st.group(setting, lab, c)
                if not g["acc"]:
                    continue
                diff = option_diff(st.options_of.get(lab, {}), base_opts)
                t = (None if lab == default or not d["acc"]
                     else verdicts.test(st, setting, (lab, c), (default, c)))
                out.append({"method": m, "default": default, "variant": lab, "cell": c,
                            "options": diff, "summary": g["summary"],
                            "cmp": t.cmp if t else None, "test": t})
    return out


def _ablation_data(st: StudyRecords, setting: str, r: dict[str, Any],
                   method: str) -> dict[str, Any]:
    c: stats.Comparison | None = r["cmp"]
    s = r["summary"]
    return {"setting": st.setting_labels[setting], "method": method,
            "w_bits": r["cell"][0], "a_bits": r["cell"][1], "epochs": r["cell"][2],
            "variant": r["variant"], "name": st.display(r["variant"]), "default": r["default"],
            "options_vs_default": json.dumps(r["options"], default=str),
            "n": s.n, "mean": s.mean, "std": s.std,
            "diff_vs_default": c.diff if c else None,
            "ci_low": c.ci[0] if c and c.ci else None,
            "ci_high": c.ci[1] if c and c.ci else None, **verdicts.test_data(r["test"]),
            "decision": r["test"].decision if r["test"] else None}


def ablation_table(st: StudyRecords, setting: str, rows_: list[dict[str, Any]],
                   method: str) -> Table:
    rows, data = [], []
    for r in rows_:
        t: verdicts.Test | None = r["test"]
        is_default = r["variant"] == r["default"]
        rows.append([cell_name(*r["cell"]),
                     st.display(r["variant"]) + (" (default)" if is_default else ""),
                     "" if is_default else fmt_opts(r["options"]), fmt_cell(r["summary"]),
                     "" if t is None else fmt_diff(t.cmp),
                     "" if t is None else fmt_diff_ci(t.cmp),
                     "" if t is None else stats.fmt_p(t.cmp.p),
                     "" if t is None else stats.fmt_p(t.p_adj),
                     "" if t is None else t.verdict("the variant", "the default")])
        data.append(_ablation_data(st, setting, r, method))
    header = ["Cell", "Variant", "Options (vs default)", "Accuracy", "Δ vs default",
              "95% CI", "p", "p (adj.)", "Verdict"]
    default = st.display(rows_[0]["default"]) if rows_ else ""
    mname = st.display(st.default_variant(method, st.labels(setting)) or method)
    design = verdicts.design_note([r["test"] for r in rows_ if r["test"]])
    notes = [f"Variants of {mname}; Δ = variant minus the default variant ({default})"
             + (f", {design}. " if design else ". ") + rule_note(st, setting)]
    name = f"ablation_{slug(method)}_{setting_slug(st, setting)}"
    caption = f"Ablation of {mname} variants, {st.setting_name(setting)}"
    n_all = same_n([r["summary"] for r in rows_])
    tex_rows, groups = grouped([(row[0], [row[1], fmt_cell(r["summary"], not n_all), row[4],
                                          row[5], row[7]]) for row, r in zip(rows, rows_)])
    bold = {(i, 2) for i, r in enumerate(rows_)
            if r["test"] and r["test"].decision in ("higher", "lower")}
    tex = Table(name, caption, ["Variant", "Accuracy", "Δ", "95% CI", "p (adj.)"],
                tex_rows, n_label_cols=1, groups=groups, wide=True, wrap=True, bold=bold,
                notes=[notes[0] + (f" Accuracy: mean ± std over {n_all} seeds." if n_all
                                   else "")
                       + (" Bold Δ: significant under that rule." if bold else "")
                       + " Options of each variant: in the markdown and CSV versions of this "
                       "table."])
    return Table(name, caption, header, rows, pd.DataFrame(data), notes=notes,
                 n_label_cols=3, left_extra=(-1,), tex=tex)


# --------------------------------------------------------------------------- excluded runs

def excluded_table(st: StudyRecords) -> Table:
    exc = st.runs[~st.runs["included"]].copy()
    order = {"missing": 0, "failed": 1, "diverged": 2, "corrupt": 3, "running": 4,
             "pending": 5, "completed": 6}
    exc["_o"] = exc["status"].map(order).fillna(9)
    exc = exc.sort_values(["_o", "label", "run_id"])
    rows = []
    for _, r in exc.iterrows():
        status = r["status"]
        if status == "completed":
            status = ("unmatched" if r["unmatched"] else "stale" if r["stale"] else
                      "foreign")
        cell = (cell_name(int(r["w_bits"]), int(r["a_bits"]), int(r["epochs"]))
                if is_known(r["w_bits"]) and is_known(r["a_bits"]) and is_known(r["epochs"])
                else "?")
        seed = str(int(r["seed"])) if is_known(r["seed"]) else "?"
        label = st.display(str(r["label"])) if is_known(r["label"]) and r["label"] else "?"
        rows.append([str(r["run_id"]), label, cell, seed, status,
                     str(r["reason"])])
    data = exc.drop(columns=["_o"])[["run_id", "label", "method", "w_bits", "a_bits", "epochs",
                                     "seed", "status", "unmatched", "reason"]]
    return Table("excluded_runs", "Runs excluded from every number",
                 ["Run", "Method", "Cell", "Seed", "Status", "Reason"], rows, data,
                 n_label_cols=6)


# --------------------------------------------------------------------------- section builders
# (study, setting) -> the tables a report section shows for that setting; render.SECTIONS
# names them. Tables without rows are left out of the report.

def main_tables(st: StudyRecords, setting: str) -> list[Table]:
    return [main_table(st, setting)]


def comparison_tables(st: StudyRecords, setting: str) -> list[Table]:
    comps = comparisons(st, setting)
    return [comparison_table(st, setting, comps)] if comps else []


def budget_tables(st: StudyRecords, setting: str) -> list[Table]:
    rows = budget_rows(st, setting)
    return [budget_table(st, setting, rows)] if rows else []


def ablation_tables(st: StudyRecords, setting: str) -> list[Table]:
    """One table per method with several variants."""
    abl = ablations(st, setting)
    return [ablation_table(st, setting, [r for r in abl if r["method"] == m], m)
            for m in dict.fromkeys(r["method"] for r in abl)]


def uncertainty_tables(st: StudyRecords, setting: str) -> list[Table]:
    return [uncertainty_table(st, setting)]
