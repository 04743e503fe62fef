"""Config resolution: dotted keys -> a validated RunConfig that carries the method's and the
task's parsed, frozen options (``method_options``, ``task_options``), and its hash, the run
id. Every consumer (trainer, spec, export, bench, report tools) takes options from the
resolved config and never parses them again.

Resolution asks the registries (methods, task cards and runtimes, logging sinks); it does
no I/O. Unresolved configs (``config.from_flat``) hold those two fields as raw dicts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from harness import config
from harness.config import RunConfig
from harness.errors import UserError, raise_all, require
from harness.run.loggers import SINKS
from harness.tasks.base import get as get_task
from harness.tasks.base import load_all as load_tasks
from methods.base import Method
from methods.base import get as get_method
from methods.options import parse_options


def build(file: str | Path | None = None, flags: dict[str, Any] | None = None,
          sets: list[str] | None = None) -> RunConfig:
    """defaults <- file <- flags (None values ignored) <- --set, resolved and validated."""
    return resolve(config.from_flat(config.gather(file, flags, sets)))


def from_dict(d: dict[str, Any]) -> RunConfig:
    """A resolved RunConfig from a config.json object."""
    return resolve(config.from_dict(d))


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill defaults that depend on other fields and validate everything (no I/O)."""
    method_cls = get_method(cfg.method)
    w_bits = cfg.w_bits or method_cls.default_bits
    method_cls.check_bits(w_bits)
    options = method_options(cfg)
    method_cls.check_options(options, w_bits, cfg.a_bits)
    task = get_task(cfg.task)
    cfg = dataclasses.replace(cfg, w_bits=w_bits, method_options=options,
                              task_options=task_options(cfg, task))
    config.check_fields(cfg)
    _check_run_keys(cfg)
    runtime = task.runtime()
    runtime.check(cfg)                 # model and dataset names, the task's own keys
    augment = cfg.data.augment
    if augment is None:
        augment = runtime.default_augment(cfg.data.name)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment=augment))


def method_options(cfg: RunConfig) -> Any:
    """The method's parsed options (the config's own when already resolved)."""
    options = cfg.method_options
    if dataclasses.is_dataclass(options):
        return options
    return get_method(cfg.method).parse_options(dict(options))


def task_options(cfg: RunConfig, task) -> Any:
    """The task's parsed config section: raw ``{section: {key: value}}`` keys of the task's
    own name, typed and range-checked; keys of another section are errors."""
    options = cfg.task_options
    if dataclasses.is_dataclass(options):
        return options
    errors = [_foreign_section(name, keys, task) for name, keys in options.items()
              if name != task.name]
    raise_all(errors)
    parsed = parse_options(task.Options, dict(options.get(task.name, {})), task.name)
    try:
        config.check_fields(parsed, f"{task.name}.")
    except UserError as e:
        raise_all([e])
    return parsed


def _foreign_section(name: str, keys: dict[str, Any], task) -> UserError:
    key = f"{name}.{next(iter(keys))}"
    if name in load_tasks():
        return UserError(key, f"{name}.* keys apply to task={name} only; remove them or "
                         f"pass --set task={name}")
    return UserError(key, f"unknown config key{config.suggest(key)}")


def _check_run_keys(cfg: RunConfig) -> None:
    dev = cfg.device
    require(dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev) is not None,
            "device", f"{dev!r} unknown; use auto, cpu, cuda or cuda:N")
    for name in cfg.loggers:
        require(name in SINKS, "loggers", f"{name!r} unknown; use some of {list(SINKS)}")
    require(cfg.data.subset_train != 1, "data.subset_train",
            "1 image makes no training step (a 1-image batch is dropped); use 0 (all) or >= 2")
    v = cfg.data.val_split
    require(v < 1 or float(v).is_integer(), "data.val_split",
            f"a count of images must be a whole number, got {v:g}; or give a fraction below 1")
    require(cfg.init.epochs == 0 or bool(cfg.init.source), "init.epochs",
            "counts the epochs of init.source; set init.source or drop init.epochs")
    o = cfg.optim
    require(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas",
            "give two values in [0, 1), e.g. [0.9, 0.999]")
    require(o.warmup_epochs < cfg.epochs, "optim.warmup_epochs",
            f"must be below the {cfg.epochs} training epochs")
    require(all(math.isfinite(m) and m >= 0 for m in o.milestones) and
            list(o.milestones) == sorted(o.milestones), "optim.milestones",
            "must be increasing epochs >= 0, e.g. [100, 150]")


def config_hash(cfg: RunConfig) -> str:
    """sha256 (16 hex) of the resolved config without the keys in NON_SEMANTIC, nor the
    LATER_KEYS at the value they had before they existed (so earlier run ids still match),
    nor the method's inert options."""
    return _digest(json.dumps(_hashed_keys(cfg), sort_keys=True, separators=(",", ":"),
                              default=str))


def seed_hashes(cfg: RunConfig) -> Callable[[int], str]:
    """``seed -> config_hash(cfg at that seed)``, converting ``cfg`` once: the hashed JSON
    is cut at the seed's value, so a spec of 10^5 runs hashes each run's seed only."""
    marker = "\x00seed\x00"
    blob = json.dumps({**_hashed_keys(cfg), "seed": marker}, sort_keys=True,
                      separators=(",", ":"), default=str)
    parts = blob.split(json.dumps(marker))
    if len(parts) != 2:  # the marker in a value: hash each config whole
        return lambda seed: config_hash(dataclasses.replace(cfg, seed=seed))
    head, tail = parts
    return lambda seed: _digest(f"{head}{json.dumps(seed)}{tail}")


def _hashed_keys(cfg: RunConfig) -> dict[str, Any]:
    flat = config.flatten(config.to_dict(cfg))
    for k in config.NON_SEMANTIC:
        flat.pop(k, None)
    for k, default in config.LATER_KEYS.items():
        if flat.get(k) == default:
            flat.pop(k)
    for k in get_method(cfg.method).inert_options(method_options(cfg)):
        flat.pop(f"method.{k}", None)
    return flat


def _digest(blob: str) -> str:
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_method(cfg: RunConfig) -> Method:
    """The run's method object, from its resolved options."""
    return get_method(cfg.method)(method_options(cfg), cfg.w_bits)
