"""A study's stages on disk (torch-free): deferred runs and the one selection rule.

A tuned variant's final run waits for its tuning trials: until they are complete its config
is not known, so the sweep records it as a *deferred run* in ``STUDY/slots/<slot_id>.json``
(the config.json it would have with untuned values, the keys tuning chooses, its trials and
its inputs). Binding it (harness/run/bind.py: in the sweep when the trials are complete, or
in its own SLURM job once its dependencies are satisfied) applies the chosen values, gives it
the run id of that config and writes ``binding`` into the slot file: the run id, the chosen
trial and values, every trial's validation scores. Status, sweep and report follow a deferred
run to its run directory through that binding.

Selection (:func:`select`): for each trial, the mean over its tuning seeds of the validation
score (the task's headline on ``data.val_split``, ``val_acc`` for classification) at the
last epoch; the best mean wins, ties to the first trial. A diverged trial scores worst (a
learning rate that diverges is a legitimate result of tuning); a trial that failed, is missing,
corrupt or unfinished blocks the choice. The test set is never read.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import files, records
from harness.tasks import base as tasks

SLOTS = "slots"


def slot_path(sdir: Path, slot_id: str) -> Path:
    return Path(sdir) / SLOTS / f"{slot_id}.json"


def read_slot(sdir: Path, slot_id: str) -> dict[str, Any] | None:
    """A deferred run's file, or None when there is none (or it is unreadable)."""
    try:
        slot = files.read_json(slot_path(sdir, slot_id))
    except (OSError, ValueError):
        return None
    return slot if isinstance(slot, dict) and isinstance(slot.get("template"), dict) else None


def write_slot(sdir: Path, slot: dict[str, Any]) -> None:
    path = slot_path(sdir, slot["slot_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write_json(path, slot)


def bound_run(sdir: Path, slot_id: str) -> str | None:
    """The run id a deferred run is bound to, or None."""
    slot = read_slot(sdir, slot_id) or {}
    run_id = (slot.get("binding") or {}).get("run_id")
    return run_id if isinstance(run_id, str) else None


def entry_run_id(sdir: Path, entry: dict[str, Any]) -> str | None:
    """The run directory name of a manifest entry: its own id, or its binding's (None while a
    deferred run is unbound)."""
    return bound_run(sdir, entry["run_id"]) if entry.get("slot") else entry.get("run_id")


def protocol_id(trials: list[dict[str, Any]]) -> str:
    """What a bound run's ``meta.tuned_by`` records: a hash of the trial run ids its values
    came from."""
    ids = sorted(t["run_id"] for t in trials)
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- selection

@dataclass
class Trial:
    trial: int
    params: dict[str, Any]
    scores: dict[str, float | None] = field(default_factory=dict)  # run id -> score (None:
    mean: float | None = None                                       # diverged)


@dataclass
class Selection:
    """The trials of one variant and cell, their validation scores and the chosen one
    (``problem``: why none can be chosen yet)."""

    column: str
    higher_is_better: bool
    trials: list[Trial]
    chosen: Trial | None = None
    problem: str = ""

    def record(self) -> dict[str, Any]:
        """What a binding keeps of the selection (the report's tuning section)."""
        return {"column": self.column, "higher_is_better": self.higher_is_better,
                "chosen_trial": self.chosen.trial if self.chosen else None,
                "trials": [{"trial": t.trial, "params": t.params, "mean": t.mean,
                            "scores": t.scores} for t in self.trials]}


def select(sdir: Path, trials: list[dict[str, Any]], task: str = "classify") -> Selection:
    """The selection rule (module docstring) over the trial runs listed in a slot file."""
    card = tasks.get(task)
    headline = card.headline()
    column = card.val_column(headline.column)
    by_trial: dict[int, Trial] = {}
    problems = []
    for t in trials:
        trial = by_trial.setdefault(t["trial"], Trial(t["trial"], t["params"]))
        score, problem = trial_score(Path(sdir) / "runs" / t["run_id"], column)
        if problem:
            problems.append(f"tuning run {t['run_id']} is {problem}")
        trial.scores[t["run_id"]] = score
    sel = Selection(column, headline.higher_is_better, sorted(by_trial.values(),
                                                               key=lambda t: t.trial))
    for t in sel.trials:
        values = list(t.scores.values())
        t.mean = None if None in values or not values else sum(values) / len(values)
    if problems:
        sel.problem = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more"
                                                 if len(problems) > 3 else "")
        return sel
    ranked = [t for t in sel.trials if t.mean is not None]
    if not ranked:
        sel.problem = "every tuning trial diverged; widen the space"
        return sel
    sign = 1 if sel.higher_is_better else -1
    sel.chosen = max(ranked, key=lambda t: (sign * t.mean, -t.trial))
    return sel


def trial_score(run_dir: Path, column: str) -> tuple[float | None, str]:
    """(last epoch's validation score, "") of a completed trial; (None, "") for a diverged
    one; (None, its state) otherwise."""
    rec = records.load_run(run_dir, columns=[column])
    if rec.status == "diverged":
        return None, ""
    if rec.status != "completed":
        return None, rec.status + (f" ({rec.problem})" if rec.problem else "")
    if rec.metrics is None or column not in rec.metrics:
        return None, f"without a {column} column (no validation split)"
    value = float(rec.metrics[column].iloc[-1])
    return (value, "") if math.isfinite(value) else (None, "")


# --------------------------------------------------------------------------- inputs

# the states of an input a later stage may start after: a tuning trial may have diverged
OK_INPUT = {"tune": ("completed", "diverged"), "pretrain": ("completed",),
            "final": ("completed",)}


def input_state(sdir: Path, entry: dict[str, Any]) -> str:
    """The record state of a manifest entry that another stage needs (pending when a
    deferred run is unbound)."""
    run_id = entry_run_id(sdir, entry)
    if run_id is None:
        return "pending"
    return records.load_run(Path(sdir) / "runs" / run_id, with_metrics=False).status


def binding(run_id: str, selection: Selection, chosen: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run_id, "chosen": chosen, "selection": selection.record(),
            "time": time.time()}
