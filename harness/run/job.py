"""What runs inside a job: runs from their directories (a SLURM array task, a local worker,
or the debug backend in the sweep's own process). Loads torch only when a run starts, so the
backends that submit and watch jobs stay light.

A SLURM array task holds a *pack* (``[executor] runs_per_gpu = K``, ``runs_per_job = N``): K
lanes run at the same time on the task's device, each a process of its own working through
its N runs one after another in one interpreter, with one data load for runs that read the
same data. Every run keeps its own records, lock, checkpoint and resume: a preempted task
stops its lanes (each run ends ``interrupted`` at its last checkpoint), requeues the whole
pack, and every run resumes on its own (a finished one does nothing). With K = 1 the lane
runs in the task's own process.

Local workers (``python -m harness.run.job``) read run directories from stdin and answer one
JSON line per finished run; ``python -m harness.run.job --lane THREADS RUN_DIR...`` is one
lane of a pack.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from harness import config, files, records
from harness.errors import UserError
from harness.run import procs

LANE_STOP_S = 120  # how long a preempted task waits for its lanes to record their state


class DataCache:
    """The last dataset a process loaded, kept for the next run that reads the same data
    (same task, data section, task options and device). Data are loaded before the run
    seeds its generators, which they never draw from, so a run on cached data is the same
    run (tested)."""

    def __init__(self):
        self.key, self.data = "", None

    def get(self, cfg, runtime, device) -> Any:
        if os.environ.get("WORLD_SIZE", "1") != "1":
            return None  # every rank loads its own
        key = json.dumps([cfg.task, config.to_dict(cfg)["data"],
                          config.options_dict(cfg.task_options), str(device)],
                         sort_keys=True, default=str)
        if key != self.key:
            self.key, self.data = "", None   # free the old data before loading the next
            data = runtime.load_data(cfg, device)
            if getattr(data, "streamed", False):
                return data  # a DataLoader over files: nothing worth keeping
            self.key, self.data = key, data
        return self.data


CACHE = DataCache()


def run_one(run_dir: str, threads: int = 0, cache: DataCache | None = None) -> records.RunSummary:
    """Train (or resume) one run directory from its config.json. A mistake in what the run
    asks for (a file or data root gone since the spec was checked, a device this node lacks)
    is recorded as the run's failure with its one-line reason before it is raised, so
    `status` shows it failed, not missing. ``cache``: reuse data across the runs of a job."""
    import torch

    from harness.run import env, resolve, rundir
    from harness.tasks.base import get as get_task

    if threads > 0:  # one job per cpus_per_task: don't oversubscribe the cores
        torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    raw = files.read_json(run_dir / "config.json")
    try:
        cfg = resolve.from_dict(raw)
        runtime = get_task(cfg.task).runtime()
        runtime.check_root(cfg)
        device = env.resolve_device(cfg.device)  # (the trainer resolves it again)
    except UserError as e:
        if isinstance(raw, dict) and isinstance(raw.get("config_hash"), str) \
                and rundir.prepare_state(run_dir) not in ("completed", "diverged"):
            records.record_failure(run_dir, "failed", str(e), raw.get("epochs", 0),
                                   raw["config_hash"], env.environment(torch.device("cpu")))
        raise
    data = None
    if cache is not None and rundir.prepare_state(run_dir) not in ("completed", "diverged"):
        data = cache.get(cfg, runtime, device)
    return rundir.run(cfg, run_dir, data=data)


def run_lane(run_dirs: list[str], threads: int = 0) -> list[str]:
    """A lane's runs one after another, sharing data loads; a run that fails is recorded and
    the lane goes on. Returns each run's status."""
    out = []
    for run_dir in run_dirs:
        try:
            out.append(run_one(run_dir, threads, CACHE).status)
        except UserError:
            out.append("failed")
        except Exception:  # noqa: BLE001 - recorded as failed in the run's summary
            out.append("failed")
    return out


class RunJob(submitit.helpers.Checkpointable):
    """A SLURM array task: a pack of runs in ``lanes`` (see the module docstring). On
    preemption or timeout submitit calls ``checkpoint``, which stops the lanes and requeues
    the same pack; every run resumes from its own last epoch checkpoint on disk (results
    live in run records, never in submitit pickles)."""

    def __init__(self, lanes: list[list[str]] | str, threads: int = 0):
        self.lanes = [[str(lanes)]] if isinstance(lanes, (str, Path)) else \
            [[str(r) for r in lane] for lane in lanes]
        self.threads = threads
        self.procs: list[subprocess.Popen] = []

    def __call__(self) -> list[str]:
        _setup_distributed()
        if len(self.lanes) == 1 and len(self.lanes[0]) == 1:  # one run: its failure fails
            return [run_one(self.lanes[0][0], self.threads).status]   # the task too
        if len(self.lanes) == 1:
            return run_lane(self.lanes[0], self.threads)
        per_lane = max(1, self.threads // len(self.lanes)) if self.threads else 0
        self.procs = [subprocess.Popen([sys.executable, "-m", "harness.run.job", "--lane",
                                        str(per_lane), *lane]) for lane in self.lanes]
        # poll, never a blocking wait: preemption calls checkpoint() from a signal handler in
        # this thread, and it waits for the lanes itself (a blocking wait here would hold the
        # processes' locks it needs)
        while any(p.poll() is None for p in self.procs):
            time.sleep(0.2)
        return [f"lane exit {p.returncode}" for p in self.procs]

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        self.stop_lanes()
        return submitit.helpers.DelayedSubmission(RunJob(self.lanes, self.threads))

    def stop_lanes(self) -> None:
        """Ask every lane still running to stop (its run ends interrupted at its last
        checkpoint) and wait for it, so the requeued pack never meets a live lane's lock."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + LANE_STOP_S
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def __getstate__(self) -> dict[str, Any]:  # what submitit pickles: never the processes
        return {"lanes": self.lanes, "threads": self.threads, "procs": []}


def lane_main(argv: list[str]) -> int:
    """One lane of a pack, in a process of its own: SIGTERM is ignored (SLURM's warning
    before preemption, as submitit ignores it in the task), SIGUSR2 (preemption, time-out, or
    the task asking) ends the current run interrupted; it dies with its task."""
    from harness.run.signals import Interrupted

    threads, run_dirs = int(argv[0]), argv[1:]

    def stop(signum, frame):
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, stop)
    procs.die_with_parent(signal.SIGUSR2)
    try:
        run_lane(run_dirs, threads)
    except Interrupted:
        return 143
    return 0


class SlotJob(RunJob):
    """A SLURM task for a deferred run (harness/stages.py), submitted with a dependency on
    its inputs: when it starts, it binds the run (the chosen values from the trials' records,
    harness/run/bind.py) and trains it; when its inputs do not allow that, it fails with the
    reason (recorded in the slot file, shown as blocked by `status`) and trains nothing."""

    def __init__(self, sdir: str, slot_id: str, threads: int = 0):
        self.sdir, self.slot_id, self.threads = str(sdir), slot_id, threads

    def __call__(self) -> str:
        from harness.run.bind import bind

        _setup_distributed()
        run_id, _ = bind(Path(self.sdir), self.slot_id)
        return run_one(str(Path(self.sdir) / "runs" / run_id), self.threads).status

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(SlotJob(self.sdir, self.slot_id, self.threads))

    def __getstate__(self) -> dict[str, Any]:  # what submitit pickles (no lanes: one run)
        return {"sdir": self.sdir, "slot_id": self.slot_id, "threads": self.threads}


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
        s = run_one(job["run_dir"], int(job.get("threads", 0)), CACHE)
        return {"status": s.status, "score": s.score_text(), "error": s.error}
    except UserError as e:
        return {"status": "failed", "error": str(e)}
    except Exception as e:  # recorded as failed in the run's summary; take the next run
        return {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0]}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--lane"]:
        sys.exit(lane_main(sys.argv[2:]))
    sys.exit(worker_main())
