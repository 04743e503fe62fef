"""A run directory and the process that owns it: create or check RUN_DIR against the config,
lock it, name the owner, and train (or resume, or do nothing when finished)."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from harness import files, records
from harness.config import RunConfig, describe_diff, to_dict
from harness.dist import Dist
from harness.errors import UserError
from harness.run import loggers, procs
from harness.run.loggers import SINKS
from harness.run.resolve import config_hash
from harness.run.signals import safe_echo
from harness.run.trainer import Trainer
from harness.tasks.base import get as get_task


def prepare_run_dir(run_dir: Path, cfg: RunConfig) -> str:
    """Create or check RUN_DIR. Returns its state: 'new', 'resume' or the finished status.

    A run whose records say completed but do not agree (records.load_run) is resumed: its
    checkpoint rewrites them (or, without one, it starts over)."""
    run_dir = Path(run_dir)
    files.ensure_writable_dir(run_dir, "--out", "choose a writable directory")
    check_outputs(run_dir, cfg)
    cfg_path = run_dir / "config.json"
    want = config_hash(cfg)
    if not cfg_path.exists():
        files.atomic_write_json(cfg_path, {**to_dict(cfg), "config_hash": want})
        return "new"
    try:
        old = files.read_json(cfg_path)
        have = old.get("config_hash")
    except (OSError, ValueError, AttributeError) as e:
        raise UserError("--out", f"{cfg_path} is corrupt ({str(e)[:160]}); delete "
                        f"{str(run_dir)!r} or choose another --out") from None
    if have != want and _replace_unstarted(run_dir, cfg, want):
        return "new"
    if have != want:
        diff = describe_diff(old, cfg)
        if not diff:  # the same keys as the file, another hash: the file itself was edited
            raise UserError("--out", f"{cfg_path} was edited: its keys hash to {want}, but "
                            f"the run was recorded as {have}; restore the run's own "
                            "config.json, or train the changed config into another --out")
        raise UserError("--out", f"{str(run_dir)!r} holds a run with a different config ("
                        f"{'; '.join(diff[:6]) or f'hash {have}, this one {want}'}"
                        f"{'; ...' if len(diff) > 6 else ''}); resume it as it was with "
                        f"`python -m harness run --resume {run_dir}`, or choose another --out")
    rec = records.load_run(run_dir, with_metrics=False)
    return rec.status if rec.status in ("completed", "diverged") else "resume"


def _replace_unstarted(run_dir: Path, cfg: RunConfig, want: str) -> bool:
    """Replace the config.json of a run that never started (no metrics or checkpoint, and at
    most a summary saying it failed at epoch 0: a run refused by a check made after its
    folder was, say data.val_split=1.0), so the corrected command is not refused for "a
    different config"; that summary goes too (log.txt keeps the failure). Only while no
    process holds the run's lock: one that does may be loading data before its first record."""
    if _started(run_dir):
        return False
    with files.open_lock(run_dir / ".lock") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if _started(run_dir):  # it started while we waited for the lock
            return False
        files.atomic_write_json(run_dir / "config.json", {**to_dict(cfg), "config_hash": want})
        files.remove_file(run_dir / "summary.json", run_dir)
    return True


def _started(run_dir: Path) -> bool:
    if any(os.path.lexists(run_dir / name) for name in ("metrics.csv", "checkpoint.pt")):
        return True
    if not os.path.lexists(run_dir / "summary.json"):
        return False
    try:
        summary = records.read_summary(run_dir)
    except (OSError, ValueError, TypeError, UserError):
        return True  # unreadable: leave it to the usual checks
    return summary.status != "failed" or summary.epochs_completed > 0


# what a run writes in RUN_DIR: none of it may be a link (the harness never writes through
# one) or a folder, checked before any work
RECORD_FILES = ("config.json", "summary.json", "metrics.csv", "checkpoint.pt", "log.txt",
                ".owner", ".lock", "source.diff")


def check_outputs(run_dir: Path, cfg: RunConfig) -> None:
    """A UserError, before any work, when a file the run writes is a link or a folder, or a
    logger's output cannot be made (a TensorBoard folder that is a file)."""
    for name in RECORD_FILES:
        files.check_target(run_dir / name)
    for name in cfg.loggers:
        problem = loggers.unavailable(name) if name in SINKS else None
        if problem:  # its package is missing, a setting it needs is unset
            raise UserError("loggers", problem)
        check = getattr(SINKS.get(name), "check", None)  # a sink may have nothing to check
        if check is not None:
            check(run_dir)


def run(cfg: RunConfig, run_dir: Path, echo: Callable[[str], None] = print,
        data: Any = None) -> records.RunSummary:
    """Train (or resume, or do nothing if finished) one run into ``run_dir``; ``data``: its
    dataset already loaded (a job running several runs on the same data).

    An exclusive lock on RUN_DIR/.lock makes a second process on the same run (a duplicate
    job, a user re-running the command) stop at once instead of interleaving records."""
    run_dir = Path(run_dir)
    get_task(cfg.task).runtime().check_root(cfg)
    if not Dist.from_env().main:  # rank 0 owns (checks, locks, writes) the run directory
        if prepare_state(run_dir) in ("completed", "diverged"):
            return records.read_summary(run_dir)
        return Trainer(cfg, run_dir, echo, data=data).run_guarded()
    echo = safe_echo(echo)
    state = prepare_run_dir(run_dir, cfg)
    if state in ("completed", "diverged"):
        echo(f"{run_dir}: already {state}; nothing to do")
        return records.read_summary(run_dir)
    with files.open_lock(run_dir / ".lock") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"{run_dir}: another process is training this run; nothing to do")
            return records.RunSummary(status="running", epochs=cfg.epochs,
                                      error="run directory locked by another process")
        state = prepare_run_dir(run_dir, cfg)  # it may have finished while we waited
        if state in ("completed", "diverged"):
            echo(f"{run_dir}: already {state}; nothing to do")
            return records.read_summary(run_dir)
        files.remove_stale_temp_files(run_dir)  # ours alone now: we hold the lock
        problem = records.load_run(run_dir, with_metrics=False).problem
        if problem and problem != "no config.json":
            echo(f"{run_dir}: records are corrupt ({problem}); repairing from the checkpoint")
        with owner_file(run_dir):
            return Trainer(cfg, run_dir, echo, data=data).run_guarded()


def prepare_state(run_dir: Path) -> str | None:
    """The finished status recorded in RUN_DIR/summary.json, if readable."""
    try:
        return records.read_summary(run_dir).status
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def owner_file(run_dir: Path) -> Iterator[None]:
    """RUN_DIR/.owner names the process training the run (pid + start token + host) while
    it does: `status` calls a run running only while this process lives."""

    path = run_dir / ".owner"
    files.atomic_write_json(path, procs.identity(os.getpid()))
    try:
        yield
    finally:
        files.remove_own(path)
