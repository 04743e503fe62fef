"""What a user sees while studies and runs go on (issue 26, item 5): a line when each run of a
local sweep starts (and where it resumes), a heartbeat while nothing ends, an ETA from the
study's own epoch times, `status --runs`, a resume command on every interrupt, log paths
that exist."""
from __future__ import annotations

import json

import pytest
from report_records import write_run

from harness.cli import main
from harness.study import status
from harness.study.backends import progress


def test_eta_from_hand_numbers():
    # 2 workers; 10 s an epoch, 5 s a run's overhead. Queued: runs of 4 and 8 epochs
    # (45 + 85 s); running: 4 epochs for 20 s (25 s left) and 8 epochs for 80 s (5 s left)
    assert progress.estimate(10.0, 5.0, [4, 8], [(4, 20.0), (8, 80.0)], 2) == \
        pytest.approx((45 + 85 + 25 + 5) / 2)
    # one long run left: its own remainder, not the average over idle workers
    assert progress.estimate(10.0, 0.0, [], [(8, 10.0)], 2) == pytest.approx(70.0)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _run(root, name, **kw):
    return str(write_run(root, name, method="ste", acc=80.0, epoch_time=10.0, **kw))


def test_start_resume_heartbeat_and_eta_lines(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    fresh = str(tmp_path / "runs" / "fresh")          # no records yet
    resumed = _run(tmp_path, "half", epochs=4, rows=2, status="interrupted")
    queued = str(tmp_path / "runs" / "later")
    lines: list[str] = []
    p = progress.Progress(3, 2, {fresh: 4, resumed: 4, queued: 4}, echo=lines.append)
    p.start(fresh, [resumed, queued])
    assert lines[-1] == "[start 1/3] fresh; elapsed 0s, ETA after the first epoch"
    p.start(resumed, [queued])
    # the resumed run's two epochs of 10 s are the study's first epoch times
    assert lines[-1].startswith("[start 2/3] half (resumed at epoch 2 of 4); elapsed 0s, ETA ")
    clock.t += progress.HEARTBEAT_S - 1
    p.beat([queued])
    assert len(lines) == 2  # not silent for HEARTBEAT_S yet
    clock.t += 1
    p.beat([queued])
    assert lines[-1].startswith("  ... 0/3 done, running: fresh epoch 0/4, half epoch 2/4; "
                                f"elapsed {progress.dur(progress.HEARTBEAT_S)}, ETA ")
    # per epoch 10 s; overhead so far: fresh 30 s (no epoch yet), half 30 s beyond its own
    # epochs (none this attempt) -> 30 s. Left: fresh 30 + 40 - 30 = 40, half 30 + 20 - 30 =
    # 20, queued 70: (40 + 20 + 70) / 2 = 65 s
    assert lines[-1].endswith("ETA 1m05s")


def test_the_first_finished_run_sets_the_overhead(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    a, b = _run(tmp_path, "a", epochs=2), str(tmp_path / "runs" / "b")
    lines: list[str] = []
    p = progress.Progress(2, 1, {a: 2, b: 3}, echo=lines.append)
    p.start(a, [b])
    clock.t += 26
    p.finish(a, {"status": "completed", "score": "80.00%", "elapsed": 26.0}, [b])
    # a: 26 s wall, 2 epochs of 10 s -> overhead 6 s; b: 6 + 3 x 10 = 36 s
    assert lines[-1] == "[1/2] a: completed 80.00% in 26.0s; elapsed 26s, ETA 36s"


def _study(tmp_path):
    sdir = tmp_path / "st"
    rows = [("slb_a", "slb", 91.0, "completed", 4), ("ste_a", "ste", 85.0, "completed", 4),
            ("dorefa_a", "dorefa", None, "interrupted", 2)]
    for rid, m, acc, st, n in rows:
        write_run(sdir, rid, method=m, variant=m, acc=acc, epochs=4, rows=n, status=st)
    manifest = [{"run_id": rid, "variant": m, "method": m, "w_bits": 1, "a_bits": 32,
                 "epochs": 4, "seed": 0} for rid, m, *_ in rows]
    (sdir / "manifest.json").write_text(json.dumps({"study": "st", "runs": manifest}))
    return sdir


def test_status_runs_lists_scores_epochs_states_sorted(tmp_path, capsys):
    sdir = _study(tmp_path)
    assert main(["status", str(sdir), "--runs", "--sort", "score"]) == 0
    out = capsys.readouterr().out.splitlines()
    at = next(i for i, ln in enumerate(out) if ln.startswith("run "))
    table = [ln.split() for ln in out[at + 1:at + 4]]
    assert table == [["slb_a", "slb", "W1/A32", "4/4", "completed", "91.00%"],
                     ["ste_a", "ste", "W1/A32", "4/4", "completed", "85.00%"],
                     ["dorefa_a", "dorefa", "W1/A32", "2/4", "interrupted", "-"]]
    assert main(["status", str(sdir), "--runs", "--sort", "run"]) == 0
    out = capsys.readouterr().out.splitlines()
    at = next(i for i, ln in enumerate(out) if ln.startswith("run "))
    assert [ln.split()[0] for ln in out[at + 1:at + 4]] == ["dorefa_a", "slb_a", "ste_a"]
    with pytest.raises(SystemExit, match="2"):
        main(["status", str(sdir), "--sort", "colour"])


def test_status_shows_only_log_paths_that_exist(tmp_path, capsys):
    sdir = _study(tmp_path)
    (sdir / "runs" / "dorefa_a" / "log.txt").unlink(missing_ok=True)
    assert main(["status", str(sdir)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "interrupted:" in ln)
    assert line.endswith("[no log yet]")
    (sdir / "runs" / "dorefa_a" / "log.txt").write_text("epoch 2 done\n")
    rows = status.status_counts(sdir)[1]
    assert status._last_error_line(sdir, {**rows[2], "executor": "local"})[1] == \
        str(sdir / "runs" / "dorefa_a" / "log.txt")


def test_ctrl_c_on_run_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    from harness.run import command

    def interrupted(cfg, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run", interrupted)
    out = tmp_path / "my run"
    assert main(["run", "--method", "ste", "--epochs", "1", "--out", str(out)]) == 130
    assert capsys.readouterr().err == (
        f"{out}: interrupted; resume it with `python -m harness run --resume '{out}'` (or "
        "re-run the same command)\n")


def test_an_interrupted_sweep_prints_its_resume_command(tmp_path, capsys, monkeypatch):
    from test_sweep import write_spec

    from harness.study import schedule

    def stopped(*a, **k):
        raise KeyboardInterrupt("SIGINT stopped 2 local worker process(es)")

    monkeypatch.setattr(schedule, "submit", stopped)
    spec = write_spec(tmp_path)
    assert main(["sweep", str(spec), "--executor", "local", "--results", str(tmp_path / "r"),
                 "--set", "grid.seeds=[0]", "--only", "variant=fp"]) == 130
    err = capsys.readouterr().err
    assert err == (f"interrupted: SIGINT stopped 2 local worker process(es); resume with "
                   f"`python -m harness sweep {spec} --executor local --results "
                   f"{tmp_path / 'r'} --set 'grid.seeds=[0]' --only variant=fp`\n")
