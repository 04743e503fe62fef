"""Two reviewer answers about how the comparison was matched beyond epochs (questions.py
lists them): "Were the baselines tuned as much as ours?" (``answer_tuning``, from the tuning
protocol: tuning.py) and "Does pretraining change the ranking?" (``answer_pretraining``, from
the pretrained rows and their rows from scratch: pretrain.py). Both read only the records,
and every verdict comes from the setting's one family of tests (verdicts.py).
"""
from __future__ import annotations

from typing import Any

from harness.report import pretrain, stats, tuning, verdicts
from harness.report.answers import NOT_ANSWERED, bullets, tally
from harness.report.costs import device_time
from harness.report.load import StudyRecords, cell_name
from harness.report.table import plural
from harness.report.tables import where

Answer = tuple[str, list[str]]


# --------------------------------------------------------------------------- tuning

def _effort(groups: list[tuning.Tuned]) -> dict[str, dict[str, Any]]:
    """Per tuned variant: points and trial runs per cell, runs finished, epochs, hours."""
    out: dict[str, dict[str, Any]] = {}
    for g in groups:
        e = out.setdefault(g.variant, {"cells": [], "points": set(), "planned": set(),
                                       "finished": 0, "runs": 0, "epochs": 0, "hours": 0.0,
                                       "gpu": False, "chosen": []})
        e["cells"].append(g.cell)
        e["points"].add(g.points)
        e["planned"].add(g.planned)
        e["runs"] += g.planned
        e["finished"] += g.finished
        e["epochs"] += g.epochs
        e["hours"] += g.hours
        e["gpu"] |= g.gpu
        c = g.selection.chosen
        e["chosen"].append(f"{tuning.fmt_values(c.params)} (mean {g.selection.column} "
                           f"{c.mean:.2f}) at {cell_name(*g.cell)}" if c else
                           f"nothing yet at {cell_name(*g.cell)} ({g.selection.problem})")
    return out


def _unequal(st: StudyRecords, effort: dict[str, dict[str, Any]], untuned: list[str]) -> list[str]:
    """What makes the tuning effort unequal, in words ([] when it is equal)."""
    why = []
    if untuned:
        why.append(f"{', '.join(map(st.display, untuned))} "
                   f"{'was' if len(untuned) == 1 else 'were'} not tuned (the spec's values)")
    points = {v: sorted(e["points"]) for v, e in effort.items()}
    if len({tuple(p) for p in points.values()}) > 1:
        why.append("points per cell differ: " + "; ".join(
            f"{st.display(v)} {'/'.join(map(str, p))}" for v, p in points.items()))
    planned = {v: sorted(e["planned"]) for v, e in effort.items()}
    if len({tuple(p) for p in planned.values()}) > 1:
        why.append("trial runs per cell differ: " + "; ".join(
            f"{st.display(v)} {'/'.join(map(str, p))}" for v, p in planned.items()))
    short = [f"{st.display(v)} {e['finished']} of {e['runs']}" for v, e in effort.items()
             if e["finished"] < e["runs"]]
    if short:
        why.append("not every trial run finished: " + "; ".join(short))
    return why


def _hours_text(st: StudyRecords, effort: dict[str, dict[str, Any]]) -> str:
    gpu = any(e["gpu"] for e in effort.values())
    parts = [f"{st.display(v)} {device_time(e['hours'], gpu)}" for v, e in effort.items()]
    ours = [v for v in effort if st.method_of.get(v) == st.ours]
    ratio = ""
    if ours and len(effort) > len(ours):
        mine = sum(effort[v]["hours"] for v in ours) / len(ours)
        others = [e["hours"] for v, e in effort.items() if v not in ours]
        if mine and all(others):
            ratio = (f"; {st.ours_name}'s tuning took ×{mine / (sum(others) / len(others)):.2f} "
                     "the baselines' mean (the same trials and epochs; its epochs cost more "
                     "or less time)")
    return "Tuning compute per variant: " + ", ".join(parts) + ratio + "."


def answer_tuning(st: StudyRecords, q) -> Answer:
    tune = tuning.tune_table(st)
    groups = tuning.protocols(st)
    if not tune and not groups:
        return (f"{NOT_ANSWERED}: the study has no [tune] table, so every variant ran at the "
                "values the spec sets by hand and no record says how often each was tried; a "
                "[tune] table (a search space, tuning seeds, a budget and a val_split) gives "
                "every variant the same trials and would answer it.", [])
    refs = {n for n, v in (st.spec.get("variants") or {}).items()
            if isinstance(v, dict) and v.get("reference")}
    tuned = {g.variant for g in groups} | set(tune.get("variants") or {})
    untuned = [lab for lab in st.order if lab not in tuned and lab not in refs]
    effort = _effort(groups)
    if not effort:
        return (f"{NOT_ANSWERED}: the spec tunes {', '.join(sorted(tuned))}, but no deferred "
                "final run records its trials yet; sweep the study.", [])
    why = _unequal(st, effort, untuned)
    seeds = tune.get("seeds") or []
    one = next(iter(effort.values()))
    points = "/".join(map(str, sorted(one["points"])))
    inits = sorted({int(n) for g in groups for n in g.runs["init_epochs"].dropna() if n})
    same = (f"every tuned variant ({len(effort)}) tried {points} points × "
            f"{plural(len(seeds), 'tuning seed')} in each of its cells, "
            f"{plural(int(tune.get('epochs') or 0), 'epoch')} a trial"
            + (f" (a pretrained variant's trial: {'/'.join(map(str, inits))} of them in its fp "
               "source)" if inits else "") + ", chosen by the same rule on validation")
    text = ((f"No: {'; '.join(why)}." if why else f"Yes, in trials and epochs: {same}.")
            + (f" Otherwise {same}." if why and len(effort) > 1 else "")
            + " " + _hours_text(st, effort)
            + (" References (" + ", ".join(map(st.display, sorted(refs & set(st.order))))
               + ") are not tuned." if refs & set(st.order) else ""))
    items = [f"{st.display(v)}: {plural(len(e['cells']), 'cell')}, {e['runs']} trial runs "
             f"({e['finished']} finished), {e['epochs']} epochs trained, "
             f"{device_time(e['hours'], e['gpu'])}; chose {'; '.join(e['chosen'])}."
             for v, e in effort.items()]
    return text, bullets(items, "the tuning protocol section")


# --------------------------------------------------------------------------- pretraining

def _mean(st: StudyRecords, s: str, label: str, c) -> float:
    return st.group(s, label, c)["summary"].mean


def _order(st: StudyRecords, s: str, labels: list[str], c) -> str:
    ranked = sorted(labels, key=lambda lab: -_mean(st, s, lab, c))
    return " > ".join(f"{st.display(lab)} {_mean(st, s, lab, c):.2f}" for lab in ranked)


def _cell_item(st: StudyRecords, s: str, c, here: list[tuple[str, str]],
               flips: list[str], own: list) -> tuple[str, bool]:
    """One cell: both orders, whether they differ, and the reversals' tests."""
    scratch = sorted(here, key=lambda ps: -_mean(st, s, ps[1], c))
    pre = sorted(here, key=lambda ps: -_mean(st, s, ps[0], c))
    changed = [ps[1] for ps in scratch] != [ps[1] for ps in pre]
    text = (f"{where(st, s, c)}: from scratch {_order(st, s, [p[1] for p in here], c)}; "
            f"from fp {_order(st, s, [p[0] for p in here], c)}: the order "
            + ("changes" if changed else "holds"))
    for i, (p1, s1) in enumerate(here):
        for p2, s2 in here[i + 1:]:
            if st.method_of.get(p1) == st.method_of.get(p2):
                continue
            a, b = verdicts.test(st, s, (s1, c), (s2, c)), verdicts.test(st, s, (p1, c), (p2, c))
            if (a.cmp.diff > 0) != (b.cmp.diff > 0):
                sig = a.decision in ("higher", "lower") and b.decision in ("higher", "lower")
                flips.append("significant on both sides" if sig else "not significant")
                text += (f"; {st.display(s1)} − {st.display(s2)}: from scratch {a.fmt()}, "
                         f"from fp {b.fmt()}")
    for p, sc in here:
        own.append(verdicts.test(st, s, (p, c), (sc, c)))
        text += f"; {st.display(p)} − {st.display(sc)} {own[-1].fmt()}"
    return text + ".", changed


def answer_pretraining(st: StudyRecords, q) -> Answer:
    pairs = {s: pretrain.counterparts(st, s) for s in st.settings()}
    lonely = [lab for s in st.settings() for lab in pretrain.unpaired(st, s)]
    if not any(pairs.values()):
        what = (f"the pretrained rows ({', '.join(map(st.display, lonely))}) have no row of the "
                "same method and options from scratch" if lonely else
                "no variant starts from the study's fp runs")
        return (f"{NOT_ANSWERED}: {what}; variants of the same methods with and without "
                "init = { from = \"fp\", epochs = N } in one study would answer it.", [])
    items, own, flips, changed, cells = [], [], [], 0, 0
    for s, ps in pairs.items():
        for c in st.cells(s, included_only=True):
            here = [(p, sc) for p, sc in ps if st.group(s, p, c)["acc"]
                    and st.group(s, sc, c)["acc"]]
            if len(here) < 2:
                own += [verdicts.test(st, s, (p, c), (sc, c)) for p, sc in here]
                continue
            cells += 1
            text, moved = _cell_item(st, s, c, here, flips, own)
            items.append(text)
            changed += moved
    effect = (f" Pretraining itself (each row from fp minus the same row from scratch, "
              f"{plural(len(own), 'comparison')}): "
              f"{tally(own, 'from fp', 'from scratch')}." if own else "")
    if not cells:
        return (f"{NOT_ANSWERED}: only one method has rows both from scratch and from fp in a "
                "cell, so there is no ranking to change; a second method with and without "
                f"init would answer it.{effect}", [])
    sig = flips.count("significant on both sides")
    text = (f"Ranking the methods by mean final accuracy, from scratch and from fp "
            f"(the same budget, its fp epochs counted): the order changes in {changed} of "
            f"{plural(cells, 'cell')}"
            + (f"; of the {plural(len(flips), 'reversed pair')}, {sig} "
               f"{'is' if sig == 1 else 'are'} significant on both sides"
               if flips else "") + "." + effect)
    if flips and any(t.cmp.few_seeds for t in own):
        text += (f" With {stats.FEW_SEEDS} seeds or fewer a side, a reversal of means is weak "
                 "evidence.")
    return text, bullets(items, "the main table")
