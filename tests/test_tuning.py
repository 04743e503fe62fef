"""Equal tuning per variant: the [tune] table, the trial points every variant gets, the
selection rule on validation (never the test set), and deferred final runs whose id follows
the chosen values."""
from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from harness import files, stages
from harness.cli import main
from harness.run import bind
from harness.study import sweep
from harness.study.spec import SpecErrors, load_spec
from harness.tasks.classify import data as classify_data
from harness.tasks.classify import runtime as classify_runtime

SPEC = """
[study]
name = "__NAME__"
[recipe]
model = { name = "small_cnn", width = 0.25 }
data = { name = "__DATA__", subset_train = 400, subset_test = 200 }
optim = { lr = 0.05 }
batch_size = 50
[grid]
bits = [[1, 32], [2, 32]]
epochs = [2]
seeds = [0, 1]
[tune]
space = { "optim.lr" = [0.02, 0.05, 0.1] }
epochs = 2
seeds = [100, 101]
val_split = 0.25
__TUNE__
[variants.fp]
method = "fp"
reference = true
[variants.ste]
method = "ste"
[variants.dorefa]
method = "dorefa"
[variants.slb]
method = "slb"
tune = { "method.factor" = [1.02, 1.04] }
__MORE__
"""


def write(tmp_path: Path, name: str = "t", tune: str = "trials = 3", more: str = "",
          data: str = "digits", text: str = SPEC) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text.replace("__NAME__", name).replace("__TUNE__", tune)
                 .replace("__MORE__", more).replace("__DATA__", data))
    return p


def trial_points(study) -> dict[tuple, list]:
    out = collections.defaultdict(list)
    for r in study.runs:
        if r.stage == "tune" and r.seed == study.tune.seeds[0]:
            out[(r.variant, r.w_bits)].append(r.params)
    return out


def test_every_tuned_variant_gets_the_same_trials_in_every_cell(tmp_path):
    study = load_spec(write(tmp_path))
    runs = collections.Counter((r.variant, r.w_bits) for r in study.runs if r.stage == "tune")
    # ste: W1 only; dorefa and slb: W1 and W2; 3 trials x 2 tuning seeds each; fp untuned
    assert runs == {("ste", 1): 6, ("dorefa", 1): 6, ("dorefa", 2): 6, ("slb", 1): 6,
                    ("slb", 2): 6}
    assert study.tune.sampler("ste") == "grid" and study.tune.sampler("slb") == "random"
    points = trial_points(study)
    assert points[("ste", 1)] == [{"optim.lr": v} for v in (0.02, 0.05, 0.1)]   # the grid
    slb = points[("slb", 1)]
    assert len({tuple(sorted(p.items())) for p in slb}) == 3 and slb == points[("slb", 2)]
    assert all(p["optim.lr"] in (0.02, 0.05, 0.1) and p["method.factor"] in (1.02, 1.04)
               for p in slb)
    again = load_spec(write(tmp_path, more="[variants.lsq]\nmethod = \"lsq\""))
    assert trial_points(again)[("slb", 1)] == slb      # a new variant changes no other's draw
    assert {r.seed for r in study.runs if r.stage == "tune"} == {100, 101}
    assert {r.cfg.data.val_split for r in study.runs if r.stage == "tune"} == {0.25}
    assert all(r.cfg.meta.stage == "tune" for r in study.runs if r.stage == "tune")
    assert len(study.slots) == 10 and {s.variant for s in study.slots} == {"ste", "dorefa",
                                                                            "slb"}
    assert {r.variant for r in study.runs if r.stage == "final"} == {"fp"}   # untuned


def test_ranges_are_sampled_with_the_trial_count(tmp_path):
    text = SPEC.replace('space = { "optim.lr" = [0.02, 0.05, 0.1] }',
                        'space = { "optim.lr" = { log_uniform = [0.01, 0.2] } }')
    study = load_spec(write(tmp_path, tune="trials = 4\nvariants = [\"ste\", \"slb\"]",
                            text=text))
    points = trial_points(study)
    lrs = [p["optim.lr"] for p in points[("ste", 1)]]
    assert len(set(lrs)) == 4 and all(0.01 <= x <= 0.2 for x in lrs)
    assert len(points[("slb", 1)]) == 4 and not any(r.variant == "dorefa" and r.stage == "tune"
                                                    for r in study.runs)


@pytest.mark.parametrize("tune, more, message", [
    ("", "", "tune.trials: the variants' spaces have"),
    ("trials = 7", "", "variants.ste: its space has 3 points, fewer than tune.trials = 7"),
    ("trials = 3\nseeds = [0]", "", "none of the grid's seeds"),
    ("trials = 3\nvariants = [\"ste\"]", "", "variants.slb.tune: slb is not among"),
    ("trials = 3\n[tune.space2]", "", "tune.space2: unknown key"),
    ("trials = 3", "[variants.q]\nmethod = \"ste\"\ntune = { \"model.width\" = [1, 2] }",
     "variants.q.tune.model.width: only optimizer keys"),
    ("trials = 3", "[variants.p]\nmethod = \"ste\"\ninit = { from = \"ste\", epochs = 1 }",
     "variants.p.init.from: 'ste' must name a full-precision variant"),
    ("trials = 3", "[variants.p]\nmethod = \"ste\"\ninit = { from = \"fp\", epochs = 2 }",
     "variants.p.init.epochs: 2 pretraining epochs leave none of the budget(s) [2, 2]"),
])
def test_tuning_mistakes_are_spec_errors(tmp_path, tune, more, message):
    text = SPEC.replace("seeds = [100, 101]\n", "") if "seeds = [0]" in tune else SPEC
    with pytest.raises(SpecErrors) as e:
        load_spec(write(tmp_path, tune=tune, more=more, text=text))
    assert any(message in line for line in e.value.errors), e.value.errors


def test_a_split_is_needed_and_a_pretraining_source_is_not_tuned(tmp_path):
    text = SPEC.replace("val_split = 0.25\n", "")
    with pytest.raises(SpecErrors, match="tune.val_split: trials are scored on a validation"):
        load_spec(write(tmp_path, text=text))
    more = "[variants.p]\nmethod = \"ste\"\ninit = { from = \"fp\", epochs = 1 }"
    with pytest.raises(SpecErrors, match="'fp' is a pretraining source"):
        load_spec(write(tmp_path, tune="trials = 3\nvariants = [\"fp\", \"slb\"]", more=more))


# --------------------------------------------------------------------------- selection

def fake_trial(sdir: Path, run_id: str, val: float, test: float) -> None:
    """A completed tuning run whose last epoch scored ``val`` on validation and ``test`` on
    the test set (records as the trainer writes them, held to the validator)."""
    d = sdir / "runs" / run_id
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"epochs": 1, "config_hash": run_id, "data": {"val_split": 0.25}}
    files.atomic_write_json(d / "config.json", cfg)
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 50.0, "test_loss": 1.0,
           "test_acc": test, "lr": 0.1, "epoch_time_s": 1.0, "samples_per_s": 1.0,
           "val_loss": 1.0, "val_acc": val}
    pd.DataFrame([row]).to_csv(d / "metrics.csv", index=False)
    files.atomic_write_json(d / "summary.json", {
        "status": "completed", "epochs": 1, "epochs_completed": 1, "final_test_acc": test,
        "best_test_acc": test, "config_hash": run_id, "changed_after_training": ""})


def test_selection_reads_validation_only_even_when_the_test_set_disagrees(tmp_path):
    """Trial 0 is best on validation, trial 1 on the test set: trial 0 is chosen; raising
    every test score of trial 1 changes nothing, raising its validation score does."""
    trials = [{"run_id": f"r{k}s{s}", "trial": k, "seed": s, "params": {"optim.lr": lr}}
              for k, lr in ((0, 0.1), (1, 0.02)) for s in (0, 1)]
    for t in trials:
        val, test = (80.0, 20.0) if t["trial"] == 0 else (60.0 + t["seed"], 90.0)
        fake_trial(tmp_path, t["run_id"], val, test)
    sel = stages.select(tmp_path, trials)
    assert sel.chosen.trial == 0 and sel.chosen.params == {"optim.lr": 0.1}
    assert [t.mean for t in sel.trials] == [80.0, 60.5] and sel.column == "val_acc"
    for seed in (0, 1):                      # the test set says trial 1, louder: no change
        fake_trial(tmp_path, f"r1s{seed}", 60.0 + seed, 100.0)
    assert stages.select(tmp_path, trials).chosen.trial == 0
    fake_trial(tmp_path, "r1s1", 100.0, 100.0)   # validation ties: the first trial stays
    assert stages.select(tmp_path, trials).chosen.trial == 0     # mean 80 = 80
    fake_trial(tmp_path, "r1s0", 62.0, 100.0)    # validation says trial 1: it wins
    assert stages.select(tmp_path, trials).chosen.trial == 1     # mean 81 > 80


def test_a_diverged_trial_scores_worst_and_a_failed_one_blocks(tmp_path):
    trials = [{"run_id": f"r{k}", "trial": k, "seed": 0, "params": {"optim.lr": k}}
              for k in range(3)]
    for k in range(3):
        fake_trial(tmp_path, f"r{k}", 50.0 + k, 0.0)
    s = files.read_json(tmp_path / "runs" / "r2" / "summary.json")
    files.atomic_write_json(tmp_path / "runs" / "r2" / "summary.json",
                            {**s, "status": "diverged", "error": "nan"})
    sel = stages.select(tmp_path, trials)
    assert sel.chosen.trial == 1 and sel.trials[2].mean is None
    files.atomic_write_json(tmp_path / "runs" / "r0" / "summary.json",
                            {**s, "status": "failed", "error": "boom", "config_hash": "r0"})
    sel = stages.select(tmp_path, trials)
    assert sel.chosen is None and "tuning run r0 is failed" in sel.problem


# --------------------------------------------------------------------------- end to end

def rigged(root, dcfg):
    """digits whose test labels are all shifted by one: a network that learns scores high on
    validation and near 0 on the test set; one that learns nothing scores ~10% on both."""
    a = classify_data.DATASETS["digits"].load(root, dcfg)
    return dataclasses.replace(a, y_test=(a.y_test + 1) % 10)


def test_a_rigged_toy_where_test_and_validation_disagree_chooses_on_validation(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(classify_data.DATASETS, "rigged", dataclasses.replace(
        classify_data.DATASETS["digits"], name="rigged", load=rigged))
    monkeypatch.setitem(classify_runtime.RUNTIME.datasets, "rigged", "digits, test labels shifted")
    text = SPEC.replace('[0.02, 0.05, 0.1]', '[0.2, 0.0001]').replace("bits = [[1, 32], [2, 32]]",
                                                                      "bits = [[32, 32]]")
    spec = write(tmp_path, tune="variants = [\"fp\"]", data="rigged",
                 text=text.split("[variants.ste]")[0].replace("reference = true", ""))
    assert main(["sweep", str(spec), "--executor", "debug", "--results",
                 str(tmp_path / "res")]) == 0
    sdir = tmp_path / "res" / "t"
    (slot,) = [files.read_json(p) for p in (sdir / "slots").iterdir()][:1]
    trials = slot["binding"]["selection"]["trials"]
    val = {t["trial"]: t["mean"] for t in trials}
    test = {}
    for t in slot["trials"]:
        df = pd.read_csv(sdir / "runs" / t["run_id"] / "metrics.csv")
        test.setdefault(t["trial"], []).append(df["test_acc"].iloc[-1])
        assert t["run_id"] in next(x for x in trials if x["trial"] == t["trial"])["scores"]
        assert df["val_acc"].iloc[-1] == next(x for x in trials if x["trial"] == t["trial"]
                                              )["scores"][t["run_id"]]
    assert val[0] > val[1] + 30                    # lr 0.2 learns: best on validation
    assert sum(test[0]) < sum(test[1])             # ... and worst on the (rigged) test set
    assert slot["binding"]["chosen"] == {"optim.lr": 0.2}
    final = files.read_json(sdir / "runs" / slot["binding"]["run_id"] / "config.json")
    assert final["optim"]["lr"] == 0.2 and final["meta"]["tuned"] == ["optim.lr"]
    assert final["meta"]["tuned_by"] == stages.protocol_id(slot["trials"])


def test_a_final_runs_id_follows_its_chosen_value(tmp_path, capsys):
    spec = write(tmp_path, tune="trials = 3\nvariants = [\"ste\"]",
                 text=SPEC.replace("seeds = [0, 1]", "seeds = [0]")
                 .replace("seeds = [100, 101]", "seeds = [100]")
                 .replace("bits = [[1, 32], [2, 32]]", "bits = [[1, 32]]")
                 .split("[variants.dorefa]")[0])
    res = tmp_path / "res"
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 0
    sdir = res / "t"
    study = load_spec(spec)
    (slot,) = study.slots
    first = stages.read_slot(sdir, slot.slot_id)["binding"]
    loser = next(t for t in slot.trials if t["params"] != first["chosen"])
    path = sdir / "runs" / loser["run_id"] / "metrics.csv"
    pd.read_csv(path).assign(val_acc=100.0).to_csv(path, index=False)   # now it wins
    capsys.readouterr()
    assert main(["sweep", str(spec), "--executor", "debug", "--results", str(res)]) == 0
    assert "to submit: 1 runs" in capsys.readouterr().out
    second = stages.read_slot(sdir, slot.slot_id)["binding"]
    assert second["chosen"] == loser["params"] and second["run_id"] != first["run_id"]
    run_id, cfg = bind.bind(sdir, slot.slot_id)                     # the same inputs: the
    assert run_id == second["run_id"] and cfg.optim.lr == loser["params"]["optim.lr"]  # same run
    manifest = files.read_json(sdir / "manifest.json")
    entry = next(r for r in manifest["runs"] if r["run_id"] == slot.slot_id)
    assert entry["bound"] == run_id and entry["slot"] and entry["tuned"] == ["optim.lr"]
    assert manifest["tune"]["trials"] == 3
    assert sweep.plan_runs(study, sdir, False)[0] == []


def test_the_trials_own_recipe_keys_reach_the_trials_only(tmp_path):
    study = load_spec(write(tmp_path, tune='trials = 3\nrecipe = { "optim.gamma" = 0.5 }'))
    assert {r.cfg.optim.gamma for r in study.runs if r.stage == "tune"} == {0.5}
    assert {r.cfg.optim.gamma for r in study.runs if r.stage == "final"} == {0.1}
    assert {s.template["optim"]["gamma"] for s in study.slots} == {0.1}
    with pytest.raises(SpecErrors, match="tune.recipe.data.subset_train: the trials share"):
        load_spec(write(tmp_path, tune='trials = 3\nrecipe = { "data.subset_train" = 10 }'))
