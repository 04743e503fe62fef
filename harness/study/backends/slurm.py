"""The SLURM backend: job arrays through submitit (split to the cluster's MaxArraySize, one
array per job shape), states from sacct/squeue in batches, cancel with scancel."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit

from harness import files
from harness.errors import UserError
from harness.run import source
from harness.run.job import RunJob, SlotJob
from harness.study.backends.base import ACTIVE, QUERY_CHUNK, JobQueryError, Submit

DEFAULT_MAX_ARRAY = 1001  # SLURM's default MaxArraySize


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
        snap = source.snapshot(files.make_dir(ctx.sdir / "snapshots", ctx.sdir))
        limit = max_array_size()
        for (shape, after), group in _by_shape(runs, ctx.after).items():
            ex = submitit.AutoExecutor(folder=str(ctx.sdir / "submitit"), cluster="slurm")
            params = submitit_parameters(shape, ctx.executor)
            params["slurm_setup"] = [f"cd {snap.path}", f"export PYTHONPATH={snap.path}"
                                     "${PYTHONPATH:+:$PYTHONPATH}"] + list(ctx.executor["setup"])
            if after:  # a later stage: starts when the jobs of its inputs have succeeded
                params["slurm_dependency"] = "afterok:" + ":".join(after)
            ex.update_parameters(**params)
            slots = any(hasattr(r, "slot_id") for r in group)  # deferred runs: one a task
            step = limit * (1 if slots else int(shape["runs_per_gpu"]) * int(shape["runs_per_job"]))
            for i in range(0, len(group), step):  # arrays no larger than MaxArraySize
                self._submit_array(ex, group[i:i + step], ctx, snap, shape, after)

    def _submit_array(self, ex, group: list, ctx: Submit, snap: source.Snapshot,
                      shape: dict, after: tuple = ()) -> None:
        threads = int(shape["cpus_per_task"])
        if any(hasattr(r, "slot_id") for r in group):  # a deferred run binds when it starts
            packs = [[[r]] for r in group]
        else:
            packs = packed(group, int(shape["runs_per_gpu"]), int(shape["runs_per_job"]))
        fns = [SlotJob(str(ctx.sdir), pack[0][0].slot_id, threads)
               if hasattr(pack[0][0], "slot_id") else
               RunJob([[str(ctx.sdir / "runs" / r.run_id) for r in lane] for lane in pack],
                      threads) for pack in packs]
        try:
            with _cwd(snap.path), ex.batch():
                jobs = [ex.submit(fn) for fn in fns]
        except Exception as e:  # sbatch refused (partition, account, limits, ...)
            text = str(e).strip().splitlines()
            raise UserError("executor", f"the scheduler refused the jobs "
                            f"({text[-1][:300] if text else type(e).__name__}); check "
                            "[executor] partition/account/qos/resources") from None
        ctx.append([{"run_id": r.run_id, "job_id": str(j.job_id), "executor": self.name,
                     "snapshot": snap.id, "time": time.time(),
                     **({"after": list(after)} if after else {})}
                    for pack, j in zip(packs, jobs) for lane in pack for r in lane])
        base = str(jobs[0].job_id).split("_")[0] if jobs else "-"
        each = "" if len(packs) == len(group) else f" in {len(packs)} tasks"
        ctx.echo(f"submitted {len(group)} runs{each} as slurm array {base} ({_shape_str(shape)}"
                 f"{f'; after {len(after)} jobs' if after else ''}); code snapshot {snap.id}")

    def states(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> dict[str, str]:
        states = slurm_states([s["job_id"] for s in subs.values() if s.get("job_id")])
        return {r: states.get(str(s.get("job_id")), "UNKNOWN") for r, s in subs.items()}

    def cancel(self, sdir: Path, subs: dict[str, dict[str, Any]]) -> str:
        states = self.states(sdir, subs)
        ids = sorted({str(subs[r]["job_id"]) for r, st in states.items() if st in ACTIVE})
        for i in range(0, len(ids), QUERY_CHUNK):
            subprocess.run(["scancel", *ids[i:i + QUERY_CHUNK]], check=False)
        return f"cancelled {len(ids)} SLURM jobs"


def packed(runs: list, per_gpu: int, per_job: int) -> list[list[list]]:
    """Runs in packs of ``per_gpu`` x ``per_job``, one pack per array task: ``per_gpu`` lanes
    run at the same time, each working through up to ``per_job`` runs in turn. Runs are
    dealt to lanes in order, so a lane's runs tend to share their data."""
    size = per_gpu * per_job
    out = []
    for i in range(0, len(runs), size):
        chunk = runs[i:i + size]
        lanes = [chunk[k * per_job:(k + 1) * per_job] for k in range(per_gpu)]
        out.append([lane for lane in lanes if lane])
    return out


def _by_shape(runs: list, after: dict[str, list[str]]) -> dict[Any, list]:
    """Runs grouped by job shape and by the jobs they wait for (one array each)."""
    out: dict[Any, list] = {}
    for r in runs:
        out.setdefault((r.shape, tuple(after.get(r.run_id, ()))), []).append(r)
    return {(_Shape({k: json.loads(v) for k, v in shape}), deps): group
            for (shape, deps), group in out.items()}


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
