"""Real submitit jobs against the local single-node SLURM cluster (slurm/cluster.py).

Needs the ``slurm_cluster`` fixture from tests/slurm_fixture.py. Jobs are trivial (2 CPUs are
shared with other users). Each test gets its own submitit folder.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from submitit.helpers import Checkpointable

from conftest import preempt

pytestmark = pytest.mark.slurm

# the jobs run outside pytest, where this module is not importable: ship its code by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a, b):
    return a + b


def square(x):
    return x * x


def fail(msg):
    raise ValueError(msg)


def final_state(job, timeout: float = 20.0) -> str:
    """The job's state from sacct once it is final (sacct trails by about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        state = job.get_info(mode="force").get("State") or "UNKNOWN"
        if state not in ("UNKNOWN", "PENDING", "RUNNING", "COMPLETING", "REQUEUED",
                         "CONFIGURING") or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


class Counter(Checkpointable):
    """Counts to ``total``. The first attempt stops after 3 steps and waits there until the
    test preempts it (a known point: no race with the clock on fast or slow machines); later
    attempts count to the end. Its state (steps done, where each attempt started) is what
    submitit pickles at checkpoint time, so a resumed attempt continues from it instead of
    from scratch."""

    def __init__(self):
        self.done = 0
        self.starts: list[int] = []

    def __call__(self, progress: str, total: int):
        self.starts.append(self.done)
        Path(progress).with_suffix(f".start{len(self.starts)}").write_text(str(time.time()))
        while self.done < total:
            if len(self.starts) == 1 and self.done >= 3:
                time.sleep(0.05)  # held until the preemption lands (or the test times out)
                continue
            self.done += 1
            Path(progress).write_text(str(self.done))
        return {"starts": self.starts, "done": self.done,
                "restarts": os.environ.get("SLURM_RESTART_COUNT", "0")}


def test_start_is_idempotent_and_env_points_clients_at_cluster(slurm_cluster):
    mod = slurm_cluster.module
    before = mod.status(slurm_cluster.state_dir)
    assert before["healthy"], before
    t0 = time.monotonic()
    mod.start(slurm_cluster.state_dir)
    assert time.monotonic() - t0 < 5
    assert mod.status(slurm_cluster.state_dir)["pids"] == before["pids"]
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.slurm_conf)
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         check=True).stdout
    assert str(slurm_cluster.slurm_conf) in out
    assert "AccountingStorageType   = accounting_storage/slurmdbd" in out


def test_submit_returns_result_and_sacct_says_completed(slurm_executor):
    t0 = time.monotonic()
    job = slurm_executor.submit(add, 2, 3)
    while not job.paths.result_pickle.exists() and time.monotonic() - t0 < 60:
        time.sleep(0.02)  # job.result() itself polls once a second
    print(f"submit-to-result-file {time.monotonic() - t0:.2f} s (job {job.job_id})")
    assert job.result() == 5
    assert final_state(job) == "COMPLETED"
    assert job.state == "COMPLETED"


def test_failing_job_raises_and_is_failed(slurm_executor):
    job = slurm_executor.submit(fail, "boom")
    with pytest.raises(submitit.core.utils.FailedJobError, match="boom"):
        job.result()
    assert final_state(job) == "FAILED"


def test_map_array_is_one_array_with_parallelism(slurm_executor, slurm_folder):
    slurm_executor.update_parameters(slurm_array_parallelism=2)
    jobs = slurm_executor.map_array(square, range(4))
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1, [j.job_id for j in jobs]
    assert [j.job_id.split("_")[1] for j in jobs] == ["0", "1", "2", "3"]
    assert "#SBATCH --array=0-3%2" in jobs[0].paths.submission_file.read_text()
    assert [j.result() for j in jobs] == [0, 1, 4, 9]
    assert [final_state(j) for j in jobs] == ["COMPLETED"] * 4


def test_checkpointable_job_requeues_and_resumes_from_its_state(slurm_executor, tmp_path):
    progress = tmp_path / "progress"
    job = slurm_executor.submit(Counter(), str(progress), 60)
    deadline = time.monotonic() + 60
    while not (progress.exists() and progress.read_text() and int(progress.read_text()) >= 3):
        assert time.monotonic() < deadline, f"job {job.job_id} never made progress"
        assert not job.done(), job.stderr()
        time.sleep(0.1)
    t0 = time.monotonic()
    preempt(job.job_id, lambda: job.stderr() or "")  # SIGTERM (ignored), then USR2: requeue
    second = progress.with_suffix(".start2")
    while not second.exists():
        assert time.monotonic() - t0 < 90, f"job {job.job_id} was not restarted: {job.stderr()}"
        time.sleep(0.1)
    requeue_s = time.monotonic() - t0
    out = job.result()
    print(f"requeue latency {requeue_s:.1f} s; interrupt-to-result "
          f"{time.monotonic() - t0:.1f} s (job {job.job_id})")
    assert out["done"] == 60
    assert out["starts"][0] == 0
    assert len(out["starts"]) == 2 and out["starts"][1] >= 3, out  # resumed, not from scratch
    assert out["restarts"] == "1"
    assert final_state(job) == "COMPLETED"
