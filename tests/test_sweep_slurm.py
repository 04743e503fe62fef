"""Sweeps against the real single-node SLURM cluster (tests/slurm_fixture.py starts it).

Covered: a study submitted as one job array completes; a preempted job (submitit's interrupt)
requeues and resumes; an external `scontrol requeue` restarts the job and the run resumes
from its checkpoint; a job killed mid-run is resubmitted by the next sweep and resumes; a
completed study submits nothing; a spec with errors submits nothing; a 2-task DDP job (gloo).
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from harness import records, sweep
from harness.cli import main

pytestmark = pytest.mark.slurm

SPEC = """
[study]
name = "__NAME__"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = __N__, subset_test = 200 }
optim = { lr = 0.05 }
batch_size = __B__
[grid]
bits = [[1, 32]]
epochs = [__E__]
seeds = __SEEDS__
[variants.ste]
method = "ste"
[variants.dorefa]
method = "dorefa"
[executor]
partition = "debug"
cpus_per_task = 1
mem_gb = 1
timeout_min = 20
array_parallelism = 2
__EXTRA__
"""


def spec(tmp_path: Path, name: str, n: int = 200, epochs: int = 1, seeds: str = "[0]",
         variants: str = "", extra: str = "", batch: int = 32) -> Path:
    text = (SPEC.replace("__NAME__", name).replace("__N__", str(n)).replace("__E__", str(epochs))
            .replace("__B__", str(batch))
            .replace("__SEEDS__", seeds).replace("__EXTRA__", extra))
    if variants == "ste":
        text = text.replace('[variants.dorefa]\nmethod = "dorefa"\n', "")
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


EPOCHS = 20


def wait_until(pred, timeout: float = 240, every: float = 0.25, what: str = "") -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def submit_one(tmp_path: Path, name: str, epochs: int = EPOCHS):
    """One slow-ish run (~0.5 s per epoch here) so a signal lands mid-run."""
    study = sweep.load_spec(spec(tmp_path, name, n=0, epochs=epochs, variants="ste", batch=16))
    sdir = sweep.study_dir(tmp_path / "res", study)
    sdir.mkdir(parents=True)
    sweep.freeze_spec(study, sdir)
    sweep.write_manifest(study, sdir)
    sweep.prepare_records(study.runs, sdir)
    job = sweep.submit(study, sdir, study.runs, "slurm")[0]
    return study, sdir, sdir / "runs" / study.runs[0].run_id, job


def slurm_state(job_id: str) -> str:
    return sweep.slurm_states([job_id]).get(job_id, "UNKNOWN")


def test_small_study_runs_as_one_array_then_resubmits_nothing(slurm_cluster, tmp_path, capsys):
    p = spec(tmp_path, "arr", seeds="[0, 1]")
    res = tmp_path / "res"
    t0 = time.time()
    assert main(["sweep", str(p), "--executor", "slurm", "--results", str(res), "--wait"]) == 0
    elapsed = time.time() - t0
    sdir = res / "arr"
    subs = sweep.read_submissions(sdir)
    assert len(subs) == 4
    assert len({s["job_id"].split("_")[0] for s in subs.values()}) == 1   # one array
    counts, rows_ = sweep.status_counts(sdir)
    assert counts["completed"] == 4, rows_
    wait_until(lambda: all(slurm_state(s["job_id"]) == "COMPLETED" for s in subs.values()),
               timeout=30, what="sacct to report COMPLETED")
    capsys.readouterr()
    assert main(["sweep", str(p), "--executor", "slurm", "--results", str(res)]) == 0
    assert "to submit: 0 runs (skipping 4 completed)" in capsys.readouterr().out
    assert len((sdir / "submissions.jsonl").read_text().splitlines()) == 4
    print(f"4-run array study end to end: {elapsed:.1f}s")


def test_preempted_job_requeues_and_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    _, sdir, run_dir, job = submit_one(tmp_path, "pre")
    wait_until(lambda: 1 <= rows(run_dir) <= 5, what="the run to be mid-way")
    before = rows(run_dir)
    job._interrupt()                        # SIGTERM + USR2: submitit checkpoints and requeues
    wait_until(lambda: records.load_run(run_dir).status == "completed", timeout=300,
               what="the requeued job to finish")
    log = (run_dir / "log.txt").read_text()
    assert "resumed at epoch" in log
    resumed_at = int(log.split("resumed at epoch")[1].split()[0])
    assert resumed_at >= before              # no more than the current epoch was lost
    assert rows(run_dir) == EPOCHS
    m = records.load_run(run_dir).metrics
    assert m["epoch"].tolist() == list(range(1, EPOCHS + 1))


def test_external_requeue_restarts_the_job_and_the_run_resumes(slurm_cluster, tmp_path):
    _, sdir, run_dir, job = submit_one(tmp_path, "req")
    wait_until(lambda: 1 <= rows(run_dir) <= 5, what="the run to be mid-way")
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True)
    wait_until(lambda: records.load_run(run_dir).status == "completed", timeout=300,
               what="the requeued job to finish")
    assert "resumed at epoch" in (run_dir / "log.txt").read_text()
    assert rows(run_dir) == EPOCHS


def test_killed_job_is_resubmitted_by_the_next_sweep_and_resumes(slurm_cluster, tmp_path, capsys):
    study, sdir, run_dir, job = submit_one(tmp_path, "kill")
    wait_until(lambda: 1 <= rows(run_dir) <= 5, what="the run to be mid-way")
    subprocess.run(["scancel", "--signal=KILL", "--full", str(job.job_id)], check=True)
    wait_until(lambda: slurm_state(str(job.job_id)) not in sweep.ACTIVE, timeout=60,
               what="the job to die")
    counts, _ = sweep.status_counts(sdir)
    assert counts["interrupted"] == 1
    capsys.readouterr()
    assert main(["sweep", str(study.path), "--executor", "slurm", "--results",
                 str(tmp_path / "res"), "--wait"]) == 0
    assert "to submit: 1 runs" in capsys.readouterr().out
    assert records.load_run(run_dir).status == "completed"
    assert "resumed at epoch" in (run_dir / "log.txt").read_text()


def test_spec_with_errors_submits_nothing(slurm_cluster, tmp_path, capsys):
    p = spec(tmp_path, "bad", extra="gpus = 3")
    before = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "now-1hours"],
                            capture_output=True, text=True).stdout
    assert main(["sweep", str(p), "--executor", "slurm", "--results", str(tmp_path / "res")]) == 2
    assert "executor.gpus" in capsys.readouterr().err
    after = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "now-1hours"],
                           capture_output=True, text=True).stdout
    assert after == before
    assert not (tmp_path / "res").exists()


def test_two_task_ddp_job_with_gloo(slurm_cluster, tmp_path):
    p = spec(tmp_path, "ddp", n=400, epochs=2, variants="ste",
             extra="tasks_per_node = 2")
    res = tmp_path / "res"
    assert main(["sweep", str(p), "--executor", "slurm", "--results", str(res), "--wait"]) == 0
    (run_dir,) = (res / "ddp" / "runs").iterdir()
    rec = records.load_run(run_dir)
    assert rec.status == "completed", (run_dir / "log.txt").read_text()
    log = (run_dir / "log.txt").read_text()
    assert log.count("start ste") == 1 and len(rec.metrics) == 2   # rank 0 alone writes
    out = next((res / "ddp" / "submitit").glob("*_1_log.out"), None)
    assert out is not None                    # the second task really ran
