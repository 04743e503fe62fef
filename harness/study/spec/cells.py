"""Per-cell settings: a variant's ``cell_options`` and a reproduction study's
``cell_recipe``, tables keyed by cell patterns ("W1/A32", "W1/A1..A8", "W1..W2/A32")."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import config
from harness.errors import UserError, each
from harness.study.spec.methods import method_recipe_changes, parsed_options
from harness.study.spec.schema import (
    CELL_PATTERN,
    UNMATCHED_FIX,
    Problems,
    Variant,
    fix_root,
    not_recipe,
)
from methods.base import load_all


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


def variant_cells(v: Variant, bits: list) -> list[tuple[int, int]]:
    return list(v.bits or ([(32, 32)] if v.reference else bits))


def all_cells(variants: dict[str, Variant], bits: list) -> list[tuple[int, int]]:
    cells = [c for v in variants.values() for c in variant_cells(v, bits)]
    return list(dict.fromkeys(cells))


def set_keys(sets: list[str] | None) -> set[str]:
    try:
        return set(config.parse_sets(sets or []))
    except UserError:
        return set()  # reported by _recipe


def per_cell(table: Any, where: str, cells: list[tuple[int, int]], defaults: set[str],
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
        try:
            values = config.flatten(values, strict=True)
            problems = check(values)
        except UserError as e:
            problems = [str(e)]
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


def cell_options(v: Variant, cells: list[tuple[int, int]],
                  p: Problems) -> dict[tuple[int, int], dict[str, Any]] | None:
    """A variant's options per cell (``cell_options``), each pattern checked by its method."""
    cls = load_all().get(v.method)  # an unknown method is reported by _method_ok

    def problems(options: dict[str, Any]) -> list[str]:
        try:
            parsed_options(v.method, options)
            return []
        except UserError as e:
            return [str(one) for one in each(e)]

    def check(values: dict[str, Any]) -> list[str]:
        if cls is None:
            return []
        try:
            options = parsed_options(v.method, {**v.options, **values})
        except UserError as e:  # the variant's own bad options are reported by _method_ok
            base = problems(v.options)
            return [str(one) for one in each(e) if str(one) not in base]
        if v.unmatched:
            return []
        # the same matched check as the variant's options (those it reports itself)
        changes = [c for c in cls.recipe_changes(options)
                   if c not in method_recipe_changes(v.method, v.options)]
        return ([f"{'; '.join(changes)}, so the variant does not share the recipe; "
                 f"{UNMATCHED_FIX}"] if changes else [])

    return per_cell(v.cell_options, f"variants.{v.name}.cell_options", cells,
                     set(config.flatten(v.options)), check, p)


def cell_recipe(raw: dict, recipe: dict, set_keys: set[str], cells: list[tuple[int, int]],
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
        fixed = [k for k in values if not_recipe(k)]
        if fixed:
            return [f"{', '.join(fixed)}: set by the grid or a variant, not a recipe key "
                    "(method options per cell: the variant's cell_options)"]
        out = []
        for key, value in values.items():
            try:
                config.from_flat({key: value})
            except UserError as e:
                out.append(str(e))
        return out

    out = per_cell(table, "cell_recipe", cells, set(recipe), check, p) or {}
    for values in out.values():
        for key in set_keys & set(values):
            values.pop(key)
        fix_root(values, spec_dir)
    return out
