"""A study's stages at expansion: pretraining sources, tuning trials and the deferred final
runs of tuned variants (harness/study/spec/tune.py says what a spec may ask for).

- A variant with ``init = { from = "fp", epochs = N }`` starts each run from the fp variant's
  run of the same seed that trained N epochs (at W32/A32, on the same training images: the
  same validation split as the run). That source is an ordinary run of the study (stage
  "pretrain", or "final" when the grid runs it anyway); the variant's own run trains the
  budget's other epochs, so the matched budget counts both.
- A tuned variant runs every trial point in each of its cells at every tuning seed (stage
  "tune", on the validation split, the tuning budget; from its source when it has an init).
- Its final runs are deferred (:class:`Slot`): their config is the untuned one plus the
  values the trials choose, bound when the trials are complete, so a final run's id changes
  when a chosen value does.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from harness import config
from harness.study.spec.expand import Plan, Stage, one_run
from harness.study.spec.schema import Run, Slot, Variant
from harness.study.spec.tune import Tune

FP_CELL = (32, 32)


def final_stage(plan: Plan, v: Variant, seed: int) -> Stage:
    """What a final (grid) run of ``v`` adds: its pretraining source, and which keys its
    tuning will choose."""
    stage = source_stage(plan, v, seed, plan.recipe.get("data.val_split", 0.0))
    tune: Tune | None = plan.tune
    if tune is not None and v.name in tune.variants:
        stage.keys["meta.tuned"] = sorted(tune.space(v.name))
    return stage


def source_stage(plan: Plan, v: Variant, seed: int, val_split: float) -> Stage:
    """init.* of a run of ``v`` at ``seed`` whose training images leave out ``val_split``."""
    if not v.init:
        return Stage()
    src = source_run(plan, plan.variants[v.init["from"]], seed, v.init["scaled"], val_split)
    if src is None:
        return Stage(pretrain=v.init["scaled"])
    return Stage(keys={"init.source": src.run_id, "init.epochs": v.init["scaled"]},
                 pretrain=v.init["scaled"], needs=(src.run_id,))


def source_run(plan: Plan, src: Variant, seed: int, epochs: int, val_split: float) -> Run | None:
    """The fp run a pretrained run starts from (made once per seed, epochs and split; added to
    the study as a "pretrain" run unless the grid runs the same config itself)."""
    key = (src.name, seed, epochs, val_split)
    if key not in plan.sources:
        keys = {"data.val_split": val_split} if val_split else {}
        run = one_run(plan, src, FP_CELL, epochs, seed, {}, Stage(keys=keys, name="pretrain"))
        plan.sources[key] = run
    return plan.sources[key]


def add_stages(plan: Plan) -> None:
    """After the grid's runs: the tuning trials, the pretraining sources (of the grid's runs
    and the trials), and every final run of a tuned variant turned into a deferred run."""
    study, tune = plan.study, plan.tune
    trials: dict[tuple[str, int, int], list[Run]] = {}
    for v in (plan.variants[n] for n in (tune.variants if tune else []) if n in plan.variants):
        for cell in sorted({(r.w_bits, r.a_bits) for r in study.runs if r.variant == v.name}):
            trials[(v.name, *cell)] = trial_runs(plan, v, cell)
    final = {r.run_id for r in study.runs}
    sources = list({s.run_id: s for s in plan.sources.values() if s is not None and
                    s.run_id not in final}.values())
    study.runs = sources + [r for runs in trials.values() for r in runs] + study.runs
    if tune is None:
        return
    study.tune = tune
    for r in [r for r in study.runs if r.stage == "final" and r.variant in tune.variants]:
        study.runs.remove(r)
        study.slots.append(deferred(r, trials.get((r.variant, r.w_bits, r.a_bits), [])))


def trial_runs(plan: Plan, v: Variant, cell: tuple[int, int]) -> list[Run]:
    """Every trial point of ``v`` in ``cell`` at every tuning seed, on the validation split
    and the tuning budget (from the variant's source when it has an init)."""
    tune: Tune = plan.tune
    cell_opts = plan.cell_options.get(v.name, {}).get(cell, {})
    runs = []
    for k, point in enumerate(tune.points(v.name)):
        for seed in tune.seeds:
            src = source_stage(plan, v, seed, tune.val_split)
            keys = {key: value for key, value in point.items() if not key.startswith("method.")}
            options = {key[len("method."):]: value for key, value in point.items()
                       if key.startswith("method.")}
            stage = dataclasses.replace(
                src, keys={**src.keys, **tune.recipe, **keys, "data.val_split": tune.val_split,
                           "meta.stage": "tune"},
                options=options, tag=f"_t{k}", name="tune", trial=k, params=dict(point))
            run = one_run(plan, v, cell, tune.epochs, seed, cell_opts, stage)
            if run is not None:
                runs.append(run)
    return runs


def deferred(r: Run, trials: list[Run]) -> Slot:
    """The final run ``r`` of a tuned variant as a deferred run: its config.json with the
    untuned values (the template), bound once its trials are complete."""
    template = config.to_dict(r.cfg)
    listed = [{"run_id": t.run_id, "trial": t.trial, "seed": t.seed, "params": t.params}
              for t in trials]
    blob = json.dumps([template, listed], sort_keys=True, default=str)
    slot_id = f"{r.run_id.rsplit('_', 1)[0]}_{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    return Slot(slot_id, r.variant, r.method, r.w_bits, r.a_bits, r.epochs, r.seed, r.unmatched,
                r.shape, template, tuple(r.cfg.meta.tuned), listed,
                tuple(t.run_id for t in trials) + r.needs)
