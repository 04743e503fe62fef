"""A study steered from the command line, as Hydra's multirun steers a config:

    python -m harness sweep studies/x.toml --set grid.seeds=[0,1] \
        --only variant=slb,ste --only bits=W1/A32 --dry-run

``--set TABLE.KEY=VALUE`` with TABLE one of the spec's own tables (``grid``, ``executor``,
``tune``, ``study``, ``report``, ``scales``, ``variants``) changes the spec as if the file said
so, before it is read, so it is validated exactly as the file is (``--set
variants.slb.options.bn="none"`` reaches a variant); ``--set recipe.KEY=VALUE`` and any other
key (a config key, e.g. ``data.root=DIR``) override the shared recipe of every run.

``--only KEY=V1,V2`` keeps the final runs whose variant, cell (a cell or a pattern such as
``W1..W2/A32``), budget (epochs as the plan shows them) or seed is listed, and whatever they
need (their tuning trials and pretraining sources); the spec is expanded and checked whole
first, so a subset never hides a mistake of the whole, and names that are not in the study
are errors with "did you mean". The manifest still lists every run of the study (`status`
shows the others as missing, the report counts what has run).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from harness import config
from harness.errors import UserError, did_you_mean, raise_all
from harness.study.spec.cells import cell_name, parse_cell_pattern

# the spec's tables --set reaches (the recipe's keys are config keys: data.root, optim.lr)
SPEC_TABLES = ("study", "grid", "executor", "tune", "report", "scales", "variants")
ONLY_KEYS = {"variant": "variant", "variants": "variant", "bits": "cell", "cell": "cell",
             "cells": "cell", "epochs": "epochs", "seed": "seed", "seeds": "seed"}


def apply_sets(raw: dict[str, Any], sets: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    """(the spec with its TABLE.KEY overrides applied, the recipe overrides left)."""
    recipe: list[str] = []
    out = raw
    for item in sets or []:
        key = item.split("=", 1)[0].strip()
        head = key.split(".", 1)[0]
        if key.startswith("recipe."):
            recipe.append(item.strip()[len("recipe."):])
        elif head in SPEC_TABLES:
            out = copy.deepcopy(raw) if out is raw else out
            value = config.parse_sets([item])[key]
            _deep_set(out, key, value)
        else:
            recipe.append(item)
    return out, recipe


def _deep_set(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise UserError("--set", f"{key!r}: name a key of the table, e.g. --set grid.seeds=[0,1]")
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError("--set", f"{key!r}: {'.'.join(parts[:i + 1])} is not a table in "
                            "the spec; set it whole, e.g. --set grid.seeds=[0,1]")
    node[parts[-1]] = value


def parse_only(only: list[str] | None) -> dict[str, list[str]]:
    """``["variant=slb,ste", "bits=W1/A32"]`` -> {"variant": [...], "cell": [...]}."""
    out: dict[str, list[str]] = {}
    for item in only or []:
        key, sep, values = item.partition("=")
        what = ONLY_KEYS.get(key.strip())
        if not sep or what is None:
            raise UserError("--only", f"{item!r}: write KEY=V1,V2 with KEY one of variant, bits, "
                            "epochs, seed, e.g. --only variant=slb,ste --only bits=W1/A32")
        names = [v.strip() for v in values.split(",") if v.strip()]
        if not names:
            raise UserError("--only", f"{item!r} lists nothing to keep")
        out.setdefault(what, []).extend(names)
    return out


def restrict(study, only: list[str] | None):
    """(the study with only the runs ``--only`` names and what they need, a line for the plan:
    '' without --only). A name the study does not have is an error, before any work."""
    wanted = parse_only(only)
    if not wanted:
        return study, ""
    final = [r for r in study.items if r.stage == "final"]
    have = {"variant": {r.variant for r in final}, "cell": {cell_name(r.w_bits, r.a_bits)
                                                            for r in final},
            "epochs": {str(r.epochs) for r in final}, "seed": {str(r.seed) for r in final}}
    errors = []
    for what, names in wanted.items():
        for name in names:
            if not _known(what, name, have[what]):
                errors.append(UserError("--only", f"{what} {name!r} is not in the study"
                                        f"{did_you_mean(name, have[what])}"))
    raise_all(errors)
    keep = {r.run_id for r in final if all(_match(what, names, r)
                                           for what, names in wanted.items())}
    by_id = {r.run_id: r for r in study.items}
    todo = list(keep)
    while todo:  # what the kept runs need: tuning trials, pretraining sources
        for need in by_id[todo.pop()].needs:
            if need in by_id and need not in keep:
                keep.add(need)
                todo.append(need)
    before = len(study.items)
    study = dataclasses.replace(
        study, runs=[r for r in study.runs if r.run_id in keep],
        slots=[s for s in study.slots if s.run_id in keep],
        excluded=[e for e in study.excluded if _match_excluded(wanted, e)])
    if not study.items:
        raise UserError("--only", "no run of the study matches all of " + " ".join(only)
                        + "; each --only narrows the others")
    shown = "; ".join(f"{k}=" + ",".join(v) for k, v in wanted.items())
    return study, (f"only: {shown}: {len(study.items)} of {before} runs (with the trials and "
                   "sources they need)")


def _known(what: str, name: str, have: set[str]) -> bool:
    if what != "cell":
        return name in have
    if parse_cell_pattern(name) is None:
        return False
    return any(_in_pattern(name, c) for c in have)


def _in_pattern(pattern: str, cell: str) -> bool:
    (w_lo, w_hi), (a_lo, a_hi) = parse_cell_pattern(pattern)
    (w, _), (a, _) = parse_cell_pattern(cell)
    return w_lo <= w <= w_hi and a_lo <= a <= a_hi


def _match(what: str, names: list[str], r) -> bool:
    if what == "variant":
        return r.variant in names
    if what == "cell":
        return any(_in_pattern(n, cell_name(r.w_bits, r.a_bits)) for n in names)
    return str(r.epochs if what == "epochs" else r.seed) in names


def _match_excluded(wanted: dict[str, list[str]], e: dict[str, Any]) -> bool:
    ok = e.get("variant") in wanted.get("variant", [e.get("variant")])
    if "cell" in wanted:
        ok = ok and any(_in_pattern(n, cell_name(e["w_bits"], e["a_bits"]))
                        for n in wanted["cell"])
    return ok and str(e.get("epochs")) in wanted.get("epochs", [str(e.get("epochs"))])
