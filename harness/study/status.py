"""A study's state from its records and its jobs: `status`, `cancel`, and the counts the
sweep prints. Reads records and asks the job backends; never loads torch.

    python -m harness status results/<study>
    python -m harness cancel results/<study>
"""
from __future__ import annotations

import collections
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Any

from harness import files, records, stages
from harness.errors import UserError
from harness.study.backends import BACKENDS
from harness.study.backends.base import ACTIVE, job_states, read_submissions
from harness.tasks import base as tasks

STATES = ("pending", "running", "completed", "failed", "diverged", "interrupted", "missing",
          "corrupt", "blocked")
STAGES = ("pretrain", "tune", "final")   # the order a study's stages run in


def run_state(run_dir: Path, job_state: str | None) -> tuple[str, str]:
    """(state, detail) of one expected run from its record and its last job's state."""
    return state_of(records.load_run(run_dir, with_metrics=False, in_study=True), job_state)


def state_of(rec: records.RunRecord, job_state: str | None) -> tuple[str, str]:
    """(state, detail) of a run record given its last job's state."""
    active = job_state in ACTIVE
    if rec.problem == "no config.json":
        return ("pending", "") if active else ("missing", "")
    if rec.problem:
        return ("running", "") if active else ("corrupt", rec.problem)
    status = rec.status
    if status in ("completed", "diverged"):
        return status, rec.summary.error
    if status == "failed" and not active:
        return "failed", rec.summary.error
    if active:
        return ("running" if job_state != "PENDING" and status is not None
                and status != "pending" else "pending"), ""
    if status == "pending":
        return "missing", "submitted but never started" if job_state else ""
    done = rec.summary.epochs_completed if rec.summary is not None else 0
    return "interrupted", f"stopped at epoch {done}" + (
        f" (last job {job_state})" if job_state else "")


def entry_state(sdir: Path, entry: dict[str, Any], subs: dict[str, dict[str, Any]],
                jstates: dict[str, str]) -> tuple[str, str, records.RunRecord | None]:
    """(state, detail, record) of a manifest entry: a run, or a deferred run (followed to
    its bound run; "pending" while its own job waits for its inputs, else "missing")."""
    key, run_id = entry["run_id"], stages.entry_run_id(sdir, entry)
    if run_id is None:
        active = jstates.get(key) in ACTIVE
        return ("pending" if active else "missing"), "waits for its tuning trials", None
    rec = records.load_run(sdir / "runs" / run_id, with_metrics=False, in_study=True)
    last = max((k for k in (key, run_id) if k in subs), key=lambda k: subs[k].get("time", 0),
               default=None)  # a deferred run's own job, or its bound run's
    state, detail = state_of(rec, jstates.get(last) if last else None)
    return state, detail, rec


def input_ok(entry: dict[str, Any], state: str) -> bool:
    """Whether a later stage may start after this input (a tuning trial may diverge)."""
    return state in stages.OK_INPUT.get(entry.get("stage", "final"), ("completed",))


def blocked_reasons(entries: dict[str, dict[str, Any]], states: dict[str, str],
                    waiting: set[str] = frozenset()) -> dict[str, str]:
    """key -> why it is blocked, for entries not yet completed that need an input that
    ended without a usable result (or is blocked itself), in stage order. ``waiting``: inputs
    that will still run (this sweep submits them), which block nothing."""
    out: dict[str, str] = {}
    order = sorted(entries, key=lambda k: STAGES.index(entries[k].get("stage", "final"))
                   if entries[k].get("stage", "final") in STAGES else len(STAGES))
    for key in order:
        if states.get(key) in ("completed", "running"):
            continue
        for need in entries[key].get("needs", []):
            st = "blocked" if need in out else states.get(need, "missing")
            if need in waiting or need not in entries or st in ("pending", "running") or \
                    input_ok(entries[need], st):
                continue
            again = "; sweep again to run it" if st in ("interrupted", "missing", "corrupt") \
                else ""
            out[key] = out[need] if need in out else f"needs {need}, which is {st}{again}"
            break                                          # (a blocked input: its reason)
    return out


def summarize_exit(sdir: Path, finished: bool = False) -> int:
    """1 when a run of the study failed, diverged or is corrupt, or (``finished``: nothing
    can still be queued) did not complete, so scripts notice."""
    counts = status_counts(sdir)[0]
    print("states: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    bad = sum(v for k, v in counts.items() if k != "completed" and (finished or k in
                                                                   ("failed", "diverged",
                                                                    "corrupt")))
    if bad:
        print(f"{bad} run(s) did not complete: python -m harness status {shown_path(sdir)}",
              file=sys.stderr)
    return 1 if bad else 0


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def wait_for(sdir: Path, poll_s: float = 2.0, timeout_s: float = 1e9) -> None:
    """Block until no job of the study is queued or running. The scheduler is asked at most
    every ``poll_s`` seconds, and less often for big studies (one query per 100 jobs a second
    at most, never slower than once a minute)."""
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        subs = read_submissions(sdir)
        jstates = job_states(sdir, subs, strict=False)
        if not any(st in ACTIVE for st in jstates.values()):
            return
        time.sleep(min(60.0, max(poll_s, len(subs) / 100)))


def status_counts(sdir: Path) -> tuple[dict[str, int], list[dict[str, Any]]]:
    manifest_path = sdir / "manifest.json"
    if not manifest_path.exists():
        raise UserError("STUDY_DIR", f"{str(sdir)!r} has no manifest.json; pass a study "
                        "directory made by `python -m harness sweep`")
    try:
        manifest = files.read_json(manifest_path, files.MANIFEST_MAX_BYTES)
        runs = list(manifest["runs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError("STUDY_DIR", f"{manifest_path} is corrupt ({e}); re-run the sweep "
                        "command: it rebuilds the manifest from the spec") from None
    subs = read_submissions(sdir)
    jstates = job_states(sdir, subs, strict=False)
    rows = []
    for i, r in enumerate(runs):
        if isinstance(r, dict) and not r.get("current", True):
            continue  # a run of an earlier version of the spec
        rid = r.get("run_id") if isinstance(r, dict) else None
        if not isinstance(rid, str) or not PLAIN_NAME.fullmatch(rid):
            rows.append(_unreadable_entry(i, r))  # counted and shown, never dropped
            continue
        state, detail, rec = entry_state(sdir, r, subs, jstates)
        sub = subs.get(stages.entry_run_id(sdir, r) or rid) or subs.get(rid, {})
        done = state == "completed" and rec is not None and rec.summary is not None
        rows.append({**r, "state": state, "detail": detail, "job_id": sub.get("job_id", ""),
                     "executor": sub.get("executor", ""),
                     "job_state": jstates.get(rid, ""), "stage": r.get("stage", "final"),
                     "score": rec.summary.result if done else None,
                     "task": rec.summary.task if done else None})
    entries = {x["run_id"]: x for x in rows if not x.get("manifest_entry")}
    for key, why in blocked_reasons(entries, {k: x["state"] for k, x in entries.items()}).items():
        entries[key].update(state="blocked", detail=why)
    counts = {s: sum(1 for x in rows if x["state"] == s) for s in STATES}
    return counts, rows


# a run id that names a folder inside runs/ (any length: ids made before the spec held them
# to SAFE_NAME's length are still classified)
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _unreadable_entry(i: int, entry: Any) -> dict[str, Any]:
    """A manifest entry that names no run directory, as a corrupt row with the reason."""
    shown = str(entry.get("run_id") if isinstance(entry, dict) else entry)[:80]
    return {"run_id": shown, "variant": "?", "w_bits": "?", "a_bits": "?", "epochs": "?",
            "state": "corrupt", "job_id": "", "job_state": "", "manifest_entry": True,
            "detail": f"manifest.json runs[{i}] names no run directory ({shown!r} is not a "
                      "plain folder name); re-run the sweep command to rebuild the manifest"}


def _last_line(log: Path, tail: int = 64 * 1024) -> str:
    """The last non-empty line of a log (its last ``tail`` bytes read; a link or a FIFO is
    not read)."""
    try:
        fd = os.open(log, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        f.seek(max(0, os.fstat(fd).st_size - tail))
        text = f.read(tail).decode(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _last_error_line(sdir: Path, row: dict[str, Any]) -> tuple[str, str]:
    if row.get("manifest_entry"):
        return row["detail"], str(sdir / "manifest.json")
    run_dir = sdir / "runs" / row["run_id"]
    log = run_dir / "log.txt"
    line = row.get("detail", "")
    if not line:
        line = _last_line(log)
    return line, _job_log(sdir, row) or str(log)


def _job_log(sdir: Path, row: dict[str, Any]) -> str:
    """Where the run's last job logged, if that exists: SLURM jobs' submitit files, local
    workers' logs (one per worker process, in local-logs/)."""
    job_id = str(row.get("job_id") or "")
    if not job_id:
        return ""
    if row.get("executor") == "local":
        folder = sdir / "local-logs"
        return str(folder) if folder.is_dir() else ""
    cand = sdir / "submitit" / f"{job_id}_0_log.err"
    if cand.exists():
        return str(cand)
    return str(sdir / "submitit") if (sdir / "submitit").is_dir() else ""


def cmd_status(args) -> int:
    sdir = Path(args.study_dir)
    counts, rows = status_counts(sdir)
    done = sum(counts[k] for k in ("completed", "failed", "diverged"))
    print(f"{sdir}: {done}/{len(rows)} runs done: "
          + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    staged = {r.get("stage", "final") for r in rows} != {"final"}
    if staged:
        print("  stages: " + "; ".join(_stage_line(st, [r for r in rows if r.get("stage") == st])
                                       for st in STAGES if any(r.get("stage") == st
                                                               for r in rows)))
    per = collections.defaultdict(collections.Counter)
    scores = collections.defaultdict(list)
    for r in rows:
        stage = r.get("stage", "final")
        key = (STAGES.index(stage) if stage in STAGES else 9, str(r.get("variant", "?")),
               f"W{r.get('w_bits', '?')}/A{r.get('a_bits', '?')}", r.get("epochs", "?"))
        per[key][r["state"]] += 1
        if r.get("score") is not None:
            scores[key].append((r["task"], r["score"]))
    for key, c in sorted(per.items(), key=lambda kv: (
            kv[0][:3], (0, kv[0][3]) if isinstance(kv[0][3], int) else (1, str(kv[0][3])))):
        stage, variant, bits, e = key
        label = f"{STAGES[stage]:<9}" if staged and stage < len(STAGES) else ""
        print(f"  {label}{variant:<20} {bits:<8} e{e:<5} " + ", ".join(
            f"{k} {v}" for k, v in sorted(c.items())) + _mean_score(scores.get(key, [])))
    bad = [r for r in rows if r["state"] in ("failed", "diverged", "interrupted", "corrupt",
                                             "blocked")]
    for r in bad:
        line, log = _last_error_line(sdir, r)
        print(f"  {r['state']}: {r['run_id']}: {line[:200]}  [log: {log}]")
    jobs = sorted({r["job_id"].split("_")[0] for r in rows if r["job_id"]})
    if jobs:
        print("jobs: " + " ".join(jobs))
    return 0


def _stage_line(stage: str, rows: list[dict[str, Any]]) -> str:
    """'tune 10/12 done (completed 9, diverged 1, running 2)'."""
    c = collections.Counter(r["state"] for r in rows)
    done = sum(c[k] for k in ("completed", "failed", "diverged"))
    return f"{stage} {done}/{len(rows)} done (" + ", ".join(
        f"{k} {v}" for k, v in sorted(c.items())) + ")"


def _mean_score(scores: list[tuple[str, float]]) -> str:
    """', mean test accuracy 91.20%' over a group's completed runs (their task's headline);
    '' when there are none."""
    if not scores:
        return ""
    card = tasks.load_all().get(scores[0][0])
    if card is None:
        return ""
    headline = card.headline()
    return f", mean {headline.title} {headline.fmt(sum(s for _, s in scores) / len(scores))}"


def cmd_cancel(args) -> int:
    sdir = Path(args.study_dir)
    if not (sdir / "manifest.json").exists():
        raise UserError("STUDY_DIR", f"{str(sdir)!r} is not a study directory")
    subs = read_submissions(sdir)
    lines = []
    for name, backend in BACKENDS.items():
        mine = {r: s for r, s in subs.items() if s.get("executor") == name}
        if mine:
            lines.append(backend().cancel(sdir, mine))
    print("; ".join(lines) if lines else "nothing was submitted for this study")
    return 0
