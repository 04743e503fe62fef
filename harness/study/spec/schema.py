"""What a study spec may say (sections, keys, their types) and what it becomes (variants,
runs, the study); :class:`Problems` collects every mistake, each once."""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import config

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
    "runs_per_gpu": 1, "runs_per_job": 1,
}
# the executor keys that shape one job (runs with equal shapes share a job array)
RESOURCE_KEYS = ("timeout_min", "gpus_per_task", "cpus_per_task", "mem_gb", "tasks_per_node",
                 "nodes", "partition", "constraint", "qos", "account", "runs_per_gpu",
                 "runs_per_job")
SECTIONS = ("study", "recipe", "grid", "variants", "executor", "scales", "report", "cell_recipe",
            "tune")
STUDY_KEYS = ("name", "description", "allow_unmatched", "question", "gpu_hours", "reproduction")
VARIANT_KEYS = ("method", "options", "recipe", "unmatched", "reference", "bits", "executor",
                "description", "cell_options", "tune", "init")
# a cell pattern: W<w>[..<w2>]/A<a>[..<a2>], e.g. "W1/A32", "W1/A1..A8", "W1..W2/A32"
CELL_PATTERN = re.compile(r"W(\d+)(?:\.\.W?(\d+))?/A(\d+)(?:\.\.A?(\d+))?")


# runs one study may expand to (README, Limits; `sweep --max-runs N` raises it): a grid is
# counted before any run is resolved, so a typo of 10^6 runs fails at once
MAX_RUNS = 10**5
# the largest study spec read (a spec is a few KB; its lists are expanded in memory)
MAX_SPEC_BYTES = 4 * 2**20

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


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


EXECUTOR_TYPES = {  # key: (type check, what to write)
    "timeout_min": (lambda v: is_int(v) and v > 0, "a positive number of minutes"),
    "gpus_per_task": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "cpus_per_task": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "mem_gb": (lambda v: is_number(v) and v > 0, "a positive number of GB"),
    "tasks_per_node": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "nodes": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "array_parallelism": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "local_concurrency": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "runs_per_gpu": (lambda v: is_int(v) and 1 <= v <= 64, "an integer in [1, 64]"),
    "runs_per_job": (lambda v: is_int(v) and 1 <= v <= 10**4, "an integer in [1, 10000]"),
    "setup": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              'a list of shell lines, e.g. ["module load cuda"]'),
    "sbatch": (lambda v: isinstance(v, dict), 'a table, e.g. { exclusive = "" }'),
    **{k: (lambda v: isinstance(v, str), "a string") for k in
       ("partition", "account", "qos", "constraint")},
}
_BOOL = (lambda v: isinstance(v, bool), "true or false (no quotes)")
_TEXT = (lambda v: isinstance(v, str), 'a quoted string, e.g. "..."')
STUDY_TYPES = {"name": _TEXT, "description": _TEXT, "question": _TEXT,
               "gpu_hours": (lambda v: is_number(v) and v >= 0, "a number of GPU-hours >= 0"),
               "allow_unmatched": _BOOL, "reproduction": _BOOL}
VARIANT_FLAGS = {"unmatched": _BOOL, "reference": _BOOL, "description": _TEXT,
                 "method": (lambda v: isinstance(v, str), 'a method name, e.g. "slb"')}
SCALE_TYPES = {
    "epochs_divisor": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "min_epochs": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "max_seeds": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0 = all)"),
    "set": (lambda v: isinstance(v, dict), 'a table of recipe keys, e.g. { "model.width" = 0.5 }'),
}
EXCLUDE_TYPES = {
    "variant": (lambda v: isinstance(v, str), "a variant name"),
    "bits": (lambda v: isinstance(v, list) and len(v) == 2 and all(is_int(b) for b in v),
             "a W/A pair like [2, 32]"),
    "epochs": (is_int, "an epoch budget of the grid"),
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
    tune: dict[str, Any] | None = None   # its own tuning space (harness/study/spec/tune.py)
    init: dict[str, Any] | None = None   # {from, epochs, scaled}: starts from an fp variant


@dataclass
class Run:
    """One run of the study. ``epochs`` is its budget (the grid's, or the tuning budget):
    the run itself trains ``cfg.epochs``, fewer when it starts from a pretraining source
    (``cfg.init``). ``stage``: "tune" (a tuning trial), "pretrain" (an fp run that is only a
    source) or "final"; ``needs``: the run ids (or deferred runs) it starts after."""

    run_id: str
    variant: str
    method: str
    cfg: config.RunConfig
    w_bits: int
    a_bits: int
    epochs: int
    seed: int
    unmatched: bool
    shape: tuple
    stage: str = "final"
    needs: tuple[str, ...] = ()
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # the runs of one template (spec/expand.py) differ only in their seed: whole-study checks
    # read a template once
    template: str = field(default="", compare=False, repr=False)

    def manifest(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "variant": self.variant, "method": self.method,
               "w_bits": self.w_bits, "a_bits": self.a_bits, "epochs": self.epochs,
               "seed": self.seed, "unmatched": self.unmatched}
        if self.stage != "final" or self.needs or self.cfg.init.epochs:
            out.update(stage=self.stage, needs=list(self.needs),
                       init_epochs=self.cfg.init.epochs)
        if self.trial is not None:
            out.update(trial=self.trial, params=self.params)
        return out


@dataclass
class Slot:
    """A deferred final run of a tuned variant: its config waits for the values its tuning
    trials choose (bound when they are complete, harness/run/bind.py). ``template``: the
    config.json it would have with the untuned values; ``trials``: {run_id, trial, seed,
    params} of its variant and cell; ``needs``: those trials and its pretraining source."""

    slot_id: str
    variant: str
    method: str
    w_bits: int
    a_bits: int
    epochs: int
    seed: int
    unmatched: bool
    shape: tuple
    template: dict[str, Any]
    tuned: tuple[str, ...]
    trials: list[dict[str, Any]]
    needs: tuple[str, ...]
    stage: str = "final"

    @property
    def run_id(self) -> str:
        return self.slot_id

    @property
    def name(self) -> str:
        """The run id without its hash: what the bound run's id starts with."""
        return self.slot_id.rsplit("_", 1)[0]

    def manifest(self) -> dict[str, Any]:
        return {"run_id": self.slot_id, "variant": self.variant, "method": self.method,
                "w_bits": self.w_bits, "a_bits": self.a_bits, "epochs": self.epochs,
                "seed": self.seed, "unmatched": self.unmatched, "stage": "final",
                "slot": True, "needs": list(self.needs), "tuned": list(self.tuned),
                "init_epochs": self.template.get("init", {}).get("epochs", 0)}

    def file(self) -> dict[str, Any]:
        """What slots/<slot_id>.json holds before it is bound (harness/stages.py)."""
        return {"slot_id": self.slot_id, "name": self.name, "template": self.template,
                "tuned": list(self.tuned), "trials": self.trials, "needs": list(self.needs)}


@dataclass
class Study:
    path: Path
    name: str
    raw: dict[str, Any]
    scale: str
    runs: list[Run] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)      # deferred final runs (tuned)
    tune: Any = None                                     # spec.tune.Tune, or None

    @property
    def items(self) -> list:
        """Every run and deferred run, in the order stages run them."""
        return list(self.runs) + list(self.slots)


@dataclass
class Grid:
    """The [grid] table: W/A cells, budgets (grid epochs -> epochs at this scale), seeds,
    exclusions and the variants it names (None: all)."""

    bits: list[tuple[int, int]]
    budgets: dict[int, int]
    seeds: list[int]
    excludes: list[dict[str, Any]]
    chosen: list[str] | None


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


def not_recipe(key: str) -> bool:
    """Keys set by the grid or a variant (reported by ``_recipe`` when a recipe sets one)."""
    return key in GRID_KEYS or key.startswith(("method.", "meta."))


def fix_path(flat: dict[str, Any], key: str, spec_dir: Path) -> None:
    """A path in ``flat[key]``: ${VARS} and ~ expanded; relative paths are relative to the
    spec file (jobs run in a code snapshot, never where the user typed the command)."""
    path = flat.get(key)
    if isinstance(path, str) and path:
        path = os.path.expanduser(os.path.expandvars(path))
        flat[key] = str((spec_dir / path).resolve()) if not os.path.isabs(path) else path


def fix_root(flat: dict[str, Any], spec_dir: Path) -> None:
    fix_path(flat, "data.root", spec_dir)
