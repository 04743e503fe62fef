"""Records you can trust: nothing in a study runs code, escapes its directory, or reaches a
table damaged.

- hostile records: every damaged record is "corrupt" with its reason, for `status` (run
  state), `sweep` (repairs it from the checkpoint) and `report` (left out) alike;
- crafted pickles in checkpoint.pt, deployed.pt and SLB's init_from never execute;
- names that try to leave the study directory are refused before anything is written;
- the image cache notices changed and corrupt files;
- bad values from the CLI, config files and specs are one-line errors before any work;
- a disk that fills up leaves the last good records; stale temp files are cleaned.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, metrics_without_timing, tiny_cfg
from harness import config, files, records
from harness.cli import main
from harness.errors import UserError
from harness.report import load_study
from harness.run import resolve, rundir, trainer
from harness.study import spec, status, sweep
from harness.study.backends import base as backends_base
from harness.tasks.classify import data as data_mod

SPEC = """
[study]
name = "trust"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 200, subset_test = 100 }
optim = { lr = 0.05 }
batch_size = 50
[grid]
bits = [[1, 32]]
epochs = [2]
seeds = [0, 1, 2]
[variants.ste]
method = "ste"
[report]
ours = "ste"
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A finished 3-run study, copied fresh for every test that damages it."""
    root = tmp_path_factory.mktemp("trust")
    (root / "trust.toml").write_text(SPEC)
    assert main(["sweep", str(root / "trust.toml"), "--executor", "debug", "--results",
                 str(root / "res")]) == 0
    return root / "res" / "trust"


@pytest.fixture
def sdir(study, tmp_path) -> Path:
    copy = tmp_path / "trust"
    shutil.copytree(study, copy)
    (tmp_path / "trust.toml").write_text(SPEC)
    return copy


def _runs(sdir: Path) -> list[Path]:
    return sorted((sdir / "runs").iterdir())


def _edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _truncate(run: Path) -> None:
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(lines[:-1]) + "\n")


def _cell(run: Path, column: str, value: str) -> None:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[-1].split(",")
    row[header.index(column)] = value
    (run / "metrics.csv").write_text("\n".join(lines[:-1] + [",".join(row)]) + "\n")


HOSTILE = [  # (name, damage, words of the reason)
    ("truncated metrics", _truncate, "rows for"),
    ("empty metrics", lambda r: (r / "metrics.csv").write_text(""), "metrics.csv"),
    ("text in a metrics cell", lambda r: _cell(r, "test_acc", "abc"), "not a finite number"),
    ("nan in the last row", lambda r: _cell(r, "train_loss", "nan"), "not a finite number"),
    ("summary is a list", lambda r: (r / "summary.json").write_text("[]"), "JSON object"),
    ("config is a string", lambda r: (r / "config.json").write_text('"str"'), "not a run config"),
    ("accuracy is text", lambda r: _edit_json(r / "summary.json", final_test_acc="abc"),
     "final_test_acc"),
    ("accuracy out of range", lambda r: _edit_json(r / "summary.json", final_test_acc=1e9),
     "not a test accuracy"),
    ("bare NaN accuracy", lambda r: (r / "summary.json").write_text(
        (r / "summary.json").read_text().replace('"final_test_acc": ', '"final_test_acc": NaN, '
                                                 '"x": ')), "final_test_acc"),
    ("best disagrees", lambda r: _edit_json(r / "summary.json", best_test_acc=1.0),
     "disagrees"),
    ("summary of another config", lambda r: _edit_json(r / "summary.json",
                                                       config_hash="0" * 16), "belongs to"),
    ("final accuracy not the last epoch's", lambda r: _edit_json(
        r / "summary.json", final_test_acc=99.5, best_test_acc=99.5), "not the last epoch's"),
]


def test_a_final_score_may_differ_from_the_last_epoch_only_when_the_method_says_why(sdir):
    run = _runs(sdir)[0]
    last = float(pd.read_csv(run / "metrics.csv")["test_acc"].iloc[-1])
    _edit_json(run / "summary.json", final_test_acc=last - 0.5)
    assert "not the last epoch's" in records.load_run(run).problem
    assert json.loads((run / "summary.json").read_text())["changed_after_training"] == ""
    _edit_json(run / "summary.json", changed_after_training="BN recalibrated")
    rec = records.load_run(run)
    assert rec.status == "completed", rec.problem
    assert rec.summary.changed_after_training == "BN recalibrated"
    # a record from before the trainer said (no such key) is not held to it: an SLB
    # recal_end run of then stays completed
    d = json.loads((run / "summary.json").read_text())
    del d["changed_after_training"]
    (run / "summary.json").write_text(json.dumps(d))
    assert records.load_run(run).status == "completed"


@pytest.mark.parametrize("name,damage,reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_record_is_corrupt_everywhere(sdir, name, damage, reason):
    run = _runs(sdir)[0]
    damage(run)
    rec = records.load_run(run)
    assert rec.status == "corrupt" and reason in rec.problem, rec.problem
    state, detail = status.run_state(run, None)
    assert state == "corrupt" and reason in detail
    counts, _ = status.status_counts(sdir)
    assert counts["corrupt"] == 1 and counts["completed"] == 2
    st = load_study(sdir, jobs=1)
    row = st.runs.set_index("run_id").loc[run.name]
    assert not row["included"] and reason in row["reason"]
    assert len(st.included) == 2


@pytest.mark.parametrize("name,damage", [(h[0], h[1]) for h in HOSTILE[:5]],
                         ids=[h[0] for h in HOSTILE[:5]])
def test_the_next_sweep_repairs_a_corrupt_run(sdir, name, damage, capsys):
    run = _runs(sdir)[0]
    good = metrics_without_timing(run)
    damage(run)
    assert main(["sweep", str(sdir.parent / "trust.toml"), "--executor", "debug",
                 "--results", str(sdir.parent)]) == 0
    assert "to submit: 1 runs" in capsys.readouterr().out
    assert records.load_run(run).status == "completed"
    if name != "config is a string":  # the config is rewritten from the spec, then repaired
        assert metrics_without_timing(run).equals(good)


def test_only_manifest_runs_count_and_copies_are_excluded(sdir):
    a, b = _runs(sdir)[:2]
    shutil.copytree(a, sdir / "runs" / "ste_copy_of_a_seed")            # a copied seed
    other = sdir / "runs" / "foreign_w1a32_e2_s0_deadbeef"              # another study's run
    shutil.copytree(b, other)
    _edit_json(other / "config.json", meta={**json.loads((b / "config.json").read_text())["meta"],
                                            "study": "elsewhere"})
    st = load_study(sdir, jobs=1)
    rows = st.runs.set_index("run_id")
    assert not rows.loc["ste_copy_of_a_seed", "included"]
    assert "manifest" in rows.loc["ste_copy_of_a_seed", "reason"]
    assert not rows.loc[other.name, "included"]
    assert len(st.included) == 3 and st.groups  # n = 3, not 5
    assert next(iter(st.groups.values()))["summary"].n == 3
    counts, rows_ = status.status_counts(sdir)
    assert counts["completed"] == 3 and len(rows_) == 3


class _Exploit:
    """Unpickling this runs `touch FILE` (what a crafted checkpoint would do)."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_crafted_checkpoint_never_runs_and_the_run_restarts(tmp_path):
    cfg = tiny_cfg("ste", epochs=1)
    pwned = tmp_path / "pwned"
    run = tmp_path / "run"
    rundir.prepare_run_dir(run, cfg)
    torch.save({"config_hash": resolve.config_hash(cfg), "x": _Exploit(pwned)},
               run / "checkpoint.pt")
    s = rundir.run(cfg, run, echo=lambda m: None)
    assert s.status == "completed" and not pwned.exists()
    assert "checkpoint unreadable" in (run / "log.txt").read_text()


def test_crafted_deployed_and_init_from_files_never_run(tmp_path):
    from harness.deploy.export import load_deployed

    pwned = tmp_path / "pwned"
    bad = tmp_path / "deployed.pt"
    torch.save({"format": "slbench-deployed/1", "x": _Exploit(pwned)}, bad)
    with pytest.raises(Exception):
        load_deployed(bad, torch.device("cpu"))
    with pytest.raises(UserError, match="method.init_from"):
        tiny_cfg("slb", sets=["method.init=from_fp", f"method.init_from={bad}"])
        trainer.Trainer(tiny_cfg("slb", sets=["method.init=from_fp", f"method.init_from={bad}"]),
                      tmp_path / "r").build()
    assert not pwned.exists()


def test_a_checkpoint_of_another_config_is_ignored_not_fatal(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    rundir.run(tiny_cfg("ste", epochs=1), a, echo=lambda m: None)
    cfg_b = tiny_cfg("ste", epochs=2)
    rundir.prepare_run_dir(b, cfg_b)
    shutil.copy2(a / "checkpoint.pt", b / "checkpoint.pt")
    said = []
    s = rundir.run(cfg_b, b, echo=said.append)
    assert s.status == "completed" and s.epochs_completed == 2
    assert any("belongs to config" in m and "starting from scratch" in m for m in said)


@pytest.mark.parametrize("variant", ["../../../escaped", "/tmp/x", ".hidden", "a/b"])
def test_names_that_leave_the_study_are_refused(tmp_path, variant):
    p = tmp_path / "s.toml"
    p.write_text(SPEC + f'[variants."{variant}"]\nmethod = "dorefa"\n')
    with pytest.raises(spec.SpecErrors, match="becomes a folder name"):
        spec.load_spec(p)
    assert main(["sweep", str(p), "--executor", "debug", "--results", str(tmp_path / "res")]) == 2
    assert not (tmp_path / "res").exists() and not Path("/tmp/x").exists()
    with pytest.raises(UserError, match="leave the study"):
        sweep.run_dir_of(tmp_path / "res" / "s", "../../x")


def test_a_variant_name_that_makes_run_ids_too_long_is_refused(tmp_path, capsys):
    """Run ids are folder names held to SAFE_NAME's 100 characters: a 90-character variant
    name (run ids of 111) is a one-line spec error naming the variant and the limit."""
    name = "v" * 90
    p = tmp_path / "s.toml"
    p.write_text(SPEC + f'[variants.{name}]\nmethod = "dorefa"\n')
    with pytest.raises(spec.SpecErrors) as e:
        spec.load_spec(p)
    (line,) = e.value.errors
    assert line.startswith(f"{p}: variants.{name}: the name makes run ids of up to 111 "
                           f"characters (e.g. '{name}_w1a32_e2_s")
    assert line.endswith("over the limit of 100; shorten the variant name to at most 79 "
                         "characters")
    p.write_text(SPEC + f'[variants.{"v" * 79}]\nmethod = "dorefa"\n')
    assert max(len(r.run_id) for r in spec.load_spec(p).runs) == 100
    p.write_text(SPEC + f'[variants.{name}]\nmethod = "dorefa"\n')
    assert main(["sweep", str(p), "--dry-run", "--results", str(tmp_path / "res")]) == 2
    assert "over the limit of 100" in capsys.readouterr().err


def test_status_never_drops_a_manifest_entry(sdir, capsys):
    """A run with a long id (made before ids were held to 100 characters) is classified like
    any other; entries that name no run directory are counted corrupt with the reason."""
    old = _runs(sdir)[0]
    long_id = "v" * 90 + old.name[3:]
    old.rename(sdir / "runs" / long_id)
    manifest = json.loads((sdir / "manifest.json").read_text())
    for r in manifest["runs"]:
        if r["run_id"] == old.name:
            r["run_id"] = long_id
    manifest["runs"] += [5, {"run_id": "../../x"}]
    (sdir / "manifest.json").write_text(json.dumps(manifest))
    counts, rows = status.status_counts(sdir)
    assert len(long_id) > 100 and counts["completed"] == 3 and counts["corrupt"] == 2
    assert long_id in {r["run_id"] for r in rows if r["state"] == "completed"}
    bad = [r["detail"] for r in rows if r["state"] == "corrupt"]
    assert bad == ["manifest.json runs[3] names no run directory ('5' is not a plain folder "
                   "name); re-run the sweep command to rebuild the manifest",
                   "manifest.json runs[4] names no run directory ('../../x' is not a plain "
                   "folder name); re-run the sweep command to rebuild the manifest"]
    assert main(["status", str(sdir)]) == 0
    out = capsys.readouterr().out
    assert f"{sdir}: 3/5 runs done: completed 3, corrupt 2" in out
    assert "corrupt: ../../x: manifest.json runs[4] names no run directory" in out


def test_the_image_cache_notices_changed_and_corrupt_files(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("SLBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    dcfg = config.DataConfig(name="imagefolder", root=str(root), augment=False)
    first = data_mod.load_arrays(dcfg).x_train.copy()
    assert list((tmp_path / "cache").glob("images-*.npy"))          # cached
    target = root / "train" / "a" / "0.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(target)      # the pixels change
    os.utime(target, ns=(1, 1))
    second = data_mod.load_arrays(dcfg).x_train
    assert not np.array_equal(first, second) and second[0].sum() == 0
    target.write_bytes(b"garbage")                                    # the file breaks
    with pytest.raises(UserError, match="data.root"):
        data_mod.load_arrays(dcfg)


RUN = ["run", "--method", "ste", "--epochs", "1", "--set", "data.subset_train=100",
       "--set", "model.width=0.25", "--set", "progress=none"]
BAD_VALUES = [  # (arguments, field named by the error)
    (["--seed", "-1"], "seed"), (["--seed", str(2**32)], "seed"),
    (["--set", "model.width=nan"], "model.width"), (["--set", "model.width=inf"], "model.width"),
    (["--set", "model.width=1e7"], "model.width"), (["--set", "data.subset_train=1"],
                                                    "data.subset_train"),
    (["--set", "optim.gamma=-10"], "optim.gamma"), (["--epochs", "0"], "epochs"),
    (["--set", "optim.lr=inf"], "optim.lr"), (["--batch-size", "0"], "batch_size"),
    (["--set", "optim.betas=[0.9]"], "optim.betas"), (["--set", 'loggers=["x"]'], "loggers"),
    (["--set", "model=3"], "model"), (["--set", "data.eval_batch_size=0"],
                                      "data.eval_batch_size"),
]


@pytest.mark.parametrize("args,field", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_one_line_errors_before_any_work(tmp_path, capsys, args, field):
    out = tmp_path / "r"
    assert main(RUN + args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {field}:"), err
    assert not out.exists()


def test_range_errors_print_integers_exactly(tmp_path, capsys):
    assert main(RUN + ["--seed", str(2**32), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("error: seed: must be < 4294967296, got "
                                                "4294967296; is it a typo?")
    assert main(RUN + ["--set", "data.subset_train=2000000000", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("error: data.subset_train: must be <= 1000000000, "
                                                "got 2000000000; is it a typo?")
    assert main(RUN + ["--set", "model.width=1e7", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("error: model.width: must be <= 64, got 1e+07; "
                                                "is it a typo?")        # floats stay short


def test_a_one_class_image_folder_is_refused_before_any_work(tmp_path, capsys):
    """data._list_images (called by check_root): a classifier needs at least two classes."""
    from PIL import Image

    root = tmp_path / "imgs"
    for split in ("train", "test"):
        (root / split / "only").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / "only" / "0.png")
    out = tmp_path / "r"
    assert main(RUN + ["--dataset", "imagefolder", "--data-root", str(root), "--out",
                       str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: data.root: {root / 'train'} has 1 class folder(s); a classification needs at "
        "least two (one folder per class)")
    assert not out.exists()


def test_bad_out_and_config_files(tmp_path, capsys):
    assert main(RUN + ["--out", ""]) == 2
    assert capsys.readouterr().err.startswith("error: --out:")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00binary")
    for f in ("list.json", "bin.toml"):
        assert main(RUN + ["--config", str(tmp_path / f), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --config:") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("change,needle", [
    (("epochs = [2]", "epochs = [0]"), "grid.epochs"),
    (("seeds = [0, 1, 2]", "seeds = [-1]"), "grid.seeds"),
    (("[grid]\nbits = [[1, 32]]\nepochs = [2]\nseeds = [0, 1, 2]\n", "grid = 3\n"), "grid"),
    (('[report]\nours = "ste"\n', "report = 5\n"), "report"),
])
def test_bad_spec_values(tmp_path, change, needle):
    p = tmp_path / "s.toml"
    p.write_text(SPEC.replace(*change))
    with pytest.raises(spec.SpecErrors) as e:
        spec.load_spec(p)
    assert any(needle in line for line in e.value.errors), e.value.errors


def test_foreign_lines_and_a_corrupt_manifest_do_not_break_a_study(sdir, capsys):
    with open(sdir / "submissions.jsonl", "a") as f:
        f.write("5\n[1]\n{\"run_id\": 3}\n")
    assert len(backends_base.read_submissions(sdir)) == 3
    (sdir / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="rebuilds the manifest"):
        status.status_counts(sdir)
    assert main(["sweep", str(sdir.parent / "trust.toml"), "--executor", "debug",
                 "--results", str(sdir.parent)]) == 0
    assert (sdir / "manifest.json.corrupt-1").exists()
    assert status.status_counts(sdir)[0]["completed"] == 3


def test_a_full_disk_is_one_line_and_keeps_the_last_good_records(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    real = files.atomic_write
    calls = {"n": 0}

    def full(path, write, root=None):
        if Path(path).name == "metrics.csv":
            calls["n"] += 1
            if calls["n"] >= 3:  # epoch 1's records are written, epoch 2's are not
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write, root)

    monkeypatch.setattr(files, "atomic_write", full)
    args = ["run", "--method", "ste", "--epochs", "3", "--set", "data.subset_train=100",
            "--set", "model.width=0.25", "--set", "progress=none", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left" in err, err
    assert records.read_summary(out).epochs_completed == 1
    monkeypatch.setattr(files, "atomic_write", real)
    # a killed write's temp file (the harness's suffix, this user's tag, a writer long gone)
    stale = out / f".metrics.csv.{os.getuid()}-{files.HOST_TAG}-999999999-0badc0de.slbench-tmp"
    stale.write_text("a killed write left this")
    assert main(args) == 0
    assert not stale.exists() and not list(out.glob(f".*{files.TEMP_SUFFIX}"))
    assert records.read_summary(out).status == "completed"


def test_non_finite_parameters_end_the_run_diverged(tmp_path, monkeypatch):
    real = trainer.Trainer.train_epoch

    def poisoned(self, epoch):
        stats = real(self, epoch)
        with torch.no_grad():
            next(self.model.parameters()).view(-1)[0] = float("inf")
        return stats

    monkeypatch.setattr(trainer.Trainer, "train_epoch", poisoned)
    s = rundir.run(tiny_cfg("fp", epochs=2), tmp_path, echo=lambda m: None)
    assert s.status == "diverged" and "after epoch 1" in s.error


def test_a_real_process_never_prints_a_traceback_for_bad_values(tmp_path):
    p = subprocess.run([sys.executable, "-m", "harness", *RUN, "--seed", "-1", "--out",
                        str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "error: seed: must be >= 0, got -1"


def test_spec_flags_and_texts_of_the_wrong_type_are_one_line_each(tmp_path):
    """TOML strings where booleans belong ("false" would be true in Python) and numbers where
    text belongs: one error each, and nothing planned from them."""
    p = tmp_path / "s.toml"
    p.write_text(SPEC.replace('name = "trust"', 'name = "trust"\nallow_unmatched = "false"\n'
                              'gpu_hours = "lots"\ndescription = 7')
                 + '[variants.fp]\nmethod = "fp"\nreference = "no"\n'
                 + '[variants.big]\nmethod = "ste"\nunmatched = "false"\n'
                 + 'recipe = { batch_size = 32 }\n')
    with pytest.raises(spec.SpecErrors) as e:
        spec.load_spec(p)
    lines = [ln.removeprefix(f"{p}: ") for ln in e.value.errors]
    assert sorted(lines) == sorted([
        "study.allow_unmatched: expected true or false (no quotes), got 'false'",
        "study.gpu_hours: expected a number of GPU-hours >= 0, got 'lots'",
        "study.description: expected a quoted string, e.g. \"...\", got 7",
        "variants.fp.reference: expected true or false (no quotes), got 'no'",
        "variants.big.unmatched: expected true or false (no quotes), got 'false'"]), lines


def test_two_processes_checking_one_results_folder_never_trip_each_other(tmp_path):
    """Two sweeps started together both check that the study folder is writable; each must
    use a probe of its own (a shared probe name failed the second sweep now and then)."""
    from concurrent.futures import ThreadPoolExecutor

    target = tmp_path / "res" / "s"

    def check(_):
        files.ensure_writable_dir(target, "--results", "pass a writable --results directory")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(400)))   # raised a UserError within a few calls before
    assert not [p for p in target.iterdir() if p.name.startswith(".write-probe")]
