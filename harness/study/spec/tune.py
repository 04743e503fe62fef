"""Equal tuning for every variant and pretraining as a stage: the ``[tune]`` table, a variant's
own ``tune`` space and its ``init`` (what they may say, and the trial points they give).

    [tune]
    space = { "optim.lr" = [0.03, 0.1, 0.3] }   # shared by every tuned variant
    trials = 3            # per variant and cell; default: the size of every variant's grid
    epochs = 50           # the tuning budget per trial (a grid budget: scaled like one)
    seeds = [100, 101]    # tuning seeds, none of them a grid seed
    val_split = 5000      # the validation split trials are scored on (default: the recipe's)
    sampler_seed = 0      # random sampling's seed
    recipe = { "optim.milestones" = [50, 75] }   # recipe keys of the trials alone (a step
                                                 # schedule's milestones at the tuning budget)
    variants = ["ste", "slb"]   # the tuned variants (default: all but references and
                                # pretraining sources)

    [variants.slb]
    tune = { "method.factor" = [1.02, 1.04] }   # added to (or overriding) the shared space
    init = { from = "fp", epochs = 100 }        # start from the fp variant's run of the same
                                                # seed, trained that many of the budget's epochs

A space value is a list of choices or a range ``{ uniform = [lo, hi] }`` / ``{ log_uniform =
[lo, hi] }`` (random sampling only). Every tuned variant gets exactly ``trials`` points: all of
its grid when the grid has that many points, otherwise ``trials`` distinct grid points (or
range draws) sampled with a generator seeded by ``sampler_seed`` and the variant's name (so
adding a variant changes no other's points). Fewer points than trials is an error. Each point
runs in every cell of the variant at every tuning seed; the chosen point is the one with the
best mean validation score over the tuning seeds (harness/stages.py), and never reads the
test set.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import config
from harness.study.spec.schema import Problems, is_int, is_number, not_recipe

TUNE_KEYS = ("space", "trials", "epochs", "seeds", "val_split", "sampler_seed", "variants",
             "recipe")
# what tuning may choose: the optimizer, the batch, PACT's initial clip and method options;
# never the data, the model or the grid's keys (those would change what is compared)
TUNABLE = ("optim.", "method.", "batch_size", "pact_init")
RANGES = ("uniform", "log_uniform")
INIT_KEYS = ("from", "epochs")


@dataclass(frozen=True)
class Dimension:
    """One tuned key: a list of choices, or a range (``kind`` uniform or log_uniform)."""

    key: str
    choices: tuple = ()
    kind: str = ""
    low: float = 0.0
    high: float = 0.0

    @property
    def size(self) -> float:
        return len(self.choices) if not self.kind else math.inf

    def draw(self, rng: np.random.Generator) -> Any:
        if not self.kind:
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "log_uniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


@dataclass
class Tune:
    """The tuning protocol of a study, at its scale."""

    shared: dict[str, Dimension]
    own: dict[str, dict[str, Dimension]]    # variant -> its own dimensions
    trials: int
    epochs: int
    seeds: list[int]
    val_split: float
    sampler_seed: int
    variants: list[str]                     # the tuned variants
    recipe: dict[str, Any] = field(default_factory=dict)   # the trials' own recipe keys
    points_of: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def space(self, variant: str) -> dict[str, Dimension]:
        return {**self.shared, **self.own.get(variant, {})}

    def sampler(self, variant: str) -> str:
        """"grid" when the variant's whole grid is its trials, else "random"."""
        return "grid" if grid_size(self.space(variant)) == self.trials else "random"

    def points(self, variant: str) -> list[dict[str, Any]]:
        """The variant's trial points, in trial order (computed once)."""
        if variant not in self.points_of:
            self.points_of[variant] = trial_points(self.space(variant), self.trials,
                                                   self.sampler_seed, variant)
        return self.points_of[variant]

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the protocol (the report's tuning section)."""
        return {"trials": self.trials, "epochs": self.epochs, "seeds": self.seeds,
                "val_split": self.val_split, "sampler_seed": self.sampler_seed,
                "recipe": self.recipe,
                "variants": {v: {"space": {k: describe_dimension(d) for k, d in
                                           self.space(v).items()},
                                 "sampler": self.sampler(v), "points": self.points(v)}
                             for v in self.variants}}


def describe_dimension(d: Dimension) -> Any:
    return list(d.choices) if not d.kind else {d.kind: [d.low, d.high]}


def grid_size(space: dict[str, Dimension]) -> float:
    return math.prod(d.size for d in space.values()) if space else 0


def variant_seed(sampler_seed: int, variant: str) -> list[int]:
    """The random generator's seed of a variant: the sampler seed and a stable hash of the
    variant's name (not Python's salted hash)."""
    return [sampler_seed, int(hashlib.sha256(variant.encode()).hexdigest()[:8], 16)]


def trial_points(space: dict[str, Dimension], trials: int, sampler_seed: int,
                 variant: str) -> list[dict[str, Any]]:
    """``trials`` points of ``space``: its whole grid when it has exactly that many, else
    distinct grid points (sorted in grid order) or range draws, seeded per variant."""
    dims = list(space.values())
    size = grid_size(space)
    grid = [dict(zip(space, values)) for values in
            itertools.product(*(d.choices for d in dims))] if size < math.inf else []
    if size == trials:
        return grid
    rng = np.random.default_rng(variant_seed(sampler_seed, variant))
    if size < math.inf:
        return [grid[int(i)] for i in sorted(rng.choice(len(grid), trials, replace=False))]
    return [{d.key: d.draw(rng) for d in dims} for _ in range(trials)]


# --------------------------------------------------------------------------- reading

def dimensions(table: Any, where: str, p: Problems) -> dict[str, Dimension]:
    """A space table (``{ "optim.lr" = [...], ... }``) as dimensions; problems reported."""
    if not isinstance(table, dict):
        p.add(f"{where}: expected a table of keys to tune, e.g. {{ \"optim.lr\" = [0.05, 0.1] }}")
        return {}
    out = {}
    for key, value in flat_space(table).items():
        if not key.startswith(TUNABLE[:2]) and key not in TUNABLE[2:]:
            p.add(f"{where}.{key}: only optimizer keys (optim.*), method options (method.*), "
                  "batch_size and pact_init may be tuned")
        elif isinstance(value, list) and value and len({repr(v) for v in value}) == len(value):
            out[key] = Dimension(key, tuple(value))
        elif isinstance(value, dict) and len(value) == 1 and next(iter(value)) in RANGES:
            kind, bounds = next(iter(value.items()))
            ok = isinstance(bounds, list) and len(bounds) == 2 and all(map(is_number, bounds))
            if ok and bounds[0] < bounds[1] and (kind == "uniform" or bounds[0] > 0):
                out[key] = Dimension(key, (), kind, float(bounds[0]), float(bounds[1]))
            else:
                p.add(f"{where}.{key}: {kind} takes [low, high] with low < high"
                      + (" and low > 0" if kind == "log_uniform" else ""))
        else:
            p.add(f"{where}.{key}: expected a list of distinct values, e.g. [0.05, 0.1], or "
                  "{ log_uniform = [0.01, 0.5] } / { uniform = [lo, hi] }")
    return out


def flat_space(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a space table; a range ``{ uniform = [...] }`` is a value, not a table."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and not (len(value) == 1 and next(iter(value)) in RANGES):
            out.update(flat_space(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def init_table(value: Any, where: str, p: Problems) -> dict[str, Any] | None:
    """A variant's ``init = { from = "fp", epochs = N }`` (checked against the study later)."""
    if not isinstance(value, dict):
        p.add(f'{where}: expected a table, e.g. {{ from = "fp", epochs = 100 }}')
        return None
    p.known(value, INIT_KEYS, where)
    src, epochs = value.get("from"), value.get("epochs")
    if not isinstance(src, str) or not (is_int(epochs) and epochs >= 1):
        p.add(f'{where}: give the fp variant to start from and its epochs, e.g. '
              f'{{ from = "fp", epochs = 100 }}, got {value!r}')
        return None
    return {"from": src, "epochs": epochs}


def scaled(epochs: int, scale_t: dict[str, Any]) -> int:
    """A budget at this scale, as the grid's budgets are mapped (read.grid_table)."""
    return max(scale_t.get("min_epochs", 1), int(round(epochs / scale_t.get("epochs_divisor", 1))))


def tune_table(raw: dict[str, Any], variants: dict, grid_seeds: list[int], scale_t: dict,
               recipe: dict[str, Any], p: Problems) -> Tune | None:
    """The [tune] table (None without one; a variant's own ``tune`` then is a problem)."""
    t = raw.get("tune")
    if t is None:
        for name, v in variants.items():
            if v.tune is not None:
                p.add(f"variants.{name}.tune: a tuning space needs a [tune] table (trials, "
                      "epochs, seeds)")
        return None
    if not isinstance(t, dict):
        p.add("tune: expected a table ([tune] space, trials, epochs, seeds, ...)")
        return None
    p.known(t, TUNE_KEYS, "tune")
    n = len(p.items)
    tuned = tuned_variants(t, variants, p)
    shared = dimensions(t.get("space", {}), "tune.space", p)
    own = {name: dimensions(v.tune, f"variants.{name}.tune", p)
           for name, v in variants.items() if v.tune is not None}
    epochs, seeds = t.get("epochs"), t.get("seeds")
    if not (is_int(epochs) and epochs >= 1):
        p.add(f"tune.epochs: the tuning budget per trial, an integer >= 1, got {epochs!r}")
    if not (isinstance(seeds, list) and seeds and all(is_int(s) and 0 <= s < 2**32
                                                       for s in seeds)):
        p.add(f"tune.seeds: a non-empty list of seeds in [0, 2^32), got {seeds!r}")
        seeds = []
    elif len(set(seeds)) < len(seeds) or set(seeds) & set(grid_seeds):
        p.add(f"tune.seeds: {seeds} must be distinct and none of the grid's seeds "
              f"{grid_seeds}: the final runs are measured on seeds tuning never saw")
    split = t.get("val_split", recipe.get("data.val_split", 0))
    if not (is_number(split) and split > 0):
        p.add("tune.val_split: trials are scored on a validation split; give one (a fraction "
              "below 1 or a count, e.g. 5000 of CIFAR-10's 50,000) here or as the recipe's "
              "data.val_split")
    sampler_seed = t.get("sampler_seed", 0)
    if not (is_int(sampler_seed) and sampler_seed >= 0):
        p.add(f"tune.sampler_seed: an integer >= 0, got {sampler_seed!r}")
    recipe = tune_recipe(t.get("recipe", {}), p)
    if len(p.items) > n:
        return None
    tune = Tune(shared, own, 0, scaled(epochs, scale_t), seeds[: scale_t.get("max_seeds") or
                                                               None], float(split),
                sampler_seed, tuned, recipe)
    tune.trials = trial_count(tune, t.get("trials"), p)
    return tune if len(p.items) == n else None


def tune_recipe(table: Any, p: Problems) -> dict[str, Any]:
    """``tune.recipe``: recipe keys for the trials alone (checked when the trials resolve)."""
    if not isinstance(table, dict):
        p.add("tune.recipe: expected a table of recipe keys, e.g. "
              '{ "optim.milestones" = [50, 75] }')
        return {}
    flat = config.flatten(table)
    for key in flat:
        if not_recipe(key) or key.startswith("data."):
            p.add(f"tune.recipe.{key}: the trials share the study's grid keys, method options "
                  "and data; only other recipe keys may differ (e.g. optim.milestones)")
    return flat


def tuned_variants(t: dict, variants: dict, p: Problems) -> list[str]:
    """``tune.variants`` (default: every variant but references and pretraining sources)."""
    sources = {v.init["from"] for v in variants.values() if v.init}
    default = [n for n, v in variants.items() if not v.reference and n not in sources]
    tuned = t.get("variants", default)
    if not (isinstance(tuned, list) and all(isinstance(x, str) for x in tuned)):
        p.add(f"tune.variants: a list of variant names, got {tuned!r}")
        return []
    for name in tuned:
        if name not in variants:
            p.add(f"tune.variants: {name!r} is not defined under [variants]")
        elif name in sources:
            p.add(f"tune.variants: {name!r} is a pretraining source (another variant's "
                  "init.from); sources train on the recipe as it is, so it cannot be tuned")
    for name, v in variants.items():
        if v.tune is not None and name not in tuned:
            p.add(f"variants.{name}.tune: {name} is not among tune.variants {tuned}")
    return [n for n in tuned if n in variants]


def trial_count(tune: Tune, trials: Any, p: Problems) -> int:
    """The trials per variant: ``trials`` as given, or the size of every variant's grid when
    they are all the same; each variant's space must offer that many points."""
    sizes = {v: grid_size(tune.space(v)) for v in tune.variants}
    for v, size in sizes.items():
        if not size:
            p.add(f"variants.{v}: tuned but has nothing to tune (tune.space is empty and it "
                  "has no tune of its own)")
    if trials is None:
        if len(set(sizes.values())) == 1 and next(iter(sizes.values()), 0) < math.inf:
            return int(next(iter(sizes.values())))
        p.add(f"tune.trials: the variants' spaces have {sizes} points; give the trials every "
              "variant gets (its whole grid where it has that many, random samples otherwise)")
        return 0
    if not (is_int(trials) and trials >= 1):
        p.add(f"tune.trials: an integer >= 1, got {trials!r}")
        return 0
    for v, size in sizes.items():
        if 0 < size < trials:
            p.add(f"variants.{v}: its space has {int(size)} points, fewer than tune.trials = "
                  f"{trials}; add values or lower trials (every variant gets the same number)")
    return trials


def check_inits(variants: dict, budgets: list[int], tune: Tune | None, scale_t: dict,
                p: Problems) -> None:
    """Every ``init`` starts from an fp variant without an init of its own, and leaves
    quantized epochs in every budget (and in the tuning budget when tuned)."""
    for name, v in variants.items():
        if not v.init:
            continue
        w, src = f"variants.{name}.init", variants.get(v.init["from"])
        if src is None or src.method != "fp" or src.init:
            p.add(f"{w}.from: {v.init['from']!r} must name a full-precision variant (method = "
                  "\"fp\") that has no init itself")
        n = scaled(v.init["epochs"], scale_t)
        v.init["scaled"] = n
        short = [b for b in budgets if b <= n]
        if tune is not None and name in tune.variants and tune.epochs <= n:
            short.append(tune.epochs)
        if short:
            p.add(f"{w}.epochs: {n} pretraining epochs leave none of the budget(s) {short} "
                  "to the quantized training (the matched budget counts both)")
