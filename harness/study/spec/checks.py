"""Whole-study checks after expansion (data roots, a shared recipe per cell, distinct
variants) and the plan a dry run prints."""
from __future__ import annotations

import collections
import json
import os
import re

from harness import config
from harness.errors import UserError
from harness.run import loggers
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


def check_loggers(study: Study, p: Problems) -> None:
    """Every logging sink the runs ask for can run here (its package installed, its
    settings made), before anything is submitted."""
    for name in sorted({n for r in study.runs for n in r.cfg.loggers}):
        problem = loggers.unavailable(name)
        if problem:
            p.add(f"recipe.loggers: {problem}")


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


# what a run's stage sets besides the recipe: its own epochs (the budget less pretraining),
# where it starts and which keys its tuning chooses
STAGE_KEYS = ("epochs", "init.source", "init.epochs", "meta.tuned", "meta.stage")


def check_recipe_shared(study: Study, p: Problems) -> None:
    """Every matched run of a (bits, budget, seed) cell shares the recipe exactly (apart
    from what its stage sets: STAGE_KEYS)."""
    cells: dict[tuple, dict] = {}
    shared = _per_template(lambda r: {k: v for k, v in config.cell_key(r.cfg).items()
                                      if k not in STAGE_KEYS and k != "seed"})
    for r in study.runs:
        if r.unmatched:
            continue
        key = shared(r)
        ref = cells.setdefault((r.w_bits, r.a_bits, r.epochs, r.seed), key)
        if key is not ref and key != ref:  # pragma: no cover - guards the expansion itself
            diff = sorted(k for k in set(key) | set(ref) if key.get(k) != ref.get(k))
            p.add(f"variants.{r.variant}: recipe differs from the cell's on {diff}")


def check_distinct_variants(study: Study, p: Problems) -> None:
    seen: dict[tuple, str] = {}
    same = _per_template(lambda r: json.dumps(
        [r.method, config.options_dict(r.cfg.method_options), r.cfg.w_bits,
         {k: v for k, v in config.cell_key(r.cfg).items() if k != "seed"}],
        sort_keys=True, default=str))
    for r in study.runs:
        other = seen.setdefault((same(r), r.seed), r.variant)
        if other != r.variant:
            p.add(f"variants.{r.variant} and variants.{other} are the same method with the same "
                  "options; give them different options or drop one")


def _per_template(of_run):
    """``of_run`` (a function of a run's config but not its seed), computed once for the runs
    of one template (harness/study/spec/expand.py)."""
    memo: dict[str, object] = {}

    def get(r):
        if not r.template:
            return of_run(r)
        if r.template not in memo:
            memo[r.template] = of_run(r)
        return memo[r.template]
    return get


def print_plan(study: Study, echo=print) -> None:
    final = [r for r in study.items if r.stage == "final"]
    counts = collections.Counter((r.variant, f"W{r.w_bits}/A{r.a_bits}", r.epochs)
                                 for r in final)
    cells = sorted({(c[1], c[2]) for c in counts}, key=lambda c: (c[1], c[0]))
    names = list(dict.fromkeys(r.variant for r in final))
    head = ["variant"] + [f"{b} e{e}" for b, e in cells]
    widths = [max(len(h), 8) for h in head]
    widths[0] = max([len("variant")] + [len(n) for n in names])
    echo(f"study {study.name} (scale {study.scale}): {len(study.items)} runs" + (
        f" ({len(final)} final, {len(study.items) - len(final)} in earlier stages)"
        if len(final) < len(study.items) else ""))
    echo("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for n in names:
        row = [n] + [str(counts.get((n, b, e), "-")) for b, e in cells]
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    for line in stage_lines(study):
        echo(line)
    for ex in study.excluded:
        echo(f"excluded: {ex['variant']} W{ex['w_bits']}/A{ex['a_bits']} e{ex['epochs']}: "
             f"{ex['reason']}")


def stage_lines(study: Study) -> list[str]:
    """The earlier stages in words: pretraining runs, tuning trials per variant."""
    pre = [r for r in study.runs if r.stage == "pretrain"]
    lines = [f"pretrain: {len(pre)} fp runs that pretrained variants start from"] if pre else []
    tune = study.tune
    if tune is not None:
        trials = [r for r in study.runs if r.stage == "tune"]
        lines.append(f"tune: {len(trials)} runs: {tune.trials} trials x {len(tune.seeds)} "
                     f"seed(s) {tune.seeds} per variant and cell, {tune.epochs} epochs, scored "
                     f"on a validation split of {tune.val_split:g}")
        for v in tune.variants:
            lines.append(f"  {v}: {tune.sampler(v)} over {', '.join(tune.space(v))}")
        deferred = len(study.slots)
        lines.append(f"final: {deferred} runs of tuned variants take their chosen values when "
                     "their trials are complete")
    return lines
