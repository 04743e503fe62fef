"""Expansion: every (variant, cell, budget, seed) of the grid becomes one resolved run, or a
problem reported once; cells a method cannot run or the spec excludes are listed with why."""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from harness import config
from harness.errors import UserError, did_you_mean, each
from harness.run import resolve
from harness.study.spec.cells import cell_options, variant_cells
from harness.study.spec.methods import parsed_options, unsupported
from harness.study.spec.schema import (
    MAX_NAME,
    MAX_RUNS,
    RESOURCE_KEYS,
    SAFE_NAME,
    Grid,
    Problems,
    Run,
    Study,
    Variant,
    not_recipe,
)


@dataclass
class Plan:
    """Everything expansion reads: the study, the shared recipe (problem keys set aside:
    ``recipe_ok`` is False then), a scale's ``set``, the variants, the grid and the
    per-cell recipe."""

    study: Study
    recipe: dict[str, Any]
    scale_set: dict[str, Any]
    variants: dict[str, Variant]
    grid: Grid
    problems: Problems
    cell_recipe: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    recipe_ok: bool = True
    tune: Any = None                      # spec.tune.Tune, when the study tunes
    # what a final run of a variant at a seed adds (pretraining source, tuned keys):
    # harness/study/spec/stages.py final_stage; None = nothing
    stage_for: Callable[["Plan", Variant, int], "Stage"] | None = None
    sources: dict[tuple, Run | None] = field(default_factory=dict)   # pretraining runs
    cell_options: dict[str, dict] = field(default_factory=dict)  # variant -> cell -> options
    max_runs: int = MAX_RUNS
    templates: dict[str, Any] = field(default_factory=dict)   # spec.expand.Template by key


def expand(plan: Plan) -> None:
    """Fill ``plan.study.runs`` and ``.excluded``; every problem goes to ``plan.problems``.
    A grid of more than ``plan.max_runs`` runs is refused before any run is resolved."""
    variants, p = plan.variants, plan.problems
    if plan.grid.chosen is not None:
        unknown = [v for v in plan.grid.chosen if v not in variants]
        if unknown:
            p.add(f"grid.variants: {unknown} not defined under [variants]")
        variants = {k: v for k, v in variants.items() if k in plan.grid.chosen}
    check_excludes(plan)
    n = sum(len(variant_cells(v, plan.grid.bits)) for v in variants.values()) * \
        len(plan.grid.budgets) * len(plan.grid.seeds)
    if n > plan.max_runs:
        p.add(f"grid: variants x cells x epoch budgets x seeds make {n:,} runs, over the limit "
              f"of {plan.max_runs:,} runs per study; split the study, or raise the limit with "
              "`sweep --max-runs N`")
        return
    for v in variants.values():
        ok = method_ok(v, p)
        per_cell = cell_options(v, variant_cells(v, plan.grid.bits), p)
        if not ok or per_cell is None:
            continue  # its method, options or per-cell options are broken: reported once,
                      # not once per run
        plan.cell_options[v.name] = per_cell
        runs = [run for cell in variant_cells(v, plan.grid.bits)
                for run in cell_runs(plan, v, cell, per_cell.get(cell, {}))]
        if run_ids_fit(v, runs, p):
            plan.study.runs += runs


def cell_runs(plan: Plan, v: Variant, cell: tuple[int, int],
              options: dict[str, Any]) -> list[Run]:
    """A variant's runs in one cell: every budget and seed (a budget it cannot or may not
    run is listed as excluded instead)."""
    w, a = cell
    runs = []
    for budget, epochs in plan.grid.budgets.items():
        reason = excluded(plan.grid.excludes, v.name, w, a, budget) or unsupported(v.method, w)
        if reason is not None:
            plan.study.excluded.append({"variant": v.name, "w_bits": w, "a_bits": a,
                                        "epochs": epochs, "reason": reason})
            continue
        for seed in plan.grid.seeds:
            stage = plan.stage_for(plan, v, seed) if plan.stage_for else None
            run = one_run(plan, v, cell, epochs, seed, options, stage)
            if run is not None:
                runs.append(run)
    return runs


def run_ids_fit(v: Variant, runs: list[Run], p: Problems) -> bool:
    """Run ids (the variant's name plus cell, budget, seed and hash) are folder names, held
    to the same pattern and length as every name that becomes a path (SAFE_NAME)."""
    longest = max((r.run_id for r in runs), key=len, default="")
    if SAFE_NAME.fullmatch(longest) or not longest:
        return True
    over = len(longest) - MAX_NAME
    p.add(f"variants.{v.name}: the name makes run ids of up to {len(longest)} characters "
          f"(e.g. {longest!r}), over the limit of {MAX_NAME}; shorten the variant name to at "
          f"most {max(1, len(v.name) - over)} characters")
    return False


def method_ok(v: Variant, p: Problems) -> bool:
    """The variant's method exists and its options parse; every problem reported once."""
    try:
        parsed_options(v.method, v.options)
        return True
    except UserError as err:
        for one in each(err):
            p.add(f"variants.{v.name}: {one}")
        return False


def one_run(plan: Plan, v: Variant, cell: tuple[int, int], epochs: int, seed: int,
            cell_opts: dict[str, Any], stage: Stage | None = None) -> Run | None:
    """One run resolved, or None with its problems reported. Runs that differ only in their
    seed share one template, resolved and checked once (at its first seed): each further
    run is the template at its seed, with its hash from the template's (``Template``)."""
    stage = stage or Stage()
    key = repr((v.name, cell, epochs, cell_opts, stage.keys, stage.options, stage.pretrain,
                stage.tag, stage.name, stage.needs))
    t = plan.templates.get(key, MISSING)
    if t is None:
        return None  # its problems were reported at its first seed
    if t is MISSING or type(seed) is not int or not 0 <= seed < config.SEED_LIMIT:
        cfg = resolve_run(plan, v, cell, epochs, seed, cell_opts, stage)
        if t is MISSING:
            t = new_template(plan, v, cfg, key)
            if type(seed) is int and 0 <= seed < config.SEED_LIMIT:
                plan.templates[key] = t   # (a seed out of range: only this run's problem)
        if cfg is None:
            return None
    else:
        cfg = dataclasses.replace(t.cfg, seed=seed)
    w, a = cell
    return Run(f"{v.name}_w{w}a{a}_e{epochs}_s{seed}{stage.tag}_{t.hash(seed)[:8]}", v.name,
               v.method, cfg, w, a, epochs, seed, v.unmatched, t.shape, stage.name,
               stage.needs, stage.trial, stage.params, t.key)


@dataclass
class Template:
    """What the runs of one variant, cell, budget and stage share but their seed: the
    config resolved at the first seed, ``seed -> config hash``, the job shape, its key."""

    cfg: config.RunConfig
    hash: Callable[[int], str]
    shape: tuple
    key: str


MISSING = object()


def new_template(plan: Plan, v: Variant, cfg: config.RunConfig | None,
                 key: str) -> Template | None:
    if cfg is None:
        return None
    res = {**plan.study.executor, **v.executor}
    return Template(cfg, resolve.seed_hashes(cfg),
                    tuple((k, json.dumps(res[k])) for k in RESOURCE_KEYS), key)


def resolve_run(plan: Plan, v: Variant, cell: tuple[int, int], epochs: int, seed: int,
                cell_opts: dict[str, Any], stage: Stage) -> config.RunConfig | None:
    """One run's config resolved, or None with its problems reported. When the shared recipe
    had problems (keys set aside, at their defaults here), a problem of a key the variant does
    not set may only follow from those, and is left out. Its method options are the
    variant's, then the cell's, parsed once per distinct set; a scale's ``set`` may name
    method options too, under the variant's. ``stage``: what a stage sets on top (a trial's
    values, the validation split, the pretraining source: harness/study/spec/stages.py);
    ``epochs`` stays the budget the run id names."""
    study, (w, a) = plan.study, cell
    cell_recipe = plan.cell_recipe.get(cell, {})
    flat = {**plan.recipe, **cell_recipe, **v.recipe, **plan.scale_set, **stage.keys,
            "method": v.method, "w_bits": w, "a_bits": a, "epochs": epochs - stage.pretrain,
            "seed": seed, "progress": "line", "meta.study": study.name,
            "meta.variant": v.name, "meta.scale": study.scale, "meta.unmatched": v.unmatched}
    scale_options = {k[len("method."):]: flat.pop(k) for k in list(flat)
                     if k.startswith("method.")}
    try:
        options = parsed_options(v.method, {**scale_options, **v.options, **cell_opts,
                                            **stage.options})
        return resolve.resolve(dataclasses.replace(config.from_flat(flat),
                                                   method_options=options))
    except UserError as err:
        report_run_problems(plan, v, cell_recipe, err)
        return None


@dataclass
class Stage:
    """What a stage adds to a run: flat recipe keys and method options on top of the
    variant's (a trial's values, the validation split, init.*), the pretraining epochs taken
    from the budget, the run id's tag ("_t3" for trial 3), its inputs."""

    keys: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    pretrain: int = 0
    tag: str = ""
    name: str = "final"
    needs: tuple[str, ...] = ()
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


def report_run_problems(plan: Plan, v: Variant, cell_recipe: dict[str, Any],
                        err: UserError) -> None:
    """A run's problems, each under what the user must change: the recipe or the variant."""
    p = plan.problems
    for one in each(err):
        if one.field in plan.recipe and one.field not in v.recipe:
            p.add(f"recipe.{one}")
        elif plan.recipe_ok or one.field in {**v.recipe, **cell_recipe} or \
                not_recipe(one.field):
            p.add(f"variants.{v.name}: {one}")


def check_excludes(plan: Plan) -> None:
    """An exclude naming a variant the spec does not define excludes nothing: a typo that
    would submit the runs it meant to leave out, so it is an error. One naming a cell or a
    budget the grid lacks may be left over from narrowing the grid: a warning that it
    excludes nothing."""
    cells = {cell for v in plan.variants.values() for cell in variant_cells(v, plan.grid.bits)}
    for i, ex in enumerate(plan.grid.excludes):
        where = f"grid.exclude[{i}]"
        if "variant" in ex and ex["variant"] not in plan.variants:
            plan.problems.add(f"{where}: variant {ex['variant']!r} is not defined under "
                              f"[variants]{did_you_mean(str(ex['variant']), plan.variants)}")
        if "bits" in ex and tuple(ex["bits"]) not in cells:
            print(f"warning: {where}: bits {list(ex['bits'])} is no cell of the study (cells: "
                  f"{[list(c) for c in sorted(cells)]}); it excludes nothing", file=sys.stderr)
        if "epochs" in ex and ex["epochs"] not in plan.grid.budgets:
            print(f"warning: {where}: epochs {ex['epochs']} is no budget of [grid] epochs "
                  f"{sorted(plan.grid.budgets)}; it excludes nothing", file=sys.stderr)


def excluded(excludes: list[dict], variant: str, w: int, a: int, e: int) -> str | None:
    """Why the spec excludes this (variant, cell, budget), or None."""
    for ex in excludes:
        if ex.get("variant", variant) != variant:
            continue
        if "bits" in ex and list(ex["bits"]) != [w, a]:
            continue
        if "epochs" in ex and ex["epochs"] != e:
            continue
        return "excluded by the spec" + (f": {ex['reason']}" if ex.get("reason") else "")
    return None
