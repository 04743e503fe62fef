"""A third hostile pass (issue 25's closing note; the table is /work/issues/hostile_pass.md):
one regression test per case that broke, each failing on the code before its fix."""
from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import records
from harness.cli import main
from harness.study.backends import slurm
from tests import hostile_study
from tests.hostile_study import SPEC, one_line, study_runs

study, sdir = hostile_study.study, hostile_study.sdir   # the shared fixtures


def _submit(sdir: Path, **entry) -> None:
    with open(sdir / "submissions.jsonl", "a") as f:
        f.write(json.dumps({"run_id": study_runs(sdir)[0].name, "executor": "local", "sweep": None,
                            **entry}) + "\n")


def test_submission_lines_of_the_wrong_types_are_skipped(sdir, capsys):
    """job_id 42, [1, 2], a sweep that is a string: status and cancel crashed
    (AttributeError on .split); such lines are skipped like torn ones."""
    subs = (sdir / "submissions.jsonl").read_text()
    for bad in ({"job_id": 42}, {"job_id": [1, 2]}, {"job_id": "local-1", "sweep": "x"}):
        (sdir / "submissions.jsonl").write_text(subs)
        _submit(sdir, **bad)  # the run's last line: it would be the one that counts
        assert main(["status", str(sdir)]) == 0
        assert "jobs: debug-" in capsys.readouterr().out  # the good lines still count
        assert main(["cancel", str(sdir)]) == 0


def test_cancel_when_the_scheduler_cannot_be_asked_is_one_line(sdir, capsys, monkeypatch):
    """A SLURM job recorded, sacct failing (no controller): cancel raised JobQueryError with a
    traceback; now one line, exit 1, saying nothing of those runs was cancelled."""
    _submit(sdir, job_id="123456_0", executor="slurm")

    def refuse(cmd, ok_codes=(0,)):
        raise slurm.JobQueryError("sacct exited 1: sacct: fatal:\nUnable to contact controller")
    monkeypatch.setattr(slurm, "_query", refuse)
    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/" + name)
    assert main(["cancel", str(sdir)]) == 1
    err = one_line(capsys)
    assert "cannot ask slurm about 1 run(s)" in err and "none of them was cancelled" in err


def _imagefolder(root: Path, classes=("a", "b"), n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    return root


IMAGEFOLDER_RUN = ["run", "--method", "fp", "--model", "small_cnn", "--set", "model.width=0.25",
                   "--dataset", "imagefolder", "--batch-size", "4", "--epochs", "1",
                   "--set", "data.workers=0"]


def test_an_image_folder_run_trains(tmp_path):
    """Every image-folder run crashed (TypeError: expected np.ndarray (got tuple)): the
    decoding notes were passed positionally into Arrays' x_val slot since the validation
    split's fields came before them; the notes were lost from the fingerprint too."""
    root = _imagefolder(tmp_path / "img")
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(ramp).save(root / "train" / "a" / "0.png")  # one 16-bit greyscale image
    assert main([*IMAGEFOLDER_RUN, "--data-root", str(root), "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    assert "train: " in summary["data_fingerprint"]["decoding"]
    assert "16-bit" in summary["data_fingerprint"]["decoding"]


def test_an_empty_checkpoint_is_ignored_and_the_run_starts_over(sdir, capsys):
    """An interrupted run whose checkpoint.pt is 0 bytes (a copy cut short): resuming raised
    IndexError while composing the "checkpoint unreadable" message (the error's text is
    empty); it now starts over, says why, and completes."""
    run = study_runs(sdir)[0]
    s = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**s, "status": "interrupted"}))
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["run", "--resume", str(run)]) == 0
    assert "checkpoint unreadable" in (run / "log.txt").read_text()
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


TINY_RUN = ["run", "--method", "ste", "--model", "small_cnn", "--set", "model.width=0.25",
            "--set", "data.subset_train=120", "--set", "data.subset_test=60", "--batch-size", "40",
            "--epochs", "1"]


def test_a_refused_run_does_not_lock_its_folder_to_the_refused_config(tmp_path, capsys):
    """`--set data.val_split=1.0` is refused after the folder and its config.json are made;
    the corrected command was then refused too ("holds a run with a different config
    (data.val_split = 1.0 there, 0.0 here)") until the user deleted the folder by hand. A
    folder whose run never started takes the new config; one that started is still refused."""
    out = str(tmp_path / "r")
    assert main([*TINY_RUN, "--set", "data.val_split=1.0", "--out", out]) == 2
    assert "data.val_split" in one_line(capsys)
    failed = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (failed["status"], failed["epochs_completed"]) == ("failed", 0)
    assert main([*TINY_RUN, "--out", out]) == 0
    assert "records are corrupt" not in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["val_split"] == 0.0
    capsys.readouterr()
    before = (tmp_path / "r" / "metrics.csv").read_text()
    assert main([*TINY_RUN, "--set", "optim.lr=0.07", "--out", out]) == 2
    assert "different config" in one_line(capsys)
    assert (tmp_path / "r" / "metrics.csv").read_text() == before


def test_a_failed_checkpoint_write_is_one_line(tmp_path, capsys):
    """A file size limit (`ulimit -f`, as a full disk would) hit while checkpoint.pt is
    written: torch's zip writer turned the failed write into "RuntimeError: unexpected pos"
    with a traceback; now the OSError says what happened, one line, exit 1, no temp file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ
    try:
        code = main([*TINY_RUN, "--out", str(tmp_path / "r")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 1
    err = one_line(capsys)
    assert "File too large" in err and "ulimit -f" in err
    assert not [p for p in (tmp_path / "r").iterdir() if "slbench-tmp" in p.name]


def test_a_truncated_image_is_named(tmp_path, capsys):
    """Half a PNG in an image folder: the error said only "image file is truncated" under
    data.root, leaving the user to search thousands of files; it names the file."""
    root = _imagefolder(tmp_path / "img")
    png = root / "train" / "b" / "3.png"
    png.write_bytes(png.read_bytes()[:120])
    assert main([*IMAGEFOLDER_RUN, "--data-root", str(root), "--out", str(tmp_path / "r")]) == 2
    err = one_line(capsys)
    assert "train/b/3.png" in err and "cannot be decoded" in err


def test_a_manifest_of_the_wrong_shape_is_a_note_in_the_report(sdir):
    """manifest.json with "runs": 5, or a run entry 5: status said it was corrupt, report
    crashed (TypeError: 'int' object is not iterable; AttributeError: 'int' object has no
    attribute 'get'); the report now says so, as for an unreadable manifest."""
    manifest = json.loads((sdir / "manifest.json").read_text())
    for runs in (5, manifest["runs"] + [5], manifest["runs"] + [{"run_id": 7}]):
        (sdir / "manifest.json").write_text(json.dumps({**manifest, "runs": runs}))
        assert main(["report", str(sdir), "--jobs", "1"]) == 0
        report = (sdir / "report" / "report.md").read_text()
        assert "manifest.json is not a study manifest" in report


@pytest.mark.parametrize("entry, code, said", [
    ('{ variant = "stee", reason = "too slow" }', 2,
     "error: " + "variant 'stee' is not defined under [variants]; did you mean 'ste'?"),
    ("{ bits = [2, 32] }", 0, "warning: " + "bits [2, 32] is no cell of the study"),
    ("{ epochs = 8 }", 0, "warning: " + "epochs 8 is no budget of [grid] epochs [1]"),
])
def test_an_exclude_that_names_nothing_is_said(tmp_path, capsys, entry, code, said):
    """A [grid] exclude naming a variant, cell or budget the spec lacks was accepted and
    excluded nothing: the runs it meant to leave out were submitted in silence. A variant
    that does not exist is an error; a cell or budget the grid lacks (left over from
    narrowing the grid, say) a warning."""
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(SPEC.replace("seeds = [0, 1]", f"seeds = [0, 1]\nexclude = [{entry}]"))
    assert main(["sweep", str(spec_path), "--dry-run", "--results", str(tmp_path / "o")]) == code
    err = capsys.readouterr().err
    where, what = said.split(": ", 1)
    assert any(line.startswith(where) and f"grid.exclude[0]: {what}" in line
               for line in err.splitlines()) and "Traceback" not in err, err


BENCH = ["bench", "--model", "small_cnn", "--rounds", "1", "--steps", "1", "--warmup", "0",
         "--methods", "fp", "--bits", "1"]


def test_bench_says_each_mistake_once_and_checks_out_before_timing(tmp_path, capsys,
                                                                   monkeypatch):
    """`bench --batch-size 0` printed its error twice; `bench --out FILE` was refused only
    after every variant was timed, as "File exists (fix it)"."""
    assert main([*BENCH, "--batch-size", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--batch-size: must be >= 1, got 0" in one_line(capsys)
    (tmp_path / "f").write_text("x")
    from harness.tools import bench
    monkeypatch.setattr(bench, "run_bench", lambda args: pytest.fail("timed before --out"))
    assert main([*BENCH, "--out", str(tmp_path / "f")]) == 2
    assert "--out" in one_line(capsys) and (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("rows, said", [
    ("slb,1,32,92.1,extra\nste,1,32,50\n", "a row has more fields than the header"),
    ("ste,1,32,50\nslb,1,32,abc\n", "top1 'abc' on data row 2 is not a number"),
])
def test_a_malformed_reference_csv_is_one_line(sdir, capsys, rows, said):
    """A first data row with extra fields made pandas shift every column (method := "32",
    top1 := "extra"), so every reported number vanished in silence; a top1 of "abc" was
    dropped in silence. Both are one line naming the file."""
    ref = sdir / "ref.csv"
    ref.write_text("method,w_bits,a_bits,top1\n" + rows)
    assert main(["report", str(sdir), "--jobs", "1", "--reference", str(ref)]) == 2
    err = one_line(capsys)
    assert "ref.csv" in err and said in err


def test_in_place_refuses_a_link_at_either_level(tmp_path):
    """records.in_place (two lstat calls) answers as the resolved-path comparison would."""
    study, elsewhere = tmp_path / "study", tmp_path / "elsewhere"
    (study / "runs" / "a").mkdir(parents=True)
    (elsewhere / "runs" / "b").mkdir(parents=True)
    (study / "runs" / "b").symlink_to(elsewhere / "runs" / "b")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "runs").symlink_to(study / "runs")
    assert records.in_place(study / "runs" / "a")
    assert not records.in_place(study / "runs" / "b")
    assert not records.in_place(linked / "runs" / "a")
    assert not records.in_place(study / "a")  # not a study's runs/<id>


def test_a_command_from_a_deleted_folder_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """U05: torch's MKL failed to load from a deleted working folder; now one line, exit 2."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "current folder no longer exists" in err


def test_run_on_an_out_another_process_trains_is_exit_2(tmp_path, monkeypatch, capsys):
    """U02: the lock refuses a second `run --out SAME` (rundir.run returns status running,
    tests/test_sweep.py); the command says so as a mistake in what was asked, not a failure."""
    from harness.run import command

    monkeypatch.setattr(command, "run", lambda cfg, out: records.RunSummary(
        status="running", epochs=1, error="run directory locked by another process"))
    out = tmp_path / "r"
    assert main(["run", "--out", str(out), "--set", "progress=none", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out:") and "another process" in err and err.count("\n") == 1
