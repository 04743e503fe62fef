"""A study folder from someone else is safe to open, and no input is silently wrong (issue 25).

One regression test per case the second hostile probe broke (34; a few cases hold two tests),
each failing on the code before the fix (commit 2dba90f):

- writes never follow links, clean-ups delete only their own files (harness/files.py): the
  ONNX temp link, the log.txt link, `run --out` on a user's folder, the report's index and its
  figures link, cancel's process group, a study's linked run folder, linked source files;
- data at its real depth (harness/tasks/images.py): 16-bit PNGs in an image folder and an SR
  folder, a FIFO, a decompression bomb, SR test images smaller than the scale allows;
- limits: runs per study, JSON nesting (show, export, --resume, status, report, sweep), the
  snapshot's size and what it leaves out, model width, duplicate spec keys;
- OS faults and odd files are one line (report and export on a read-only or full disk, a
  TensorBoard path that is a file, outputs that are folders), and the low ones: SR ONNX order,
  an edited config.json, non-ASCII class names in any locale, bench/selftest bit widths,
  status's log paths.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import config, files, records
from harness.cli import main
from harness.errors import UserError
from harness.report import load_study
from harness.run import procs, resolve, source
from harness.study import spec, status
from harness.study.backends import base as backends_base
from harness.tasks.classify import data as classify_data
from harness.tasks.sr import data as sr_data
from tests import hostile_study
from tests.hostile_study import SPEC, one_line, study_runs

study, sdir = hostile_study.study, hostile_study.sdir   # the shared fixtures


def _interrupted(run: Path) -> None:
    """Mark a finished run interrupted: the next `run --resume` resumes (and logs)."""
    s = json.loads((run / "summary.json").read_text())
    s["status"] = "interrupted"
    (run / "summary.json").write_text(json.dumps(s))


def _victim(tmp_path: Path, text: str = "the user's own file\n") -> Path:
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- links, clean-ups

def test_export_onnx_never_writes_through_a_planted_temp_link(sdir, tmp_path):
    """1. A planted RUN/.deployed.onnx.tmp link is neither written through nor kept."""
    from harness.deploy.export import export_run

    run, victim = study_runs(sdir)[0], _victim(tmp_path)
    (run / ".deployed.onnx.tmp").symlink_to(victim)
    result = export_run(run, fmt="onnx", echo=lambda s: None)
    assert result.onnx is not None and result.onnx.ok
    assert victim.read_text() == "the user's own file\n"
    assert not (run / "deployed.onnx").is_symlink() and (run / "deployed.onnx").stat().st_size


def test_a_log_link_is_refused_before_the_run_writes_anything(sdir, tmp_path, capsys):
    """2. A RUN/log.txt link: the run refuses (one line, exit 2) and appends nothing."""
    run, victim = study_runs(sdir)[0], _victim(tmp_path)
    _interrupted(run)
    (run / "log.txt").unlink()
    (run / "log.txt").symlink_to(victim)
    assert main(["run", "--resume", str(run)]) == 2
    err = one_line(capsys)
    assert "log.txt" in err and "symbolic link" in err
    assert victim.read_text() == "the user's own file\n"
    with pytest.raises(UserError, match="symbolic link"):
        files.append_log(run, "never")
    assert victim.read_text() == "the user's own file\n"


def test_run_out_on_a_users_folder_is_refused_and_no_clean_up_takes_their_files(
        sdir, tmp_path, capsys):
    """3. `run --out` on a non-empty folder that is not a run folder is refused, and the
    stale-temp clean-up of a real run folder leaves a user's own `.important.tmp` alone."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".important.tmp").write_text("keep me")
    (mine / "notes.txt").write_text("keep me too")
    assert main(["run", "--method", "ste", "--epochs", "1", "--set", "model.width=0.25",
                 "--set", "data.subset_train=60", "--set", "progress=none",
                 "--out", str(mine)]) == 2
    assert "neither a run folder" in one_line(capsys)
    assert sorted(p.name for p in mine.iterdir()) == [".important.tmp", "notes.txt"]
    run = study_runs(sdir)[0]
    _interrupted(run)
    (run / ".important.tmp").write_text("keep me")
    assert main(["run", "--resume", str(run)]) == 0
    assert (run / ".important.tmp").read_text() == "keep me"


def test_report_prunes_only_its_own_files_inside_its_folder(sdir, tmp_path):
    """4. Names in report/.report-files.json that are absolute, or reach outside through a
    linked folder, are never deleted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "abs.png").write_text("absolute")
    (outside / "linked.png").write_text("through a link")
    report = sdir / "report"
    (report / "tables").mkdir(parents=True)
    (report / "tables" / "away").symlink_to(outside)
    (report / ".report-files.json").write_text(json.dumps(
        [str(outside / "abs.png"), "tables/away/linked.png"]))
    assert main(["report", str(sdir)]) == 0
    assert (outside / "abs.png").exists() and (outside / "linked.png").exists()


def test_report_never_writes_figures_through_a_linked_folder(sdir, tmp_path, capsys):
    """5. report/figures linked to an outside folder: refused, nothing written there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (sdir / "report").mkdir()
    (sdir / "report" / "figures").symlink_to(outside)
    assert main(["report", str(sdir)]) == 2
    assert "figures" in one_line(capsys)
    assert list(outside.iterdir()) == []


def test_cancel_signals_a_group_only_through_its_leader(sdir):
    """6. A crafted submissions.jsonl line naming a live process (right token) and another
    process group: cancel may signal that process, never the other group."""
    spawn = dict(start_new_session=True, stdout=subprocess.DEVNULL)
    decoy = subprocess.Popen(["sleep", "300"], **spawn)
    victim = subprocess.Popen(["sleep", "300"], **spawn)
    try:
        crafted = {**procs.identity(decoy.pid), "pgid": victim.pid}
        backends_base.append_submissions(sdir, [{"run_id": "ste_x", "job_id": "local-1",
                                                 "executor": "local", "sweep": crafted}])
        assert main(["cancel", str(sdir)]) == 0
        decoy.wait(timeout=60)  # the named process itself was the record's to stop
        assert victim.poll() is None, "cancel killed a process group it could not verify"
    finally:
        for p in (decoy, victim):
            p.kill()
            p.wait()


def test_a_run_folder_linked_out_of_the_study_is_corrupt_everywhere(sdir, tmp_path, capsys):
    """7. runs/<id> as a link to a folder outside: not counted by status or report, and the
    sweep refuses it (one line) instead of disagreeing with them."""
    run = study_runs(sdir)[0]
    away = tmp_path / "away"
    shutil.move(run, away)
    run.symlink_to(away, target_is_directory=True)
    counts, rows = status.status_counts(sdir)
    assert counts["completed"] == 1 and counts["corrupt"] == 1
    assert any("symbolic link" in r["detail"] for r in rows)
    st = load_study(sdir)
    assert list(st.included["run_id"]) == [study_runs(sdir)[1].name]
    assert main(["sweep", str(sdir.parent / "hostile.toml"), "--executor", "debug",
                 "--results", str(sdir.parent)]) == 2
    assert "symbolic link" in one_line(capsys)


def _fake_source(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "harness").mkdir(parents=True)
    (root / "methods").mkdir()
    (root / "harness" / "__init__.py").write_text("")
    (root / "methods" / "m.py").write_text("X = 1\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def test_snapshot_stores_a_linked_source_file_as_a_link(tmp_path):
    """8. A source file linked to a secret: the snapshot holds the link, never the secret."""
    root = _fake_source(tmp_path)
    secret = _victim(tmp_path, "root:x:0:0:secret\n")
    (root / "harness" / "passwd.py").symlink_to(secret)
    snap = source.snapshot(tmp_path / "snaps", root, warn=lambda s: None)
    copy = snap.path / "harness" / "passwd.py"
    assert copy.is_symlink() and os.readlink(copy) == str(secret)
    for p in snap.path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert "secret" not in p.read_text(errors="replace"), p


# --------------------------------------------------------------------------- data depth

def _gradient16(h: int = 8, w: int = 8) -> np.ndarray:
    return np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)


def _imagefolder(root: Path, write) -> Path:
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                write(root / split / c / f"{i}.png", i)
    return root


def test_16_bit_pngs_in_an_image_folder_keep_their_range(tmp_path):
    """9. 16-bit greyscale PNGs: scaled to 8 bits (v*255/65535, rounded), not clipped at
    255, and the fingerprint says so."""
    v = _gradient16()
    root = _imagefolder(tmp_path / "img", lambda p, i: Image.fromarray(v).save(p))
    dcfg = config.DataConfig(name="imagefolder", root=str(root))
    a = classify_data.load_arrays(dcfg)
    want = ((v.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    assert np.array_equal(a.x_train[0, 0], want) and np.array_equal(a.x_train[0, 2], want)
    assert (a.x_train == 255).mean() < 0.05
    assert "16-bit" in classify_data.fingerprint(a)["decoding"]


def test_16_bit_pngs_in_an_sr_folder_keep_their_range(tmp_path):
    """10. The same in a super-resolution HR folder."""
    root = tmp_path / "hr"
    for folder, n, (h, w) in (("train", 4, (24, 24)), ("test", 1, (20, 28))):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_gradient16(h, w)).save(root / folder / f"{i}.png")
    cfg = resolve.build(flags={"task": "sr", "method": "fp", "model.name": "srresnet",
                               "data.name": "hr_folder", "data.root": str(root),
                               "sr.patch_size": 8, "model.width": 0.125})
    data = sr_data.load(cfg, torch.device("cpu"))
    hr = data.train_hr[0]
    assert int(hr.max()) == 255 and int(hr.min()) == 0
    assert (hr == 255).float().mean() < 0.05  # was 99.6 % before
    assert "16-bit" in data.fingerprint["decoding"]


def test_a_spec_expanding_to_millions_of_runs_is_refused_before_expansion(tmp_path, capsys):
    """11. 2 variants x 1000 epoch budgets x 1000 seeds = 2 x 10^6 runs: refused at once,
    naming the count and --max-runs; --max-runs below a small grid's size refuses it too."""
    big = SPEC.replace("epochs = [1]", f"epochs = {list(range(1, 1001))}").replace(
        "seeds = [0, 1]", f"seeds = {list(range(1000))}") + '[variants.dorefa]\nmethod = "dorefa"\n'
    (tmp_path / "big.toml").write_text(big)
    with pytest.raises(spec.SpecErrors) as e:
        spec.load_spec(tmp_path / "big.toml")
    assert any("2,000,000 runs" in x and "--max-runs" in x for x in e.value.errors)
    (tmp_path / "small.toml").write_text(SPEC)
    assert main(["sweep", str(tmp_path / "small.toml"), "--dry-run", "--max-runs", "1",
                 "--results", str(tmp_path / "res")]) == 2
    assert "over the limit of 1 runs" in capsys.readouterr().err


def test_a_fifo_named_like_an_image_is_refused_not_opened(tmp_path):
    """12. A FIFO named x.jpg among the images: a one-line error before anything blocks on
    it. (A helper thread feeds the FIFO once, so broken code fails instead of hanging.)"""
    root = _imagefolder(tmp_path / "img", lambda p, i: Image.fromarray(
        np.full((8, 8, 3), 40 * i, np.uint8)).save(p))
    fifo = root / "train" / "a" / "x.jpg"
    os.mkfifo(fifo)
    done = threading.Event()

    def feed():  # unblocks a reader that opened the FIFO; harmless when nobody does
        while not done.wait(0.2):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                continue

    threading.Thread(target=feed, daemon=True).start()
    try:
        with pytest.raises(UserError, match="is a FIFO"):
            classify_data.load_arrays(config.DataConfig(name="imagefolder", root=str(root)))
    finally:
        done.set()


def _png_header(path: Path, w: int, h: int) -> None:
    """A PNG that declares w x h pixels (no pixel data): what a decompression bomb opens."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0,
                                                                        0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_an_image_of_400_megapixels_is_one_line(tmp_path, capsys):
    """13. A 20000x20000 PNG: `run` says so in one line (exit 2), no DecompressionBombError
    traceback."""
    root = _imagefolder(tmp_path / "img", lambda p, i: _png_header(p, 20000, 20000))
    assert main(["run", "--dataset", "imagefolder", "--data-root", str(root), "--epochs", "1",
                 "--set", "progress=none", "--out", str(tmp_path / "r")]) == 2
    assert "pixels" in one_line(capsys)


# --------------------------------------------------------------------------- JSON limits

def _nested(path: Path, depth: int = 200_000) -> None:
    path.write_text("[" * depth + "]" * depth)


def test_a_deeply_nested_summary_does_not_crash_show(sdir, capsys):
    """14. summary.json of 200,000 nested brackets: `show` reports the run corrupt."""
    run = study_runs(sdir)[0]
    _nested(run / "summary.json")
    assert main(["show", str(run)]) == 0
    assert "corrupt (summary.json unreadable" in capsys.readouterr().out


def test_a_deeply_nested_summary_does_not_crash_export(sdir, capsys):
    """15. ... `export` refuses in one line."""
    run = study_runs(sdir)[0]
    _nested(run / "summary.json")
    assert main(["export", str(run)]) == 2
    assert "nested more than" in one_line(capsys)


def test_a_deeply_nested_summary_is_repaired_by_resume(sdir):
    """16. ... `run --resume` repairs it from the checkpoint."""
    run = study_runs(sdir)[0]
    _nested(run / "summary.json")
    assert main(["run", "--resume", str(run)]) == 0
    assert records.load_run(run).status == "completed"


def test_a_deeply_nested_record_in_a_study_does_not_crash_status(sdir, capsys):
    """17. ... in one run of a study: `status` shows it corrupt, the others completed."""
    _nested(study_runs(sdir)[0] / "summary.json")
    _nested(study_runs(sdir)[1] / "config.json", 5000)
    assert main(["status", str(sdir)]) == 0
    out = capsys.readouterr().out
    assert "corrupt 2" in out and "nested more than" in out


def test_a_deeply_nested_record_in_a_study_does_not_crash_report(sdir, capsys):
    """18. ... `report` leaves it out and reports on the other run."""
    _nested(study_runs(sdir)[0] / "summary.json")
    assert main(["report", str(sdir)]) == 0
    md = (sdir / "report" / "report.md").read_text()
    assert "corrupt" in md


def test_a_deeply_nested_record_in_a_study_is_repaired_by_the_next_sweep(sdir):
    """19. ... and the next `sweep` repairs it (from its checkpoint): all completed."""
    _nested(study_runs(sdir)[0] / "summary.json")
    _nested(sdir / "submissions.jsonl", 100_000)
    assert main(["sweep", str(sdir.parent / "hostile.toml"), "--executor", "debug",
                 "--results", str(sdir.parent)]) == 0
    assert status.status_counts(sdir)[0]["completed"] == 2


# --------------------------------------------------------------------------- OS faults

def _failing_writes(monkeypatch, code: int) -> None:
    def refuse(path, write, root=None):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(files, "atomic_write", refuse)


def _record_bytes(sdir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted((sdir / "runs").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_report_on_a_read_only_or_full_disk_is_one_line(sdir, monkeypatch, capsys, code):
    """20, 21. `report` on a read-only or full disk: one line, exit 1, records untouched."""
    before = _record_bytes(sdir)
    _failing_writes(monkeypatch, code)
    assert main(["report", str(sdir)]) == 1
    assert os.strerror(code) in one_line(capsys)
    assert _record_bytes(sdir) == before


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_export_on_a_read_only_or_full_disk_is_one_line(sdir, monkeypatch, capsys, code):
    """22, 23. `export` likewise."""
    run = study_runs(sdir)[0]
    before = _record_bytes(sdir)
    _failing_writes(monkeypatch, code)
    assert main(["export", str(run)]) == 1
    assert os.strerror(code) in one_line(capsys)
    assert _record_bytes(sdir) == before and not (run / "deployed.pt").exists()


def test_a_tensorboard_path_that_is_a_file_is_one_line(sdir, capsys):
    """24. RUN/tensorboard is a file: refused before any work, naming loggers."""
    run = study_runs(sdir)[0]
    _interrupted(run)
    (run / "tensorboard").write_text("not a folder")
    before = (run / "summary.json").read_bytes()
    assert main(["run", "--resume", str(run), "--set", 'loggers=["tensorboard"]']) == 2
    assert "loggers" in one_line(capsys)
    assert (run / "summary.json").read_bytes() == before


def test_an_sr_test_image_smaller_than_the_scale_allows_is_one_line(tmp_path):
    """25. An SR test image too small to score at the scale: a UserError naming it (the
    training images were checked, the test images were not: ZeroDivisionError)."""
    root = tmp_path / "hr"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            root / "train" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).save(root / "test" / "t.png")
    cfg = resolve.build(flags={"task": "sr", "method": "fp", "model.name": "srresnet",
                               "data.name": "hr_folder", "data.root": str(root),
                               "sr.patch_size": 8, "sr.scale": 4, "model.width": 0.125})
    with pytest.raises(UserError, match="test image test/t is 3x3"):
        sr_data.load(cfg, torch.device("cpu"))


# --------------------------------------------------------------------------- snapshots

def _git_source(tmp_path: Path) -> Path:
    root = _fake_source(tmp_path)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    return root


def test_a_large_untracked_file_is_left_out_of_the_snapshot_and_the_diff(tmp_path):
    """26. An untracked 3 MB file in harness/: left out of the snapshot and of the run's
    source diff, with a warning, and recorded in SOURCE.json."""
    root = _git_source(tmp_path)
    (root / "harness" / "data.bin").write_bytes(b"\0" * 3 * 2**20)
    (root / "harness" / "new.py").write_text("Y = 2\n")
    warned: list[str] = []
    snap = source.snapshot(tmp_path / "snaps", root, warn=warned.append)
    assert not (snap.path / "harness" / "data.bin").exists()
    assert (snap.path / "harness" / "new.py").read_text() == "Y = 2\n"
    left = json.loads((snap.path / source.MARKER).read_text())["left_out"]
    assert [e["path"] for e in left] == ["harness/data.bin"] and warned
    diff = source.state(root).diff
    assert "new.py" in diff and "data.bin" not in diff and len(diff) < 10_000


def test_results_inside_the_source_are_never_snapshotted(tmp_path):
    """27. A study's results (with their own snapshots) inside harness/: left out, so
    snapshots do not grow sweep after sweep."""
    root = _git_source(tmp_path)
    study = root / "harness" / "res" / "s"
    (study / "snapshots" / "abc" / "harness").mkdir(parents=True)
    (study / "manifest.json").write_text("{}")
    (study / "snapshots" / "abc" / source.MARKER).write_text("{}")
    (study / "snapshots" / "abc" / "harness" / "x.py").write_text("Z = 3\n")
    snap = source.snapshot(tmp_path / "snaps", root, warn=lambda s: None)
    assert not (snap.path / "harness" / "res").exists()
    assert len(json.loads((snap.path / source.MARKER).read_text())["left_out"]) == 3


# --------------------------------------------------------------------------- low

def test_a_vanishing_model_width_is_refused(tmp_path, capsys):
    """28. model.width=1e-320 (a 64-parameter network): refused, naming the bound."""
    assert main(["run", "--set", "model.width=1e-320", "--out", str(tmp_path / "r")]) == 2
    assert "model.width" in one_line(capsys)


def test_a_spec_setting_one_key_twice_names_both_places(tmp_path):
    """29. optim = {lr = 0.05} and "optim.lr" = 0.1 in one recipe: an error naming both."""
    (tmp_path / "twice.toml").write_text(SPEC.replace("optim = { lr = 0.05 }",
                                                      'optim = { lr = 0.05 }\n"optim.lr" = 0.1'))
    with pytest.raises(spec.SpecErrors) as e:
        spec.load_spec(tmp_path / "twice.toml")
    assert any('optim.lr = 0.05' in x and '"optim.lr" = 0.1' in x for x in e.value.errors)


@pytest.mark.parametrize("name", ["deployed.pt", "deployed_packed.zip"])
def test_an_export_output_that_is_a_folder_is_one_line(sdir, capsys, name):
    """30, 31. deployed.pt or the packed zip is a folder: one line, exit 2, before work."""
    run = study_runs(sdir)[0]
    (run / name).mkdir()
    assert main(["export", str(run)]) == 2
    assert name in one_line(capsys)


def test_sr_onnx_export_is_refused_before_deployed_pt_is_rewritten(tmp_path, capsys):
    """32. `export --format onnx` of an SR run is refused before deployed.pt is touched."""
    root = tmp_path / "hr"
    rng = np.random.default_rng(0)
    for folder, n in (("train", 4), ("test", 1)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                root / folder / f"{i}.png")
    run = tmp_path / "sr"
    assert main(["run", "--set", "task=sr", "--model", "srresnet", "--dataset", "hr_folder",
                 "--data-root", str(root), "--set", "sr.patch_size=8", "--set",
                 "sr.blocks=1", "--set", "model.width=0.125", "--epochs", "1", "--batch-size",
                 "4", "--set", "progress=none", "--out", str(run)]) == 0
    (run / "deployed.pt").write_bytes(b"the deployed network of yesterday")
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert "classification runs" in capsys.readouterr().err
    assert (run / "deployed.pt").read_bytes() == b"the deployed network of yesterday"


def test_an_edited_config_is_named_as_edited(sdir, capsys):
    """33. A hand-edited config.json: export says it was edited (not "checkpoint.pt is
    missing or not final")."""
    run = study_runs(sdir)[0]
    cfg = json.loads((run / "config.json").read_text())
    cfg["optim"]["lr"] = 0.5
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["export", str(run)]) == 2
    assert "config.json was edited" in one_line(capsys)


def test_non_ascii_class_names_work_in_any_locale(tmp_path, monkeypatch):
    """34. Class folders whose names are not valid text in the locale (a Latin-1 byte, as
    LC_ALL=C or an old archive leaves them) and UTF-8 ones: the image cache's key works."""
    monkeypatch.setenv("SLBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "img"
    for split in ("train", "test"):
        for i, name in enumerate((os.fsdecode(b"caf\xe9"), "naïve")):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), 90 * i, np.uint8)).save(
                root / split / name / "0.png")
    dcfg = config.DataConfig(name="imagefolder", root=str(root))
    first = classify_data.load_arrays(dcfg)
    again = classify_data.load_arrays(dcfg)  # from the cache
    assert np.array_equal(first.x_train, again.x_train) and len(first.classes) == 2
    assert list((tmp_path / "cache").glob("images-*.npy"))


def test_selftest_refuses_bench_bits_no_method_has(tmp_path, capsys):
    """35. `selftest --bench-bits 99`: refused before any work, naming the flag."""
    assert main(["selftest", "--device", "cpu", "--dataset", "digits", "--model", "small_cnn",
                 "--width", "0.25", "--methods", "slb", "--bench-bits", "99", "--bench-rounds",
                 "1", "--bench-steps", "1", "--skip", "train", "switches", "epoch", "ddp",
                 "compile", "--out", str(tmp_path)]) == 2
    assert "--bench-bits" in capsys.readouterr().err


def test_bench_refuses_bits_a_named_method_cannot_run(tmp_path, capsys):
    """36. `bench --methods slb --bits 99`: refused, not SLB silently dropped."""
    assert main(["bench", "--methods", "slb", "--bits", "99", "--model", "small_cnn",
                 "--width", "0.25", "--rounds", "1", "--steps", "1", "--warmup", "0",
                 "--batch-size", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--bits" in err and "slb" in err


def test_status_points_local_runs_at_logs_that_exist(sdir, capsys):
    """37. A failed run of a local sweep: status's [log: ...] names a path that exists
    (not a submitit/ folder a local study never has)."""
    run = study_runs(sdir)[0]
    s = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**s, "status": "failed", "error": "boom"}))
    backends_base.append_submissions(sdir, [{"run_id": run.name, "job_id": "local-4242",
                                             "executor": "local", "sweep": None}])
    assert main(["status", str(sdir)]) == 0
    logs = [line.rsplit("[log: ", 1)[1].rstrip("]") for line in
            capsys.readouterr().out.splitlines() if "[log: " in line]
    assert logs and all(Path(p).exists() for p in logs), logs


# --------------------------------------------------------------------------- own pass

def test_own_pass_no_writes_through_links_out_of_a_study(sdir, tmp_path, capsys):
    """local-logs/ and snapshots/ linked out of the study: refused before anything is
    written there; report.md as a link: refused before any table is written."""
    spec_path = sdir.parent / "hostile.toml"
    spec_path.write_text(SPEC.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    for name in ("snapshots", "local-logs"):
        outside = tmp_path / f"outside-{name}"
        outside.mkdir()
        (sdir / name).symlink_to(outside)
        assert main(["sweep", str(spec_path), "--executor", "local", "--results",
                     str(sdir.parent)]) == 2
        assert "symbolic link" in capsys.readouterr().err and not any(outside.iterdir())
        (sdir / name).unlink()
    victim = _victim(tmp_path)
    (sdir / "report").mkdir()
    (sdir / "report" / "report.md").symlink_to(victim)
    assert main(["report", str(sdir)]) == 2
    assert "report.md" in one_line(capsys) and victim.read_text() == "the user's own file\n"
    assert not any((sdir / "report" / "tables").iterdir())


def test_own_pass_fifos_and_odd_bytes_in_records_never_hang_or_crash(sdir, capsys):
    """metrics.csv a FIFO (pandas would block), checkpoint.pt a FIFO (torch.load would),
    metrics.csv not UTF-8 (show), the frozen study.toml a FIFO or not UTF-8 (report)."""
    run, other = study_runs(sdir)
    (run / "metrics.csv").unlink()
    os.mkfifo(run / "metrics.csv")
    assert records.load_run(run).problem == "metrics.csv is not a regular file"
    _interrupted(other)
    (other / "checkpoint.pt").unlink()
    os.mkfifo(other / "checkpoint.pt")
    assert main(["run", "--resume", str(other)]) == 2
    assert "checkpoint.pt" in one_line(capsys)
    (other / "checkpoint.pt").unlink()
    (other / "metrics.csv").write_bytes(b"epoch,\xff\xfe\n1,2\n")
    assert main(["show", str(other)]) == 0
    for bad in ("fifo", b"name = \"\xff\xfe\"\n"):
        (sdir / "study.toml").unlink()
        os.mkfifo(sdir / "study.toml") if bad == "fifo" else (sdir / "study.toml").write_bytes(bad)
        assert main(["report", str(sdir)]) == 2
        assert "study.toml" in one_line(capsys)


def test_own_pass_a_reference_csv_that_is_a_device_is_not_read(sdir, capsys):
    """study.toml's [report] reference naming /dev/zero: refused, never read forever; and
    `report --jobs -3` is refused."""
    (sdir / "study.toml").write_text(SPEC.replace('[report]', '[report]\nreference = "/dev/zero"'))
    assert main(["report", str(sdir)]) == 2
    assert "/dev/zero" in one_line(capsys)
    assert main(["report", str(sdir), "--jobs", "-3"]) == 2
    assert "--jobs" in one_line(capsys)


def test_own_pass_deep_nesting_on_the_command_line_is_one_line(tmp_path, capsys):
    """A --config JSON file and a --set value nested 100,000 levels: one line, no
    RecursionError traceback."""
    (tmp_path / "c.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["run", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "r")]) == 2
    assert "nested too deeply" in one_line(capsys)
    assert main(["run", "--set", "seed=" + "[" * 100_000 + "]" * 100_000,
                 "--out", str(tmp_path / "r")]) == 2
    assert "seed" in one_line(capsys)


def test_own_pass_cancel_never_signals_init(sdir, monkeypatch):
    """A crafted record naming PID 1 with its real start token (readable by anyone): cancel
    sends it nothing (signals recorded, none delivered)."""
    backends_base.append_submissions(sdir, [{"run_id": "x", "job_id": "local-1",
                                             "executor": "local", "sweep": procs.identity(1)}])
    sent = []
    monkeypatch.setattr(os, "killpg", lambda pg, sig: sent.append(("killpg", pg, sig)))
    real_kill = os.kill
    monkeypatch.setattr(os, "kill", lambda pid, sig: real_kill(pid, sig) if sig == 0
                        else sent.append(("kill", pid, sig)))
    assert main(["cancel", str(sdir)]) == 0
    assert not sent, sent


def test_own_pass_a_source_file_name_that_is_not_utf8_is_snapshotted(tmp_path):
    """A Latin-1 file name in the source: git quotes such names unless asked not to, and
    they were left out of the snapshot without a word (or failed to decode)."""
    root = _git_source(tmp_path)
    name = os.fsdecode(b"caf\xe9.py")
    (root / "harness" / name).write_text("A = 1\n")
    snap = source.snapshot(tmp_path / "snaps", root, warn=lambda s: None)
    assert (snap.path / "harness" / name).read_text() == "A = 1\n"


def test_own_pass_resuming_an_edited_config_names_the_edit(sdir, capsys):
    """`run --resume` of a run whose config.json was edited by hand: the error says the file
    was edited (it said the folder "holds a run with a different config", hash vs hash)."""
    run = study_runs(sdir)[0]
    cfg = json.loads((run / "config.json").read_text())
    cfg["optim"]["lr"] = 0.5
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["run", "--resume", str(run)]) == 2
    assert "config.json was edited" in one_line(capsys)
