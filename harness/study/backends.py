"""Where a study's runs execute: one job backend per executor, behind one interface.

    backend = BACKENDS[name]()
    backend.submit(ctx, runs)      # SLURM: job arrays; local: worker processes (blocks);
                                   # debug: in this process (blocks)
    backend.states(sdir, subs)     # run_id -> SLURM-style state of its last job
    backend.cancel(sdir, subs)     # stop what is queued or running; a line with real counts

Nothing outside this module asks which executor a study used. Every backend runs the code
of a snapshot taken at submission (harness.run.source), except ``debug``, which runs in the
calling process (for tests and debugging).

Local workers (``python -m harness.study.backends``) pull runs one at a time from the sweep process
(a shared queue: a free worker takes the next run), each in a process group of its own;
they die with the sweep (PR_SET_PDEATHSIG), end a run ``interrupted`` on SIGTERM, and every
run records its trainer's identity (RUN_DIR/.owner, harness.run.procs) so `status` and
`cancel` act only on processes that really are that run's trainer.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit

from harness import records
from harness.errors import UserError
from harness.run import procs, source

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
          "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
QUERY_CHUNK = 200       # job ids per sacct/squeue call
DEFAULT_MAX_ARRAY = 1001  # SLURM's default MaxArraySize


@dataclass
class Submit:
    """What a backend needs to start a study's runs."""

    sdir: Path
    executor: dict[str, Any]          # the spec's [executor] table (with defaults)
    echo: Callable[[str], None] = print

    def append(self, entries: list[dict[str, Any]]) -> None:
        append_submissions(self.sdir, entries)


def append_submissions(sdir: Path, entries: list[dict[str, Any]]) -> None:
    with open(Path(sdir) / "submissions.jsonl", "a") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_submissions(sdir: Path) -> dict[str, dict[str, Any]]:
    """The last submission of each run id (torn or foreign lines are skipped)."""
    last: dict[str, dict[str, Any]] = {}
    path = Path(sdir) / "submissions.jsonl"
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
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


def owner_alive(run_dir: Path) -> bool:
    """True while the process named in RUN_DIR/.owner (its trainer) still runs."""
    try:
        return procs.alive(records.read_json(Path(run_dir) / ".owner"))
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- the job itself

def run_one(run_dir: str, threads: int = 0) -> records.RunSummary:
    """Train (or resume) one run directory from its config.json. A mistake in what the run
    asks for (a file or data root gone since the spec was checked, a device this node lacks)
    is recorded as the run's failure with its one-line reason before it is raised, so
    `status` shows it failed, not missing."""
    import torch

    from harness import config as C
    from harness import tasks
    from harness.run import env
    from harness.run import trainer as train

    if threads > 0:  # one job per cpus_per_task: don't oversubscribe the cores
        torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    raw = records.read_json(run_dir / "config.json")
    try:
        cfg = C.resolve(C.from_dict(raw))
        tasks.get(cfg.task).check_root(cfg)
        env.resolve_device(cfg.device)  # (the trainer resolves it again)
    except UserError as e:
        if isinstance(raw, dict) and isinstance(raw.get("config_hash"), str) \
                and train.prepare_state(run_dir) not in ("completed", "diverged"):
            records.record_failure(run_dir, "failed", str(e), raw.get("epochs", 0),
                                   raw["config_hash"], env.environment(torch.device("cpu")))
        raise
    return train.run(cfg, run_dir)


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


# --------------------------------------------------------------------------- SLURM

def _query(cmd: list[str], ok_codes: tuple[int, ...] = (0,)) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise JobQueryError(f"{cmd[0]}: {e}") from None
    if p.returncode not in ok_codes:
        raise JobQueryError(f"{cmd[0]} exited {p.returncode}: "
                            f"{(p.stderr or p.stdout).strip()[:200]}")
    return p.stdout


def _expand_array_id(jid: str) -> list[str]:
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", jid)
    if not m:
        return [jid]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out += [f"{m.group(1)}_{i}" for i in range(int(a), int(b) + 1)]
        else:
            out.append(f"{m.group(1)}_{part}")
    return out


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """JOBID -> SLURM state from sacct (finished) and squeue (live), QUERY_CHUNK array ids
    per call. Raises JobQueryError when SLURM cannot be asked: then nobody can tell whether a
    job still runs, and the sweep refuses to resubmit rather than start a second copy."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None or shutil.which("sacct") is None:
        raise JobQueryError("squeue/sacct not on PATH")
    states: dict[str, str] = {}
    bases = sorted({j.split("_")[0] for j in job_ids})
    for i in range(0, len(bases), QUERY_CHUNK):
        chunk = ",".join(bases[i:i + QUERY_CHUNK])
        for line in _query(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j",
                            chunk]).splitlines():
            if "|" in line:
                jid, st = line.split("|", 1)
                for j in _expand_array_id(jid.strip()):
                    states[j] = st.split()[0] if st.strip() else "UNKNOWN"
        # squeue exits non-zero when every listed job has left its memory: that is fine
        for line in _query(["squeue", "-h", "-o", "%i|%T", "-j", chunk], (0, 1)).splitlines():
            if "|" in line:
                jid, st = line.split("|", 1)
                for j in _expand_array_id(jid.strip()):
                    states[j] = st.strip()
    return states


def slurm_answers() -> bool:
    """True when a SLURM controller responds (`scontrol ping`)."""
    if shutil.which("scontrol") is None:
        return False
    try:
        p = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0 and "UP" in p.stdout


def max_array_size() -> int:
    """The cluster's MaxArraySize (`scontrol show config`), the default when unknown."""
    try:
        text = _query(["scontrol", "show", "config"])
    except JobQueryError:
        return DEFAULT_MAX_ARRAY
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY


# spec [executor] key -> submitit parameter; submitit routes these itself (generic names,
# and slurm_-prefixed ones to sbatch)
SUBMITIT_KEYS = {"timeout_min": "timeout_min", "cpus_per_task": "cpus_per_task",
                 "mem_gb": "mem_gb", "tasks_per_node": "tasks_per_node", "nodes": "nodes",
                 "partition": "slurm_partition", "account": "slurm_account",
                 "qos": "slurm_qos", "constraint": "slurm_constraint",
                 "array_parallelism": "slurm_array_parallelism", "setup": "slurm_setup",
                 "sbatch": "slurm_additional_parameters"}


def submitit_parameters(shape: dict[str, Any], executor: dict[str, Any]) -> dict[str, Any]:
    """The submitit parameters of one job shape: spec values under submitit's names, empty
    strings and tables left out."""
    merged = {**executor, **shape}
    params = {SUBMITIT_KEYS[k]: v for k, v in merged.items()
              if k in SUBMITIT_KEYS and v not in ("", {}, [])}
    if merged.get("gpus_per_task"):
        params["gpus_per_node"] = int(merged["gpus_per_task"]) * int(merged["tasks_per_node"])
    params["name"] = "slbench"
    return params


class SlurmBackend:
    name = "slurm"

    def submit(self, ctx: Submit, runs: list) -> None:
        if shutil.which("sbatch") is None:
            raise UserError("--executor", "slurm needs sbatch on PATH; use --executor local or "
                            "start the local cluster (python slurm/cluster.py start)")
        snap = source.snapshot(ctx.sdir / "snapshots")
        limit = max_array_size()
        for shape, group in _by_shape(runs).items():
            ex = submitit.AutoExecutor(folder=str(ctx.sdir / "submitit"), cluster="slurm")
            params = submitit_parameters(shape, ctx.executor)
            params["slurm_setup"] = [f"cd {snap.path}", f"export PYTHONPATH={snap.path}"
                                     "${PYTHONPATH:+:$PYTHONPATH}"] + list(ctx.executor["setup"])
            ex.update_parameters(**params)
            for i in range(0, len(group), limit):  # arrays no larger than MaxArraySize
                self._submit_array(ex, group[i:i + limit], ctx, snap, shape)

    def _submit_array(self, ex, group: list, ctx: Submit, snap: source.Snapshot,
                      shape: dict) -> None:
        fns = [RunJob(str(ctx.sdir / "runs" / r.run_id), int(shape["cpus_per_task"]))
               for r in group]
        try:
            with _cwd(snap.path), ex.batch():
                batch = [ex.submit(fn) for fn in fns]
        except Exception as e:  # sbatch refused (partition, account, limits, ...)
            text = str(e).strip().splitlines()
            raise UserError("executor", f"the scheduler refused the jobs "
                            f"({text[-1][:300] if text else type(e).__name__}); check "
                            "[executor] partition/account/qos/resources") from None
        ctx.append([{"run_id": r.run_id, "job_id": str(j.job_id), "executor": self.name,
                     "snapshot": snap.id, "time": time.time()} for r, j in zip(group, batch)])
        base = str(batch[0].job_id).split("_")[0] if batch else "-"
        ctx.echo(f"submitted {len(batch)} runs as slurm array {base} ({_shape_str(shape)}); "
                 f"code snapshot {snap.id}")

    def states(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> dict[str, str]:
        states = slurm_states([s["job_id"] for s in subs.values() if s.get("job_id")])
        return {r: states.get(str(s.get("job_id")), "UNKNOWN") for r, s in subs.items()}

    def cancel(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> str:
        states = self.states(sdir, subs)
        ids = sorted({str(subs[r]["job_id"]) for r, st in states.items() if st in ACTIVE})
        for i in range(0, len(ids), QUERY_CHUNK):
            subprocess.run(["scancel", *ids[i:i + QUERY_CHUNK]], check=False)
        return f"cancelled {len(ids)} SLURM jobs"


def _by_shape(runs: list) -> dict[Any, list]:
    out: dict[Any, list] = {}
    for r in runs:
        out.setdefault(r.shape, []).append(r)
    return {_Shape({k: json.loads(v) for k, v in shape}): group for shape, group in out.items()}


class _Shape(dict):
    def __hash__(self):  # a dict key: one job shape
        return hash(json.dumps(self, sort_keys=True))


def _shape_str(res: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in res.items() if v not in ("", 0, None))


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# --------------------------------------------------------------------------- local processes

class Stop(BaseException):
    """SIGTERM or Ctrl-C reached the sweep process while local workers ran."""


class LocalBackend:
    """Worker processes on this machine, fed one run at a time from one queue."""

    name = "local"

    def submit(self, ctx: Submit, runs: list) -> None:
        snap = source.snapshot(ctx.sdir / "snapshots")
        me = procs.identity(os.getpid(), group=False)
        ctx.append([{"run_id": r.run_id, "job_id": f"local-{os.getpid()}", "executor": self.name,
                     "sweep": me, "snapshot": snap.id, "time": time.time()} for r in runs])
        n = max(1, min(int(ctx.executor["local_concurrency"]), len(runs)))
        threads = int(ctx.executor["cpus_per_task"])
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
            if owner_alive(Path(sdir) / "runs" / r):
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
                ident = records.read_json(Path(sdir) / "runs" / r / ".owner")
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
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **source.job_environment(self.snap),
               "SLBENCH_PARENT_PID": str(os.getpid()), "SLBENCH_WORKER_LOGS": str(self.log_dir)}
        p = subprocess.Popen([sys.executable, "-m", "harness.study.backends"],
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
        acc = result.get("final_test_acc")
        what = result.get("status", "?") + (f" {acc:.2f}%" if isinstance(acc, (int, float))
                                            else "")
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


def worker_main() -> int:
    """A local worker: read run directories from stdin, train each, answer one JSON line per
    run on the original stdout; everything else it prints goes to its log file."""
    from harness.run import trainer as train

    procs.die_with_parent()
    if os.environ.get("SLBENCH_PARENT_PID") and \
            os.getppid() != int(os.environ["SLBENCH_PARENT_PID"]):
        return 1  # the sweep died before we could ask to die with it
    answer = os.fdopen(os.dup(1), "w", buffering=1)
    log_dir = Path(os.environ.get("SLBENCH_WORKER_LOGS", "."))
    log = open(log_dir / f"worker-{os.getpid()}.log", "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    train.raise_on_sigterm()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep decides what Ctrl-C stops
    try:
        for line in sys.stdin:
            job = json.loads(line)
            t0 = time.monotonic()
            result = _work(job)
            result["elapsed"] = time.monotonic() - t0
            answer.write(json.dumps(result) + "\n")
    except train.Interrupted:  # the run (if any) is recorded interrupted
        return 143
    return 0


def _work(job: dict[str, Any]) -> dict[str, Any]:
    try:
        s = run_one(job["run_dir"], int(job.get("threads", 0)))
        return {"status": s.status, "final_test_acc": s.final_test_acc, "error": s.error}
    except UserError as e:
        return {"status": "failed", "error": str(e)}
    except Exception as e:  # recorded as failed in the run's summary; take the next run
        return {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0]}


# --------------------------------------------------------------------------- in process

class DebugBackend:
    """Runs every run here, one after the other (tests, pdb); no snapshot, no signals."""

    name = "debug"

    def submit(self, ctx: Submit, runs: list) -> None:
        ctx.append([{"run_id": r.run_id, "job_id": f"debug-{os.getpid()}", "executor": self.name,
                     "time": time.time()} for r in runs])
        for r in runs:
            try:
                s = run_one(str(ctx.sdir / "runs" / r.run_id))
                what = s.status + (f" {s.final_test_acc:.2f}%" if s.final_test_acc is not None
                                   else "")
            except Exception as e:  # noqa: BLE001 - recorded in the run's summary
                what = f"failed ({f'{type(e).__name__}: {e}'.splitlines()[0][:200]})"
            ctx.echo(f"  {r.run_id}: {what}")

    def states(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> dict[str, str]:
        return {r: "RUNNING" if owner_alive(Path(sdir) / "runs" / r) else "GONE" for r in subs}

    def cancel(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> str:
        return "debug runs run inside their sweep process: stop it with Ctrl-C"


BACKENDS: dict[str, type] = {"slurm": SlurmBackend, "local": LocalBackend, "debug": DebugBackend}


if __name__ == "__main__":
    sys.exit(worker_main())
