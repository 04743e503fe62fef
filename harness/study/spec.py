"""Study specs: a TOML file -> validated, expanded runs (one resolved RunConfig each).

    [study]      name, description, question, gpu_hours, allow_unmatched, reproduction
    [recipe]     the shared recipe: every config key but the grid's (see `run --help`)
    [cell_recipe."W1/A1..A8"]  recipe keys for the cells a pattern names (reproduction only)
    [grid]       bits = [[W, A], ...], epochs = [...], seeds = [...], exclude, variants
    [variants.NAME]  method, options, cell_options, recipe (unmatched only), unmatched,
                 reference, bits, executor, description
    [executor]   resources and where to run (see EXECUTOR_TYPES)
    [scales.NAME]  epochs_divisor, min_epochs, max_seeds, set (e.g. `--scale smoke`)
    [report]     read by the report (its keys checked here too: harness/report/keys.py)

:func:`load_spec` reads a spec in small named steps (study table, scale, recipe, grid,
variants, executor, expansion, whole-study checks), collecting every problem before it
raises :class:`SpecErrors`, so a user fixes a broken spec in one pass.

Per-cell settings: a variant's ``cell_options`` and a reproduction study's ``cell_recipe`` are
tables keyed by cell patterns, "W1/A32" or ranges "W1/A1..A8", "W1..W2/A32" (both ends
included, matching the grid's cells in the range). A run takes the variant's options (or the
recipe), then the values of every pattern that names its cell; ``--set`` overrides still win.
A key that does not parse, a pattern that names no cell, two patterns giving one key two values
in a cell, and a key set for some cells with no default for the others are errors. The
resolved values are what each run records (config.json) and what its id hashes.
"""
from __future__ import annotations

import collections
import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import config as C
from harness import tasks
from harness.errors import UserError, each
from harness.report.keys import check_report_table

# keys a run gets from the grid or the variant, never from the shared recipe
GRID_KEYS = ("method", "w_bits", "a_bits", "epochs", "seed")
BUILTIN_SCALES = {
    # CPU trial of any spec: small subsets and width, budgets divided by 50 (500 -> 10)
    "smoke": {"epochs_divisor": 50, "min_epochs": 1, "max_seeds": 0,
              "set": {"data.subset_train": 1000, "data.subset_test": 500, "model.width": 0.25}},
    "full": {"epochs_divisor": 1, "min_epochs": 1, "max_seeds": 0, "set": {}},
}
EXECUTOR_DEFAULTS = {
    "partition": "", "account": "", "qos": "", "constraint": "", "timeout_min": 240,
    "gpus_per_task": 0, "cpus_per_task": 2, "mem_gb": 8, "tasks_per_node": 1, "nodes": 1,
    "array_parallelism": 16, "setup": [], "sbatch": {}, "local_concurrency": 2,
}
# the executor keys that shape one job (runs with equal shapes share a job array)
RESOURCE_KEYS = ("timeout_min", "gpus_per_task", "cpus_per_task", "mem_gb", "tasks_per_node",
                 "nodes", "partition", "constraint", "qos", "account")
SECTIONS = ("study", "recipe", "grid", "variants", "executor", "scales", "report", "cell_recipe")
STUDY_KEYS = ("name", "description", "allow_unmatched", "question", "gpu_hours", "reproduction")
VARIANT_KEYS = ("method", "options", "recipe", "unmatched", "reference", "bits", "executor",
                "description", "cell_options")
# a cell pattern: W<w>[..<w2>]/A<a>[..<a2>], e.g. "W1/A32", "W1/A1..A8", "W1..W2/A32"
CELL_PATTERN = re.compile(r"W(\d+)(?:\.\.W?(\d+))?/A(\d+)(?:\.\.A?(\d+))?")


# names that become paths (study, variant; run ids are built from them): no separators, no
# leading dot, so nothing a spec says can leave the study directory
MAX_NAME = 100
SAFE_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
# what the shared recipe is resolved with when it is checked on its own: a method and grid values
# that cannot fail (epochs: the largest allowed, so no warm-up is too long), so every problem
# found is the recipe's
RECIPE_PROBE = {"method": "fp", "w_bits": 32, "a_bits": 32, "epochs": 10**6, "seed": 0}
# recipe keys whose checks read another key's value: set aside with it when it is bad (a
# model.block checked against a model name that is a typo would be a second, false problem)
DEPENDS_ON = {"model.name": "model."}
UNMATCHED_FIX = ("set unmatched = true on the variant (and study.allow_unmatched = true) for a "
                 "deliberately unmatched comparison")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


EXECUTOR_TYPES = {  # key: (type check, what to write)
    "timeout_min": (lambda v: _int(v) and v > 0, "a positive number of minutes"),
    "gpus_per_task": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "cpus_per_task": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "mem_gb": (lambda v: _num(v) and v > 0, "a positive number of GB"),
    "tasks_per_node": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "nodes": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "array_parallelism": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "local_concurrency": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "setup": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              'a list of shell lines, e.g. ["module load cuda"]'),
    "sbatch": (lambda v: isinstance(v, dict), 'a table, e.g. { exclusive = "" }'),
    **{k: (lambda v: isinstance(v, str), "a string") for k in
       ("partition", "account", "qos", "constraint")},
}
_BOOL = (lambda v: isinstance(v, bool), "true or false (no quotes)")
_TEXT = (lambda v: isinstance(v, str), 'a quoted string, e.g. "..."')
STUDY_TYPES = {"name": _TEXT, "description": _TEXT, "question": _TEXT,
               "gpu_hours": (lambda v: _num(v) and v >= 0, "a number of GPU-hours >= 0"),
               "allow_unmatched": _BOOL, "reproduction": _BOOL}
VARIANT_FLAGS = {"unmatched": _BOOL, "reference": _BOOL, "description": _TEXT,
                 "method": (lambda v: isinstance(v, str), 'a method name, e.g. "slb"')}
SCALE_TYPES = {
    "epochs_divisor": (lambda v: _num(v) and v > 0, "a number > 0"),
    "min_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "max_seeds": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = all)"),
    "set": (lambda v: isinstance(v, dict), 'a table of recipe keys, e.g. { "model.width" = 0.5 }'),
}
EXCLUDE_TYPES = {
    "variant": (lambda v: isinstance(v, str), "a variant name"),
    "bits": (lambda v: isinstance(v, list) and len(v) == 2 and all(_int(b) for b in v),
             "a W/A pair like [2, 32]"),
    "epochs": (_int, "an epoch budget of the grid"),
    "reason": (lambda v: isinstance(v, str), "a string"),
}


# --------------------------------------------------------------------------- what a spec becomes

@dataclass
class Variant:
    name: str
    method: str
    options: dict[str, Any]
    recipe: dict[str, Any]          # unmatched overrides of the shared recipe (flat keys)
    unmatched: bool
    reference: bool
    bits: list[tuple[int, int]] | None
    executor: dict[str, Any]
    cell_options: dict[str, Any] = field(default_factory=dict)  # pattern -> options


@dataclass
class Run:
    run_id: str
    variant: str
    method: str
    cfg: C.RunConfig
    w_bits: int
    a_bits: int
    epochs: int
    seed: int
    unmatched: bool
    shape: tuple

    def manifest(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "variant": self.variant, "method": self.method,
                "w_bits": self.w_bits, "a_bits": self.a_bits, "epochs": self.epochs,
                "seed": self.seed, "unmatched": self.unmatched}


@dataclass
class Study:
    path: Path
    name: str
    raw: dict[str, Any]
    scale: str
    runs: list[Run] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)


class SpecErrors(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class Problems:
    """Every problem of a spec, each once, prefixed with the spec's path."""
    def __init__(self, where: str):
        self.where, self.items = where, []

    def add(self, message: str) -> None:
        line = f"{self.where}: {message}"
        if line not in self.items:
            self.items.append(line)

    def typed(self, table: Any, types: dict, section: str) -> dict:
        """The valid part of ``table``; unknown keys and wrong types are problems."""
        if not isinstance(table, dict):
            self.add(f"{section}: expected a table")
            return {}
        self.known(table, types, section)
        ok = {}
        for key, value in table.items():
            if key in types:
                check, want = types[key]
                if check(value):
                    ok[key] = value
                else:
                    self.add(f"{section}.{key}: expected {want}, got {value!r}")
        return ok

    def known(self, table: dict, allowed, section: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.add(f"{section}.{key}: unknown key; {hint}allowed: "
                         f"{', '.join(sorted(allowed))}")


# --------------------------------------------------------------------------- reading, step by step

def load_spec(path: str | Path, scale: str | None = None, sets: list[str] | None = None,
              data_warnings: list[str] | None = None) -> Study:
    """Parse, validate and expand a study spec; raises SpecErrors listing every problem.

    ``sets`` ("key=value", as for `run --set`) override the shared recipe for every run, so
    the comparison stays matched (e.g. --set data.root=/data/cifar on another machine).
    ``data_warnings``: a list that takes missing or incomplete data roots instead of errors
    (a dry run plans a study before its data is there)."""
    path = Path(path)
    raw = _read_toml(path)
    p = Problems(str(path))
    p.known(raw, SECTIONS, "spec")
    for section in ("study", "recipe", "grid", "variants", "executor", "scales", "report"):
        if section in raw and not isinstance(raw[section], dict):
            p.add(f"{section}: expected a table ([{section}] ...), got {raw[section]!r}")
            raw = {**raw, section: {}}
    name, allow_unmatched = _study_table(raw, path, p)
    scale = scale or "full"
    scale_t = _scale(raw, scale, p)
    recipe = _recipe(raw, sets, path.parent, p)
    n = len(p.items)
    for key in _bad_recipe_keys(recipe, p):
        del recipe[key]  # reported once here, not again for every run
    recipe_ok = len(p.items) == n
    bits, budget_map, seeds, excludes = _grid(raw, scale, scale_t, p)
    variants = _variants(raw, allow_unmatched, path.parent, p)
    executor = {**EXECUTOR_DEFAULTS, **p.typed(raw.get("executor", {}), EXECUTOR_TYPES,
                                               "executor")}
    for key, message in check_report_table(raw.get("report", {})):
        p.add(f"{key}: {message}")
    study = Study(path, str(name), raw, scale, executor=executor)
    scale_set = C.flatten(scale_t.get("set", {}))
    _fix_root(scale_set, path.parent)  # a scale's paths are relative to the spec too
    _fix_method_paths(scale_set, path.parent)
    cell_recipe = _cell_recipe(raw, recipe, _set_keys(sets), _all_cells(variants, bits),
                               path.parent, p)
    _expand(study, recipe, scale_set, variants, bits, budget_map, seeds, excludes, p,
            cell_recipe, recipe_ok)
    _check_data_roots(study, p, data_warnings)
    _check_recipe_shared(study, p)
    _check_distinct_variants(study, p)
    if not study.runs and not p.items:
        p.add("the grid expands to no runs; check grid and variants")
    if p.items:
        raise SpecErrors(p.items)
    return study


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecErrors([f"{path}: no such study file; pass a path like studies/demo.toml"])
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecErrors([f"{path}: not valid TOML ({e}); fix the syntax"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecErrors([f"{path}: cannot be read ({e}); pass a TOML study spec"]) from None


def _study_table(raw: dict, path: Path, p: Problems) -> tuple[str, bool]:
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


def _scale(raw: dict, scale: str, p: Problems) -> dict[str, Any]:
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


def _fix_path(flat: dict[str, Any], key: str, spec_dir: Path) -> None:
    """A path in ``flat[key]``: ${VARS} and ~ expanded; relative paths are relative to the
    spec file (jobs run in a code snapshot, never where the user typed the command)."""
    path = flat.get(key)
    if isinstance(path, str) and path:
        path = os.path.expanduser(os.path.expandvars(path))
        flat[key] = str((spec_dir / path).resolve()) if not os.path.isabs(path) else path


def _fix_root(flat: dict[str, Any], spec_dir: Path) -> None:
    _fix_path(flat, "data.root", spec_dir)


def _fix_option_paths(method: str, options: Any, spec_dir: Path) -> None:
    """A method's file options (``metadata={"path": True}``, e.g. SLB's init_from), like
    data.root; whether the file exists is checked when the options are parsed."""
    from methods.base import load_all
    from methods.options import path_options

    cls = load_all().get(method)
    if cls is None or not isinstance(options, dict):
        return
    for key in path_options(cls.Options):
        _fix_path(options, key, spec_dir)


def _fix_method_paths(flat: dict[str, Any], spec_dir: Path) -> None:
    """Flat ``method.<option>`` keys (a scale's ``set``) that name files for some method."""
    from methods.base import load_all
    from methods.options import path_options

    for cls in load_all().values():
        for key in path_options(cls.Options):
            _fix_path(flat, f"method.{key}", spec_dir)


def _recipe(raw: dict, sets: list[str] | None, spec_dir: Path, p: Problems) -> dict[str, Any]:
    table = raw.get("recipe", {})
    if not isinstance(table, dict):
        p.add("recipe: expected a table of config keys")
        table = {}
    recipe = C.flatten(table)
    try:
        overrides = C.parse_sets(sets or [])
    except UserError as e:
        p.add(str(e))
        overrides = {}
    for key, value in overrides.items():
        if key == "data.root" and isinstance(value, str) and value and not os.path.isabs(value):
            value = str(Path(value).resolve())  # --set paths are relative to the caller
        recipe[key] = value
    for key in recipe:
        if _not_recipe(key):
            p.add(f"recipe.{key}: set by the grid or a variant, not the shared recipe; move it "
                  "to [grid] or [variants.NAME]")
    _fix_root(recipe, spec_dir)
    return recipe


def _bad_recipe_keys(recipe: dict[str, Any], p: Problems) -> list[str]:
    """Check the shared recipe once, before any run, and report every bad key once (with a
    "did you mean" for misspelled names): each key on its own for its name and type, then the
    rest together through config resolution (ranges, choices, model and dataset names). A key
    resolution refuses is reported and set aside (with the keys that depend on it,
    ``DEPENDS_ON``) and the rest resolved again, so one bad key hides no other. Returns the
    keys to leave out of the runs."""
    bad = []
    for key, value in recipe.items():
        try:
            C.from_flat({key: value})
        except UserError as e:
            p.add(f"recipe.{e}")
            bad.append(key)
    probe = {k: v for k, v in recipe.items() if k not in bad and not _not_recipe(k)}
    while True:
        try:
            C.resolve(C.from_flat({**probe, **RECIPE_PROBE}))
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


def _not_recipe(key: str) -> bool:
    """Keys set by the grid or a variant (reported by ``_recipe`` when a recipe sets one)."""
    return key in GRID_KEYS or key.startswith(("method.", "meta."))


def _pairs(value: Any, where: str, p: Problems) -> list[tuple[int, int]]:
    ok = isinstance(value, list) and value and all(
        isinstance(x, list) and len(x) == 2 and all(_int(b) for b in x) for x in value)
    if not ok:
        p.add(f"{where}: expected W/A pairs like [[1, 32], [2, 2]], got {value!r}")
        return []
    return [tuple(x) for x in value]


def _int_list(value: Any, where: str, p: Problems) -> list[int]:
    if not (isinstance(value, list) and value and all(_int(v) for v in value)):
        p.add(f"{where}: expected a non-empty list of integers, got {value!r}")
        return []
    return list(value)


def _grid(raw: dict, scale: str, scale_t: dict, p: Problems):
    """(W/A pairs, {budget: epochs at this scale}, seeds, exclusions)."""
    grid = raw.get("grid", {})
    if not isinstance(grid, dict):
        p.add("grid: expected a table with bits, epochs and seeds")
        grid = {}
    p.known(grid, {"bits", "epochs", "seeds", "exclude", "variants"}, "grid")
    bits = _pairs(grid.get("bits"), "grid.bits", p)
    budgets = _int_list(grid.get("epochs"), "grid.epochs", p)
    seeds = _int_list(grid.get("seeds"), "grid.seeds", p)
    if any(e < 1 for e in budgets):
        p.add(f"grid.epochs: budgets must be >= 1 epoch, got {budgets}")
        budgets = [e for e in budgets if e >= 1]
    if any(not 0 <= s < C.SEED_LIMIT for s in seeds):
        p.add(f"grid.seeds: seeds must be in [0, 2^32), got {seeds}")
        seeds = [s for s in seeds if 0 <= s < C.SEED_LIMIT]
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
    excludes = _exclude_list(grid.get("exclude", []), p)
    chosen = grid.get("variants")
    return bits, budget_map, seeds, (excludes, chosen)


def _exclude_list(value: Any, p: Problems) -> list[dict]:
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


def _variants(raw: dict, allow_unmatched: bool, spec_dir: Path, p: Problems) -> dict[str, Variant]:
    table = raw.get("variants", {})
    if not isinstance(table, dict) or not table:
        p.add("variants: define at least one [variants.NAME] with a method")
        return {}
    out = {}
    for name, t in table.items():
        v = _variant(name, t, allow_unmatched, spec_dir, p)
        if v is not None:
            out[name] = v
    return out


def _variant(name: str, t: Any, allow_unmatched: bool, spec_dir: Path,
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
    recipe = C.flatten(t.get("recipe", {}))
    unmatched = bool(t.get("unmatched", False))
    if recipe and not unmatched:
        p.add(f"{w}.recipe: changes the shared recipe; {UNMATCHED_FIX}")
    for change in _method_recipe_changes(t["method"], dict(t.get("options", {}))):
        if not unmatched:
            p.add(f"{w}.options: {change}, so the variant does not share the recipe; "
                  f"{UNMATCHED_FIX}")
    if unmatched and not allow_unmatched:
        p.add(f"{w}.unmatched: set study.allow_unmatched = true to allow unmatched comparisons "
              "in this study")
    for key in recipe:
        if _not_recipe(key):
            p.add(f"{w}.recipe.{key}: not a recipe key; use options or the grid")
    _fix_root(recipe, spec_dir)
    bits = _pairs(t["bits"], f"{w}.bits", p) if "bits" in t else None
    ex = p.typed(t.get("executor", {}), {k: EXECUTOR_TYPES[k] for k in RESOURCE_KEYS},
                 f"{w}.executor")
    cell_options = t.get("cell_options", {})
    if not isinstance(cell_options, dict):
        p.add(f'{w}.cell_options: expected a table keyed by cells, e.g. '
              '{ "W1/A32" = { factor = 1.04 } }')
        cell_options = {}
    options = dict(t.get("options", {}))
    cell_options = {k: dict(v) if isinstance(v, dict) else v for k, v in cell_options.items()}
    for values in (options, *cell_options.values()):
        _fix_option_paths(t["method"], values, spec_dir)
    return Variant(name, t["method"], options, recipe, unmatched,
                   bool(t.get("reference", False)), bits, dict(ex), cell_options)


def _method_recipe_changes(method: str, options: dict[str, Any]) -> list[str]:
    """What a method's options change of the shared recipe (e.g. its own activation
    quantizer); such a variant is not a matched comparison."""
    from methods.base import REGISTRY, load_all

    load_all()
    cls = REGISTRY.get(method)
    if cls is None:
        return []  # reported when the runs are resolved
    try:
        return cls.recipe_changes(cls.parse_options(options))
    except UserError:
        return []  # reported when the runs are resolved


# --------------------------------------------------------------------------- expansion

def _expand(study: Study, recipe: dict, scale_set: dict, variants: dict[str, Variant],
            bits: list, budget_map: dict, seeds: list, excl, p: Problems,
            cell_recipe: dict | None = None, recipe_ok: bool = True) -> None:
    excludes, chosen = excl
    if chosen is not None:
        unknown = [v for v in chosen if v not in variants]
        if unknown:
            p.add(f"grid.variants: {unknown} not defined under [variants]")
        variants = {k: v for k, v in variants.items() if k in chosen}
    for v in variants.values():
        method_ok = _method_ok(v, p)
        cell_options = _cell_options(v, _variant_cells(v, bits), p)
        if not method_ok or cell_options is None:
            continue  # its method, options or per-cell options are broken: reported once,
                      # not once per run
        runs = []
        for w, a in _variant_cells(v, bits):
            for e in budget_map:
                reason = _excluded(excludes, v.name, w, a, e) or _unsupported(v.method, w)
                if reason is not None:
                    study.excluded.append({"variant": v.name, "w_bits": w, "a_bits": a,
                                           "epochs": budget_map[e], "reason": reason})
                    continue
                cell = (cell_options.get((w, a), {}), (cell_recipe or {}).get((w, a), {}))
                for s in seeds:
                    run = _one_run(study, v, recipe, scale_set, w, a, budget_map[e], s, p, cell,
                                   recipe_ok)
                    if run is not None:
                        runs.append(run)
        if _run_ids_fit(v, runs, p):
            study.runs += runs


def _run_ids_fit(v: Variant, runs: list[Run], p: Problems) -> bool:
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


def _method_ok(v: Variant, p: Problems) -> bool:
    """The variant's method exists and its options parse; every problem reported once."""
    from methods.base import get

    try:
        get(v.method).parse_options(dict(v.options))
        return True
    except UserError as err:
        for one in each(err):
            p.add(f"variants.{v.name}: {one}")
        return False


def _one_run(study: Study, v: Variant, recipe: dict, scale_set: dict, w: int, a: int,
             epochs: int, seed: int, p: Problems, cell: tuple[dict, dict] = ({}, {}),
             recipe_ok: bool = True) -> Run | None:
    """One run resolved, or None with its problems reported. When the shared recipe had
    problems (keys set aside, at their defaults here), a problem of a key the variant does
    not set may only follow from those, and is left out."""
    cell_options, cell_recipe = cell
    flat = {**recipe, **cell_recipe, **v.recipe, **scale_set, "method": v.method,
            **{f"method.{k}": val for k, val in {**v.options, **cell_options}.items()},
            "w_bits": w, "a_bits": a, "epochs": epochs, "seed": seed, "progress": "line",
            "meta.study": study.name, "meta.variant": v.name, "meta.scale": study.scale,
            "meta.unmatched": v.unmatched}
    try:
        cfg = C.resolve(C.from_flat(flat))
    except UserError as err:
        for one in each(err):
            if one.field in recipe and one.field not in v.recipe:
                p.add(f"recipe.{one}")
            elif recipe_ok or one.field in {**v.recipe, **cell_recipe} or _not_recipe(one.field):
                p.add(f"variants.{v.name}: {one}")
        return None
    res = {**study.executor, **v.executor}
    h = C.config_hash(cfg)
    return Run(f"{v.name}_w{w}a{a}_e{epochs}_s{seed}_{h[:8]}", v.name, v.method, cfg, w, a,
               epochs, seed, v.unmatched, tuple((k, json.dumps(res[k])) for k in RESOURCE_KEYS))


def _excluded(excludes: list[dict], variant: str, w: int, a: int, e: int) -> str | None:
    for ex in excludes:
        if ex.get("variant", variant) != variant:
            continue
        if "bits" in ex and list(ex["bits"]) != [w, a]:
            continue
        if "epochs" in ex and ex["epochs"] != e:
            continue
        return "excluded by the spec" + (f": {ex['reason']}" if ex.get("reason") else "")
    return None


def _unsupported(method: str, w_bits: int) -> str | None:
    from methods.base import REGISTRY, load_all

    load_all()
    cls = REGISTRY.get(method)
    if cls is not None and w_bits not in cls.bits:
        return f"{method} cannot run {w_bits}-bit weights (supports {sorted(cls.bits)})"
    return None


# --------------------------------------------------------------------------- per-cell settings

def cell_name(w: int, a: int) -> str:
    return f"W{w}/A{a}"


def parse_cell_pattern(key: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((w_lo, w_hi), (a_lo, a_hi)) of a cell pattern, or None when it is not one."""
    m = CELL_PATTERN.fullmatch(key.strip())
    if m is None:
        return None
    w_lo, w_hi, a_lo, a_hi = m.groups()
    w, a = (int(w_lo), int(w_hi or w_lo)), (int(a_lo), int(a_hi or a_lo))
    return (w, a) if w[0] <= w[1] and a[0] <= a[1] else None


def _variant_cells(v: Variant, bits: list) -> list[tuple[int, int]]:
    return list(v.bits or ([(32, 32)] if v.reference else bits))


def _all_cells(variants: dict[str, Variant], bits: list) -> list[tuple[int, int]]:
    cells = [c for v in variants.values() for c in _variant_cells(v, bits)]
    return list(dict.fromkeys(cells))


def _set_keys(sets: list[str] | None) -> set[str]:
    try:
        return set(C.parse_sets(sets or []))
    except UserError:
        return set()  # reported by _recipe


def _per_cell(table: Any, where: str, cells: list[tuple[int, int]], defaults: set[str],
              check, p: Problems) -> dict[tuple[int, int], dict[str, Any]] | None:
    """{cell: merged values} of a table keyed by cell patterns (see the module docstring).
    ``check(values)`` returns what is wrong with one pattern's values (a line each).
    None when the table has a problem (each reported here, once)."""
    n = len(p.items)
    if not isinstance(table, dict):
        p.add(f'{where}: expected a table keyed by cells, e.g. "W1/A32" = {{ ... }}')
        return None
    out: dict[tuple[int, int], dict[str, Any]] = {c: {} for c in cells}
    source: dict[tuple[tuple[int, int], str], str] = {}
    for key, values in table.items():
        rng = parse_cell_pattern(key)
        if rng is None:
            p.add(f'{where}."{key}": not a cell; write "W1/A32", or a range such as '
                  '"W1/A1..A8" or "W1..W2/A32"')
            continue
        if not isinstance(values, dict):
            p.add(f'{where}."{key}": expected a table of values, got {values!r}')
            continue
        values = C.flatten(values)
        problems = check(values)
        for problem in problems:
            p.add(f'{where}."{key}": {problem}')
        if problems:
            continue
        named = [c for c in cells if rng[0][0] <= c[0] <= rng[0][1]
                 and rng[1][0] <= c[1] <= rng[1][1]]
        if not named:
            p.add(f'{where}."{key}": names no cell of this grid '
                  f'({", ".join(cell_name(*c) for c in cells)}); fix the bits or drop it')
        for c in named:
            for k, val in values.items():
                if k in out[c] and out[c][k] != val:
                    p.add(f'{where}: "{source[(c, k)]}" and "{key}" both set {k} in '
                          f'{cell_name(*c)} ({out[c][k]!r} vs {val!r}); make the patterns '
                          'disjoint')
                out[c][k] = val
                source[(c, k)] = key
    if len(p.items) > n:
        return None
    for k in sorted({k for vals in out.values() for k in vals} - defaults):
        bare = [cell_name(*c) for c, vals in out.items() if k not in vals]
        if bare:
            p.add(f"{where}: {k} is set for some cells but not for {', '.join(bare)}; add a "
                  "pattern for them or a default for every cell")
    return out if len(p.items) == n else None


def _cell_options(v: Variant, cells: list[tuple[int, int]],
                  p: Problems) -> dict[tuple[int, int], dict[str, Any]] | None:
    """A variant's options per cell (``cell_options``), each pattern checked by its method."""
    from methods.base import load_all

    cls = load_all().get(v.method)  # an unknown method is reported by _method_ok

    def problems(options: dict[str, Any]) -> list[str]:
        try:
            cls.parse_options(options)
            return []
        except UserError as e:
            return [str(one) for one in each(e)]

    def check(values: dict[str, Any]) -> list[str]:
        if cls is None:
            return []
        try:
            options = cls.parse_options({**v.options, **values})
        except UserError as e:  # the variant's own bad options are reported by _method_ok
            base = problems(v.options)
            return [str(one) for one in each(e) if str(one) not in base]
        if v.unmatched:
            return []
        # the same matched check as the variant's options (those it reports itself)
        changes = [c for c in cls.recipe_changes(options)
                   if c not in _method_recipe_changes(v.method, v.options)]
        return ([f"{'; '.join(changes)}, so the variant does not share the recipe; "
                 f"{UNMATCHED_FIX}"] if changes else [])

    return _per_cell(v.cell_options, f"variants.{v.name}.cell_options", cells,
                     set(C.flatten(v.options)), check, p)


def _cell_recipe(raw: dict, recipe: dict, set_keys: set[str], cells: list[tuple[int, int]],
                 spec_dir: Path, p: Problems) -> dict[tuple[int, int], dict[str, Any]]:
    """``[cell_recipe]``: recipe keys per cell, for reproduction studies only; ``--set``
    keys are left to the override."""
    table = raw.get("cell_recipe")
    if table is None:
        return {}
    study_t = raw.get("study") if isinstance(raw.get("study"), dict) else {}
    if study_t.get("reproduction", False) is not True:
        p.add("cell_recipe: per-cell recipe keys are for reproduction studies (set "
              "study.reproduction = true); a matched study shares one recipe in every cell")
        return {}

    def check(values: dict[str, Any]) -> list[str]:
        fixed = [k for k in values if _not_recipe(k)]
        if fixed:
            return [f"{', '.join(fixed)}: set by the grid or a variant, not a recipe key "
                    "(method options per cell: the variant's cell_options)"]
        out = []
        for key, value in values.items():
            try:
                C.from_flat({key: value})
            except UserError as e:
                out.append(str(e))
        return out

    out = _per_cell(table, "cell_recipe", cells, set(recipe), check, p) or {}
    for values in out.values():
        for key in set_keys & set(values):
            values.pop(key)
        _fix_root(values, spec_dir)
    return out


# --------------------------------------------------------------------------- whole-study checks

def _check_data_roots(study: Study, p: Problems, warnings: list[str] | None = None) -> None:
    seen = set()
    for r in study.runs:
        key = (r.cfg.task, r.cfg.data.name, r.cfg.data.root, r.cfg.data.download)
        if key in seen:
            continue
        seen.add(key)
        try:
            tasks.get(r.cfg.task).check_root(r.cfg)
        except UserError as e:
            line = f"recipe.{_in_study_words(str(e), r.cfg.data.root)}"
            if warnings is None:
                p.add(line)
            elif f"{p.where}: {line}" not in warnings:
                warnings.append(f"{p.where}: {line}")


def _in_study_words(message: str, root: str) -> str:
    """A data-root error as a study's user fixes it: `sweep` has no --data-root flag."""
    what, sep, hint = message.partition("; ")
    unset = [v for v in re.findall(r"\$\{?(\w+)", root or "") if v not in os.environ]
    if unset:
        what += f" ({', '.join(unset)} is not set)"
    for flag, key in (("pass --data-root DIR", "set data.root"), ("--data-root", "data.root"),
                      ("pass --download", "set data.download = true")):
        hint = hint.replace(flag, key)
    return (f"{what}{sep}{hint} (in a study: [recipe] data.root, relative to the spec's "
            "folder, or sweep --set data.root=DIR)")


def _check_recipe_shared(study: Study, p: Problems) -> None:
    """Every matched run of a (bits, budget, seed) cell shares the recipe exactly."""
    cells: dict[tuple, dict] = {}
    for r in study.runs:
        if r.unmatched:
            continue
        key = C.cell_key(r.cfg)
        ref = cells.setdefault((r.w_bits, r.a_bits, r.epochs, r.seed), key)
        if key != ref:  # pragma: no cover - guards the expansion itself
            diff = sorted(k for k in set(key) | set(ref) if key.get(k) != ref.get(k))
            p.add(f"variants.{r.variant}: recipe differs from the cell's on {diff}")


def _check_distinct_variants(study: Study, p: Problems) -> None:
    seen: dict[str, str] = {}
    for r in study.runs:
        key = json.dumps([r.method, r.cfg.method_options, r.cfg.w_bits, C.cell_key(r.cfg)],
                         sort_keys=True, default=str)
        other = seen.setdefault(key, r.variant)
        if other != r.variant:
            p.add(f"variants.{r.variant} and variants.{other} are the same method with the same "
                  "options; give them different options or drop one")


def print_plan(study: Study, echo=print) -> None:
    counts = collections.Counter((r.variant, f"W{r.w_bits}/A{r.a_bits}", r.epochs)
                                 for r in study.runs)
    cells = sorted({(c[1], c[2]) for c in counts}, key=lambda c: (c[1], c[0]))
    names = list(dict.fromkeys(r.variant for r in study.runs))
    head = ["variant"] + [f"{b} e{e}" for b, e in cells]
    widths = [max(len(h), 8) for h in head]
    widths[0] = max([len("variant")] + [len(n) for n in names])
    echo(f"study {study.name} (scale {study.scale}): {len(study.runs)} runs")
    echo("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for n in names:
        row = [n] + [str(counts.get((n, b, e), "-")) for b, e in cells]
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    for ex in study.excluded:
        echo(f"excluded: {ex['variant']} W{ex['w_bits']}/A{ex['a_bits']} e{ex['epochs']}: "
             f"{ex['reason']}")
