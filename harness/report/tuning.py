"""The tuning protocol in the report (a study's ``[tune]`` table: harness/study/spec/tune.py)
and the compute of a study's stages.

Data flow: ``protocols(study)`` reads manifest.json's ``tune`` (the spec's [tune] as
expanded: each tuned variant's search space, its points and sampler, the tuning seeds, the
trials' budget and validation split) and the slot file of every deferred final run
(harness/stages.py: its variant, cell and trial runs; its binding once chosen). It groups the
trials by variant and cell and scores them with ``harness.stages.select``: the one selection
rule, on the trial runs' records (the validation score at the last epoch, mean over the
tuning seeds; the test set is never read), so the report shows what the sweep chose from, and
says so where a binding chose otherwise (records changed after binding). A trial run's
epochs and device time come from the runs table (``StudyRecords.stage_runs``).

``tuning_blocks`` is the "Tuning protocol" section (the protocol, every trial's validation
scores, the chosen values and each variant's tuning compute); ``stage_cost_blocks`` adds the
compute of every stage to the Cost section (tuning trials and pretraining sources are records
like any other: counted there, never in a result); ``answer_tuning`` answers "Were the
baselines tuned as much as ours?" from the same groups.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness import config, stages
from harness.report.costs import device_time
from harness.report.load import StudyRecords, cell_name
from harness.report.table import Table, plural

STAGE_NAMES = {"pretrain": "pretraining source", "tune": "tuning trial", "final": "final"}


@dataclass
class Tuned:
    """One tuned variant in one W/A cell: its trials, their scores, the choice."""

    variant: str
    cell: tuple[int, int]
    selection: stages.Selection
    seeds: dict[str, int]                     # trial run id -> tuning seed
    runs: Any                                 # its trial runs' rows of the runs table
    bound: list[str] = field(default_factory=list)   # final runs bound to its choice
    bound_choices: list[dict] = field(default_factory=list)

    @property
    def planned(self) -> int:
        return len(self.seeds)

    @property
    def points(self) -> int:
        return len(self.selection.trials)

    @property
    def finished(self) -> int:
        """Trial runs that completed or diverged (a diverged trial is a result of tuning)."""
        return int(self.runs["status"].isin(["completed", "diverged"]).sum())

    @property
    def epochs(self) -> int:
        """Epochs the trial runs trained (without the fp epochs they started from)."""
        return int(pd.to_numeric(self.runs["epochs_completed"], errors="coerce").fillna(0).sum())

    @property
    def hours(self) -> float:
        return float(pd.to_numeric(self.runs["device_hours"], errors="coerce").fillna(0).sum())

    @property
    def gpu(self) -> bool:
        return bool(self.runs["device"].astype(str).str.startswith("cuda").any())

    def disagreement(self) -> str:
        """'' when every binding chose what the records choose now, else what differs."""
        chosen = self.selection.chosen
        now = chosen.params if chosen else None
        other = [c for c in self.bound_choices if c != now]
        return (f"its final runs were bound to {fmt_values(other[0])}, the records now choose "
                f"{fmt_values(now) if now else 'nothing'} (trial records changed after binding)"
                if other else "")


def fmt_values(values: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (values or {}).items()) or "(none)"


def tune_table(st: StudyRecords) -> dict[str, Any]:
    """manifest.json's ``tune`` (empty when the study has no [tune] table)."""
    tune = (st.manifest or {}).get("tune")
    return tune if isinstance(tune, dict) else {}


def _slot_groups(st: StudyRecords) -> dict[tuple, dict[str, Any]]:
    """(variant, w_bits, a_bits) -> its trials, task and bindings, from the slot files of
    the manifest's current deferred runs."""
    groups: dict[tuple, dict[str, Any]] = {}
    for entry in (st.manifest or {}).get("runs", []):
        if not isinstance(entry, dict) or not entry.get("slot") or entry.get("current") is False:
            continue
        slot = stages.read_slot(st.dir, str(entry.get("run_id")))
        if slot is None:
            continue
        key = (str(entry.get("variant")), int(entry.get("w_bits")), int(entry.get("a_bits")))
        g = groups.setdefault(key, {"trials": slot.get("trials") or [], "bound": [],
                                    "choices": [],
                                    "task": slot["template"].get("task", config.DEFAULT_TASK)})
        binding = slot.get("binding") or {}
        if isinstance(binding.get("run_id"), str):
            g["bound"].append(binding["run_id"])
            g["choices"].append(binding.get("chosen"))
    return groups


def protocols(st: StudyRecords) -> list[Tuned]:
    """Every tuned variant and cell, in display order (memoised on the study)."""
    if "tuning" in st._cache:
        return st._cache["tuning"]
    runs = st.stage_runs if st.stage_runs is not None else st.runs.iloc[:0]
    out = []
    for (variant, w, a), g in _slot_groups(st).items():
        trials = [t for t in g["trials"] if isinstance(t, dict) and "run_id" in t]
        sel = stages.select(st.dir, trials, g["task"])
        ids = [t["run_id"] for t in trials]
        out.append(Tuned(variant, (w, a), sel, {t["run_id"]: t.get("seed") for t in trials},
                         runs[runs["run_id"].isin(ids)], g["bound"], g["choices"]))
    order = {lab: i for i, lab in enumerate(st.order)}
    out.sort(key=lambda t: (order.get(t.variant, len(order)), t.variant, t.cell))
    st._cache["tuning"] = out
    return out


# --------------------------------------------------------------------------- the section

def _score(value: float | None, state: str) -> str:
    if value is not None and math.isfinite(value):
        return f"{value:.2f}"
    return "diverged" if state == "diverged" else state or "n/a"


def _space_lines(st: StudyRecords, tune: dict[str, Any]) -> list[str]:
    """One bullet per distinct search space: its keys and values, sampler, variants."""
    by_space: dict[str, list[str]] = {}
    for name, v in (tune.get("variants") or {}).items():
        space = "; ".join(f"`{k}` ∈ {{{', '.join(map(str, vals))}}}"
                          for k, vals in (v.get("space") or {}).items())
        key = f"{space}: {v.get('sampler', 'grid')}, {plural(len(v.get('points') or []), 'point')}"
        by_space.setdefault(key, []).append(st.display(name))
    return [f"- Space: {k} ({', '.join(names)})" for k, names in by_space.items()]


def protocol_lines(st: StudyRecords, tune: dict[str, Any]) -> list[str]:
    """The protocol in words: space, seeds, budget, split, the selection rule."""
    finals = sorted({int(s) for s in st.runs["seed"].dropna()})
    seeds = tune.get("seeds") or []
    inits = sorted({int(n) for n in st.stage_runs["init_epochs"].dropna() if n}) \
        if st.stage_runs is not None and "init_epochs" in st.stage_runs else []
    budget = int(tune.get("epochs") or 0)
    pre = (f" (pretrained variants: {inits[0]} fp + {budget - inits[0]} quantized, from the fp "
           f"run of the tuning seed)" if len(inits) == 1 else
           " (pretrained variants: their fp epochs included)" if inits else "")
    recipe = tune.get("recipe") or {}
    split = tune.get("val_split")
    lines = [
        "Each tuned variant ran every point of its search space in each of its cells at every "
        "tuning seed, scored on a validation split held out of the training images, and its "
        "final runs took the point with the best mean validation score. Selection reads "
        "validation only; the test set is never read (harness/stages.py). Tuning trials are "
        "not in any result; their compute is in the Cost section.", "",
        *_space_lines(st, tune),
        f"- Trials per variant and cell: {tune.get('trials', '?')} points × "
        f"{plural(len(seeds), 'tuning seed')} ({', '.join(map(str, seeds))}; final seeds: "
        f"{', '.join(map(str, finals)) or 'none yet'})",
        f"- Budget per trial: {plural(budget, 'epoch')}{pre}"
        + (f"; the trials' own recipe: {fmt_values(recipe)}" if recipe else ""),
        f"- Validation split: {split:g} of the training images"
        if isinstance(split, (int, float)) else "- Validation split: as the spec sets it",
        "- Score: the validation metric at the last epoch, mean over the tuning seeds; the "
        "best mean wins (ties to the first point); a diverged trial scores worst; a trial "
        "that failed or is missing blocks the choice", ""]
    return lines


def trials_table(st: StudyRecords, groups: list[Tuned]) -> Table:
    seeds = sorted({s for g in groups for s in g.seeds.values() if s is not None})
    header = ["Method", "Cell", "Trial", "Values", *[f"seed {s}" for s in seeds], "mean",
              "chosen"]
    rows, data = [], []
    for g in groups:
        status = dict(zip(g.runs["run_id"], g.runs["status"]))
        for t in g.selection.trials:
            by_seed = {g.seeds.get(r): (v, status.get(r, "missing")) for r, v in t.scores.items()}
            chosen = g.selection.chosen is not None and g.selection.chosen.trial == t.trial
            rows.append([st.display(g.variant), cell_name(*g.cell), str(t.trial),
                         fmt_values(t.params),
                         *[_score(*by_seed.get(s, (None, "—"))) for s in seeds],
                         _score(t.mean, "n/a"), "✓" if chosen else ""])
            data += [{"variant": g.variant, "w_bits": g.cell[0], "a_bits": g.cell[1],
                      "trial": t.trial, **{f"param.{k}": v for k, v in t.params.items()},
                      "run_id": r, "seed": g.seeds.get(r), "status": status.get(r, "missing"),
                      "column": g.selection.column, "val_score": v, "mean": t.mean,
                      "chosen": chosen} for r, v in t.scores.items()]
    column = groups[0].selection.column if groups else "val"
    return Table("tuning_trials", "Tuning trials: the validation score of every trial", header,
                 rows, pd.DataFrame(data), n_label_cols=4,
                 notes=[f"Scores: {column} (%) at each trial's last epoch, on the validation "
                        "split; mean over the tuning seeds; ✓ the chosen trial."])


def chosen_table(st: StudyRecords, groups: list[Tuned]) -> Table:
    header = ["Method", "Cell", "chosen", "mean val", "trials", "trial runs done",
              "epochs trained", "tuning compute", "final runs"]
    rows, data, notes = [], [], []
    for g in groups:
        c = g.selection.chosen
        rows.append([st.display(g.variant), cell_name(*g.cell),
                     fmt_values(c.params) if c else "none: " + g.selection.problem,
                     _score(c.mean if c else None, "n/a"),
                     f"{g.points} × {len(set(g.seeds.values()))} seeds",
                     f"{g.finished} of {g.planned}", str(g.epochs),
                     device_time(g.hours, g.gpu), str(len(g.bound))])
        data.append({"variant": g.variant, "w_bits": g.cell[0], "a_bits": g.cell[1],
                     "chosen": fmt_values(c.params) if c else None,
                     "val_mean": c.mean if c else None, "points": g.points,
                     "trial_runs": g.planned, "finished": g.finished, "epochs": g.epochs,
                     "device_hours": g.hours, "final_runs": len(g.bound)})
        if g.disagreement():
            notes.append(f"{st.display(g.variant)} {cell_name(*g.cell)}: {g.disagreement()}.")
    notes.append("epochs trained: by the trial runs themselves (a pretrained variant's fp "
                 "epochs are its source's, in the Cost section's pretraining row). tuning "
                 "compute: summed device time of the trial runs (wall-clock × processes). "
                 "final runs: bound to the chosen values (their config.json records "
                 "meta.tuned_by).")
    return Table("tuning_chosen", "Chosen values and tuning compute per variant", header, rows,
                 pd.DataFrame(data), n_label_cols=2, notes=notes)


def tuning_blocks(st: StudyRecords) -> list:
    """The "Tuning protocol" section: nothing for a study without [tune]."""
    tune = tune_table(st)
    groups = protocols(st)
    if not tune and not groups:
        return []
    return [*protocol_lines(st, tune), trials_table(st, groups), chosen_table(st, groups)]


# --------------------------------------------------------------------------- stage costs

def stage_rows(st: StudyRecords) -> list[dict[str, Any]]:
    """Per row label and stage: runs, finished runs, epochs trained, device-hours."""
    frames = [f for f in (st.runs, st.stage_runs) if f is not None and not f.empty]
    if not frames:
        return []
    df = pd.concat(frames, ignore_index=True)
    df = df[df["status"] != "missing"]
    order = {lab: i for i, lab in enumerate(st.order)}
    out = []
    for (lab, stage), g in df.groupby(["label", "stage"]):
        out.append({"label": lab, "stage": stage, "runs": len(g),
                    "finished": int(g["status"].isin(["completed", "diverged"]).sum()),
                    "epochs": int(pd.to_numeric(g["epochs_completed"],
                                                errors="coerce").fillna(0).sum()),
                    "hours": float(pd.to_numeric(g["device_hours"],
                                                 errors="coerce").fillna(0).sum()),
                    "gpu": bool(g["device"].astype(str).str.startswith("cuda").any())})
    stage_order = list(STAGE_NAMES)
    out.sort(key=lambda r: (stage_order.index(r["stage"]) if r["stage"] in stage_order else 9,
                            order.get(r["label"], len(order)), r["label"]))
    return out


def stage_cost_blocks(st: StudyRecords) -> list:
    """The compute of every stage (in the Cost section); nothing for a one-stage study."""
    rows_ = stage_rows(st)
    if not any(r["stage"] != "final" for r in rows_):
        return []
    gpu = any(r["gpu"] for r in rows_)
    rows = [[st.display(r["label"]), STAGE_NAMES.get(r["stage"], r["stage"]), str(r["runs"]),
             str(r["finished"]), str(r["epochs"]), device_time(r["hours"], gpu)] for r in rows_]
    total = sum(r["hours"] for r in rows_)
    early = {s: sum(r["hours"] for r in rows_ if r["stage"] == s) for s in ("tune", "pretrain")}
    share = ", ".join(f"{STAGE_NAMES[s]}s {device_time(h, gpu)} ({100 * h / total:.0f}%)"
                      for s, h in early.items() if h and total)
    notes = [f"The whole study: {device_time(total, gpu)}" + (f", of which {share}" if share
                                                              else "") +
             ". epochs: trained by the runs themselves (failed runs included); compute: "
             "summed device time (wall-clock × processes). Tuning trials and pretraining "
             "sources are in no result."]
    if early["pretrain"]:
        notes.append("Equal compute leaves pretrained rows out: their fp epochs ran in other "
                     "runs (the pretraining row here), so their own curves lack that time.")
    return [Table("stage_compute", "Compute by stage: tuning trials, pretraining sources and "
                  "final runs", ["Method", "Stage", "runs", "finished", "epochs", "compute"],
                  rows, pd.DataFrame(rows_), n_label_cols=2, notes=notes)]
