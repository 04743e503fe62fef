"""Where a study's runs execute: one job backend per executor, behind one interface.

    backend = BACKENDS[name]()
    backend.submit(ctx, runs)      # SLURM: job arrays; local: worker processes (blocks);
                                   # debug: in this process (blocks)
    backend.states(sdir, subs)     # run_id -> SLURM-style state of its last job
    backend.cancel(sdir, subs)     # stop what is queued or running; a line with real counts

Nothing outside this package asks which executor a study used. Every backend runs the code
of a snapshot taken at submission (harness.run.source), except ``debug``, which runs in the
calling process (for tests and debugging).

Local workers (``python -m harness.run.job``) pull runs one at a time from the sweep process
(a shared queue: a free worker takes the next run), each in a process group of its own;
they die with the sweep (PR_SET_PDEATHSIG), end a run ``interrupted`` on SIGTERM, and every
run records its trainer's identity (RUN_DIR/.owner, harness.run.procs) so `status` and
`cancel` act only on processes that really are that run's trainer.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import files
from harness.errors import UserError

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
          "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
QUERY_CHUNK = 200       # job ids per sacct/squeue call


@dataclass
class Submit:
    """What a backend needs to start a study's runs."""

    sdir: Path
    executor: dict[str, Any]          # the spec's [executor] table (with defaults)
    echo: Callable[[str], None] = print
    # run id -> the job ids it starts after (SLURM dependencies; blocking backends run the
    # stages in order instead and ignore it)
    after: dict[str, list[str]] = field(default_factory=dict)

    def append(self, entries: list[dict[str, Any]]) -> None:
        append_submissions(self.sdir, entries)


def append_submissions(sdir: Path, entries: list[dict[str, Any]]) -> None:
    with files.open_append(Path(sdir) / "submissions.jsonl") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
        f.flush()
        os.fsync(f.fileno())


SUBMISSIONS_MAX_BYTES = 2**30  # submissions.jsonl read at most this far


def read_submissions(sdir: Path) -> dict[str, dict[str, Any]]:
    """The last submission of each run id (torn or foreign lines are skipped)."""
    last: dict[str, dict[str, Any]] = {}
    path = Path(sdir) / "submissions.jsonl"
    if path.exists():
        try:
            text = files.read_bytes(path, SUBMISSIONS_MAX_BYTES).decode(errors="replace")
        except ValueError as e:
            raise UserError("STUDY_DIR", f"{e}; move submissions.jsonl aside (its jobs are "
                            "then no longer tracked)") from None
        for line in text.splitlines():
            try:
                rec = files.loads_json(line)
            except ValueError:
                continue  # a torn last line from a killed sweep
            if isinstance(rec, dict) and isinstance(rec.get("run_id"), str):
                last[rec["run_id"]] = rec
    return last


class JobQueryError(RuntimeError):
    pass


def job_states(sdir: Path, subs: dict[str, dict[str, Any]], strict: bool = True) -> dict[str, str]:
    """run_id -> state of its last job, each backend asked about its own submissions.

    strict=False: when a scheduler cannot be queried its jobs are UNKNOWN (with a warning);
    strict: a UserError, since its jobs may still be running."""
    out: dict[str, str] = {}
    from harness.study.backends import BACKENDS

    for name, backend in BACKENDS.items():
        mine = {r: s for r, s in subs.items() if s.get("executor") == name}
        if not mine:
            continue
        try:
            out.update(backend().states(sdir, mine))
        except JobQueryError as e:
            if strict:
                raise UserError("--executor", f"cannot ask {name} about this study's earlier "
                                f"jobs ({e}); nothing was submitted, since they may still be "
                                "running; fix the access (e.g. SLURM_CONF) and sweep again") \
                    from None
            print(f"warning: cannot query {name} ({e}); its job states shown as UNKNOWN",
                  file=sys.stderr)
            out.update({r: "UNKNOWN" for r in mine})
    for r, s in subs.items():
        out.setdefault(r, "GONE")
    return out
