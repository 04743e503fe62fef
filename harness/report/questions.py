"""Reviewer questions: ``QUESTIONS`` lists them, each with the function that answers it.

To add a question, add one ``Question`` to ``QUESTIONS`` (the report shows them in this
order): a key, a title, the question as a reviewer would ask it (a string, or a function
of the study that fits it to what the study holds: its budgets, seeds), ``needs`` (which
records can answer it, in a few words) and ``answer(study, question) -> (text, bullets)``.
An answer that the study cannot give starts with ``NOT_ANSWERED`` and says why and what
would answer it (which variants or budgets to add). Questions about method options
(``answer_option``) name the options they are about in ``options``; questions about one
baseline (``answer_versus``) name it in ``baseline``; questions that compare "ours" with
the others set ``needs_ours`` (without a [report] ours they say so). A question is about the
classification runs unless its ``task`` says otherwise ("sr"); in a study with only
super-resolution runs such a question says so (``SR_ONLY``) instead of answering.

Data flow: answers read the ``StudyRecords`` (load.py), the memoised per-setting rows of
tables.py (``comparisons``, ``ablations``) and costs.py (``cost_rows``), timing.py and
aggregate.py, and take every verdict from the setting's one family of tests (verdicts.py),
so they agree with the tables and bold cells; an answer resting on few seeds says so in its
sentence.
render.py turns ``reviewer_answers(study)`` into the "Reviewer questions" section.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.report import fairness, stats, timing, verdicts
from harness.report.aggregate import aggregate_rows
from harness.report.answers import MAX_BULLETS, NOT_ANSWERED, bullets, tally  # noqa: F401
from harness.report.costs import answer_cost
from harness.report.load import OURS_NOT_SET, StudyRecords, cell_name
from harness.report.sr import sr_answer
from harness.report.table import fmt_opts, n_epochs, plural
from harness.report.tables import ablations, comparisons, where

Answer = tuple[str, list[str]]  # (paragraph, bullets)
SR_ONLY = ("the study has only super-resolution runs, and this question is answered from "
           "classification runs (the super-resolution question answers from the SR runs)")


@dataclass(frozen=True)
class Question:
    """One reviewer question and the function that answers it from a study's records."""

    key: str
    title: str
    text: str | Callable[[StudyRecords], str]    # the question, as a reviewer asks it
    needs: str                                   # the records that can answer it
    answer: Callable[[StudyRecords, "Question"], Answer]
    options: tuple[str, ...] = ()                # answer_option: the method options it is about
    baseline: str = ""                           # answer_versus: the method compared with ours
    needs_ours: bool = False                     # compares "ours" ([report] ours) with others
    task: str = "classify"                       # the runs it reads: classify or sr

    def ask(self, st: StudyRecords) -> dict[str, Any]:
        if self.task == "classify" and not st.settings() and st.settings("sr"):
            text, bullets = f"{NOT_ANSWERED}: {SR_ONLY}.", []
        elif self.needs_ours and not st.ours:
            text, bullets = f"{NOT_ANSWERED}: {OURS_NOT_SET}.", []
        else:
            text, bullets = self.answer(st, self)
        question = self.text(st) if callable(self.text) else self.text
        return {"key": self.key, "title": self.title, "question": question,
                "needs": self.needs, "text": text, "bullets": bullets,
                "answered": not text.startswith(NOT_ANSWERED)}


# --------------------------------------------------------------------------- helpers

def _vs(st: StudyRecords, a: str, sa: stats.Summary, b: str, sb: stats.Summary,
        t: verdicts.Test) -> str:
    return (f"{st.display(a)} {stats.fmt_summary(sa)} vs {st.display(b)} {stats.fmt_summary(sb)}: "
            f"{t.fmt()}")


def _all_budgets(st: StudyRecords) -> list[int]:
    return sorted({c[2] for s in st.settings() for c in st.cells(s, True)})


def _seed_counts(st: StudyRecords) -> list[int]:
    return sorted({g["summary"].n for g in st.groups.values() if g["summary"].n})


# --------------------------------------------------------------------------- budget

def budget_question(st: StudyRecords) -> str:
    bs = _all_budgets(st)
    held = (f" ({' vs '.join(map(str, bs))} epochs in this study)" if len(bs) > 1 else
            f" (this study has one budget: {n_epochs(bs[0])})" if bs else "")
    return f"Does the comparison hold at matched epoch budgets, and at longer ones{held}?"


def _budget_item(st: StudyRecords, s: str, ours: str, w: int, a: int,
                 tests: list, own: list) -> str | None:
    """One W/A pair: ours against the strongest baseline at each budget, and ours at its
    longest budget minus its shortest."""
    labels = st.labels(s)
    base_labels = [lab for lab in labels if st.method_of[lab] != st.ours]
    parts, budgets = [], []
    for e in sorted({c[2] for c in st.cells(s, True) if c[:2] == (w, a)}):
        g = st.group(s, ours, (w, a, e))
        if not g["acc"]:
            continue
        budgets.append(e)
        rivals = [(st.group(s, b, (w, a, e))["summary"], b) for b in base_labels]
        rivals = [r for r in rivals if r[0].n]
        if not rivals:
            parts.append(f"at {n_epochs(e)} {st.display(ours)} {stats.fmt_summary(g['summary'])} "
                         "(no baseline at this budget)")
            continue
        sb, b = max(rivals, key=lambda r: r[0].mean)
        t = verdicts.test(st, s, (ours, (w, a, e)), (b, (w, a, e)))
        tests.append(t)
        parts.append(f"at {n_epochs(e)} {_vs(st, ours, g['summary'], b, sb, t)}")
    if len(budgets) > 1:
        lo_e, hi_e = budgets[0], budgets[-1]
        t = verdicts.test(st, s, (ours, (w, a, hi_e)), (ours, (w, a, lo_e)))
        own.append(t)
        parts.append(f"{st.display(ours)} at {hi_e} minus {lo_e} epochs: {t.fmt()}")
    return f"{where(st, s, (w, a))}: " + "; ".join(parts) + "." if parts else None


def answer_budget(st: StudyRecords, q: Question) -> Answer:
    multi = [s for s in st.settings() if len({c[2] for c in st.cells(s, True)}) > 1]
    if not multi:
        bs = _all_budgets(st)
        what = (f"every included run has the same budget ({n_epochs(bs[0])}), so it shows "
                f"only the matched comparison at that budget (see the comparisons); a second "
                f"budget in the spec's [grid] epochs (e.g. epochs = [{bs[0]}, {2 * bs[0]}]) "
                "would answer it" if bs else "no run completed")
        return f"{NOT_ANSWERED}: {what}.", []
    tests: list[verdicts.Test] = []
    own: list[verdicts.Test] = []
    items = []
    for s in multi:
        ours = st.default_variant(st.ours, st.labels(s))
        if ours is None:
            continue
        for w, a in sorted({c[:2] for c in st.cells(s, True)}):
            item = _budget_item(st, s, ours, w, a, tests, own)
            if item:
                items.append(item)
    if not items:
        return (f"{NOT_ANSWERED}: the study has several budgets but no {st.ours} runs "
                f"at them; add {st.ours} to the variants.", [])
    on = st.ours_name
    text = (f"Against the strongest baseline at each budget (the one with the highest mean), "
            f"over {len(tests)} cell×budget comparisons "
            f"{tally(tests, on, 'the baseline')}.")
    if own:
        up = sum(t.decision == "higher" for t in own)
        down = sum(t.decision == "lower" for t in own)
        caveat = verdicts.caveats(own)
        text += (f" Training {on} longer raises its accuracy significantly in {up} and lowers "
                 f"it significantly in {down} of {len(own)} W/A cells"
                 + (f" ({caveat})" if caveat else "") + ".")
    text += (" Accuracies read off longer runs at shorter epochs are in the budget table, "
             "marked as such.")
    return text, bullets(items, "the budget tables")


# --------------------------------------------------------------------------- seeds

def seeds_question(st: StudyRecords) -> str:
    ns = _seed_counts(st)
    held = (f" ({plural(ns[0], 'seed')} per cell here)" if len(ns) == 1 else
            f" ({ns[0]}–{ns[-1]} seeds per cell here)" if ns else "")
    return ("How large is the seed-to-seed variation next to the differences between "
            f"methods{held}?")


def _seed_comparisons_text(st: StudyRecords) -> str:
    """How large ours-vs-baseline differences are next to the seed spread."""
    comps = [r for s in st.settings() for r in comparisons(st, s)]
    on = st.ours_name
    if len(comps) == 1:
        t = comps[0]["test"]
        d = t.decision
        return (f" The one {on}-vs-baseline difference is {t.cmp.diff:+.2f} points, "
                + (stats.TOO_SMALL if d == "small" else
                   "significant" if d in ("higher", "lower") else "not significant")
                + f" ({t.fmt()}).")
    if not comps:
        return ""
    diffs = np.array([abs(r["cmp"].diff) for r in comps])
    tests = [r["test"] for r in comps]
    sig = sum(t.decision in ("higher", "lower") for t in tests)
    small = sum(t.decision == "small" for t in tests)
    caveat = verdicts.caveats(tests)
    return (f" The {len(comps)} {on}-vs-baseline differences have median |Δ| "
            f"{np.median(diffs):.2f} points; {sig} of them are significant under the "
            f"report's rule (adjusted p < {stats.ALPHA:g})"
            + (f", and {small} {'has' if small == 1 else 'have'} {stats.TOO_SMALL}"
               if small else "") + (f"; {caveat}" if caveat else "") + ".")


def answer_seeds(st: StudyRecords, q: Question) -> Answer:
    groups = [(k, g["summary"]) for k, g in st.groups.items() if g["summary"].n >= 2]
    if not groups:
        return (f"{NOT_ANSWERED}: no row has two or more seeds in any cell; more seeds in the "
                "spec's [grid] seeds (e.g. seeds = [0, 1, 2, 3, 4]) would answer it.", [])
    stds = np.array([s.std for _, s in groups])
    (ks, worst) = max(groups, key=lambda t: t[1].std)
    text = (f"Over {len(groups)} method×cell groups with n ≥ 2, the seed standard deviation of "
            f"the final deployed accuracy has median {np.median(stds):.2f} points (range "
            f"{stds.min():.2f}–{stds.max():.2f}); the largest is {st.display(ks[1])} at "
            f"{where(st, ks[0], ks[2:])} ({worst.std:.2f}, n={worst.n}, seeds spanning "
            f"{worst.min:.2f}–{worst.max:.2f}).")
    text += _seed_comparisons_text(st)
    ns = sorted({s.n for _, s in groups})
    text += f" Seeds per group: {', '.join(map(str, ns))}."
    return text, []


# --------------------------------------------------------------------------- method options

def answer_option(st: StudyRecords, q: Question) -> Answer:
    """Variants of one method that differ from its default variant in one of ``q.options``,
    against that default, per cell."""
    rows = []
    for s in st.settings():
        for r in ablations(st, s):
            keys = [k for k in r["options"] if k in q.options]
            if keys and r["test"] is not None:
                rows.append((s, r, keys))
    if not rows:
        whose = st.ours or "a method"
        opts = " or ".join(f"`{o}`" for o in q.options)
        return (f"{NOT_ANSWERED}: no variants of one method differ in {opts}; variants of "
                f"{whose} that set {opts} differently from its default variant (e.g. "
                f"[variants.{st.ours or 'NAME'}-{q.options[0]}] with options = "
                f"{{ {q.options[0]} = ... }}) would answer it.", [])
    rows.sort(key=lambda t: (t[1]["method"] != st.ours,))
    items, tests = [], []
    for s, r, keys in rows:
        dopts = st.options_of.get(r["default"], {})
        mine = ", ".join(f"{k}={fmt_opts({k: r['options'][k]}).split('=', 1)[1]}" for k in keys)
        base = ", ".join(f"{k}={fmt_opts({k: dopts.get(k)}).split('=', 1)[1]}" for k in keys)
        other = {k: v for k, v in r["options"].items() if k not in keys}
        extra = f" (also differs: {fmt_opts(other)})" if other else ""
        d = st.group(s, r["default"], r["cell"])["summary"]
        tests.append(r["test"])
        items.append(f"{where(st, s, r['cell'])}: {st.display(r['variant'])} [{mine}]{extra} "
                     f"{stats.fmt_summary(r['summary'])} vs {st.display(r['default'])} [{base}] "
                     f"{stats.fmt_summary(d)}: {r['test'].fmt()}.")
    methods = sorted({st.display(st.default_variant(r["method"], st.labels(s)) or r["method"])
                      for s, r, _ in rows})
    text = (f"Variants of {', '.join(methods)} against the default variant, over "
            f"{len(tests)} variant×cell comparisons: "
            f"{tally(tests, 'the variant', 'the default')}.")
    if len(rows) > 1:
        lo_ = min(rows, key=lambda t: t[1]["cmp"].diff)[1]
        hi_ = max(rows, key=lambda t: t[1]["cmp"].diff)[1]
        text += (f" The differences range from {lo_['cmp'].diff:+.2f} "
                 f"({st.display(lo_['variant'])} at {cell_name(*lo_['cell'])}) to "
                 f"{hi_['cmp'].diff:+.2f} ({st.display(hi_['variant'])} at "
                 f"{cell_name(*hi_['cell'])}) points.")
    return text, bullets(items, "the ablation tables")


# --------------------------------------------------------------------------- cost

# --------------------------------------------------------------------------- one baseline

def answer_versus(st: StudyRecords, q: Question) -> Answer:
    """Ours against the rows of method ``q.baseline``, per shared cell."""
    other = q.baseline
    items, tests = [], []
    for s in st.settings():
        for r in comparisons(st, s):
            if st.method_of.get(r["baseline"]) == other:
                tests.append(r["test"])
                items.append(f"{where(st, s, r['cell'])}: "
                             f"{_vs(st, r['ours'], r['a'], r['baseline'], r['b'], r['test'])}.")
    if not items:
        have = other in st.method_of.values()
        why = (f"no cell has both {st.ours} and {other} runs; running both in the same cells "
               "would answer it" if have else
               f"the study has no {other} runs; a variant with method = \"{other}\" in the "
               f"cells {st.ours} runs would answer it")
        return f"{NOT_ANSWERED}: {why}.", []
    oname = next((st.display(lab) for lab in st.order if st.method_of.get(lab) == other), other)
    return (f"{st.ours_name} against {oname} over {plural(len(tests), 'cell')}: "
            f"{tally(tests, st.ours_name, oname)}.", bullets(items, "the comparison tables"))


# --------------------------------------------------------------------------- equal compute

def _ours_time_ratio(st: StudyRecords) -> float | None:
    """Median over cells of ours' time per epoch divided by the other rows' median."""
    ratios = []
    for s in st.settings():
        ours = st.default_variant(st.ours, st.labels(s)) if st.ours else None
        for c in timing.equal_compute_cells(st, s):
            rows = {r["label"]: r["epoch_time"] for r in c.get("rows", [])}
            others = [v for lab, v in rows.items() if st.method_of.get(lab) != st.ours]
            if ours in rows and others and not c["skipped"]:
                ratios.append(rows[ours] / float(np.median(others)))
    return float(np.median(ratios)) if ratios else None


def compute_question(st: StudyRecords) -> str:
    r = _ours_time_ratio(st) if st.ours else None
    if r is None:
        return ("Does it still win at equal training time, each method given the time the "
                "cheapest one's whole budget took?")
    kinds = {c["kind"] for s in st.settings() for c in timing.equal_compute_cells(st, s)
             if not c["skipped"]}
    clause = timing.shared_clause(st, "CPU" if "CPU" in kinds else "GPU")
    return (f"{st.ours_name} takes ×{r:.2f} the other methods' training time per epoch here "
            f"(median over cells{'; ' + clause + ' times' if clause else ''}): does it still "
            "win at equal training time?")


def _compute_item(st: StudyRecords, s: str, c: dict[str, Any], ours: str,
                  tests: list) -> str | None:
    rows = {r["label"]: r for r in c["rows"]}
    mine = rows.get(ours)
    if mine is None or not (mine["values"] or mine["not_reached"]):
        return None
    cell = c["cell"]
    kind = c["kind"]
    clause = timing.shared_clause(st, kind)
    noisy = [r for r in timing.time_spread(st, s)
             if r["label"] == c["cheapest"] and r["cell"] == cell[:2]]
    head = (f"{where(st, s, cell)}: T* = {timing.fmt_time(c['t_star'], kind)} "
            f"({st.display(c['cheapest'])}'s {n_epochs(cell[2])}"
            + (f", whose epoch times vary by a coefficient of variation of "
               f"{noisy[0]['cv']:.2f}" if noisy else "") + f"); {st.display(ours)}'s budget "
            f"took ×{mine['budget_time'] / c['t_star']:.2f} that"
            + (f" ({clause} times)" if clause else ""))
    if mine["not_reached"]:
        return (f"{head}; {mine['not_reached']} of its {plural(len(mine['runs']), 'seed')} "
                "had not finished one epoch by T*, so it has no accuracy at T* and is not compared "
                "there.")
    others = [r for lab, r in rows.items() if st.method_of.get(lab) != st.ours and r["values"]]
    unreached = [st.display(lab) for lab, r in rows.items() if r["not_reached"]]
    here = [verdicts.test(st, s, (ours, cell), (r["label"], cell), kind=verdicts.EQUAL_COMPUTE)
            for r in others]
    tests += here
    reached = ("its whole budget fits" if mine["full"] else
               f"by T* it had finished {min(mine['epochs_reached'])}"
               + (f"–{max(mine['epochs_reached'])}" if len(set(mine["epochs_reached"])) > 1
                  else "") + f" of its {n_epochs(cell[2])} (read off its curve)")
    text = f"{head}; {reached}: {stats.fmt_summary(mine['summary'])}"
    if others:
        best = max(others, key=lambda r: r["summary"].mean)
        t = here[others.index(best)]
        text += (f"; the strongest other row at T*, {st.display(best['label'])}, "
                 f"{stats.fmt_summary(best['summary'])}: {t.fmt()}")
    if unreached:
        text += (f"; not compared, a seed of theirs had not finished one epoch by T*: "
                 f"{', '.join(unreached)}")
    tw = mine["trained_within"]
    if tw:
        text += (f"; {st.display(ours)}'s own {tw[0]}-epoch runs fit in T* and reached "
                 f"{stats.fmt_summary(tw[1])}")
    return text + "."


def answer_compute(st: StudyRecords, q: Question) -> Answer:
    items, tests, why = [], [], []
    for s in st.settings():
        ours = st.default_variant(st.ours, st.labels(s))
        cells = timing.equal_compute_cells(st, s)
        why += [f"{where(st, s, c['cell'])} {c['skipped']}" for c in cells if c["skipped"]]
        for c in cells:
            if not c["skipped"] and ours:
                item = _compute_item(st, s, c, ours, tests)
                if item:
                    items.append(item)
    if not tests:
        timed = any(timing.cumulative_time(st, r) is not None for r in st.metrics)
        reason = ("; ".join(why) if why else
                  f"{st.ours_name} or the rows it meets had a seed that had not finished one "
                  "epoch by T* in every cell, so nothing can be compared there without "
                  "biasing it to the faster seeds" if items else
                  "the records have no per-epoch training times (metrics.csv epoch_time_s)"
                  if not timed else
                  f"no cell holds {st.ours} and another method with recorded times; running "
                  f"{st.ours} in the baselines' cells would answer it")
        return f"{NOT_ANSWERED}: {reason}.", bullets(items, "the equal-compute tables")
    on = st.ours_name
    text = (f"Each cell's T* is the training time of its cheapest row's whole budget; every "
            f"row's accuracy once it had used T* is read off its curve (its schedule unfinished "
            f"unless its whole budget fits). Over {plural(len(tests), 'comparison')} of {on} "
            f"with the other methods at T*, {tally(tests, on, 'the other method')}. Details in the "
            f"equal-compute tables.")
    if any(c["kind"] == "CPU" for s in st.settings() for c in timing.equal_compute_cells(st, s)
           if not c["skipped"]):
        conc = (st.spec.get("executor") or {}).get("local_concurrency")
        text += (" The times are CPU wall-clock"
                 + (f" with up to {conc} runs sharing the machine" if isinstance(conc, int)
                    and conc > 1 else "") + ", so ratios near 1 are within timing noise.")
    text += "".join(f" {c}" for c in (timing.spread_caveat(st, s) for s in st.settings()) if c)
    return text, bullets(items, "the equal-compute tables")


# --------------------------------------------------------------------------- across cells

def answer_aggregate(st: StudyRecords, q: Question) -> Answer:
    items, above, below, total, few = [], 0, 0, 0, False
    text_parts = []
    for s in st.settings():
        ours = st.default_variant(st.ours, st.labels(s))
        rows = aggregate_rows(st, s)
        mine = next((r for r in rows if r["label"] == ours), None)
        if mine is None:
            continue
        few |= min(st.group(s, ours, c)["summary"].n for c in mine["cells"]) <= stats.FEW_SEEDS
        text_parts.append(f"{st.display(ours)}'s IQM over the "
                          f"{plural(len(mine['cells']), 'cell')} it ran"
                          + (f" ({st.setting_name(s)})" if len(st.settings()) > 1 else "")
                          + f" is {mine['iqm']:.2f} {stats.fmt_interval(mine['ci'])}")
        for r in rows:
            if r["poi"] is None or r["poi_ci"] is None:
                continue
            total += 1
            above += r["poi_decision"] == "above"
            below += r["poi_decision"] == "below"
            items.append(f"P({st.display(ours)} > {st.display(r['label'])}) = {r['poi']:.2f} "
                         f"{stats.fmt_interval(r['poi_ci'])} over {len(r['shared'])} shared cells"
                         + (f" ({st.setting_name(s)})" if len(st.settings()) > 1 else "")
                         + f", adjusted {stats.fmt_p_eq(r['poi_p_adj'])}"
                         + f"; IQM {r['iqm_ours_shared'][0]:.2f} vs "
                         f"{r['iqm_row_shared'][0]:.2f} there.")
    if not total:
        return (f"{NOT_ANSWERED}: it needs {st.ours} and another method in the same cells with "
                "at least 2 seeds each.", [])
    family = plural(total, "probability", "probabilities")
    text = ("; ".join(text_parts) + f" (stratified bootstrap, 95%). Its probability of "
            f"improvement: P(A>B) interval above 0.5 against {above} of {total} rows, "
            f"P(A>B) interval below 0.5 against {below}, undecided against "
            f"{total - above - below} (an interval counts only with its permutation p, "
            f"Benjamini-Hochberg adjusted over the {family} of improvement, below "
            f"{stats.ALPHA:g}).")
    if few:
        text += (f" With {stats.FEW_SEEDS} seeds or fewer per cell these intervals are optimistic "
                 "(few distinct resamples).")
    return text, bullets(items, "the across-cells tables")


# --------------------------------------------------------------------------- the questions

QUESTIONS: tuple[Question, ...] = (
    Question("budget", "Epochs and budget", budget_question,
             needs="ours and baselines at several epoch budgets", answer=answer_budget,
             needs_ours=True),
    Question("compute", "Equal compute", compute_question,
             needs="per-epoch training times of ours and other methods in the same cells",
             answer=answer_compute, needs_ours=True),
    Question("aggregate", "Across cells",
             "Across every cell of the study, how often does it beat each baseline (IQM and "
             "probability of improvement, rliable-style)?",
             needs="ours and other methods in shared cells, 2 or more seeds each",
             answer=answer_aggregate, needs_ours=True),
    Question("seeds", "Seed variance", seeds_question,
             needs="two or more seeds per row and cell", answer=answer_seeds),
    Question("bn", "SBN vs recalibration",
             "Does State BN matter, or does recalibrating the BN statistics do as well?",
             needs="variants of one method differing in a bn option", answer=answer_option,
             options=("bn", "sbn_every", "recal_batches")),
    Question("schedule", "Temperature schedule",
             "How sensitive is the result to the temperature schedule (exp, linear, cos, SGDR)?",
             needs="variants of one method differing in the schedule option",
             answer=answer_option, options=("schedule",)),
    Question("candidates", "Candidate set", "Does the choice of the candidate values V matter?",
             needs="variants of one method differing in the candidates option",
             answer=answer_option, options=("candidates",)),
    Question("tuning", "Equal tuning",
             "Were the baselines tuned as much as ours (trials, tuning seeds, tuning compute)?",
             needs="a [tune] table: every variant's trials and their records",
             answer=fairness.answer_tuning),
    Question("pretraining", "Pretraining",
             "Does starting from a pretrained fp network (its epochs counted in the budget) "
             "change the ranking of the methods?",
             needs="variants of two or more methods with and without init = { from = \"fp\" }",
             answer=fairness.answer_pretraining),
    Question("cost", "Cost", "What does the method cost in time and memory, relative to fp and "
                             "to the baselines?",
             needs="completed runs of ours (and of fp on the same hardware for ratios)",
             answer=answer_cost, needs_ours=True),
    Question("bop", "Bop", "How does it compare with Bop, which trains binary weights without "
                           "latent weights?",
             needs="ours and bop in the same cells", answer=answer_versus, baseline="bop",
             needs_ours=True),
    Question("sr", "Super-resolution",
             "Is it better than the STE methods on super-resolution at the same budget, and "
             "by how many dB ± what?",
             needs="super-resolution runs of ours and of STE baselines in the same cells",
             answer=sr_answer, needs_ours=True, task="sr"),
)
assert len({q.key for q in QUESTIONS}) == len(QUESTIONS), "question keys must be unique"


def question(key: str) -> Question:
    """The registered question with this key."""
    return next(q for q in QUESTIONS if q.key == key)


def reviewer_answers(st: StudyRecords) -> list[dict[str, Any]]:
    """Every question of ``QUESTIONS``, in order, answered from the study."""
    return [q.ask(st) for q in QUESTIONS]
