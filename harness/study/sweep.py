"""Studies: spec -> expanded runs -> job backend (slurm | local | debug) -> run records.

    python -m harness sweep STUDY.toml [--executor slurm|local|debug] [--scale NAME] [--dry-run]
                                       [--json] [--retry-failed] [--wait] [--results DIR]
    python -m harness status results/<study>
    python -m harness cancel results/<study>

A study directory holds ``study.toml`` (frozen copy of the spec), ``manifest.json`` (the
expanded runs and the excluded cells), ``runs/<run_id>/`` (run records), ``submissions.jsonl``
(one line per submitted run: job id, executor, code snapshot, time), ``snapshots/<id>/`` (the
source the jobs run, see harness.run.source) and ``submitit/`` or ``local-logs/`` (job logs).

Spec parsing lives in harness.study.spec, executors behind one interface in harness.study.backends.
Safety: the whole spec is validated before anything is written or submitted; a lock file
serialises sweeps of one study, and a run whose last job is still queued or running is never
submitted again, so re-running a sweep command is always safe.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from harness import config as C
from harness import records
from harness.errors import UserError
from harness.run import trainer as train
from harness.study import backends as jobs
from harness.study.backends import ACTIVE, BACKENDS, job_states, read_submissions
from harness.study.spec import Run, SpecErrors, Study, load_spec, print_plan

EXECUTORS = tuple(BACKENDS)


# --------------------------------------------------------------------------- study directory

def study_dir(results: Path, study: Study) -> Path:
    return Path(results) / study.name


@contextlib.contextmanager
def locked(sdir: Path) -> Iterator[None]:
    """An exclusive lock on the study directory (two sweeps never submit the same run)."""
    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / ".sweep.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another sweep of {sdir} to finish submitting...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def freeze_spec(study: Study, sdir: Path, echo=print) -> None:
    """Keep a copy of the spec; an edited spec never silently replaces the previous copy."""
    frozen = sdir / "study.toml"
    text = study.path.read_text()
    if frozen.exists() and frozen.read_text() != text:
        n = 1
        while (sdir / f"study.toml.{n}").exists():
            n += 1
        shutil.copy2(frozen, sdir / f"study.toml.{n}")
        echo(f"note: the spec changed since the last sweep; previous copy kept as study.toml.{n}")
    records.atomic_write_text(frozen, text)


def write_manifest(study: Study, sdir: Path, echo=print) -> None:
    """manifest.json: every run of the spec (current) and of earlier versions of it (not
    current). A manifest that cannot be read is kept aside as manifest.json.corrupt-N and
    rebuilt from the spec (earlier versions' runs are then no longer listed)."""
    path = sdir / "manifest.json"
    try:
        old = records.read_json(path) if path.exists() else {}
        runs = {r["run_id"]: r for r in old.get("runs", []) if isinstance(r.get("run_id"), str)}
    except (OSError, ValueError, AttributeError, TypeError):
        n = 1
        while (sdir / f"manifest.json.corrupt-{n}").exists():
            n += 1
        shutil.copy2(path, sdir / f"manifest.json.corrupt-{n}")
        echo(f"note: manifest.json was unreadable; kept as manifest.json.corrupt-{n} and "
             "rebuilt from the spec")
        runs = {}
    runs.update({r.run_id: r.manifest() for r in study.runs})
    current = {r.run_id for r in study.runs}
    for rid, r in runs.items():
        r["current"] = rid in current
    records.atomic_write_json(path, {
        "study": study.name, "scale": study.scale, "spec": str(study.path),
        "runs": list(runs.values()), "excluded": study.excluded})


# --------------------------------------------------------------------------- run states

STATES = ("pending", "running", "completed", "failed", "diverged", "interrupted", "missing",
          "corrupt")


def run_state(run_dir: Path, job_state: str | None) -> tuple[str, str]:
    """(state, detail) of one expected run from its record and its last job's state."""
    active = job_state in ACTIVE
    rec = records.load_run(run_dir, with_metrics=False)
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


# --------------------------------------------------------------------------- commands

def plan_runs(study: Study, sdir: Path, retry_failed: bool,
              strict: bool = True) -> tuple[list[Run], dict[str, int]]:
    subs = read_submissions(sdir)
    jstates = job_states(sdir, subs, strict)
    todo, skipped = [], {}
    for r in study.runs:
        state, _ = run_state(sdir / "runs" / r.run_id, jstates.get(r.run_id))
        if state in ("missing", "interrupted") or (state == "failed" and retry_failed):
            todo.append(r)
        elif state == "corrupt":
            todo.append(r)  # the trainer restarts it from its checkpoint or from scratch
        else:
            skipped[state] = skipped.get(state, 0) + 1
    return todo, skipped


def run_dir_of(sdir: Path, run_id: str) -> Path:
    """RUN_DIR of a run id, verified to lie inside the study directory."""
    path = (Path(sdir) / "runs" / run_id).resolve()
    if not path.is_relative_to(Path(sdir).resolve() / "runs"):
        raise UserError("run_id", f"{run_id!r} would leave the study directory; use plain names")
    return path


def prepare_records(runs: list[Run], sdir: Path) -> None:
    """Write each run's config.json. A run that exists keeps its id (same hash) but takes the
    new values of the keys left out of the hash (data.root, device), so `--set data.root=...`
    on another machine reaches resumed and retried runs too."""
    for r in runs:
        run_dir = run_dir_of(sdir, r.run_id)
        path = run_dir / "config.json"
        want = {**C.to_dict(r.cfg), "config_hash": C.config_hash(r.cfg)}
        if path.exists():
            try:
                have = json.loads(path.read_text())
            except ValueError:
                have = None  # corrupt: rewritten from the spec
            if have is None or (have.get("config_hash") == want["config_hash"] and have != want):
                records.atomic_write_json(path, want)
        train.prepare_run_dir(run_dir, r.cfg)


def dry_run_lines(study: Study, sdir: Path, retry_failed: bool) -> list[str]:
    """`sweep --dry-run --json`: one JSON object per expanded run, with the fully resolved
    config its config.json would record, so two specs can be diffed before anything runs."""
    todo, _ = plan_runs(study, sdir, retry_failed, strict=False)
    submit = {r.run_id for r in todo}
    return [json.dumps({"run_id": r.run_id, "variant": r.variant, "method": r.method,
                        "cell": f"W{r.w_bits}/A{r.a_bits}", "w_bits": r.w_bits,
                        "a_bits": r.a_bits, "epochs": r.epochs, "seed": r.seed,
                        "unmatched": r.unmatched, "to_submit": r.run_id in submit,
                        "config": {**C.to_dict(r.cfg), "config_hash": C.config_hash(r.cfg)}})
            for r in study.runs]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def cmd_sweep(args) -> int:
    as_json = getattr(args, "json", False)
    if as_json and not args.dry_run:
        raise UserError("--json", "prints the runs a dry run would submit; add --dry-run")
    data_warnings: list[str] | None = [] if args.dry_run else None  # plan before the data
    try:
        study = load_spec(args.spec, args.scale, args.set, data_warnings)
    except SpecErrors as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(e.errors)} problem(s) in {args.spec}; nothing was submitted",
              file=sys.stderr)
        return 2
    for line in data_warnings or []:
        _stderr(f"warning: {line}; planned anyway (dry run)")
    if args.executor == "auto":
        up = jobs.slurm_answers()
        args.executor = "slurm" if up else "local"
        why = "a SLURM controller answers" if up else "no SLURM controller answers"
        (_stderr if as_json else print)(f"executor: {args.executor} (auto: {why}; choose "
                                         "with --executor)")
    if args.executor == "slurm" and not args.dry_run and shutil.which("sbatch") is None:
        raise UserError("--executor", "slurm needs sbatch on PATH; use --executor local or "
                        "start the local cluster (python slurm/cluster.py start)")
    sdir = study_dir(Path(args.results).resolve(), study)
    print_plan(study, echo=_stderr if as_json else print)
    if as_json:  # stdout: the JSON lines and nothing else
        print("\n".join(dry_run_lines(study, sdir, args.retry_failed)))
        return 0
    if args.dry_run:  # writes nothing, not even the study directory
        todo, skipped = plan_runs(study, sdir, args.retry_failed, strict=False)
        _print_todo(todo, skipped)
        print("dry run: nothing submitted")
        return 0
    records.ensure_writable_dir(sdir, "--results", "pass a writable --results directory")
    with locked(sdir):
        todo, skipped = plan_runs(study, sdir, args.retry_failed)
        _print_todo(todo, skipped)
        freeze_spec(study, sdir)
        write_manifest(study, sdir)
        if not todo:
            return 0
        prepare_records(todo, sdir)
        # local and debug runs block until done, holding the lock: a second sweep waits
        BACKENDS[args.executor]().submit(jobs.Submit(sdir, study.executor), todo)
    if args.wait:
        wait_for(sdir)
    print(f"study directory: {_rel(sdir)}")
    return summarize_exit(sdir, finished=args.wait or args.executor != "slurm")


def _print_todo(todo: list, skipped: dict[str, int]) -> None:
    msg = ", ".join(f"{n} {s}" for s, n in sorted(skipped.items()))
    print(f"to submit: {len(todo)} runs" + (f" (skipping {msg})" if msg else ""))


def summarize_exit(sdir: Path, finished: bool = False) -> int:
    """1 when a run of the study failed, diverged or is corrupt, or (``finished``: nothing
    can still be queued) did not complete, so scripts notice."""
    counts = status_counts(sdir)[0]
    print("states: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    bad = sum(v for k, v in counts.items() if k != "completed" and (finished or k in
                                                                   ("failed", "diverged",
                                                                    "corrupt")))
    if bad:
        print(f"{bad} run(s) did not complete: python -m harness status {_rel(sdir)}",
              file=sys.stderr)
    return 1 if bad else 0


def _rel(path: Path) -> str:
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
        manifest = records.read_json(manifest_path)
        runs = list(manifest["runs"])
    except (ValueError, KeyError, TypeError) as e:
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
        state, detail = run_state(sdir / "runs" / r["run_id"], jstates.get(r["run_id"]))
        sub = subs.get(r["run_id"], {})
        rows.append({**r, "state": state, "detail": detail, "job_id": sub.get("job_id", ""),
                     "job_state": jstates.get(r["run_id"], "")})
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


def _last_error_line(sdir: Path, row: dict[str, Any]) -> tuple[str, str]:
    if row.get("manifest_entry"):
        return row["detail"], str(sdir / "manifest.json")
    run_dir = sdir / "runs" / row["run_id"]
    log = run_dir / "log.txt"
    line = row.get("detail", "")
    if log.exists():
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        if lines and not line:
            line = lines[-1]
    job_log = ""
    if row.get("job_id"):
        cand = sdir / "submitit" / f"{row['job_id']}_0_log.err"
        job_log = str(cand) if cand.exists() else str(sdir / "submitit")
    return line, job_log or str(log)


def cmd_status(args) -> int:
    sdir = Path(args.study_dir)
    counts, rows = status_counts(sdir)
    done = sum(counts[k] for k in ("completed", "failed", "diverged"))
    print(f"{sdir}: {done}/{len(rows)} runs done: "
          + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    per = collections.defaultdict(collections.Counter)
    for r in rows:
        per[(str(r.get("variant", "?")), f"W{r.get('w_bits', '?')}/A{r.get('a_bits', '?')}",
             r.get("epochs", "?"))][r["state"]] += 1
    for (variant, bits, e), c in sorted(per.items(), key=lambda kv: (
            kv[0][:2], (0, kv[0][2]) if isinstance(kv[0][2], int) else (1, str(kv[0][2])))):
        print(f"  {variant:<20} {bits:<8} e{e:<5} " + ", ".join(f"{k} {v}" for k, v in
                                                                 sorted(c.items())))
    bad = [r for r in rows if r["state"] in ("failed", "diverged", "interrupted", "corrupt")]
    for r in bad:
        line, log = _last_error_line(sdir, r)
        print(f"  {r['state']}: {r['run_id']}: {line[:200]}  [log: {log}]")
    jobs = sorted({r["job_id"].split("_")[0] for r in rows if r["job_id"]})
    if jobs:
        print("jobs: " + " ".join(jobs))
    return 0


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
