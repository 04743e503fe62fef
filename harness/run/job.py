"""What runs inside a job: one run from its directory (SLURM array task, local worker,
or the debug backend in the sweep's own process). Loads torch only when a run starts, so the
backends that submit and watch jobs stay light.

Local workers (``python -m harness.run.job``) read run directories from stdin and answer one
JSON line per finished run.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from harness import files, records
from harness.errors import UserError
from harness.run import procs


def run_one(run_dir: str, threads: int = 0) -> records.RunSummary:
    """Train (or resume) one run directory from its config.json. A mistake in what the run
    asks for (a file or data root gone since the spec was checked, a device this node lacks)
    is recorded as the run's failure with its one-line reason before it is raised, so
    `status` shows it failed, not missing."""
    import torch

    from harness.run import env, resolve, rundir
    from harness.tasks.base import get as get_task

    if threads > 0:  # one job per cpus_per_task: don't oversubscribe the cores
        torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    raw = files.read_json(run_dir / "config.json")
    try:
        cfg = resolve.from_dict(raw)
        get_task(cfg.task).runtime().check_root(cfg)
        env.resolve_device(cfg.device)  # (the trainer resolves it again)
    except UserError as e:
        if isinstance(raw, dict) and isinstance(raw.get("config_hash"), str) \
                and rundir.prepare_state(run_dir) not in ("completed", "diverged"):
            records.record_failure(run_dir, "failed", str(e), raw.get("epochs", 0),
                                   raw["config_hash"], env.environment(torch.device("cpu")))
        raise
    return rundir.run(cfg, run_dir)


class RunJob(submitit.helpers.Checkpointable):
    """A SLURM array task: train (or resume) one run. On preemption or timeout submitit calls
    ``checkpoint`` and requeues the same callable, which resumes from the run's last epoch
    checkpoint on disk (results live in run records, never in submitit pickles)."""

    def __init__(self, run_dir: str, threads: int = 0):
        self.run_dir, self.threads = str(run_dir), threads

    def __call__(self) -> str:
        _setup_distributed()
        return run_one(self.run_dir, self.threads).status

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(RunJob(self.run_dir, self.threads))


def _setup_distributed() -> None:
    """Multi-task submitit jobs: export MASTER_ADDR/PORT, RANK, WORLD_SIZE for torch."""
    try:
        num_tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job
        return
    if num_tasks > 1 and "WORLD_SIZE" not in os.environ:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=True)


def worker_main() -> int:
    """A local worker: read run directories from stdin, train each, answer one JSON line per
    run on the original stdout; everything else it prints goes to its log file."""
    from harness.run.signals import Interrupted, raise_on_sigterm

    procs.die_with_parent()
    if os.environ.get("SLBENCH_PARENT_PID") and \
            os.getppid() != int(os.environ["SLBENCH_PARENT_PID"]):
        return 1  # the sweep died before we could ask to die with it
    answer = os.fdopen(os.dup(1), "w", buffering=1)
    log_dir = Path(os.environ.get("SLBENCH_WORKER_LOGS", "."))
    log = files.open_append(log_dir / f"worker-{os.getpid()}.log")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    raise_on_sigterm()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep decides what Ctrl-C stops
    try:
        for line in sys.stdin:
            job = json.loads(line)
            t0 = time.monotonic()
            result = _work(job)
            result["elapsed"] = time.monotonic() - t0
            answer.write(json.dumps(result) + "\n")
    except Interrupted:  # the run (if any) is recorded interrupted
        return 143
    return 0


def _work(job: dict[str, Any]) -> dict[str, Any]:
    try:
        s = run_one(job["run_dir"], int(job.get("threads", 0)))
        return {"status": s.status, "score": s.score_text(), "error": s.error}
    except UserError as e:
        return {"status": "failed", "error": str(e)}
    except Exception as e:  # recorded as failed in the run's summary; take the next run
        return {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0]}


if __name__ == "__main__":
    sys.exit(worker_main())
