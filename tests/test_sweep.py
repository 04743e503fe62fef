"""Study specs, expansion, validation and idempotent submission (debug/local executors).

The same paths against a real SLURM cluster are in tests/test_sweep_slurm.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from harness import files
from harness.cli import main
from harness.study import status, sweep

SPEC = """
[study]
name = "__NAME__"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 200, subset_test = 100 }
optim = { lr = 0.05 }
batch_size = 50
[grid]
bits = [[1, 32], [2, 32]]
epochs = [1, 2]
seeds = [0, 1]
exclude = [{ variant = "dorefa", bits = [2, 32], epochs = 2, reason = "budget" }]
[variants.fp]
method = "fp"
reference = true
[variants.ste]
method = "ste"
[variants.bwn]
method = "ste"
options = { scaling = "channel" }
[variants.dorefa]
method = "dorefa"
[executor]
local_concurrency = 2
"""


def write_spec(tmp_path: Path, name: str = "s", text: str = SPEC) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text.replace("__NAME__", name))
    return p


def test_expansion_counts_exclusions_and_matched_cells(tmp_path):
    study = sweep.load_spec(write_spec(tmp_path))
    by = {}
    for r in study.runs:
        by.setdefault(r.variant, []).append(r)
    assert {k: len(v) for k, v in by.items()} == {"fp": 4, "ste": 4, "bwn": 4, "dorefa": 6}
    reasons = {(e["variant"], e["w_bits"], e["epochs"]): e["reason"] for e in study.excluded}
    assert reasons[("dorefa", 2, 2)] == "excluded by the spec: budget"
    assert "ste cannot run 2-bit" in reasons[("ste", 2, 1)]          # reported, not dropped
    assert len({r.run_id for r in study.runs}) == len(study.runs)
    ste = next(r for r in study.runs if r.variant == "ste" and r.w_bits == 1)
    bwn = next(r for r in study.runs if r.variant == "bwn" and r.seed == ste.seed
               and r.epochs == ste.epochs)
    from harness import config
    assert config.cell_key(ste.cfg) == config.cell_key(bwn.cfg)
    assert ste.cfg.meta.variant == "ste" and bwn.cfg.method_options.scaling == "channel"
    again = sweep.load_spec(write_spec(tmp_path))
    assert [r.run_id for r in again.runs] == [r.run_id for r in study.runs]   # stable ids


def test_smoke_scale_shrinks_and_is_recorded(tmp_path):
    text = SPEC.replace("epochs = [1, 2]", "epochs = [100, 200]")
    study = sweep.load_spec(write_spec(tmp_path, text=text), scale="smoke")
    assert sorted({r.epochs for r in study.runs}) == [2, 4]
    assert all(r.cfg.meta.scale == "smoke" and r.cfg.model.width == 0.25 for r in study.runs)
    assert all(r.cfg.data.subset_train == 1000 for r in study.runs)


BAD_SPEC = """
[study]
name = "bad"
[recipe]
model = { name = "resnet99" }
data = { name = "cifar10", root = "/nonexistent" }
epochs = 3
[grid]
bits = [[1, 32]]
epochs = [1]
seeds = "zero"
[variants.a]
method = "nosuch"
[variants.b]
method = "ste"
options = { scaling = "diagonal" }
[variants.c]
method = "ste"
recipe = { batch_size = 10 }
[executor]
gpus = 2
"""


def test_every_spec_error_is_reported_at_once_and_nothing_is_submitted(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(BAD_SPEC)
    rc = main(["sweep", str(spec), "--executor", "debug", "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 2
    for needle in ("recipe.epochs", "grid.seeds", "executor.gpus", "variants.c.recipe",
                   "nothing was submitted"):
        assert needle in err, needle
    assert all(line.startswith("error: ") for line in err.strip().splitlines())
    assert str(spec) in err
    assert not (tmp_path / "res").exists()


def test_errors_in_the_expansion_name_variant_and_field(tmp_path):
    text = SPEC.replace('[variants.dorefa]\nmethod = "dorefa"',
                        '[variants.dorefa]\nmethod = "dorefa"\noptions = { bogus = 1 }')
    text = text.replace('name = "small_cnn"', 'name = "resnet99"')
    with pytest.raises(sweep.SpecErrors) as e:
        sweep.load_spec(write_spec(tmp_path, text=text))
    joined = "\n".join(e.value.errors)
    assert "variants.dorefa: method.bogus" in joined and "model.name" in joined


def test_unmatched_needs_explicit_flags_and_is_recorded(tmp_path):
    text = SPEC + '[variants.fast]\nmethod = "ste"\nrecipe = { optim = { lr = 0.2 } }\n'
    with pytest.raises(sweep.SpecErrors, match="unmatched = true"):
        sweep.load_spec(write_spec(tmp_path, text=text))
    text = text.replace('recipe = { optim', 'unmatched = true\nrecipe = { optim')
    with pytest.raises(sweep.SpecErrors, match="allow_unmatched"):
        sweep.load_spec(write_spec(tmp_path, text=text))
    text = text.replace('[study]\n', '[study]\nallow_unmatched = true\n')
    study = sweep.load_spec(write_spec(tmp_path, text=text))
    fast = [r for r in study.runs if r.variant == "fast"]
    assert fast and all(r.cfg.meta.unmatched and r.cfg.optim.lr == 0.2 for r in fast)
    assert not any(r.cfg.meta.unmatched for r in study.runs if r.variant != "fast")


def test_debug_sweep_runs_everything_once_then_nothing(tmp_path, capsys):
    text = SPEC.replace("epochs = [1, 2]", "epochs = [1]").replace("seeds = [0, 1]", "seeds = [0]")
    spec = write_spec(tmp_path, text=text)
    res = tmp_path / "res"
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 0
    sdir = res / "s"
    counts, rows = status.status_counts(sdir)
    assert counts["completed"] == len(rows) == 5
    assert (sdir / "study.toml").read_text() == spec.read_text()
    manifest = files.read_json(sdir / "manifest.json")
    assert len(manifest["runs"]) == 5 and manifest["excluded"]
    capsys.readouterr()
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 0
    assert "to submit: 0 runs (skipping 5 completed)" in capsys.readouterr().out
    lines = (sdir / "submissions.jsonl").read_text().splitlines()
    assert len(lines) == 5


def test_failed_runs_are_retried_only_on_request_and_interrupted_ones_resume(tmp_path, capsys):
    text = SPEC.replace("epochs = [1, 2]", "epochs = [2]").replace("seeds = [0, 1]", "seeds = [0]")
    spec = write_spec(tmp_path, text=text)
    res = tmp_path / "res"
    main(["sweep", str(spec), "--executor", "debug", "--results", str(res)])
    sdir = res / "s"
    runs = sorted((sdir / "runs").iterdir())
    failed, cut = runs[0], runs[1]
    s = files.read_json(failed / "summary.json")
    files.atomic_write_json(failed / "summary.json", {**s, "status": "failed", "error": "boom"})
    s = files.read_json(cut / "summary.json")
    files.atomic_write_json(cut / "summary.json", {**s, "status": "running"})
    counts, _ = status.status_counts(sdir)
    assert counts["failed"] == 1 and counts["interrupted"] == 1
    capsys.readouterr()
    main(["status", str(sdir)])
    out = capsys.readouterr().out
    assert "failed: " + failed.name in out and "boom" in out
    main(["sweep", str(spec), "--executor", "debug", "--results", str(res)])
    assert "to submit: 1 runs" in capsys.readouterr().out              # only the interrupted
    main(["sweep", str(spec), "--executor", "debug", "--results", str(res), "--retry-failed"])
    assert "to submit: 1 runs" in capsys.readouterr().out              # now the failed one


def test_two_concurrent_sweeps_never_submit_the_same_run(tmp_path):
    text = SPEC.replace("epochs = [1, 2]", "epochs = [1]").replace("seeds = [0, 1]", "seeds = [0]")
    spec = write_spec(tmp_path, text=text)
    res = tmp_path / "res"
    cmd = [sys.executable, "-m", "harness", "sweep", str(spec), "--executor", "local",
           "--results", str(res)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):  # shown in full when the test fails
        print(f"--- sweep exited {p.returncode}:\n{out}")
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    subs = [json.loads(ln) for ln in (res / "s" / "submissions.jsonl").read_text().splitlines()]
    assert len(subs) == 5 and len({s["run_id"] for s in subs}) == 5
    counts, _ = status.status_counts(res / "s")
    assert counts["completed"] == 5


TYPO_SPEC = """
[study]
name = "typo"
[recipe]
data = { name = "digits" }
[grid]
bits = [[1, 32]]
epochs = [1]
seeds = [0]
exclude = [{ bit = [1, 32] }, "ste", { variant = "ste", bits = 1 }]
[variants.ste]
method = "ste"
options = "scaling=channel"
[variants.ste2]
method = "ste"
[executor]
setup = "module load cuda"
timeout_min = "1h"
[scales.tiny]
epochs_divisor = 0
"""


def test_mistyped_tables_are_spec_errors_not_tracebacks(tmp_path, capsys):
    spec = tmp_path / "typo.toml"
    spec.write_text(TYPO_SPEC)
    rc = main(["sweep", str(spec), "--executor", "debug", "--scale", "tiny",
               "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 2
    for needle in ("grid.exclude[0].bit", "grid.exclude[1]", "grid.exclude[2].bits",
                   "variants.ste.options", "executor.setup", "executor.timeout_min",
                   "scales.tiny.epochs_divisor", "variants.ste2 and variants.ste"):
        assert needle in err, (needle, err)
    assert not (tmp_path / "res").exists()


def test_dry_run_writes_nothing_and_unwritable_results_is_a_user_error(tmp_path, capsys):
    spec = write_spec(tmp_path)
    assert main(["sweep", str(spec), "--executor", "debug", "--dry-run",
                 "--results", str(tmp_path / "res")]) == 0
    assert not (tmp_path / "res").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    capsys.readouterr()
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(blocker)]) == 2
    assert "--results" in capsys.readouterr().err


def test_set_data_root_reaches_existing_runs_and_failed_runs_exit_nonzero(tmp_path, capsys):
    text = SPEC.replace("epochs = [1, 2]", "epochs = [1]").replace("seeds = [0, 1]", "seeds = [0]")
    spec = write_spec(tmp_path, text=text)
    study = sweep.load_spec(spec, sets=["data.root=/tmp"])
    sdir = tmp_path / "res" / "s"
    sweep.prepare_records(study.runs[:1], sdir)
    run_dir = sdir / "runs" / study.runs[0].run_id
    assert files.read_json(run_dir / "config.json")["data"]["root"] == "/tmp"
    moved = sweep.load_spec(spec, sets=["data.root=/var"])
    assert moved.runs[0].run_id == study.runs[0].run_id          # same run, same id
    sweep.prepare_records(moved.runs[:1], sdir)
    assert files.read_json(run_dir / "config.json")["data"]["root"] == "/var"


def test_a_second_process_on_a_running_run_stops_at_once(tmp_path):
    import fcntl

    from conftest import tiny_cfg
    from harness.run import rundir

    cfg = tiny_cfg("ste")
    rundir.prepare_run_dir(tmp_path, cfg)
    with open(tmp_path / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = rundir.run(cfg, tmp_path, echo=lambda s: None)
    assert out.status == "running" and not (tmp_path / "metrics.csv").exists()
    assert rundir.run(cfg, tmp_path, echo=lambda s: None).status == "completed"


def test_a_run_that_cannot_start_is_recorded_failed_with_its_error(tmp_path, capsys):
    folder = tmp_path / "images"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            (folder / split / c / "0.jpg").write_text("not an image")  # passes the root check
    text = SPEC.replace("epochs = [1, 2]", "epochs = [1]").replace("seeds = [0, 1]", "seeds = [0]")
    text = text.replace('data = { name = "digits", subset_train = 200, subset_test = 100 }',
                        f'data = {{ name = "imagefolder", root = "{folder}" }}')
    spec = write_spec(tmp_path, text=text)
    res = tmp_path / "res"
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 1
    counts, rows = status.status_counts(res / "s")
    assert counts["failed"] == len(rows) == 5                 # recorded, never 'missing'
    capsys.readouterr()
    main(["status", str(res / "s")])
    assert "cannot read the imagefolder data" in capsys.readouterr().out
    main(["sweep", str(spec), "--executor", "debug", "--results", str(res)])
    assert "to submit: 0 runs (skipping 5 failed)" in capsys.readouterr().out
