"""A study steered from the command line (`sweep --set grid.*`, `--only`), and every name of
[report] checked with "did you mean" by `sweep` and `report` (issue 26, items 4 and 7)."""
from __future__ import annotations

import json

import pytest
from report_records import write_run
from test_sweep import SPEC, write_spec

from harness import files
from harness.cli import main
from harness.errors import UserError


def dry(capsys, *argv) -> tuple[int, str, str]:
    code = main(["sweep", *argv, "--dry-run", "--executor", "debug"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_set_reaches_the_grid_and_only_narrows_the_plan(tmp_path, capsys):
    spec = write_spec(tmp_path)
    code, out, _ = dry(capsys, str(spec), "--results", str(tmp_path / "r"),
                       "--set", "grid.seeds=[0]", "--only", "variant=ste,fp",
                       "--only", "bits=W1/A32,W32/A32", "--json")
    assert code == 0
    runs = [json.loads(line) for line in out.splitlines()]
    # ste: W1/A32 x 2 budgets x 1 seed; fp (reference): W32/A32 x 2 budgets x 1 seed
    assert sorted((r["variant"], r["cell"], r["epochs"], r["seed"]) for r in runs) == [
        ("fp", "W32/A32", 1, 0), ("fp", "W32/A32", 2, 0),
        ("ste", "W1/A32", 1, 0), ("ste", "W1/A32", 2, 0)]
    code, out, _ = dry(capsys, str(spec), "--results", str(tmp_path / "r"),
                       "--only", "variant=dorefa", "--only", "epochs=1")
    assert code == 0
    assert "only: variant=dorefa; epochs=1: 4 of 18 runs" in out  # 2 cells x 2 seeds
    assert "to submit: 4 runs" in out
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_overrides_are_checked_as_the_file_is_in_one_line_each(tmp_path, capsys):
    spec = write_spec(tmp_path)
    code, _, err = dry(capsys, str(spec), "--set", "grid.seeds=[-1]", "--set", "grid.sedes=1")
    assert code == 2
    assert "grid.seeds: seeds must be in [0, 2^32), got [-1]" in err
    assert "grid.sedes: unknown key; did you mean 'seeds'?" in err
    assert "2 problem(s) in" in err and "with its --set overrides" in err
    code, _, err = dry(capsys, str(spec), "--only", "variant=stee", "--only", "bits=W1/A3",
                       "--only", "seed=7")
    assert code == 2
    assert err.splitlines() == [
        "error: --only: variant 'stee' is not in the study; did you mean 'ste'?",
        "error: --only: cell 'W1/A3' is not in the study; did you mean 'W1/A32'?",
        "error: --only: seed '7' is not in the study; choose one of ['0', '1']"]
    for bad in ("colour=red", "variant="):
        code, _, err = dry(capsys, str(spec), "--only", bad)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: --only:")
    code, _, err = dry(capsys, str(spec), "--set", "grid.seeds.x=1")
    assert code == 2 and "grid.seeds is not a table" in err


def test_a_subset_sweep_runs_the_subset_and_lists_the_whole_study(tmp_path, capsys):
    spec = write_spec(tmp_path, text=SPEC.replace("seeds = [0, 1]", "seeds = [0]"))
    results = tmp_path / "r"
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(results),
                 "--only", "variant=fp"]) == 0
    manifest = files.read_json(results / "s" / "manifest.json")
    assert all(r["current"] for r in manifest["runs"]) and len(manifest["runs"]) == 9
    done = [p.name for p in (results / "s" / "runs").iterdir()
            if (p / "summary.json").exists()]
    assert len(done) == 2 and all(d.startswith("fp_") for d in done)
    assert "states: completed 2\n" in capsys.readouterr().out  # the subset's, exit 0
    assert main(["status", str(results / "s")]) == 0
    assert "2/9 runs done: completed 2, missing 7" in capsys.readouterr().out


REPORT_TYPOS = """
[report]
ours = "dorefaa"
[report.methods]
stee = "STE"
[report.variants]
bwnn = "BWN"
[report.settings]
digit = "Digits"
"""


def test_every_report_name_is_checked_by_sweep(tmp_path, capsys):
    spec = write_spec(tmp_path, text=SPEC + REPORT_TYPOS)
    code, _, err = dry(capsys, str(spec))
    assert code == 2
    assert "report.ours: 'dorefaa' has no runs in this study (its methods: dorefa, fp, ste); " \
           "did you mean 'dorefa'?" in err
    assert "report.methods.stee: names no method of this study; did you mean 'ste'?" in err
    assert "report.variants.bwnn: names no variant of this study; did you mean 'bwn'?" in err
    assert "report.settings.digit: names no setting of this study; did you mean 'digits'?" in err
    fixed = (REPORT_TYPOS.replace("dorefaa", "dorefa").replace("stee", "ste")
             .replace("bwnn", "bwn").replace("digit ", '"digits / small_cnn" '))
    spec = write_spec(tmp_path, text=SPEC + fixed)
    assert dry(capsys, str(spec))[0] == 0


def test_report_refuses_names_without_runs(tmp_path, capsys):
    root = tmp_path / "st"
    for s in range(2):
        write_run(root, f"slb{s}", method="slb", acc=90.0 + s, seed=s)
        write_run(root, f"ste{s}", method="ste", acc=85.0 + s, seed=s)
    assert main(["report", str(root), "--ours", "slbb", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --ours: 'slbb' has no runs in this study (its methods: slb, ste); "
                   "did you mean 'slb'?\n")
    files.atomic_write_text(root / "study.toml", '[report]\nours = "lsq"\n')
    with pytest.raises(UserError, match=r"report.ours: 'lsq' has no runs .* in study.toml"):
        sweep_free_report(root)


def sweep_free_report(root):
    from harness import report as report_pkg

    return report_pkg.load_study(root)


def test_config_fits_100_columns(capsys):
    shown = {}
    for argv in (["config"], ["config", "--method", "slb"]):
        assert main(argv) == 0
        shown[argv[-1]] = lines = capsys.readouterr().out.splitlines()
        assert max(len(ln) for ln in lines) <= 100, max(lines, key=len)
    at = shown["config"].index("model.width = 1.0  (float; [0.0625, 64])")
    assert shown["config"][at + 1].startswith("    channel multiplier")
    assert any(ln.startswith("method.schedule = 'exp'  (str; exp | ") for ln in shown["slb"])


def test_only_keeps_the_trials_and_sources_a_subset_needs(tmp_path, capsys):
    from test_stages import SPEC as STAGED

    spec = tmp_path / "st.toml"
    spec.write_text(STAGED)
    code, out, _ = dry(capsys, str(spec), "--only", "variant=ste_pre", "--only", "seed=0",
                       "--json")
    assert code == 0
    runs = [json.loads(line) for line in out.splitlines()]
    by_stage = {}
    for r in runs:
        by_stage.setdefault(r["stage"], []).append((r["variant"], r["seed"]))
    # the one final run, its tuning trials (2 points x 1 tuning seed) and the fp sources
    # they start from: the final run's seed 0 and the trials' seed 100; nothing of ste or fp
    assert sorted(by_stage["final"]) == [("ste_pre", 0)]
    assert sorted(by_stage["tune"]) == [("ste_pre", 100), ("ste_pre", 100)]
    assert sorted(seed for _, seed in by_stage["pretrain"]) == [0, 100]
    assert set(by_stage) == {"final", "tune", "pretrain"} and len(runs) == 5
