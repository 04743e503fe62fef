"""Studies: spec -> expanded runs -> job backend (slurm | local | debug) -> run records.

    python -m harness sweep STUDY.toml [--executor slurm|local|debug] [--scale NAME] [--dry-run]
                                       [--json] [--retry-failed] [--wait] [--results DIR]
                                       [--max-runs N]

A study directory holds ``study.toml`` (frozen copy of the spec), ``manifest.json`` (the
expanded runs and the excluded cells), ``runs/<run_id>/`` (run records), ``submissions.jsonl``
(one line per submitted run: job id, executor, code snapshot, time), ``snapshots/<id>/`` (the
source the jobs run, see harness.run.source) and ``submitit/`` or ``local-logs/`` (job logs).

Spec parsing lives in harness.study.spec, executors behind one interface in
harness.study.backends, a study's state in harness.study.status.
Safety: the whole spec is validated before anything is written or submitted; a lock file
serialises sweeps of one study, and a run whose last job is still queued or running is never
submitted again, so re-running a sweep command is always safe.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator

from harness import config, files, records, stages
from harness.errors import UserError
from harness.run.resolve import config_hash
from harness.run.rundir import prepare_run_dir
from harness.study import schedule
from harness.study.backends import BACKENDS, slurm
from harness.study.spec import Run, SpecErrors, Study, load_spec, print_plan
from harness.study.spec.schema import MAX_RUNS, Slot
from harness.study.status import shown_path, summarize_exit, wait_for

EXECUTORS = tuple(BACKENDS)


# --------------------------------------------------------------------------- study directory

def study_dir(results: Path, study: Study) -> Path:
    return Path(results) / study.name


@contextlib.contextmanager
def locked(sdir: Path) -> Iterator[None]:
    """An exclusive lock on the study directory (two sweeps never submit the same run)."""
    sdir.mkdir(parents=True, exist_ok=True)
    with files.open_lock(sdir / ".sweep.lock") as f:
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
    """Keep a copy of the spec; an edited spec never silently replaces the previous copy
    (which is renamed aside: a link or anything else there is moved, never followed)."""
    frozen = sdir / "study.toml"
    text = study.path.read_text()
    if os.path.lexists(frozen) and _old_copy(frozen) != text.encode():
        kept = _free_name(sdir, "study.toml.")
        os.rename(frozen, sdir / kept)
        echo(f"note: the spec changed since the last sweep; previous copy kept as {kept}")
    files.atomic_write_text(frozen, text)


def _old_copy(path: Path) -> bytes | None:
    """A study file's bytes, or None when it is not a readable regular file of a spec's
    size."""
    try:
        return None if path.is_symlink() else files.read_bytes(path, MAX_KEPT_BYTES)
    except (OSError, ValueError):
        return None


def _free_name(sdir: Path, prefix: str) -> str:
    """The first ``PREFIX<n>`` (n = 1, 2, ...) that names nothing in ``sdir``, not even a
    dangling link."""
    n = 1
    while os.path.lexists(sdir / f"{prefix}{n}"):
        n += 1
    return f"{prefix}{n}"


MAX_KEPT_BYTES = 16 * 2**20  # the largest study.toml kept aside (a spec is read whole)


def write_manifest(study: Study, sdir: Path, echo=print) -> None:
    """manifest.json: every run of the spec (current) and of earlier versions of it (not
    current). A manifest that cannot be read is kept aside as manifest.json.corrupt-N and
    rebuilt from the spec (earlier versions' runs are then no longer listed)."""
    path = sdir / "manifest.json"
    try:
        old = files.read_json(path, files.MANIFEST_MAX_BYTES) if path.exists() else {}
        runs = {r["run_id"]: r for r in old.get("runs", []) if isinstance(r.get("run_id"), str)}
    except (OSError, ValueError, AttributeError, TypeError):
        kept = _free_name(sdir, "manifest.json.corrupt-")
        os.rename(path, sdir / kept)  # renames a link itself, never what it names
        echo(f"note: manifest.json was unreadable; kept as {kept} and rebuilt from the spec")
        runs = {}
    runs.update({r.run_id: r.manifest() for r in study.items})
    current = {r.run_id for r in study.items}
    for rid, r in runs.items():
        r["current"] = rid in current
        bound = stages.bound_run(sdir, rid) if r.get("slot") else None
        if bound:
            r["bound"] = bound
    extra = {"tune": study.tune.describe()} if study.tune is not None else {}
    files.atomic_write_json(path, {
        "study": study.name, "scale": study.scale, "spec": str(study.path),
        "runs": list(runs.values()), "excluded": study.excluded, **extra})


# --------------------------------------------------------------------------- run states

# --------------------------------------------------------------------------- commands

def plan_runs(study: Study, sdir: Path, retry_failed: bool,
              strict: bool = True) -> tuple[list, dict[str, int]]:
    """(runs to submit, state -> count of the others) without writing anything (dry runs)."""
    work = schedule.plan(study, sdir, retry_failed, strict, write=False)
    return work.runs, work.skipped


def run_dir_of(sdir: Path, run_id: str) -> Path:
    """RUN_DIR of a run id, verified to lie inside the study directory, neither it nor
    runs/ reached through a link."""
    plain = Path(sdir) / "runs" / run_id
    if PLAIN_NAME.fullmatch(run_id) and os.path.lexists(plain) and not records.in_place(plain):
        raise UserError("run_id", f"{str(plain)!r} reaches {os.path.realpath(plain)!r} through "
                        "a symbolic link; replace the link with the run folder or remove it "
                        "(nothing was submitted)")
    path = plain.resolve()
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
        want = {**config.to_dict(r.cfg), "config_hash": config_hash(r.cfg)}
        if path.exists():
            try:
                have = files.read_json(path)
            except (OSError, ValueError):
                have = None  # corrupt: rewritten from the spec
            if not isinstance(have, dict) or (have.get("config_hash") == want["config_hash"]
                                              and have != want):
                files.atomic_write_json(path, want)
        prepare_run_dir(run_dir, r.cfg)


def dry_run_lines(study: Study, sdir: Path, retry_failed: bool) -> list[str]:
    """`sweep --dry-run --json`: one JSON object per expanded run, with the fully resolved
    config its config.json would record, so two specs can be diffed before anything runs."""
    todo, _ = plan_runs(study, sdir, retry_failed, strict=False)
    submit = {r.run_id for r in todo}
    return [json.dumps({"run_id": r.run_id, "variant": r.variant, "method": r.method,
                        "cell": f"W{r.w_bits}/A{r.a_bits}", "w_bits": r.w_bits,
                        "a_bits": r.a_bits, "epochs": r.epochs, "seed": r.seed,
                        "unmatched": r.unmatched, "to_submit": r.run_id in submit,
                        "stage": r.stage, **_deferred(r)})
            for r in study.items]


def _deferred(r) -> dict:
    """A run's config; a deferred run's untuned config and the keys its tuning chooses."""
    if isinstance(r, Slot):
        return {"deferred": True, "tuned": list(r.tuned), "config": r.template}
    return {"config": {**config.to_dict(r.cfg), "config_hash": config_hash(r.cfg)}}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def cmd_sweep(args) -> int:
    as_json = getattr(args, "json", False)
    if as_json and not args.dry_run:
        raise UserError("--json", "prints the runs a dry run would submit; add --dry-run")
    data_warnings: list[str] | None = [] if args.dry_run else None  # plan before the data
    try:
        max_runs = getattr(args, "max_runs", None)
        if max_runs is not None and max_runs < 1:
            raise UserError("--max-runs", f"must be >= 1, got {max_runs}")
        study = load_spec(args.spec, args.scale, args.set, data_warnings,
                          MAX_RUNS if max_runs is None else max_runs)
    except SpecErrors as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(e.errors)} problem(s) in {args.spec}; nothing was submitted",
              file=sys.stderr)
        return 2
    for line in data_warnings or []:
        _stderr(f"warning: {line}; planned anyway (dry run)")
    if args.executor == "auto":
        up = slurm.slurm_answers()
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
    files.ensure_writable_dir(sdir, "--results", "pass a writable --results directory")
    with locked(sdir):
        for r in study.runs:  # every run folder checked before anything is written
            run_dir_of(sdir, r.run_id)
        freeze_spec(study, sdir)
        work = schedule.plan(study, sdir, args.retry_failed)  # binds ready deferred runs
        _print_todo(work.runs, work.skipped, work.blocked)
        write_manifest(study, sdir)
        if not work.todo:
            return 0
        # local and debug runs block until done, holding the lock: a second sweep waits
        schedule.submit(work, sdir, study.executor, BACKENDS[args.executor](),
                        lambda runs: prepare_records(runs, sdir))
    if args.wait:
        wait_for(sdir)
    print(f"study directory: {shown_path(sdir)}")
    return summarize_exit(sdir, finished=args.wait or args.executor != "slurm")


def _print_todo(todo: list, skipped: dict[str, int], blocked: dict[str, str] = None) -> None:
    msg = ", ".join(f"{n} {s}" for s, n in sorted(skipped.items()))
    print(f"to submit: {len(todo)} runs" + (f" (skipping {msg})" if msg else ""))
    for key, why in sorted((blocked or {}).items())[:10]:
        print(f"  blocked: {key}: {why}")
    if len(blocked or {}) > 10:
        print(f"  ... and {len(blocked) - 10} more blocked (python -m harness status)")


# a run id that names a folder inside runs/ (any length: ids made before the spec held them
# to SAFE_NAME's length are still classified)
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
