"""Big specs (issue 27): the runs of one variant, cell, budget and stage are resolved once and
differ only in their seed, with the ids and configs a run resolved on its own would have; a
dry run reads no folder of a run that does not exist. (Timing: `bench --what spec`.)"""
from __future__ import annotations

import dataclasses

from test_sweep import SPEC, write_spec

from harness import config, records
from harness.run import resolve
from harness.study import schedule, sweep
from harness.tools.bench_spec import SPEC_RUNS, synthetic_spec

SEEDS = "seeds = [0, 1, 2, 3, 4]"


def test_runs_of_one_template_are_resolved_once(tmp_path, monkeypatch):
    calls = []
    real = resolve.resolve
    monkeypatch.setattr(resolve, "resolve", lambda cfg: calls.append(cfg) or real(cfg))
    study = sweep.load_spec(write_spec(tmp_path, text=SPEC.replace("seeds = [0, 1]", SEEDS)))
    templates = {(r.variant, r.w_bits, r.a_bits, r.epochs) for r in study.runs}
    assert len(study.runs) == 5 * len(templates) == 45
    # one per template, and one for the shared recipe on its own (read.bad_recipe_keys)
    assert len(calls) == len(templates) + 1


def test_a_template_run_is_the_run_resolved_on_its_own(tmp_path):
    study = sweep.load_spec(write_spec(tmp_path, text=SPEC.replace("seeds = [0, 1]", SEEDS)))
    for r in study.runs:
        alone = resolve.from_dict(config.to_dict(r.cfg))
        assert alone == r.cfg and r.cfg.seed == r.seed
        assert r.run_id == (f"{r.variant}_w{r.w_bits}a{r.a_bits}_e{r.epochs}_s{r.seed}_"
                            f"{resolve.config_hash(alone)[:8]}")


def test_seed_hashes_are_the_config_hash_at_each_seed(tmp_path):
    cfg = sweep.load_spec(write_spec(tmp_path)).runs[0].cfg
    at = resolve.seed_hashes(cfg)
    for seed in (0, 1, 7, 12345, config.SEED_LIMIT - 1):
        assert at(seed) == resolve.config_hash(dataclasses.replace(cfg, seed=seed))
    assert at(3) != at(4)


def test_a_dry_run_reads_no_folder_of_a_run_that_does_not_exist(tmp_path, monkeypatch):
    study = sweep.load_spec(write_spec(tmp_path))
    sdir = tmp_path / "results" / "s"
    read = []
    real = records.load_run
    monkeypatch.setattr(records, "load_run", lambda *a, **k: read.append(a[0]) or real(*a, **k))
    todo, skipped = sweep.plan_runs(study, sdir, retry_failed=False)
    assert len(todo) == len(study.runs) and not skipped and not read
    broken = sdir / "runs" / study.runs[0].run_id
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    states = schedule.entry_states(sdir, {r.run_id: r.manifest() for r in study.runs}, {}, {})
    assert read == [broken]                                   # only the folder that exists
    assert states[study.runs[0].run_id] == "corrupt"
    assert set(list(states.values())[1:]) == {"missing"}


def test_the_bench_spec_expands_to_its_runs(tmp_path):
    spec = synthetic_spec(tmp_path / "big.toml", 1200)
    study = sweep.load_spec(spec)
    assert len(study.runs) == 1200 and len({r.run_id for r in study.runs}) == 1200
    assert SPEC_RUNS == 10**5
