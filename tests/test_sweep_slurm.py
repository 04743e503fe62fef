"""Sweeps against the real single-node SLURM cluster (tests/slurm_fixture.py starts it).

Covered: a study submitted as one job array completes; a study larger than the cluster's
MaxArraySize is split into several arrays; a preempted job (submitit's interrupt) requeues
and resumes; an external `scontrol requeue` restarts the job and the run resumes from its
checkpoint; a job killed mid-run is resubmitted by the next sweep and resumes; queued jobs
run the code of their submission even when the checkout is broken afterwards; a completed
study submits nothing; a spec with errors submits nothing; a 2-task DDP job (gloo).

No test races the clock: a run under test is held at an epoch boundary (after its first
epoch's checkpoint) by the trainer's test hold point (SLBENCH_HOLD_DIR, harness.run.trainer), the
test acts on it there, and releases it by deleting the hold file.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, preempt
from harness import records
from harness import stages as spec_stages
from harness.cli import main
from harness.study import spec as spec_mod
from harness.study import status, sweep
from harness.study.backends import base as backends_base
from harness.study.backends import slurm as slurm_backend

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


EPOCHS = 3


def wait_until(pred, timeout: float = 300, every: float = 0.1, what: str = "") -> None:
    """Waits for a state (never for time to pass); the timeout only bounds a broken run."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


@pytest.fixture
def hold(tmp_path, monkeypatch) -> Path:
    """Every run submitted in this test stops before its second epoch until released."""
    d = tmp_path / "hold"
    d.mkdir()
    (d / "hold-all").write_text("")
    monkeypatch.setenv("SLBENCH_HOLD_DIR", str(d))   # sbatch exports it to the jobs
    monkeypatch.setenv("SLBENCH_HOLD_AT_EPOCH", "1")
    return d


def submit_one(tmp_path: Path, name: str):
    """One run of EPOCHS epochs, submitted to SLURM as the sweep command does."""
    study = spec_mod.load_spec(spec(tmp_path, name, epochs=EPOCHS, variants="ste"))
    sdir = sweep.study_dir(tmp_path / "res", study)
    sdir.mkdir(parents=True)
    sweep.freeze_spec(study, sdir)
    sweep.write_manifest(study, sdir)
    sweep.prepare_records(study.runs, sdir)
    slurm_backend.SlurmBackend().submit(backends_base.Submit(sdir, study.executor), study.runs)
    job_id = next(iter(backends_base.read_submissions(sdir).values()))["job_id"]
    return study, sdir, sdir / "runs" / study.runs[0].run_id, job_id


def held(hold: Path, run_dir: Path) -> Path:
    return hold / f"{run_dir.name}.held"


def slurm_state(job_id: str) -> str:
    return slurm_backend.slurm_states([job_id]).get(job_id, "UNKNOWN")


def finish(hold: Path, run_dir: Path) -> None:
    (hold / "hold-all").unlink(missing_ok=True)
    wait_until(lambda: records.load_run(run_dir).status == "completed", what="the run to finish")
    assert rows(run_dir) == EPOCHS
    assert records.load_run(run_dir).metrics["epoch"].tolist() == list(range(1, EPOCHS + 1))


def test_small_study_runs_as_one_array_then_resubmits_nothing(slurm_cluster, tmp_path, capsys):
    p = spec(tmp_path, "arr", seeds="[0, 1]")
    res = tmp_path / "res"
    t0 = time.time()
    assert main(["sweep", str(p), "--executor", "slurm", "--results", str(res), "--wait"]) == 0
    elapsed = time.time() - t0
    sdir = res / "arr"
    subs = backends_base.read_submissions(sdir)
    assert len(subs) == 4
    assert len({s["job_id"].split("_")[0] for s in subs.values()}) == 1   # one array
    counts, rows_ = status.status_counts(sdir)
    assert counts["completed"] == 4, rows_
    wait_until(lambda: all(slurm_state(s["job_id"]) == "COMPLETED" for s in subs.values()),
               timeout=30, what="sacct to report COMPLETED")
    capsys.readouterr()
    assert main(["sweep", str(p), "--executor", "slurm", "--results", str(res)]) == 0
    assert "to submit: 0 runs (skipping 4 completed)" in capsys.readouterr().out
    assert len((sdir / "submissions.jsonl").read_text().splitlines()) == 4
    print(f"4-run array study end to end: {elapsed:.1f}s")


def test_study_larger_than_max_array_size_is_split(slurm_cluster, tmp_path, capsys):
    limit = slurm_backend.max_array_size()
    assert limit == slurm_cluster.module.MAX_ARRAY_SIZE == 5  # the test cluster's small limit
    p = spec(tmp_path, "big", n=100, seeds="[0, 1, 2, 3]")   # 8 runs
    res = tmp_path / "res"
    assert main(["sweep", str(p), "--executor", "slurm", "--results", str(res), "--wait"]) == 0
    subs = backends_base.read_submissions(res / "big")
    arrays: dict[str, list[int]] = {}
    for s in subs.values():
        base, index = s["job_id"].split("_")
        arrays.setdefault(base, []).append(int(index))
    assert sorted(len(v) for v in arrays.values()) == [3, 5], arrays
    assert all(max(v) < limit for v in arrays.values())
    assert status.status_counts(res / "big")[0]["completed"] == 8
    assert capsys.readouterr().out.count("submitted ") == 2


def test_preempted_job_requeues_and_resumes_from_its_checkpoint(slurm_cluster, tmp_path, hold):
    _, sdir, run_dir, job_id = submit_one(tmp_path, "pre")
    wait_until(lambda: held(hold, run_dir).exists(), what="the run to reach its hold point")
    assert rows(run_dir) == 1
    held(hold, run_dir).unlink()
    # preemption as SLURM does it: SIGTERM, which submitit ignores, then USR2: the job
    # checkpoints and requeues itself
    preempt(job_id, lambda: "".join(p.read_text() for p in
                                    (sdir / "submitit").glob(f"{job_id}_*log.err")))
    wait_until(lambda: held(hold, run_dir).exists(), what="the requeued job to resume")
    log = (run_dir / "log.txt").read_text()
    assert "resumed at epoch 1" in log, log
    finish(hold, run_dir)


def test_external_requeue_restarts_the_job_and_the_run_resumes(slurm_cluster, tmp_path, hold):
    _, sdir, run_dir, job_id = submit_one(tmp_path, "req")
    wait_until(lambda: held(hold, run_dir).exists(), what="the run to reach its hold point")
    held(hold, run_dir).unlink()
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_until(lambda: held(hold, run_dir).exists(), what="the requeued job to resume")
    assert "resumed at epoch 1" in (run_dir / "log.txt").read_text()
    finish(hold, run_dir)


def test_killed_job_is_resubmitted_by_the_next_sweep_and_resumes(slurm_cluster, tmp_path, hold,
                                                                  capsys):
    study, sdir, run_dir, job_id = submit_one(tmp_path, "kill")
    wait_until(lambda: held(hold, run_dir).exists(), what="the run to reach its hold point")
    subprocess.run(["scancel", "--signal=KILL", "--full", job_id], check=True)
    wait_until(lambda: slurm_state(job_id) not in backends_base.ACTIVE, timeout=60,
               what="the job to die")
    counts, _ = status.status_counts(sdir)
    assert counts["interrupted"] == 1
    (hold / "hold-all").unlink()
    capsys.readouterr()
    assert main(["sweep", str(study.path), "--executor", "slurm", "--results",
                 str(tmp_path / "res"), "--wait"]) == 0
    assert "to submit: 1 runs" in capsys.readouterr().out
    assert records.load_run(run_dir).status == "completed"
    assert "resumed at epoch 1" in (run_dir / "log.txt").read_text()


def _node() -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[0]


def test_queued_jobs_run_the_code_of_their_submission(slurm_cluster, tmp_path):
    """Drain the node, submit from a checkout, break that checkout, resume the node: every
    run completes with the code snapshot taken at submission."""
    checkout = tmp_path / "checkout"
    for name in ("harness", "methods"):
        shutil.copytree(ROOT / name, checkout / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    p = spec(tmp_path, "snap", seeds="[0, 1]")
    res = tmp_path / "res"
    node = _node()
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=test"],
                   check=True)
    try:
        out = subprocess.run([sys.executable, "-m", "harness", "sweep", str(p), "--executor",
                              "slurm", "--results", str(res)], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        subs = backends_base.read_submissions(res / "snap")
        assert len(subs) == 4
        assert {slurm_state(s["job_id"]) for s in subs.values()} == {"PENDING"}
        (checkout / "harness" / "train.py").write_text(
            "raise RuntimeError('the checkout was broken after submission')\n")
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    status.wait_for(res / "snap", poll_s=0.5)
    counts, rows_ = status.status_counts(res / "snap")
    assert counts["completed"] == 4, rows_
    snap = {s["snapshot"] for s in subs.values()}
    assert len(snap) == 1 and (res / "snap" / "snapshots" / snap.pop()).is_dir()
    for run_dir in (res / "snap" / "runs").iterdir():
        env_ = records.read_summary(run_dir).env
        assert env_["source_snapshot"] == next(iter(subs.values()))["snapshot"]


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


STAGED = """
[study]
name = "staged"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 120, subset_test = 100 }
batch_size = 40
[grid]
bits = [[1, 32]]
epochs = [2]
seeds = [0]
variants = ["ste", "ste_pre"]
[tune]
space = { "optim.lr" = [0.02, 0.1] }
epochs = 2
seeds = [100]
val_split = 0.25
variants = ["ste"]
[variants.fp]
method = "fp"
reference = true
[variants.ste]
method = "ste"
[variants.ste_pre]
method = "ste"
init = { from = "fp", epochs = 1 }
[executor]
partition = "debug"
cpus_per_task = 1
mem_gb = 1
timeout_min = 20
"""


def test_stages_run_unattended_with_dependencies_and_a_killed_trial_waits_for_a_resweep(
        slurm_cluster, tmp_path, hold, capsys):
    """One sweep submits every stage: the pretrained run starts after its fp source by itself
    (afterok), the final run of the tuned variant waits on its trials. One trial is held and
    killed: the final run stays queued and `status` calls it blocked with the reason; the next
    sweep resubmits the trial (which resumes) and the final run after it: all complete."""
    (hold / "hold-all").unlink()
    spec_path = tmp_path / "staged.toml"
    spec_path.write_text(STAGED)
    study = spec_mod.load_spec(spec_path)
    trials = sorted((r for r in study.runs if r.stage == "tune"), key=lambda r: r.trial)
    (slot,) = study.slots
    pre = next(r for r in study.runs if r.variant == "ste_pre")
    source = next(r for r in study.runs if r.stage == "pretrain")
    (hold / f"hold-{trials[0].run_id}").write_text("")
    res = tmp_path / "res"
    assert main(["sweep", str(spec_path), "--executor", "slurm", "--results", str(res)]) == 0
    sdir = res / "staged"
    subs = backends_base.read_submissions(sdir)
    assert sorted(subs[slot.slot_id]["after"]) == sorted(subs[t.run_id]["job_id"]
                                                          for t in trials)
    assert subs[pre.run_id]["after"] == [subs[source.run_id]["job_id"]]
    assert "after" not in subs[source.run_id]
    wait_until(lambda: records.load_run(sdir / "runs" / pre.run_id).status == "completed",
               what="the pretrained run to start after its source and complete")
    wait_until(lambda: held(hold, sdir / "runs" / trials[0].run_id).exists(),
               what="the first trial to reach its hold point")
    assert slurm_state(subs[slot.slot_id]["job_id"]) == "PENDING"
    job = subs[trials[0].run_id]["job_id"]
    subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True)
    wait_until(lambda: slurm_state(job) not in backends_base.ACTIVE, timeout=60,
               what="the trial's job to die")
    wait_until(lambda: records.load_run(sdir / "runs" / trials[1].run_id).status == "completed",
               what="the other trial")
    counts, rows_ = status.status_counts(sdir)
    row = next(r for r in rows_ if r["run_id"] == slot.slot_id)
    assert row["state"] == "blocked" and trials[0].run_id in row["detail"], row
    assert "interrupted; sweep again" in row["detail"]
    assert slurm_state(subs[slot.slot_id]["job_id"]) == "PENDING"   # waiting, never started
    (hold / f"hold-{trials[0].run_id}").unlink()
    capsys.readouterr()
    assert main(["sweep", str(spec_path), "--executor", "slurm", "--results", str(res),
                 "--wait"]) == 0
    out = capsys.readouterr().out
    assert "to submit: 2 runs" in out and "cancelled 1 SLURM jobs" in out
    counts, rows_ = status.status_counts(sdir)
    assert counts["completed"] == 5 and counts["blocked"] == 0, rows_
    assert "resumed at epoch 1" in (sdir / "runs" / trials[0].run_id / "log.txt").read_text()
    bound = spec_stages.bound_run(sdir, slot.slot_id)
    cfg = records.load_run(sdir / "runs" / bound).config
    assert cfg["optim"]["lr"] in (0.02, 0.1) and cfg["meta"]["tuned"] == ["optim.lr"]


# --------------------------------------------------------------------------- packed tasks

def _unpacked_metrics(tmp_path: Path, run_dir: Path):
    """The same run trained alone (no packing, its own data load), with the task's one
    thread, in a process of its own."""
    alone = tmp_path / "alone" / run_dir.name
    subprocess.run([sys.executable, "-m", "harness", "run", "--config",
                    str(run_dir / "config.json"), "--out", str(alone)], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                             "SLBENCH_HOLD_DIR": ""})
    return records.load_run(alone).metrics


@pytest.mark.parametrize("packing,n_runs,tasks", [("runs_per_gpu = 2", 2, 1),
                                                  ("runs_per_job = 4", 4, 1)])
def test_a_preempted_packed_task_requeues_every_run_and_each_resumes(
        slurm_cluster, tmp_path, hold, packing, n_runs, tasks):
    """K runs at a time in one task, or N in turn: a preemption mid-way requeues the pack,
    every run resumes from its own checkpoint, and each ends identical to the same run trained
    alone (apart from the timing columns)."""
    seeds = str(list(range(n_runs // 2)))
    study = spec_mod.load_spec(spec(tmp_path, "pack", epochs=EPOCHS, seeds=seeds,
                                    extra=packing))
    sdir = sweep.study_dir(tmp_path / "res", study)
    sdir.mkdir(parents=True)
    sweep.freeze_spec(study, sdir)
    sweep.write_manifest(study, sdir)
    sweep.prepare_records(study.runs, sdir)
    slurm_backend.SlurmBackend().submit(backends_base.Submit(sdir, study.executor), study.runs)
    subs = backends_base.read_submissions(sdir)
    assert len(subs) == n_runs and len({s["job_id"] for s in subs.values()}) == tasks
    job_id = next(iter(subs.values()))["job_id"]
    first = sdir / "runs" / study.runs[0].run_id
    wait_until(lambda: held(hold, first).exists(), what="the first run to reach its hold point")
    held(hold, first).unlink()
    preempt(job_id, lambda: "".join(p.read_text() for p in
                                    (sdir / "submitit").glob(f"{job_id}_*log.err")))
    wait_until(lambda: held(hold, first).exists(), what="the requeued pack to resume")
    assert "resumed at epoch 1" in (first / "log.txt").read_text()
    (hold / "hold-all").unlink()
    for r in study.runs:
        run_dir = sdir / "runs" / r.run_id
        wait_until(lambda d=run_dir: records.load_run(d).status == "completed",
                   what=f"{r.run_id} to finish")
        packed_rows = records.load_run(run_dir).metrics
        alone = _unpacked_metrics(tmp_path, run_dir)
        keep = [c for c in alone.columns if c not in ("epoch_time_s", "samples_per_s")]
        assert packed_rows[keep].equals(alone[keep]), r.run_id
