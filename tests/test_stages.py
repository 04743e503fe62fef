"""A study's stages end to end on the executors that block (debug, local): pretraining
sources before the runs that start from them, tuning trials before the final runs they
choose for; the matched budget counts pretraining; a failed earlier stage leaves the later
one blocked with the reason, never run, until a re-sweep repairs it. (SLURM, with job
dependencies: tests/test_sweep_slurm.py.)"""
from __future__ import annotations

import re
from pathlib import Path

from harness import files, records, stages
from harness.cli import main
from harness.study import status
from harness.study.spec import load_spec
from methods.fp import FullPrecision

SPEC = """
[study]
name = "st"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "digits", subset_train = 300, subset_test = 200 }
optim = { lr = 0.05 }
batch_size = 50
[grid]
bits = [[1, 32]]
epochs = [3]
seeds = [0, 1]
[tune]
space = { "optim.lr" = [0.02, 0.1] }
epochs = 2
seeds = [100]
val_split = 0.25
[variants.fp]
method = "fp"
reference = true
[variants.ste]
method = "ste"
[variants.ste_pre]
method = "ste"
init = { from = "fp", epochs = 1 }
[executor]
local_concurrency = 2
cpus_per_task = 1
"""


def write(tmp_path: Path) -> Path:
    p = tmp_path / "st.toml"
    p.write_text(SPEC)
    return p


def config_of(sdir: Path, run_id: str) -> dict:
    return files.read_json(sdir / "runs" / run_id / "config.json")


def logged(sdir: Path, run_id: str, what: str) -> str:
    """The time stamp of the first log line of a run that contains ``what``."""
    for line in (sdir / "runs" / run_id / "log.txt").read_text().splitlines():
        if what in line:
            return re.match(r"\[([^\]]+)\]", line).group(1)
    raise AssertionError(f"{run_id}: no {what!r} in its log")


def test_pretraining_and_tuning_stages_run_in_order_and_the_budget_counts_both(tmp_path,
                                                                                capsys):
    spec = write(tmp_path)
    res = tmp_path / "res"
    assert main(["sweep", str(spec), "--executor", "local", "--results", str(res)]) == 0
    sdir = res / "st"
    manifest = files.read_json(sdir / "manifest.json")
    by_stage: dict[str, list] = {}
    for e in manifest["runs"]:
        by_stage.setdefault(e.get("stage", "final"), []).append(e)
    # pretrain: fp at 1 epoch for seeds 0, 1 (no split) and 100 (the tuning split)
    assert sorted(e["seed"] for e in by_stage["pretrain"]) == [0, 1, 100]
    assert len(by_stage["tune"]) == 4 and len(by_stage["final"]) == 6
    counts, _ = status.status_counts(sdir)
    assert counts["completed"] == 13 and counts["blocked"] == 0
    for e in (x for x in by_stage["final"] if x["variant"] == "ste_pre"):
        run_id = stages.entry_run_id(sdir, e)
        cfg = config_of(sdir, run_id)
        src = config_of(sdir, cfg["init"]["source"])
        assert cfg["epochs"] == 2 and cfg["init"]["epochs"] == 1 and e["epochs"] == 3
        assert e["init_epochs"] == 1                    # the matched budget: 1 + 2 epochs
        assert src["method"]["name"] == "fp" and src["seed"] == cfg["seed"] == e["seed"]
        assert src["epochs"] == 1 and src["data"]["val_split"] == 0 == cfg["data"]["val_split"]
        assert cfg["optim"]["lr"] in (0.02, 0.1) and cfg["meta"]["tuned"] == ["optim.lr"]
        assert logged(sdir, cfg["init"]["source"], "completed") <= logged(sdir, run_id, "start")
    for e in (x for x in by_stage["tune"] if x["variant"] == "ste_pre"):
        cfg = config_of(sdir, e["run_id"])
        src = config_of(sdir, cfg["init"]["source"])
        assert src["seed"] == 100 and src["data"]["val_split"] == 0.25 == cfg["data"]["val_split"]
    capsys.readouterr()
    main(["status", str(sdir)])
    out = capsys.readouterr().out
    assert "stages: pretrain 3/3 done" in out and "tune 4/4 done" in out
    assert re.search(r"final\s+ste_pre\s+W1/A32\s+e3\s+completed 2", out)
    assert main(["sweep", str(spec), "--executor", "local", "--results", str(res)]) == 0
    assert "to submit: 0 runs (skipping 13 completed)" in capsys.readouterr().out


def test_a_failed_earlier_stage_blocks_the_later_one_until_a_re_sweep(tmp_path, monkeypatch,
                                                                       capsys):
    spec = write(tmp_path)
    res = tmp_path / "res"

    def broken(self, model, run):
        raise RuntimeError("no full precision today")

    monkeypatch.setattr(FullPrecision, "prepare", broken)
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 1
    sdir = res / "st"
    counts, rows = status.status_counts(sdir)
    blocked = [r for r in rows if r["state"] == "blocked"]
    assert counts["failed"] == 5 and counts["completed"] == 4     # fp x5; ste's trials+final
    assert {r["variant"] for r in blocked} == {"ste_pre"} and len(blocked) == 4
    for r in blocked:
        assert re.fullmatch(r"needs fp_w32a32_e1_s\d+_\w{8}, which is failed", r["detail"])
        assert not (sdir / "runs" / r["run_id"]).exists()         # never ran
    study = load_spec(spec)
    pre = [s for s in study.slots if s.variant == "ste_pre"]
    assert all(stages.bound_run(sdir, s.slot_id) is None for s in pre)
    capsys.readouterr()
    main(["status", str(sdir)])
    assert "blocked: ste_pre_w1a32_e2_s100_t0_" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 0
    assert "to submit: 0 runs (skipping 4 blocked, 4 completed, 5 failed)" in \
        capsys.readouterr().out                                   # failed: only on request
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res),
                 "--retry-failed"]) == 0
    counts, _ = status.status_counts(sdir)
    assert counts["completed"] == 13 and counts["blocked"] == 0
    assert all(records.load_run(sdir / "runs" / stages.bound_run(sdir, s.slot_id)).status
               == "completed" for s in pre)
