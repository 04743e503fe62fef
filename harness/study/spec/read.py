"""Reading a study spec, in small named steps (study table, scale, recipe, grid, variants,
executor, expansion, whole-study checks), collecting every problem before it raises
:class:`SpecErrors`, so a user fixes a broken spec in one pass."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from harness import config, files
from harness.errors import UserError, each
from harness.report.keys import check_report_table, name_problems
from harness.run import resolve
from harness.study.spec.cells import all_cells, cell_recipe, set_keys
from harness.study.spec.checks import (
    check_data_roots,
    check_distinct_variants,
    check_loggers,
    check_recipe_shared,
)
from harness.study.spec.expand import Plan, expand
from harness.study.spec.methods import (
    fix_method_paths,
    fix_option_paths,
    forget_parsed_options,
    method_recipe_changes,
)
from harness.study.spec.overrides import apply_sets
from harness.study.spec.schema import (
    BUILTIN_SCALES,
    DEPENDS_ON,
    EXCLUDE_TYPES,
    EXECUTOR_DEFAULTS,
    EXECUTOR_TYPES,
    MAX_RUNS,
    MAX_SPEC_BYTES,
    RECIPE_PROBE,
    RESOURCE_KEYS,
    SAFE_NAME,
    SCALE_TYPES,
    SECTIONS,
    STUDY_KEYS,
    STUDY_TYPES,
    UNMATCHED_FIX,
    VARIANT_FLAGS,
    VARIANT_KEYS,
    Grid,
    Problems,
    SpecErrors,
    Study,
    Variant,
    fix_root,
    is_int,
    not_recipe,
)
from harness.study.spec.stages import add_stages, final_stage
from harness.study.spec.tune import check_inits, init_table, tune_table


def load_spec(path: str | Path, scale: str | None = None, sets: list[str] | None = None,
              data_warnings: list[str] | None = None, max_runs: int = MAX_RUNS) -> Study:
    """Parse, validate and expand a study spec; raises SpecErrors listing every problem.

    ``sets`` ("key=value", as for `run --set`) override the shared recipe for every run, so
    the comparison stays matched (e.g. --set data.root=/data/cifar on another machine).
    ``data_warnings``: a list that takes missing or incomplete data roots instead of errors
    (a dry run plans a study before its data is there). ``max_runs``: the most runs the
    spec may expand to."""
    path = Path(path)
    forget_parsed_options()  # they live for one reading (a path option's file may change)
    raw, sets = apply_sets(read_toml(path), sets)  # --set grid.seeds=[0]: as if the file said so
    p = Problems(str(path))
    p.known(raw, SECTIONS, "spec")
    for section in ("study", "recipe", "grid", "variants", "executor", "scales", "report"):
        if section in raw and not isinstance(raw[section], dict):
            p.add(f"{section}: expected a table ([{section}] ...), got {raw[section]!r}")
            raw = {**raw, section: {}}
    name, allow_unmatched = study_table(raw, path, p)
    scale = scale or "full"
    scale_t = scale_table(raw, scale, p)
    recipe = recipe_table(raw, sets, path.parent, p)
    n = len(p.items)
    for key in bad_recipe_keys(recipe, p):
        del recipe[key]  # reported once here, not again for every run
    recipe_ok = len(p.items) == n
    grid = grid_table(raw, scale, scale_t, p)
    variants = variants_table(raw, allow_unmatched, path.parent, p)
    executor = {**EXECUTOR_DEFAULTS, **p.typed(raw.get("executor", {}), EXECUTOR_TYPES,
                                               "executor")}
    check_packing(executor, "executor", p)
    for key, message in check_report_table(raw.get("report", {})):
        p.add(f"{key}: {message}")
    study = Study(path, str(name), raw, scale, executor=executor)
    scale_set = flat_table(scale_t.get("set", {}), f"scales.{scale}.set", p)
    fix_root(scale_set, path.parent)  # a scale's paths are relative to the spec too
    fix_method_paths(scale_set, path.parent)
    per_cell = cell_recipe(raw, recipe, set_keys(sets), all_cells(variants, grid.bits),
                           path.parent, p)
    tune = tune_table(raw, variants, grid.seeds, scale_t, {**recipe, **scale_set}, p)
    check_inits(variants, list(grid.budgets.values()), tune, scale_t, p)
    plan = Plan(study, recipe, scale_set, variants, grid, p, per_cell, recipe_ok, tune=tune,
                stage_for=final_stage, max_runs=max_runs)
    expand(plan)
    check_data_roots(study, p, data_warnings)
    check_loggers(study, p)
    check_recipe_shared(study, p)
    check_distinct_variants(study, p)
    add_stages(plan)   # tuning trials, pretraining sources, deferred final runs
    for key, message in name_problems(raw.get("report"), report_names(study, variants, grid)):
        p.add(f"{key}: {message}")
    if not study.runs and not p.items:
        p.add("the grid expands to no runs; check grid and variants")
    if p.items:
        raise SpecErrors(p.items)
    return study


def check_packing(executor: dict[str, Any], where: str, p: Problems) -> None:
    """Packed tasks (several runs per GPU or per job) hold one process per run: not a
    multi-process (DDP) job."""
    packs = executor.get("runs_per_gpu", 1) > 1 or executor.get("runs_per_job", 1) > 1
    if packs and (executor.get("tasks_per_node", 1) > 1 or executor.get("nodes", 1) > 1):
        p.add(f"{where}.runs_per_gpu/runs_per_job: packing runs into a task needs "
              "tasks_per_node = 1 and nodes = 1 (a DDP run is a task of its own)")


def flat_table(table: Any, where: str, p: Problems) -> dict[str, Any]:
    """A table as dotted keys; a key set twice (as ``optim = {lr = ...}`` and as
    ``"optim.lr" = ...``) is a problem naming both places (the last value is kept)."""
    if not isinstance(table, dict):
        return {}
    try:
        return config.flatten(table, strict=True)
    except UserError as e:
        p.add(f"{where}.{e}")
        return config.flatten(table)


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecErrors([f"{path}: no such study file; pass a path like studies/demo.toml"])
    try:
        return tomllib.loads(files.read_bytes(path, MAX_SPEC_BYTES).decode())
    except tomllib.TOMLDecodeError as e:
        raise SpecErrors([f"{path}: not valid TOML ({e}); fix the syntax"]) from None
    except RecursionError:
        raise SpecErrors([f"{path}: nested too deeply to read; fix the syntax"]) from None
    except (OSError, ValueError) as e:  # not UTF-8, too large
        raise SpecErrors([f"{path}: cannot be read ({e}); pass a TOML study spec"]) from None


def study_table(raw: dict, path: Path, p: Problems) -> tuple[str, bool]:
    study_t = raw.get("study", {})
    if not isinstance(study_t, dict):
        p.add("study: expected a table, e.g. [study] name = \"mine\"")
        study_t = {}
    p.known(study_t, STUDY_KEYS, "study")
    study_t = p.typed({k: v for k, v in study_t.items() if k in STUDY_TYPES}, STUDY_TYPES,
                      "study")
    name = study_t.get("name", path.stem)
    if not SAFE_NAME.fullmatch(str(name)):
        p.add(f"study.name: {name!r} must be letters, digits, '-', '_', '.' (not first), at "
              "most 100 characters")
    return str(name), bool(study_t.get("allow_unmatched", False))


def scale_table(raw: dict, scale: str, p: Problems) -> dict[str, Any]:
    spec_scales = raw.get("scales", {})
    if not isinstance(spec_scales, dict):
        p.add("scales: expected [scales.NAME] tables")
        spec_scales = {}
    scales = {**BUILTIN_SCALES, **{k: p.typed(v, SCALE_TYPES, f"scales.{k}")
                                   for k, v in spec_scales.items()}}
    if scale not in scales:
        p.add(f"--scale {scale!r} is not defined; use one of {sorted(scales)} or add a "
              "[scales.NAME] table")
        return BUILTIN_SCALES["full"]
    return {**BUILTIN_SCALES["full"], **scales[scale]}


def recipe_table(raw: dict, sets: list[str] | None, spec_dir: Path, p: Problems) -> dict[str, Any]:
    table = raw.get("recipe", {})
    if not isinstance(table, dict):
        p.add("recipe: expected a table of config keys")
        table = {}
    recipe = flat_table(table, "recipe", p)
    try:
        overrides = config.parse_sets(sets or [])
    except UserError as e:
        p.add(str(e))
        overrides = {}
    for key, value in overrides.items():
        if key == "data.root" and isinstance(value, str) and value and not os.path.isabs(value):
            value = str(Path(value).resolve())  # --set paths are relative to the caller
        recipe[key] = value
    for key in recipe:
        if not_recipe(key):
            p.add(f"recipe.{key}: set by the grid or a variant, not the shared recipe; move it "
                  "to [grid] or [variants.NAME]")
    fix_root(recipe, spec_dir)
    return recipe


def bad_recipe_keys(recipe: dict[str, Any], p: Problems) -> list[str]:
    """Check the shared recipe once, before any run, and report every bad key once (with a
    "did you mean" for misspelled names): each key on its own for its name and type, then the
    rest together through config resolution (ranges, choices, model and dataset names). A key
    resolution refuses is reported and set aside (with the keys that depend on it,
    ``DEPENDS_ON``) and the rest resolved again, so one bad key hides no other. Returns the
    keys to leave out of the runs."""
    bad = []
    for key, value in recipe.items():
        try:
            config.from_flat({key: value})
        except UserError as e:
            p.add(f"recipe.{e}")
            bad.append(key)
    probe = {k: v for k, v in recipe.items() if k not in bad and not not_recipe(k)}
    while True:
        try:
            resolve.resolve(config.from_flat({**probe, **RECIPE_PROBE}))
            return bad
        except UserError as e:
            blamed = [one for one in each(e) if one.field in probe]
            if not blamed:  # a key the recipe leaves at its default (e.g. sr.* without task),
                if not bad:    # unless a key was set aside: it may only follow from that
                    p.add(f"recipe.{e}")
                return bad
        for one in blamed:
            p.add(f"recipe.{one}")
            prefix = DEPENDS_ON.get(one.field)
            for key in [k for k in probe if k == one.field or prefix and k.startswith(prefix)]:
                del probe[key]
                bad.append(key)


def pairs(value: Any, where: str, p: Problems) -> list[tuple[int, int]]:
    ok = isinstance(value, list) and value and all(
        isinstance(x, list) and len(x) == 2 and all(is_int(b) for b in x) for x in value)
    if not ok:
        p.add(f"{where}: expected W/A pairs like [[1, 32], [2, 2]], got {value!r}")
        return []
    return [tuple(x) for x in value]


def int_list(value: Any, where: str, p: Problems) -> list[int]:
    if not (isinstance(value, list) and value and all(is_int(v) for v in value)):
        p.add(f"{where}: expected a non-empty list of integers, got {value!r}")
        return []
    return list(value)


def grid_table(raw: dict, scale: str, scale_t: dict, p: Problems) -> Grid:
    """The [grid] table at this scale (its budgets mapped to the scale's epochs)."""
    grid = raw.get("grid", {})
    if not isinstance(grid, dict):
        p.add("grid: expected a table with bits, epochs and seeds")
        grid = {}
    p.known(grid, {"bits", "epochs", "seeds", "exclude", "variants"}, "grid")
    bits = pairs(grid.get("bits"), "grid.bits", p)
    budgets = int_list(grid.get("epochs"), "grid.epochs", p)
    seeds = int_list(grid.get("seeds"), "grid.seeds", p)
    if any(e < 1 for e in budgets):
        p.add(f"grid.epochs: budgets must be >= 1 epoch, got {budgets}")
        budgets = [e for e in budgets if e >= 1]
    if any(not 0 <= s < config.SEED_LIMIT for s in seeds):
        p.add(f"grid.seeds: seeds must be in [0, 2^32), got {seeds}")
        seeds = [s for s in seeds if 0 <= s < config.SEED_LIMIT]
    if len(set(seeds)) < len(seeds) or len(set(budgets)) < len(budgets):
        p.add("grid: seeds and epoch budgets must not repeat")
    if scale_t.get("max_seeds"):
        seeds = seeds[: scale_t["max_seeds"]]
    div, lo = scale_t.get("epochs_divisor", 1), scale_t.get("min_epochs", 1)
    budget_map = {e: max(lo, int(round(e / div))) for e in budgets}
    if len(set(budget_map.values())) < len(budget_map):
        p.add(f"--scale {scale} maps the budgets {budgets} to "
              f"{[budget_map[e] for e in budgets]} epochs, which collide; use larger budgets or "
              "a scale with a smaller epochs_divisor")
    excludes = exclude_list(grid.get("exclude", []), p)
    chosen = grid.get("variants")
    if chosen is not None and not (isinstance(chosen, list)
                                   and all(isinstance(v, str) for v in chosen)):
        p.add(f"grid.variants: expected a list of variant names, got {chosen!r}")
        chosen = None
    return Grid(bits, budget_map, seeds, excludes, chosen)


def exclude_list(value: Any, p: Problems) -> list[dict]:
    if not isinstance(value, list):
        p.add("grid.exclude: expected a list of tables like "
              '[{ variant = "bop", bits = [2, 32], reason = "..." }]')
        return []
    out = []
    for i, entry in enumerate(value):
        n = len(p.items)
        ok = p.typed(entry, EXCLUDE_TYPES, f"grid.exclude[{i}]")
        if len(p.items) == n:
            if not set(ok) - {"reason"}:
                p.add(f"grid.exclude[{i}]: name at least one of variant, bits, epochs")
            else:
                out.append(ok)
    return out


def report_names(study: Study, variants: dict[str, Variant], grid) -> dict[str, set[str]]:
    """What [report] may name: the methods and variants that run, and the settings (data
    and model names, "data / model") of their runs."""
    chosen = [v for n, v in variants.items() if grid.chosen is None or n in grid.chosen]
    pairs = {(r.cfg.data.name, r.cfg.model.name) for r in study.runs} | {
        (s.template.get("data", {}).get("name"), s.template.get("model", {}).get("name"))
        for s in study.slots}
    return {"methods": {v.method for v in chosen} | {r.method for r in study.items},
            "variants": set(variants if grid.chosen is None else grid.chosen)
            | {r.variant for r in study.items},
            "settings": ({str(x) for pair in pairs for x in pair}
                         | {f"{d} / {m}" for d, m in pairs}) if pairs else None}


def variants_table(raw: dict, allow_unmatched: bool, spec_dir: Path,
                   p: Problems) -> dict[str, Variant]:
    table = raw.get("variants", {})
    if not isinstance(table, dict) or not table:
        p.add("variants: define at least one [variants.NAME] with a method")
        return {}
    out = {}
    for name, t in table.items():
        v = variant_table(name, t, allow_unmatched, spec_dir, p)
        if v is not None:
            out[name] = v
    return out


def variant_table(name: str, t: Any, allow_unmatched: bool, spec_dir: Path,
             p: Problems) -> Variant | None:
    w = f"variants.{name}"
    if not SAFE_NAME.fullmatch(name):
        p.add(f"{w}: the name becomes a folder name: use letters, digits, '-', '_', '.' (not "
              "first), at most 100 characters")
        return None
    if not isinstance(t, dict):
        p.add(f"{w}: expected a table")
        return None
    p.known(t, VARIANT_KEYS, w)
    flags = p.typed({k: v for k, v in t.items() if k in VARIANT_FLAGS}, VARIANT_FLAGS, w)
    if set(flags) != {k for k in t if k in VARIANT_FLAGS}:
        return None   # a wrong type named above; the rest of the variant would mislead
    if "method" not in t:
        p.add(f"{w}.method: missing; name the method, e.g. method = \"slb\"")
        return None
    for key in ("options", "recipe", "executor"):
        if not isinstance(t.get(key, {}), dict):
            p.add(f"{w}.{key}: expected a table, e.g. {key} = {{ ... }}")
            t = {**t, key: {}}
    recipe = flat_table(t.get("recipe", {}), f"{w}.recipe", p)
    unmatched = bool(t.get("unmatched", False))
    if recipe and not unmatched:
        p.add(f"{w}.recipe: changes the shared recipe; {UNMATCHED_FIX}")
    for change in method_recipe_changes(t["method"], dict(t.get("options", {}))):
        if not unmatched:
            p.add(f"{w}.options: {change}, so the variant does not share the recipe; "
                  f"{UNMATCHED_FIX}")
    if unmatched and not allow_unmatched:
        p.add(f"{w}.unmatched: set study.allow_unmatched = true to allow unmatched comparisons "
              "in this study")
    for key in recipe:
        if not_recipe(key):
            p.add(f"{w}.recipe.{key}: not a recipe key; use options or the grid")
    fix_root(recipe, spec_dir)
    bits = pairs(t["bits"], f"{w}.bits", p) if "bits" in t else None
    ex = p.typed(t.get("executor", {}), {k: EXECUTOR_TYPES[k] for k in RESOURCE_KEYS},
                 f"{w}.executor")
    check_packing(ex, f"{w}.executor", p)
    cell_options = t.get("cell_options", {})
    if not isinstance(cell_options, dict):
        p.add(f'{w}.cell_options: expected a table keyed by cells, e.g. '
              '{ "W1/A32" = { factor = 1.04 } }')
        cell_options = {}
    options = dict(t.get("options", {}))
    cell_options = {k: dict(v) if isinstance(v, dict) else v for k, v in cell_options.items()}
    for values in (options, *cell_options.values()):
        fix_option_paths(t["method"], values, spec_dir)
    init = init_table(t["init"], f"{w}.init", p) if "init" in t else None
    return Variant(name, t["method"], options, recipe, unmatched,
                   bool(t.get("reference", False)), bits, dict(ex), cell_options,
                   t.get("tune"), init)
