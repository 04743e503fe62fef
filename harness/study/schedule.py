"""What a sweep submits, in which order, after what: a study's stages (pretraining sources,
tuning trials, final runs; harness/study/spec/stages.py) as levels of one dependency graph.

- Deferred runs whose trials are complete are bound here, before anything is submitted
  (harness/run/bind.py); the others are submitted as deferred runs that bind themselves.
- A run is submitted when it is missing, interrupted or corrupt (failed with
  ``--retry-failed``), unless an input it needs ended without a usable result and is not
  submitted again: then it is *blocked*, with the reason, and never runs on a missing input.
- A run queued by an earlier sweep that waits on an input this sweep submits again is
  cancelled and submitted again after the new job (its old dependency can never be met).
- Levels: a run's level is one more than the highest level of the inputs submitted with it.
  Backends that block (local, debug) run level after level, binding deferred runs between
  levels; SLURM gets every level at once, each job with ``--dependency=afterok:`` on the jobs
  of its inputs (array tasks by id), so the stages run unattended.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import stages
from harness.run.bind import Blocked, bind
from harness.study.backends.base import ACTIVE, Submit, job_states, read_submissions
from harness.study.spec import Run, Study
from harness.study.spec.schema import Slot
from harness.study.status import blocked_reasons, entry_state, input_ok

RESUBMIT = ("missing", "interrupted", "corrupt")


@dataclass
class Work:
    """A sweep's plan: the items to submit (runs, and deferred runs still unbound) by key,
    their levels, what is skipped (state -> count) or blocked (key -> reason), and the queued
    jobs to cancel first."""

    items: dict[str, Any]
    entries: dict[str, dict[str, Any]]
    todo: list[str] = field(default_factory=list)
    level: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    cancel: list[str] = field(default_factory=list)
    queued: dict[str, str] = field(default_factory=dict)   # key -> job id, queued or running
    submitting: set[str] = field(default_factory=set)      # todo as a set (10^5 runs)

    @property
    def runs(self) -> list:
        return [self.items[k] for k in self.todo]


def plan(study: Study, sdir: Path, retry_failed: bool, strict: bool = True,
         write: bool = True) -> Work:
    """What to submit (module docstring). ``write``: write deferred runs' files and bind
    those that are ready (never in a dry run)."""
    subs = read_submissions(sdir)
    jstates = job_states(sdir, subs, strict)
    items = {it.run_id: it for it in study.items}
    entries = {k: it.manifest() for k, it in items.items()}
    states = entry_states(sdir, entries, subs, jstates)
    if write:
        for slot in study.slots:
            if stages.read_slot(sdir, slot.slot_id) is None:
                stages.write_slot(sdir, slot.file())
            if jstates.get(slot.slot_id) not in ACTIVE and all(
                    n in entries and input_ok(entries[n], states[n]) for n in slot.needs):
                bound = try_bind(sdir, slot)
                if bound is not None:
                    items[slot.slot_id] = bound
                    states[slot.slot_id] = entry_state(sdir, entries[slot.slot_id], subs,
                                                       jstates)[0]
    work = Work(items, entries)
    work.queued = {k: subs[k]["job_id"] for k in entries if jstates.get(k) in ACTIVE}
    todo = [k for k, st in states.items() if st in RESUBMIT or (st == "failed" and retry_failed)]
    todo_set = set(todo)
    work.cancel = [k for k, st in states.items() if st == "pending" and k not in todo_set
                   and any(n in todo_set for n in entries[k].get("needs", []))]
    work.blocked = blocked_reasons(entries, states, waiting=set(todo + work.cancel))
    for slot in study.slots:   # inputs usable, yet no choice (e.g. every trial diverged)
        if write and isinstance(items[slot.slot_id], Slot) and slot.slot_id in todo_set and all(
                n in entries and input_ok(entries[n], states[n]) for n in slot.needs):
            work.blocked[slot.slot_id] = (stages.read_slot(sdir, slot.slot_id) or {}).get(
                "blocked", "cannot be bound")
    work.todo = [k for k in todo + work.cancel if k not in work.blocked]
    work.submitting = set(work.todo)
    for k, st in states.items():
        if k not in work.submitting:
            st = "blocked" if k in work.blocked else st
            work.skipped[st] = work.skipped.get(st, 0) + 1
    for k in work.todo:
        level_of(k, work)
    work.todo.sort(key=lambda k: work.level[k])
    return work


def entry_states(sdir: Path, entries: dict[str, dict[str, Any]], subs: dict[str, dict],
                 jstates: dict[str, str]) -> dict[str, str]:
    """key -> state of every entry. A run whose folder does not exist (runs/ read once, when
    it is a real folder or absent) is missing, or pending while its job waits: a dry run of
    10^5 new runs reads no run folder."""
    runs = Path(sdir) / "runs"
    present = None
    if not os.path.lexists(runs):
        present = set()
    elif runs.is_dir() and not runs.is_symlink():
        present = set(os.listdir(runs))
    states = {}
    for k, e in entries.items():
        if present is not None and not e.get("slot") and k not in present:
            states[k] = "pending" if jstates.get(k) in ACTIVE else "missing"
        else:
            states[k] = entry_state(sdir, e, subs, jstates)[0]
    return states


def level_of(key: str, work: Work) -> int:
    if key not in work.level:
        needs = [n for n in work.entries[key].get("needs", []) if n in work.submitting]
        work.level[key] = 1 + max(map(lambda n: level_of(n, work), needs)) if needs else 0
    return work.level[key]


def try_bind(sdir: Path, slot: Slot) -> Run | None:
    """The deferred run as an ordinary run of its bound config, or None when it cannot be
    bound yet (the reason is kept in its slot file)."""
    try:
        run_id, cfg = bind(sdir, slot.slot_id)
    except Blocked:
        return None
    return Run(run_id, slot.variant, slot.method, cfg, slot.w_bits, slot.a_bits, slot.epochs,
               slot.seed, slot.unmatched, slot.shape, "final", slot.needs)


def submit(work: Work, sdir: Path, executor: dict[str, Any], backend: Any,
           prepare: Callable[[list], None], echo: Callable[[str], None] = print) -> None:
    """Submit ``work`` level by level: a blocking backend (local, debug) runs each level to
    its end and the next level's deferred runs are bound after it; SLURM queues every level
    now, each job after the jobs of its inputs."""
    if work.cancel:
        subs = read_submissions(sdir)
        echo(backend.cancel(sdir, {k: subs[k] for k in work.cancel if k in subs})
             + " that waited on inputs submitted again")
    for level in sorted(set(work.level.values())):
        keys = [k for k in work.todo if work.level[k] == level]
        if getattr(backend, "blocking", False):
            keys = ready(work, sdir, keys, echo)
        runs = [work.items[k] for k in keys]
        prepare([r for r in runs if not isinstance(r, Slot)])
        subs = read_submissions(sdir)
        after = {work.items[k].run_id: sorted(
            subs[n]["job_id"] if n in work.submitting else work.queued[n]
            for n in work.entries[k].get("needs", [])
            if (n in work.submitting and n in subs) or (n in work.queued and n not in work.cancel))
            for k in keys}
        if runs:
            backend.submit(Submit(sdir, executor, echo, after), runs)


def ready(work: Work, sdir: Path, keys: list[str], echo: Callable[[str], None]) -> list[str]:
    """Of a level about to run after the earlier ones (local, debug): the keys whose inputs
    are usable now, deferred runs bound; the others are blocked, said once each."""
    subs = read_submissions(sdir)
    jstates = job_states(sdir, subs, strict=False)
    states = {k: entry_state(sdir, e, subs, jstates)[0] for k, e in work.entries.items()}
    reasons = blocked_reasons(work.entries, states)
    out = []
    for k in keys:
        item = work.items[k]
        if k not in reasons and isinstance(item, Slot):
            bound = try_bind(sdir, item)
            if bound is None:
                reasons[k] = (stages.read_slot(sdir, k) or {}).get("blocked", "cannot bind")
            else:
                work.items[k] = bound
        if k in reasons:
            work.blocked[k] = reasons[k]
            echo(f"blocked: {k}: {reasons[k]}")
        else:
            out.append(k)
    return out
