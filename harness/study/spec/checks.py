"""Whole-study checks after expansion (data roots, a shared recipe per cell, distinct
variants) and the plan a dry run prints."""
from __future__ import annotations

import collections
import json
import os
import re

from harness import config
from harness.errors import UserError
from harness.study.spec.schema import Problems, Study
from harness.tasks.base import get as get_task


def check_data_roots(study: Study, p: Problems, warnings: list[str] | None = None) -> None:
    seen = set()
    for r in study.runs:
        key = (r.cfg.task, r.cfg.data.name, r.cfg.data.root, r.cfg.data.download)
        if key in seen:
            continue
        seen.add(key)
        try:
            get_task(r.cfg.task).runtime().check_root(r.cfg)
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


def check_recipe_shared(study: Study, p: Problems) -> None:
    """Every matched run of a (bits, budget, seed) cell shares the recipe exactly."""
    cells: dict[tuple, dict] = {}
    for r in study.runs:
        if r.unmatched:
            continue
        key = config.cell_key(r.cfg)
        ref = cells.setdefault((r.w_bits, r.a_bits, r.epochs, r.seed), key)
        if key != ref:  # pragma: no cover - guards the expansion itself
            diff = sorted(k for k in set(key) | set(ref) if key.get(k) != ref.get(k))
            p.add(f"variants.{r.variant}: recipe differs from the cell's on {diff}")


def check_distinct_variants(study: Study, p: Problems) -> None:
    seen: dict[str, str] = {}
    for r in study.runs:
        key = json.dumps([r.method, config.options_dict(r.cfg.method_options), r.cfg.w_bits,
                          config.cell_key(r.cfg)],
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
