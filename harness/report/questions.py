"""Reviewer questions: ``QUESTIONS`` lists them, each with the function that answers it.

To add a question, add one ``Question`` to ``QUESTIONS`` (the report shows them in this
order): a key, a title, the question as a reviewer would ask it, ``needs`` (which records
can answer it, in a few words) and ``answer(study, question) -> (text, bullets)``. An
answer that the study cannot give starts with ``NOT_ANSWERED`` and says why. Questions
about method options (``answer_option``) name the options they are about in ``options``;
questions about one baseline (``answer_versus``) name it in ``baseline``; questions that
compare "ours" with the others set ``needs_ours`` (without a [report] ours they say so).

Data flow: answers read the ``StudyRecords`` (load.py) and the memoised per-setting rows of
tables.py (``comparisons``, ``ablations``) and costs.py (``cost_rows``), so they agree with
the tables;
render.py turns ``reviewer_answers(study)`` into the "Reviewer questions" section.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness import stats as S
from harness.report.costs import cost_rows, device_time, si
from harness.report.load import OURS_NOT_SET, StudyRecords
from harness.report.tables import ablations, cell_name, comparisons, fmt_opts, where

NOT_ANSWERED = "Not answered by this study"
MAX_BULLETS = 8  # per reviewer answer; the rest is in the named table

Answer = tuple[str, list[str]]  # (paragraph, bullets)


@dataclass(frozen=True)
class Question:
    """One reviewer question and the function that answers it from a study's records."""

    key: str
    title: str
    text: str                                    # the question, as a reviewer asks it
    needs: str                                   # the records that can answer it
    answer: Callable[[StudyRecords, "Question"], Answer]
    options: tuple[str, ...] = ()                # answer_option: the method options it is about
    baseline: str = ""                           # answer_versus: the method compared with ours
    needs_ours: bool = False                     # compares "ours" ([report] ours) with others

    def ask(self, st: StudyRecords) -> dict[str, Any]:
        if self.needs_ours and not st.ours:
            text, bullets = f"{NOT_ANSWERED}: {OURS_NOT_SET}.", []
        else:
            text, bullets = self.answer(st, self)
        return {"key": self.key, "title": self.title, "question": self.text,
                "needs": self.needs, "text": text, "bullets": bullets,
                "answered": not text.startswith(NOT_ANSWERED)}


# --------------------------------------------------------------------------- helpers

def _vs(a: str, sa: S.Summary, b: str, sb: S.Summary, c: S.Comparison) -> str:
    return f"{a} {S.fmt_summary(sa)} vs {b} {S.fmt_summary(sb)}: {S.fmt_comparison(c)}"


def _tally(cmps: list[S.Comparison], a: str, b: str) -> str:
    hi = sum(c.conclusive and c.p < S.ALPHA and c.diff > 0 for c in cmps)
    lo = sum(c.conclusive and c.p < S.ALPHA and c.diff < 0 for c in cmps)
    small = sum(min(c.n_a, c.n_b) < S.MIN_N_CONCLUDE for c in cmps)
    ns = len(cmps) - hi - lo - small
    parts = [f"{a} is significantly higher (p < {S.ALPHA:g}) in {hi}",
             f"{b} is significantly higher in {lo}", f"there is no significant difference in {ns}"]
    if small:
        parts.append(f"n is too small to conclude in {small}")
    if len(cmps) == 1:
        parts = [p for p, k in zip(parts, (hi, lo, ns, small)) if k] or parts
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _bullets(items: list[str], where_: str) -> list[str]:
    if len(items) <= MAX_BULLETS:
        return items
    return items[:MAX_BULLETS] + [f"… {len(items) - MAX_BULLETS} more in {where_}."]


# --------------------------------------------------------------------------- budget

def _budget_item(st: StudyRecords, s: str, ours: str, w: int, a: int,
                 cmps: list, own: list) -> str | None:
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
            parts.append(f"at {e} epochs {ours} {S.fmt_summary(g['summary'])} "
                         "(no baseline at this budget)")
            continue
        sb, b = max(rivals, key=lambda r: r[0].mean)
        c = S.compare(g["acc"], st.group(s, b, (w, a, e))["acc"])
        cmps.append(c)
        parts.append(f"at {e} epochs {_vs(ours, g['summary'], b, sb, c)}")
    if len(budgets) > 1:
        lo_e, hi_e = budgets[0], budgets[-1]
        c = S.compare(st.group(s, ours, (w, a, hi_e))["acc"],
                      st.group(s, ours, (w, a, lo_e))["acc"])
        own.append(c)
        parts.append(f"{ours} at {hi_e} minus {lo_e} epochs: {S.fmt_comparison(c)}")
    return f"{where(st, s, (w, a))}: " + "; ".join(parts) + "." if parts else None


def answer_budget(st: StudyRecords, q: Question) -> Answer:
    multi = [s for s in st.settings() if len({c[2] for c in st.cells(s, True)}) > 1]
    if not multi:
        budgets = sorted({c[2] for s in st.settings() for c in st.cells(s, True)})
        what = (f"every included run has the same budget ({budgets[0]} epochs), so it shows "
                "only the matched comparison at that budget (see the comparisons)"
                if budgets else "no run completed")
        return f"{NOT_ANSWERED}: {what}.", []
    cmps: list[S.Comparison] = []
    own: list[S.Comparison] = []
    items = []
    for s in multi:
        ours = st.default_variant(st.ours, st.labels(s))
        if ours is None:
            continue
        for w, a in sorted({c[:2] for c in st.cells(s, True)}):
            item = _budget_item(st, s, ours, w, a, cmps, own)
            if item:
                items.append(item)
    if not items:
        return (f"{NOT_ANSWERED}: the study has several budgets but no {st.ours} runs "
                "at them.", [])
    text = (f"Against the strongest baseline at each budget (the one with the highest mean), "
            f"over {len(cmps)} cell×budget comparisons {_tally(cmps, st.ours, 'the baseline')}.")
    if own:
        up = sum(c.conclusive and c.p < S.ALPHA and c.diff > 0 for c in own)
        text += (f" Training {st.ours} longer changes its accuracy significantly upward in {up} "
                 f"of {len(own)} W/A cells.")
    text += (" Accuracies read off longer runs at shorter epochs are in the budget table, "
             "marked as such.")
    return text, _bullets(items, "the budget tables")


# --------------------------------------------------------------------------- seeds

def _seed_comparisons_text(st: StudyRecords) -> str:
    """How large ours-vs-baseline differences are next to the seed spread."""
    comps = [r for s in st.settings() for r in comparisons(st, s)]
    if len(comps) == 1:
        c = comps[0]["cmp"]
        return (f" The one {st.ours}-vs-baseline difference is {c.diff:+.2f} points, "
                + (S.TOO_SMALL if not c.conclusive else
                   "its 95% CI " + ("excludes" if c.p < S.ALPHA else "includes") + " 0") + ".")
    if not comps:
        return ""
    diffs = np.array([abs(r["cmp"].diff) for r in comps])
    sig = sum(r["cmp"].conclusive and r["cmp"].p < S.ALPHA for r in comps)
    small = sum(min(r["cmp"].n_a, r["cmp"].n_b) < S.MIN_N_CONCLUDE for r in comps)
    return (f" The {len(comps)} {st.ours}-vs-baseline differences have median |Δ| "
            f"{np.median(diffs):.2f} points; {sig} of them have a 95% CI that excludes 0"
            + (f", and {small} {'has' if small == 1 else 'have'} {S.TOO_SMALL}"
               if small else "") + ".")


def answer_seeds(st: StudyRecords, q: Question) -> Answer:
    groups = [(k, g["summary"]) for k, g in st.groups.items() if g["summary"].n >= 2]
    if not groups:
        return f"{NOT_ANSWERED}: no row has two or more seeds in any cell.", []
    stds = np.array([s.std for _, s in groups])
    (ks, worst) = max(groups, key=lambda t: t[1].std)
    text = (f"Over {len(groups)} method×cell groups with n ≥ 2, the seed standard deviation of "
            f"the final deployed accuracy has median {np.median(stds):.2f} points (range "
            f"{stds.min():.2f}–{stds.max():.2f}); the largest is {ks[1]} at "
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
            if keys and r["cmp"] is not None:
                rows.append((s, r, keys))
    if not rows:
        return (f"{NOT_ANSWERED}: no variants of one method differ in a {q.key} option.", [])
    rows.sort(key=lambda t: (t[1]["method"] != st.ours,))
    items, cmps = [], []
    for s, r, keys in rows:
        dopts = st.options_of.get(r["default"], {})
        mine = ", ".join(f"{k}={fmt_opts({k: r['options'][k]}).split('=', 1)[1]}" for k in keys)
        base = ", ".join(f"{k}={fmt_opts({k: dopts.get(k)}).split('=', 1)[1]}" for k in keys)
        other = {k: v for k, v in r["options"].items() if k not in keys}
        extra = f" (also differs: {fmt_opts(other)})" if other else ""
        d = st.group(s, r["default"], r["cell"])["summary"]
        cmps.append(r["cmp"])
        items.append(f"{where(st, s, r['cell'])}: {r['variant']} [{mine}]{extra} "
                     f"{S.fmt_summary(r['summary'])} vs {r['default']} [{base}] "
                     f"{S.fmt_summary(d)}: {S.fmt_comparison(r['cmp'])}.")
    methods = sorted({r["method"] for _, r, _ in rows})
    text = (f"Variants of {', '.join(methods)} against the default variant, over "
            f"{len(cmps)} variant×cell comparisons: {_tally(cmps, 'the variant', 'the default')}.")
    if len(rows) > 1:
        lo_ = min(rows, key=lambda t: t[1]["cmp"].diff)[1]
        hi_ = max(rows, key=lambda t: t[1]["cmp"].diff)[1]
        text += (f" The differences range from {lo_['cmp'].diff:+.2f} ({lo_['variant']} at "
                 f"{cell_name(*lo_['cell'])}) to {hi_['cmp'].diff:+.2f} ({hi_['variant']} at "
                 f"{cell_name(*hi_['cell'])}) points.")
    return text, _bullets(items, "the ablation tables")


# --------------------------------------------------------------------------- cost

def _fp_ratios_text(with_fp: list[dict[str, Any]]) -> str:
    """Ours' epoch time, peak memory and method bytes relative to fp's (medians over cells)."""
    def rat(key: str, fpkey: str) -> list[float]:
        return [r[key] / r["fp"][fpkey] for r in with_fp
                if r["fp"][fpkey] and math.isfinite(r[key])]

    def fmt(xs: list[float]) -> str:
        return f"×{np.median(xs):.2f}" if xs else "n/a"

    t, m = rat("epoch_s", "epoch_s"), rat("mem", "mem")
    p, o = rat("mparams", "mparams"), rat("mopt", "mopt")
    f = rat("train_flops", "train_flops")
    txt = (f", {fmt(t)} fp's epoch time" + (
        f" (range ×{min(t):.2f}–×{max(t):.2f})" if len(t) > 1 else "") if t else "")
    txt += f"; training FLOPs per step {fmt(f)} fp's" if f else ""
    txt += (f"; peak memory {fmt(m)}, method parameters {fmt(p)} and their "
            f"optimizer state {fmt(o)} fp's" +
            (" (medians over cells)" if len(with_fp) > 1 else ""))
    return txt


def _deployed_text(here: list[dict[str, Any]]) -> str:
    """Ours' deployed size and OPs per cell, next to fp's."""
    parts = []
    for r in here:
        fp = r["fp"] or {}
        if not math.isfinite(r["size"]):
            continue
        part = f"{cell_name(*r['cell'][:2])}: {r['size'] / 1e6:.3g} MB, {si(r['ops'])} OPs"
        if fp.get("size") and math.isfinite(fp["size"]):
            part += (f" (fp: {fp['size'] / 1e6:.3g} MB, {si(fp['ops'])} OPs; "
                     f"×{fp['size'] / r['size']:.1f} smaller)")
        parts.append(part)
    parts = list(dict.fromkeys(parts))  # budgets share a cell's deployed network
    return ("; deployed " + "; ".join(parts)) if parts else ""


def _baseline_ratios_text(st: StudyRecords, s: str, rows_: list[dict[str, Any]],
                          here: list[dict[str, Any]], dev: str) -> str:
    """Ours' epoch time relative to each baseline row on the same hardware."""
    others = []
    for lab in st.labels(s):
        if st.method_of[lab] == st.ours or st.method_of[lab] == "fp":
            continue
        theirs = {(r["cell"]): r["epoch_s"] for r in rows_
                  if r["row"] == lab and r["device_name"] == dev}
        rs = [r["epoch_s"] / theirs[r["cell"]] for r in here if theirs.get(r["cell"])]
        if rs:
            others.append(f"×{np.median(rs):.2f} {lab}")
    if not others:
        return ""
    return "; epoch time relative to the baselines (median over shared cells): " + \
        ", ".join(others)


def _cost_items(st: StudyRecords, s: str) -> list[str]:
    """One bullet per hardware ours ran on in setting ``s``."""
    ours = st.default_variant(st.ours, st.labels(s))
    if ours is None:
        return []
    rows_ = cost_rows(st, s)
    mine = [r for r in rows_ if r["row"] == ours]
    items = []
    for dev in sorted({r["device_name"] for r in mine}):
        here = [r for r in mine if r["device_name"] == dev]
        med = float(np.median([r["epoch_s"] for r in here]))
        txt = (f"{st.setting_labels[s]} on {dev}: {ours} takes {med:.2f} s per epoch "
               + (f"(median over {len(here)} cells)" if len(here) > 1 else
                  f"({cell_name(*here[0]['cell'])})"))
        with_fp = [r for r in here if r["fp"]]
        txt += (_fp_ratios_text(with_fp) if with_fp else
                "; no fp run on this hardware, so no ratio to fp")
        txt += _baseline_ratios_text(st, s, rows_, here, dev)
        txt += _deployed_text(here)
        items.append(txt + ".")
    return items


def answer_cost(st: StudyRecords, q: Question) -> Answer:
    items = [item for s in st.settings() for item in _cost_items(st, s)]
    if not items:
        return f"{NOT_ANSWERED}: no completed {st.ours} run records its cost.", []
    total = st.runs.dropna(subset=["device_hours"])
    hours = total.groupby(total["device"].astype(str).str.startswith("cuda"))["device_hours"].sum()
    spent = "; ".join(device_time(h, bool(k)) for k, h in hours.items())
    text = (f"Cost of {st.ours} from the summaries (full table: cost tables). The whole study "
            f"used {spent} (all records, failed runs included).")
    return text, _bullets(items, "the cost tables")


# --------------------------------------------------------------------------- one baseline

def answer_versus(st: StudyRecords, q: Question) -> Answer:
    """Ours against the rows of method ``q.baseline``, per shared cell."""
    other = q.baseline
    items, cmps = [], []
    for s in st.settings():
        for r in comparisons(st, s):
            if st.method_of.get(r["baseline"]) == other:
                cmps.append(r["cmp"])
                items.append(f"{where(st, s, r['cell'])}: "
                             f"{_vs(r['ours'], r['a'], r['baseline'], r['b'], r['cmp'])}.")
    if not items:
        have = other in st.method_of.values()
        why = (f"no cell has both {st.ours} and {other} runs" if have
               else f"the study has no {other} runs")
        return f"{NOT_ANSWERED}: {why}.", []
    return (f"{st.ours} against {other} over {len(cmps)} cells: "
            f"{_tally(cmps, st.ours, other)}.", _bullets(items, "the comparison tables"))


# --------------------------------------------------------------------------- the questions

QUESTIONS: tuple[Question, ...] = (
    Question("budget", "Epochs and budget",
             "Does the comparison hold at matched epoch budgets, and at longer ones (200 vs 500 "
             "epochs)?",
             needs="ours and baselines at several epoch budgets", answer=answer_budget,
             needs_ours=True),
    Question("seeds", "Seed variance",
             "How large is the seed-to-seed variation next to the differences between methods?",
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
    Question("cost", "Cost", "What does the method cost in time and memory, relative to fp and "
                             "to the baselines?",
             needs="completed runs of ours (and of fp on the same hardware for ratios)",
             answer=answer_cost, needs_ours=True),
    Question("bop", "Bop", "How does it compare with Bop, which trains binary weights without "
                           "latent weights?",
             needs="ours and bop in the same cells", answer=answer_versus, baseline="bop",
             needs_ours=True),
)
assert len({q.key for q in QUESTIONS}) == len(QUESTIONS), "question keys must be unique"


def question(key: str) -> Question:
    """The registered question with this key."""
    return next(q for q in QUESTIONS if q.key == key)


def reviewer_answers(st: StudyRecords) -> list[dict[str, Any]]:
    """Every question of ``QUESTIONS``, in order, answered from the study."""
    return [q.ask(st) for q in QUESTIONS]
