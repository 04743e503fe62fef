"""Execution under control: the local queue, cancel (real counts, no trainer left, a reused
PID left alone), a killed sweep leaves no orphan, Ctrl-C, SIGTERM on `run`, a closed stdout,
provenance in every run, code snapshots for local sweeps, the matched check on options that
change the recipe.

Runs under test are held at an epoch boundary by the trainer's test hold point
(SLBENCH_HOLD_DIR, see harness.run.signals.hold_point) and checked by state, never by sleeping, so
these tests pass on machines of any speed.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from harness import files, records
from harness.cli import main
from harness.errors import UserError
from harness.run import job, procs
from harness.study import spec, status, sweep
from harness.study.backends import base as backends_base
from harness.study.backends import slurm as slurm_backend

SPEC = """
[study]
name = "__NAME__"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 200, subset_test = 100 }
optim = { lr = 0.05 }
batch_size = 50
[grid]
bits = [[1, 32]]
epochs = [3]
seeds = __SEEDS__
[variants.ste]
method = "ste"
[variants.dorefa]
method = "dorefa"
[executor]
local_concurrency = 2
cpus_per_task = 1
"""


def write_spec(tmp_path: Path, name: str, seeds: str = "[0]") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(SPEC.replace("__NAME__", name).replace("__SEEDS__", seeds))
    return p


def wait_until(pred, timeout: float = 180, what: str = "") -> None:
    """Waits for a state; the timeout only bounds a broken test."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def hold_env(tmp_path: Path, everything: bool = True) -> tuple[Path, dict[str, str]]:
    d = tmp_path / "hold"
    d.mkdir(exist_ok=True)
    if everything:
        (d / "hold-all").write_text("")
    return d, {**os.environ, "SLBENCH_HOLD_DIR": str(d), "SLBENCH_HOLD_AT_EPOCH": "1",
               "PYTHONPATH": str(ROOT)}


def start_sweep(spec_path: Path, res: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(spec_path),
                             "--executor", "local", "--results", str(res)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def held_runs(hold: Path) -> set[str]:
    return {p.name.removesuffix(".held") for p in hold.glob("*.held")}


def owners(sdir: Path) -> list[dict]:
    out = []
    for run in (sdir / "runs").iterdir():
        try:
            out.append(files.read_json(run / ".owner"))
        except OSError:
            pass
    return out


def test_local_workers_pull_from_one_queue(tmp_path):
    """Four runs, two workers, one run held: the other worker takes the remaining three in
    turn (with runs dealt out in advance it would finish only its own share)."""
    p = write_spec(tmp_path, "queue", seeds="[0, 1]")
    hold, env = hold_env(tmp_path, everything=False)
    study = spec.load_spec(p)
    first = sorted(r.run_id for r in study.runs)[0]
    (hold / f"hold-{first}").write_text("")
    proc = start_sweep(p, tmp_path / "res", env)
    sdir = tmp_path / "res" / "queue"
    try:
        wait_until(lambda: first in held_runs(hold), what="the first run to be held")
        wait_until(lambda: status.status_counts(sdir)[0]["completed"] == 3,
                   what="the other worker to finish the three other runs")
        assert status.status_counts(sdir)[0]["running"] == 1
        (hold / f"hold-{first}").unlink()
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert status.status_counts(sdir)[0]["completed"] == 4
    assert out.count("[") >= 4 and "[4/4]" in out and "ETA" in out   # one line per run
    subs = backends_base.read_submissions(sdir)
    snap = {s["snapshot"] for s in subs.values()}
    assert len(snap) == 1 and (sdir / "snapshots" / next(iter(snap)) / "harness").is_dir()
    for run in (sdir / "runs").iterdir():
        assert records.read_summary(run).env["source_snapshot"] == next(iter(snap))


def test_cancel_stops_every_worker_and_counts_them(tmp_path):
    p = write_spec(tmp_path, "cancel")
    hold, env = hold_env(tmp_path)
    proc = start_sweep(p, tmp_path / "res", env)
    sdir = tmp_path / "res" / "cancel"
    try:
        wait_until(lambda: len(held_runs(hold)) == 2, what="both runs to be held")
        counts, rows = status.status_counts(sdir)
        assert counts["running"] == 2, rows
        trainers = owners(sdir)
        assert len(trainers) == 2 and all(procs.alive(t) for t in trainers)
        out = subprocess.run([sys.executable, "-m", "harness", "cancel", str(sdir)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "stopped 2 local worker process(es)" in out.stdout
        assert "1 sweep process(es)" in out.stdout
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert not any(procs.alive(t) for t in trainers)          # no trainer left
    assert proc.returncode == 130
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    counts, _ = status.status_counts(sdir)
    assert counts["interrupted"] == 2 and counts["running"] == 0
    for run in (sdir / "runs").iterdir():
        s = records.read_summary(run)
        assert s.status == "interrupted" and s.epochs_completed == 1
    # the same command resumes both runs from their checkpoints
    (hold / "hold-all").unlink()
    rerun = start_sweep(p, tmp_path / "res", env)
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err
    for run in (sdir / "runs").iterdir():
        assert "resumed at epoch 1" in (run / "log.txt").read_text()


def _prepared(spec_path: Path, results: Path):
    """The study of ``spec_path`` with its manifest and pending records under ``results``,
    as a sweep leaves them just before it submits."""
    study = spec.load_spec(spec_path)
    sdir = results / study.name
    (sdir / "runs").mkdir(parents=True)
    sweep.write_manifest(study, sdir, echo=lambda s: None)
    sweep.prepare_records(study.runs, sdir)
    return study, sdir


def test_cancel_leaves_a_process_with_a_reused_pid_alone(tmp_path, capsys):
    """A record names PID X; X now belongs to an unrelated process: not killed, not running."""
    study, sdir = _prepared(write_spec(tmp_path, "reuse"), tmp_path / "res")
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        fake = {"pid": stranger.pid, "pgid": stranger.pid, "token": "0:1",
                "host": socket.gethostname()}
        backends_base.append_submissions(sdir, [{"run_id": r.run_id, "job_id": "local-1",
                                        "executor": "local", "sweep": fake} for r in study.runs])
        files.atomic_write_json(sdir / "runs" / study.runs[0].run_id / ".owner", fake)
        assert not procs.alive(fake) and procs.alive(procs.identity(stranger.pid))
        counts, _ = status.status_counts(sdir)
        assert counts["running"] == 0 and counts["pending"] == 0
        assert main(["cancel", str(sdir)]) == 0
        assert "stopped 0 local worker process(es)" in capsys.readouterr().out
        assert stranger.poll() is None                                # still alive
    finally:
        stranger.kill()
        stranger.wait()


def test_a_finished_local_sweep_reports_runs_that_never_started_as_missing(tmp_path, capsys):
    """The sweep's own process is alive when it prints its final states: runs it queued but
    never started are missing, not pending; runs queued by another live sweep are pending."""
    study, sdir = _prepared(write_spec(tmp_path, "ended"), tmp_path / "res")
    me = procs.identity(os.getpid(), group=False)
    backends_base.append_submissions(sdir, [{"run_id": r.run_id, "job_id": f"local-{os.getpid()}",
                                    "executor": "local", "sweep": me} for r in study.runs])
    capsys.readouterr()
    assert status.summarize_exit(sdir, finished=True) == 1
    assert capsys.readouterr().out == "states: missing 2\n"
    other = subprocess.Popen(["sleep", "300"])
    try:
        backends_base.append_submissions(sdir, [{
            "run_id": study.runs[0].run_id, "job_id": "local-x", "executor": "local",
            "sweep": procs.identity(other.pid, group=False)}])
        counts, _ = status.status_counts(sdir)
        assert counts["pending"] == 1 and counts["missing"] == 1
    finally:
        other.kill()
        other.wait()


def test_killed_sweep_leaves_no_orphan_and_ctrl_c_is_one_line(tmp_path):
    p = write_spec(tmp_path, "orphan")
    hold, env = hold_env(tmp_path)
    sdir = tmp_path / "res" / "orphan"
    proc = start_sweep(p, tmp_path / "res", env)
    try:
        wait_until(lambda: len(held_runs(hold)) == 2, what="both runs to be held")
        trainers = owners(sdir)
        proc.kill()                                   # SIGKILL: no chance to clean up
        proc.wait()
        wait_until(lambda: not any(procs.alive(t) for t in trainers), timeout=60,
                   what="the workers to die with the sweep")
    finally:
        proc.kill()
    counts, _ = status.status_counts(sdir)
    assert counts["running"] == 0 and counts["interrupted"] == 2
    # Ctrl-C on a sweep: one line, exit 130, workers gone
    for f in hold.glob("*.held"):
        f.unlink()
    proc = start_sweep(p, tmp_path / "res", env)
    try:
        wait_until(lambda: len(held_runs(hold)) == 2, what="both runs to be held again")
        trainers = owners(sdir)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip().startswith("interrupted:") and "Traceback" not in err, err
    assert not any(procs.alive(t) for t in trainers)


RUN = [sys.executable, "-m", "harness", "run", "--method", "ste", "--epochs", "3",
       "--set", "data.subset_train=200", "--set", "data.subset_test=100",
       "--set", "model.width=0.25", "--set", "progress=line", "--batch-size", "50"]


def _held_run(tmp_path: Path, stream=subprocess.PIPE):
    """A `run` started in a subprocess and held before its second epoch (hold, env, RUN_DIR,
    process)."""
    hold, env = hold_env(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.Popen(RUN + ["--out", str(out)], cwd=ROOT, env=env, text=True,
                            stdout=stream, stderr=stream)
    try:
        wait_until(lambda: len(held_runs(hold)) == 1, what="the run to be held")
    except BaseException:
        proc.kill()   # never leave a held run behind
        raise
    return hold, env, out, proc


def test_sigterm_ends_a_run_interrupted_and_it_resumes(tmp_path):
    hold, env, out, proc = _held_run(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err, err
    s = records.read_summary(out)
    assert s.status == "interrupted" and s.epochs_completed == 1
    assert (out / "checkpoint.pt").exists() and not (out / ".owner").exists()
    (hold / "hold-all").unlink()
    again = subprocess.run(RUN + ["--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert records.read_summary(out).status == "completed"
    assert "resumed at epoch 1" in (out / "log.txt").read_text()


def test_show_calls_a_killed_run_interrupted_not_running(tmp_path, capsys):
    """SIGKILL leaves summary.json saying running: `show` believes it only while the trainer
    named in RUN_DIR/.owner lives (the rule of `status`)."""
    _, _, out, proc = _held_run(tmp_path, subprocess.DEVNULL)
    try:
        assert main(["show", str(out)]) == 0
        assert f"{out}: running (pid {proc.pid})" in capsys.readouterr().out
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    assert records.read_summary(out).status == "running"        # what the kill left behind
    assert main(["show", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"{out}: interrupted (stale: summary.json says running but its trainer "
                     f"(pid {proc.pid}) is gone, killed before it could record that; stopped "
                     f"at epoch 1: resume with python -m harness run --resume {out} (or sweep "
                     "again))")


def test_a_closed_stdout_never_fails_training(tmp_path):
    out = tmp_path / "run"
    cmd = " ".join(f"'{a}'" for a in RUN + ["--out", str(out)])
    p = subprocess.run(["bash", "-c", f"{cmd} | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=180)
    assert p.stdout.strip() == "0", p.stderr
    assert records.read_summary(out).status == "completed"


def _repo_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("harness", "methods"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / ".gitignore").write_text("__pycache__/\nruns/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    return repo


def test_provenance_names_versions_flags_data_and_uncommitted_code(tmp_path):
    repo = _repo_copy(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    clean = subprocess.run(RUN + ["--out", str(repo / "runs" / "clean"), "--epochs", "1"],
                           cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert clean.returncode == 0, clean.stderr
    s = records.read_summary(repo / "runs" / "clean")
    assert s.env["harness_commit"] == head
    assert not (repo / "runs" / "clean" / "source.diff").exists()
    for key in ("python", "torch", "torchvision", "numpy", "scipy", "submitit", "cuda", "cudnn",
                "device_name", "hostname"):
        assert s.env[key], key
    assert s.env["argv"][1:3] == ["run", "--method"]
    assert set(s.env["determinism"]) >= {"deterministic_algorithms", "cudnn_benchmark",
                                         "cudnn_deterministic"}
    fp = s.data_fingerprint
    assert fp["n_train"] == 200 and fp["n_test"] == 100 and len(fp["content"]) == 16
    # an untracked method file makes the run -dirty, and the saved diff shows it
    (repo / "methods" / "mynew.py").write_text('"""not committed"""\nVALUE = 1\n')
    dirty = subprocess.run(RUN + ["--out", str(repo / "runs" / "dirty"), "--epochs", "1"],
                           cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert dirty.returncode == 0, dirty.stderr
    s2 = records.read_summary(repo / "runs" / "dirty")
    assert s2.env["harness_commit"] == head + "-dirty"
    diff = (repo / "runs" / "dirty" / "source.diff").read_text()
    assert "methods/mynew.py" in diff and "VALUE = 1" in diff
    assert s2.data_fingerprint["content"] == fp["content"]     # same images, same hash


def test_options_that_change_the_recipe_make_a_variant_unmatched(tmp_path):
    text = SPEC.replace("__NAME__", "lq").replace("__SEEDS__", "[0]").replace(
        "bits = [[1, 32]]", "bits = [[2, 2]]")
    text += '[variants.lq]\nmethod = "lqnet"\noptions = { act_quant = "lqnet" }\n'
    p = tmp_path / "lq.toml"
    p.write_text(text)
    with pytest.raises(spec.SpecErrors, match=r"variants\.lq\.options: act_quant"):
        spec.load_spec(p)
    p.write_text(text.replace("[study]\n", "[study]\nallow_unmatched = true\n").replace(
        'options = { act_quant = "lqnet" }', 'options = { act_quant = "lqnet" }\nunmatched = true'))
    study = spec.load_spec(p)
    assert all(r.unmatched for r in study.runs if r.variant == "lq")
    # the same option set for one cell only (cell_options) goes through the same check
    per_cell = text.replace('options = { act_quant = "lqnet" }',
                            'cell_options = { "W2/A2" = { act_quant = "lqnet" } }')
    p.write_text(per_cell)
    with pytest.raises(spec.SpecErrors) as e:
        spec.load_spec(p)
    assert e.value.errors == [
        f'{p}: variants.lq.cell_options."W2/A2": act_quant = "lqnet" replaces the recipe\'s '
        'activation quantizer, so the variant does not share the recipe; set unmatched = true '
        'on the variant (and study.allow_unmatched = true) for a deliberately unmatched '
        'comparison']
    p.write_text(per_cell.replace("[study]\n", "[study]\nallow_unmatched = true\n").replace(
        "cell_options =", "unmatched = true\ncell_options ="))
    study = spec.load_spec(p)
    lq = [r for r in study.runs if r.variant == "lq"]
    assert lq and all(r.unmatched and r.cfg.method_options.act_quant == "lqnet" for r in lq)


def test_slurm_states_are_asked_in_chunks_of_query_chunk_jobs(monkeypatch):
    """450 jobs: sacct and squeue are each called for 200, 200 and 50 job ids; array ranges
    are expanded and squeue's live state wins over sacct's."""
    calls = []

    def fake_query(cmd, ok_codes=(0,)):
        ids = cmd[cmd.index("-j") + 1].split(",")
        calls.append((cmd[0], ids))
        if cmd[0] == "sacct":
            return "".join(f"{j}_[0-1]|COMPLETED\n" for j in ids)
        return "1449_1|RUNNING\n" if "1449" in ids else ""

    monkeypatch.setattr(slurm_backend.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm_backend, "_query", fake_query)
    ids = [f"{1000 + i}_{k}" for i in range(450) for k in (0, 1)]
    states = slurm_backend.slurm_states(ids)
    assert backends_base.QUERY_CHUNK == 200
    assert [(name, len(chunk)) for name, chunk in calls] == [
        ("sacct", 200), ("squeue", 200), ("sacct", 200), ("squeue", 200), ("sacct", 50),
        ("squeue", 50)]
    assert sorted(j for _, chunk in calls[::2] for j in chunk) == [str(1000 + i)
                                                                   for i in range(450)]
    assert len(states) == 900 and states["1000_0"] == "COMPLETED"
    assert states["1449_1"] == "RUNNING" and states["1449_0"] == "COMPLETED"


@pytest.mark.parametrize("n_jobs,interval", [(50, 2.0), (1000, 10.0), (10_000, 60.0),
                                             (100_000, 60.0)])
def test_wait_for_polls_less_often_for_big_studies_and_at_least_once_a_minute(
        monkeypatch, tmp_path, n_jobs, interval):
    subs = {f"r{i}": {"run_id": f"r{i}", "executor": "slurm"} for i in range(n_jobs)}
    polls = iter([{"r0": "RUNNING"}, {"r0": "PENDING"}, {"r0": "COMPLETED"}])
    slept = []
    monkeypatch.setattr(status, "read_submissions", lambda sdir: subs)
    monkeypatch.setattr(status, "job_states", lambda sdir, s, strict=True: next(polls))
    monkeypatch.setattr(status.time, "sleep", slept.append)
    status.wait_for(tmp_path)
    assert slept == [interval, interval]


def test_submitit_parameters_use_submitits_own_names():
    shape = {"timeout_min": 60, "cpus_per_task": 4, "mem_gb": 8, "tasks_per_node": 2,
             "nodes": 1, "gpus_per_task": 1, "partition": "gpu", "account": "", "qos": "",
             "constraint": ""}
    params = slurm_backend.submitit_parameters(shape, {"array_parallelism": 8, "setup": [],
                                              "sbatch": {"exclusive": ""}})
    assert params == {"timeout_min": 60, "cpus_per_task": 4, "mem_gb": 8, "tasks_per_node": 2,
                      "nodes": 1, "slurm_partition": "gpu", "slurm_array_parallelism": 8,
                      "slurm_additional_parameters": {"exclusive": ""}, "gpus_per_node": 2,
                      "name": "slbench"}
    import submitit

    ex = submitit.AutoExecutor(folder="/tmp/slbench-params-check", cluster="slurm")
    ex.update_parameters(**params)                     # submitit accepts every name


SLB_SPEC = """
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 200, subset_test = 100 }
[grid]
bits = [[1, 32], [2, 32]]
epochs = [1]
seeds = [0]
[variants.slb]
method = "slb"
options = { init = "from_fp", init_from = "fp_ck.pt" }
cell_options = { "W2/A32" = { init_from = "w2/fp_ck.pt" } }
"""


def _slb_spec_with_init_files(tmp_path: Path) -> Path:
    """SLB_SPEC in tmp_path/specs, next to the two init files it names."""
    specs = tmp_path / "specs"
    (specs / "w2").mkdir(parents=True)
    (specs / "fp_ck.pt").write_bytes(b"x")
    (specs / "w2" / "fp_ck.pt").write_bytes(b"x")
    p = specs / "slb.toml"
    p.write_text(SLB_SPEC)
    return p


def test_file_options_are_relative_to_the_spec_and_checked_when_it_is_read(tmp_path,
                                                                           monkeypatch):
    """Jobs start in the code snapshot, so a relative init_from must name the file next to
    the spec, resolved when the spec is read, wherever the command was typed."""
    p = _slb_spec_with_init_files(tmp_path)
    specs = p.parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    study = spec.load_spec(p)
    got = {(r.w_bits, r.a_bits): r.cfg.method_options.init_from for r in study.runs}
    assert got == {(1, 32): str(specs / "fp_ck.pt"), (2, 32): str(specs / "w2" / "fp_ck.pt")}
    # a file next to where the command runs but not next to the spec is refused up front
    (specs / "fp_ck.pt").unlink()
    (elsewhere / "fp_ck.pt").write_bytes(b"x")
    with pytest.raises(spec.SpecErrors) as e:
        spec.load_spec(p)
    assert e.value.errors == [f"{p}: variants.slb: method.init_from: file "
                              f"{str(specs / 'fp_ck.pt')!r} not found; pass a checkpoint.pt or "
                              "state-dict file"]


def test_a_file_option_set_by_a_scale_is_relative_to_the_spec_too(tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    (specs / "ck").mkdir(parents=True)
    (specs / "ck" / "fp.pt").write_bytes(b"x")
    p = specs / "slb.toml"
    p.write_text(SLB_SPEC.replace(', init_from = "fp_ck.pt"', "").replace(
        'cell_options = { "W2/A32" = { init_from = "w2/fp_ck.pt" } }\n', "")
        + '[scales.tiny]\nset = { "method.init_from" = "ck/fp.pt" }\n')
    monkeypatch.chdir(tmp_path)
    study = spec.load_spec(p, scale="tiny")
    assert {r.cfg.method_options.init_from for r in study.runs} == {str(specs / "ck" / "fp.pt")}


def test_a_run_that_cannot_start_is_recorded_failed_with_its_reason(tmp_path, monkeypatch):
    """The init file is gone by the time the job starts: the run is failed (not missing) in
    `status`, with the one-line reason."""
    p = _slb_spec_with_init_files(tmp_path)
    specs = p.parent
    study, sdir = _prepared(p, tmp_path / "res")
    (specs / "fp_ck.pt").unlink()
    run = next(r for r in study.runs if r.w_bits == 1)
    reason = (f"method.init_from: file {str(specs / 'fp_ck.pt')!r} not found; pass a "
              "checkpoint.pt or state-dict file")
    with pytest.raises(UserError, match="method.init_from"):
        job.run_one(str(sdir / "runs" / run.run_id))
    s = records.read_summary(sdir / "runs" / run.run_id)
    assert s.status == "failed" and s.error == reason
    assert s.config_hash == files.read_json(sdir / "runs" / run.run_id / "config.json")[
        "config_hash"]
    counts, rows = status.status_counts(sdir)
    assert counts["failed"] == 1 and counts["missing"] == 1
    assert [r["detail"] for r in rows if r["state"] == "failed"] == [reason]
