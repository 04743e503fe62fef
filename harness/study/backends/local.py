"""The local backend: worker processes on this machine (``python -m harness.run.job``) pull
runs one at a time from the sweep, each in a process group of its own; they die with the
sweep, end a run ``interrupted`` on SIGTERM, and a line per finished run reports progress."""
from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import files
from harness.run import procs, source
from harness.study.backends.base import Submit


class Stop(BaseException):
    """SIGTERM or Ctrl-C reached the sweep process while local workers ran."""


class LocalBackend:
    """Worker processes on this machine, fed one run at a time from one queue
    (``local_concurrency`` x ``runs_per_gpu`` of them; each keeps its last data set loaded
    for its next run, as a packed SLURM task's lane does)."""

    name = "local"
    blocking = True   # submit() returns when its runs have ended: stages run in order

    def submit(self, ctx: Submit, runs: list) -> None:
        snap = source.snapshot(files.make_dir(ctx.sdir / "snapshots", ctx.sdir))
        me = procs.identity(os.getpid(), group=False)
        ctx.append([{"run_id": r.run_id, "job_id": f"local-{os.getpid()}", "executor": self.name,
                     "sweep": me, "snapshot": snap.id, "time": time.time()} for r in runs])
        # runs_per_gpu: K runs at a time per worker slot, as a packed SLURM task runs them
        per_slot = int(ctx.executor.get("runs_per_gpu", 1))
        n = max(1, min(int(ctx.executor["local_concurrency"]) * per_slot, len(runs)))
        threads = max(1, int(ctx.executor["cpus_per_task"]) // per_slot)
        ctx.echo(f"running {len(runs)} runs in {n} local worker processes "
                 f"(code snapshot {snap.id})")
        pool = LocalPool(ctx, snap, n, threads)
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def stop(signum, frame):
            raise Stop(signal.Signals(signum).name)

        for s in old:
            signal.signal(s, stop)
        try:
            pool.run([str(ctx.sdir / "runs" / r.run_id) for r in runs])
            pool.wait()
        except Stop as e:
            stopped = pool.terminate()
            raise KeyboardInterrupt(f"{e} stopped {stopped} local worker process(es); their "
                                    "runs resume from their checkpoints when you sweep again") \
                from None
        finally:
            pool.terminate()
            for s, h in old.items():
                signal.signal(s, h)

    def states(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> dict[str, str]:
        out = {}
        for r, s in subs.items():
            if procs.owner_alive(Path(sdir) / "runs" / r):
                out[r] = "RUNNING"
            elif procs.alive(s.get("sweep")) and s["sweep"].get("pid") != os.getpid():
                # queued in another sweep process that still runs (this one asks only before
                # its pool starts or after it has finished: nothing of its own is queued)
                out[r] = "PENDING"
            else:
                out[r] = "GONE"
        return out

    def cancel(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> str:
        """Stop the sweep processes (each ends its workers, whose runs end interrupted), then
        any trainer still alive; count only processes that were really running."""
        sweeps = {json.dumps(s["sweep"], sort_keys=True): s["sweep"] for s in subs.values()
                  if procs.alive(s.get("sweep"))}
        trainers = []
        for r in subs:
            with contextlib.suppress(OSError, ValueError):
                ident = files.read_json(Path(sdir) / "runs" / r / ".owner")
                if procs.alive(ident):
                    trainers.append(ident)
        n_sweeps = procs.terminate(list(sweeps.values()), grace_s=60)
        procs.terminate([t for t in trainers if procs.alive(t)])
        n_workers = sum(not procs.alive(t) for t in trainers)
        return (f"stopped {n_workers} local worker process(es) (their runs end interrupted) "
                f"and {n_sweeps} sweep process(es)")


class LocalPool:
    """``n`` worker processes; a free worker takes the next run; one line per finished run."""

    def __init__(self, ctx: Submit, snap: source.Snapshot, n: int, threads: int):
        self.ctx, self.snap, self.n, self.threads = ctx, snap, n, threads
        self.workers: dict[int, dict[str, Any]] = {}
        self.log_dir = ctx.sdir / "local-logs"

    def _spawn(self) -> dict[str, Any]:
        files.make_dir(self.log_dir, self.ctx.sdir)  # never a link out of the study
        env = {**os.environ, **source.job_environment(self.snap),
               "SLBENCH_PARENT_PID": str(os.getpid()), "SLBENCH_WORKER_LOGS": str(self.log_dir)}
        p = subprocess.Popen([sys.executable, "-m", "harness.run.job"],
                             cwd=self.snap.path, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)  # own process group: signalled as one
        w = {"proc": p, "run": None, "t0": 0.0, "ident": procs.identity(p.pid)}
        self.workers[p.pid] = w
        return w

    def run(self, queue: list[str]) -> None:
        queue = list(queue)
        total, done, t_start = len(queue), 0, time.monotonic()
        sel = selectors.DefaultSelector()
        for _ in range(self.n):
            w = self._spawn()
            sel.register(w["proc"].stdout, selectors.EVENT_READ, w)
            self._feed(w, queue)
        while any(w["run"] for w in self.workers.values()):
            for key, _ in sel.select(timeout=1.0):
                w = key.data
                line = w["proc"].stdout.readline()
                if not line:  # the worker exited
                    sel.unregister(w["proc"].stdout)
                    code = w["proc"].wait()
                    if w["run"] is None:  # its queue was closed: a normal end
                        continue
                    # it died with a run: report the run, a new worker takes over
                    result = {"status": "failed", "error": f"worker exited with code {code}"}
                    run, w["run"] = w["run"], None
                    done += 1
                    self._report(run, result, done, total, t_start)
                    if queue:
                        nw = self._spawn()
                        sel.register(nw["proc"].stdout, selectors.EVENT_READ, nw)
                        self._feed(nw, queue)
                    continue
                result = json.loads(line)
                run, w["run"] = w["run"], None
                done += 1
                self._report(run, result, done, total, t_start)
                self._feed(w, queue)
        sel.close()

    def _feed(self, w: dict[str, Any], queue: list[str]) -> None:
        p = w["proc"]
        if queue:
            w["run"], w["t0"] = queue.pop(0), time.monotonic()
            p.stdin.write(json.dumps({"run_dir": w["run"], "threads": self.threads}) + "\n")
            p.stdin.flush()
        else:
            with contextlib.suppress(OSError):
                p.stdin.close()  # no more work: the worker exits

    def _report(self, run: str, result: dict[str, Any], done: int, total: int,
                t_start: float) -> None:
        elapsed = time.monotonic() - t_start
        eta = elapsed / done * (total - done)
        what = f"{result.get('status', '?')} {result.get('score') or ''}".rstrip()
        if result.get("error") and result.get("status") != "completed":
            what += f" ({result['error'][:160]})"
        self.ctx.echo(f"[{done}/{total}] {Path(run).name}: {what} in "
                      f"{result.get('elapsed', 0):.1f}s; elapsed {_dur(elapsed)}, "
                      f"ETA {_dur(eta) if done < total else '0s'}")

    def wait(self, timeout_s: float = 30.0) -> None:
        """Let workers whose queue is closed exit by themselves."""
        for w in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                w["proc"].wait(timeout=timeout_s)

    def terminate(self) -> int:
        """End every worker (SIGTERM to its group, then SIGKILL); how many were running."""
        idents = [w["ident"] for w in self.workers.values() if w["proc"].poll() is None]
        n = procs.terminate(idents)
        for w in self.workers.values():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                w["proc"].wait(timeout=5)
        return n


def _dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
