"""Typed, frozen run configuration: defaults <- TOML file <- CLI flags <- ``--set key=value``.

The resolved config is what a run records (config.json) and what its hash (the run id) is
computed from. Every user mistake raises :class:`UserError` naming the key and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError, require

# the `run` command's flags: (flag, config key, type, help) ({name}: the registry's names)
RUN_FLAGS = [  # (flag, config key, type, help)
    ("--method", "method", str, "weight method: {method}"),
    ("--w-bits", "w_bits", int, "weight bits (default: the method's own)"),
    ("--a-bits", "a_bits", int, "activation bits; 32 = no quantization"),
    ("--model", "model.name", str, "model: {model}"),
    ("--dataset", "data.name", str, "dataset: {dataset}"),
    ("--data-root", "data.root", str, "dataset folder"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--seed", "seed", int, "run seed"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--lr", "optim.lr", float, "base learning rate"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N"),
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
A_QUANT = ("pact", "dorefa")
A_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)
PROGRESS = ("auto", "bar", "line", "none")
SEED_LIMIT = 2**32
CONFIG_MAX_BYTES = 16 * 2**20  # a --config file (a run's config.json is a few KB)
BIG = 10**9  # an upper bound for counts that only guards against typos (1e7 for 1e3)
# Keys that do not change what is computed; left out of the config hash (the run id).
NON_SEMANTIC = ("device", "data.root", "data.download", "data.workers", "progress", "loggers",
                "meta.tuned_by")
# Keys added after run records existed, at the value that computes what the code did before
# them: left out of the config hash at that value, so earlier run ids stay valid. (Method
# options say the same through Method.inert_options.)
LATER_KEYS = {"optim.quant_lr_scale": 1.0, "model.block": "standard", "model.shortcut": "B",
              "data.val_split": 0.0, "data.val_seed": 0, "init.source": "", "init.epochs": 0,
              "meta.stage": "", "meta.tuned": []}


def shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut to ``limit`` characters (a hostile value stays one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def coerce(value: Any, annotation: Any, field: str) -> Any:
    """Convert a TOML/--set value to the annotated option type, or raise a UserError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], field)
    if origin is tuple:
        require(isinstance(value, (list, tuple)), field,
                f"expected a list like [1, 2], got {shown(value)}")
        return tuple(coerce(v, args[0], field) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise UserError(field, f"expected true or false, got {shown(value)}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(field, f"expected an integer, got {shown(value)}")
        return value
    if annotation is float:
        require(not isinstance(value, bool) and isinstance(value, (int, float)), field,
                f"expected a number, got {shown(value)}")
        return float(value)
    if annotation is str:
        require(isinstance(value, str), field, f"expected a string, got {shown(value)}")
        return value
    return value


def opt(default: Any, help: str, *, choices: tuple | None = None, lo: float | None = None,
        hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
        factory: Any = None) -> Any:
    """A config field: its default, one line of help and what values are allowed (checked by
    :func:`check_fields`, listed by `python -m harness config`)."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open,
            "hi_open": hi_open}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    name: str = opt("digits", "dataset (see `python -m harness config`)")
    root: str = opt("", "dataset folder (not part of the run id)")
    subset_train: int = opt(0, "training images kept, class balanced and the same for every "
                               "seed; 0 = all (else at least 2)", lo=0, hi=BIG)
    subset_test: int = opt(0, "test images kept, class balanced; 0 = all", lo=0, hi=BIG)
    augment: bool | None = opt(None, "random crop+flip; unset = the dataset's default "
                                     "(on for photos)")
    download: bool = opt(False, "cifar10/100 only: fetch with torchvision when missing")
    eval_batch_size: int = opt(500, "batch size of evaluation", lo=1, hi=10**6)
    workers: int = opt(4, "DataLoader workers for streamed (ImageNet-size) folders", lo=0,
                       hi=256)
    val_split: float = opt(0.0, "validation images held out of the training images: a "
                                "fraction (< 1) or a count; 0 = none. Stratified by class and "
                                "fixed by data.val_seed, never by the run seed", lo=0, hi=BIG)
    val_seed: int = opt(0, "seed of the validation split (the same images for every run)",
                        lo=0, hi=SEED_LIMIT, hi_open=True)


@dataclass(frozen=True)
class ModelConfig:
    name: str = opt("small_cnn", "model (see `python -m harness config`)")
    width: float = opt(1.0, "channel multiplier (CPU tests use < 1; at least 1/16, so every "
                            "layer keeps a channel of its own)", lo=1 / 16, hi=64)
    quantize_first: bool = opt(False, "quantize the first conv too (policy shared by every "
                                      "method of a study)")
    quantize_last: bool = opt(False, "quantize the last linear layer too")
    quantize_shortcut: bool = opt(True, "quantize 1x1 shortcut convs")
    block: str = opt("standard", "resnet20, bireal_resnet18 block: standard, or convprelubn "
                                 "(the SLB README's reading, an assumption)",
                     choices=("standard", "convprelubn"))
    shortcut: str = opt("B", "resnet20 shortcut where the shape changes: A (identity, zero "
                             "padding) or B (1x1 projection)", choices=("A", "B"))


@dataclass(frozen=True)
class OptimConfig:
    name: str = opt("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = opt(0.1, "base learning rate", lo=0, hi=1e3, lo_open=True)
    momentum: float = opt(0.9, "SGD momentum", lo=0, hi=1, hi_open=True)
    nesterov: bool = opt(False, "Nesterov momentum (SGD)")
    betas: tuple[float, ...] = opt((0.9, 0.999), "Adam/AdamW betas, two values in [0, 1)")
    weight_decay: float = opt(5e-4, "weight decay (decoupled for adamw)", lo=0, hi=1)
    wd_exclude_bn: bool = opt(False, "no decay on BN parameters and biases")
    wd_exclude_quant: bool = opt(False, "no decay on quantizer parameters (scales, PACT clip)")
    schedule: str = opt("cosine", "learning-rate schedule", choices=SCHEDULES)
    milestones: tuple[float, ...] = opt((), "epochs at which the step schedule multiplies the "
                                            "LR by gamma")
    gamma: float = opt(0.1, "step-schedule factor", lo=0, hi=1e3, lo_open=True)
    warmup_epochs: float = opt(0.0, "linear warm-up from 0, in epochs, before the schedule",
                               lo=0, hi=BIG)
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy", lo=0, hi=1,
                                 hi_open=True)
    quant_lr_scale: float = opt(1.0, "LR multiplier for quantizer parameters (step sizes, "
                                     "scales, PACT clips)", lo=0, hi=1e3, lo_open=True)


@dataclass(frozen=True)
class InitConfig:
    """Where a run's weights start: the method's own initialisation, or a full-precision run
    (pretraining as a study stage; each method maps the weights, methods/base.py)."""
    source: str = opt("", "a completed full-precision run whose weights this run starts from: "
                          "a run directory, or (in a study, set by the sweep) a run id of the "
                          "same study; empty = the method's own initialisation")
    epochs: int = opt(0, "the epochs that source trained, counted in the matched budget "
                         "(pretrain + this run's epochs)", lo=0, hi=10**6)


@dataclass(frozen=True)
class MetaConfig:
    """Bookkeeping from the sweep; part of the record, and of the hash."""
    study: str = opt("", "study name (set by the sweep)")
    variant: str = opt("", "variant name (set by the sweep)")
    scale: str = opt("", "scale profile (set by the sweep)")
    unmatched: bool = opt(False, "the variant changes the shared recipe (set by the sweep)")
    stage: str = opt("", "the study stage: \"tune\" for a tuning trial, else empty (set by the "
                         "sweep)")
    tuned: tuple[str, ...] = opt((), "the keys whose values the study's tuning chose (set by "
                                     "the sweep)")
    tuned_by: str = opt("", "the tuning that chose them: a hash of its trial run ids (not part "
                            "of the run id)")


@dataclass(frozen=True)
class RunConfig:
    method: str = opt("fp", "weight quantization method (see `python -m harness config`)")
    method_options: dict = opt(None, "method.<option>: see `python -m harness config "
                                     "--method NAME`", factory=dict)
    w_bits: int = opt(0, "weight bits; 0 = the method's default", lo=0, hi=32)
    a_bits: int = opt(32, "activation bits; 32 = not quantized", choices=A_BITS)
    a_quant: str = opt("pact", "activation quantizer for 2-8 bits", choices=A_QUANT)
    pact_init: float = opt(10.0, "initial PACT clip value", lo=0, hi=1e6, lo_open=True)
    model: ModelConfig = opt(None, "model section", factory=ModelConfig)
    data: DataConfig = opt(None, "data section", factory=DataConfig)
    optim: OptimConfig = opt(None, "optimizer section", factory=OptimConfig)
    init: InitConfig = opt(None, "initialisation section", factory=InitConfig)
    epochs: int = opt(10, "training epochs", lo=1, hi=10**6)
    seed: int = opt(0, "run seed", lo=0, hi=SEED_LIMIT, hi_open=True)
    batch_size: int = opt(128, "training batch size", lo=1, hi=10**6)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N (not part of the run id)")
    channels_last: bool = opt(False, "channels-last memory format")
    amp: bool = opt(False, "bf16 autocast (CUDA)")
    compile: bool = opt(False, "torch.compile the model")
    progress: str = opt("auto", "terminal output: a bar on a terminal, lines otherwise",
                        choices=PROGRESS)
    loggers: tuple[str, ...] = opt((), "extra logging sinks, e.g. [\"tensorboard\"] "
                                       "(metrics.csv is always written)")
    meta: MetaConfig = opt(None, "sweep bookkeeping", factory=MetaConfig)
    task: str = opt("classify", "what the run learns (harness/tasks/; `python -m harness "
                                "config` lists the tasks and their keys)")
    task_options: dict = opt(None, "<task>.<key>: the task's own section, e.g. sr.scale",
                             factory=dict)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "init": InitConfig,
            "meta": MetaConfig}
DEFAULT_TASK = RunConfig.task
# the two fields whose values are parsed by a registry (harness/run/resolve.py): raw dicts in
# a config read from keys, the method's and the task's frozen options once resolved
PARSED_LATER = ("method_options", "task_options")


# --------------------------------------------------------------------------- dict <-> config

def options_dict(options: Any) -> dict[str, Any]:
    """Parsed options (a frozen dataclass) or raw ones (a dict) as a plain dict, tuples as
    lists: what config.json records."""
    if dataclasses.is_dataclass(options):
        options = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(options).items()}


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """config.json: the method as a table ``method = {name, options...}``; the task's keys
    under its name (``sr = {...}``), and ``task`` itself only when it is not the default (a
    classification config.json holds no task keys, as before tasks existed)."""
    d = {name: _plain(getattr(cfg, name)) for name in _field_names(RunConfig)
         if name not in PARSED_LATER}
    d["method"] = {"name": cfg.method, **options_dict(cfg.method_options)}
    if cfg.task == DEFAULT_TASK:
        del d["task"]
    else:
        options = cfg.task_options
        raw = not dataclasses.is_dataclass(options)  # unresolved: {section: {key: value}}
        d[cfg.task] = options_dict(options.get(cfg.task, {}) if raw else options)
    return d


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain(value: Any) -> Any:
    """A config value as JSON has it: dataclasses as dicts, tuples as lists (what
    dataclasses.asdict gives, without its deep copies: a spec converts 10^5 configs)."""
    if dataclasses.is_dataclass(value):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def flatten(d: dict[str, Any], prefix: str = "", strict: bool = False) -> dict[str, Any]:
    """Nested tables as dotted keys, in order. ``strict``: a key set twice (``optim = {lr =
    0.05}`` and ``"optim.lr" = 0.1``) is a UserError naming both places, never silently the
    last one."""
    out: dict[str, Any] = {}
    where: dict[str, str] = {}

    def walk(table: dict[str, Any], pre: str, shown: str) -> None:
        for k, v in table.items():
            key, form = f"{pre}{k}", shown + (f'"{k}"' if "." in str(k) else str(k))
            if isinstance(v, dict):
                walk(v, key + ".", form + ".")
            elif key in out and strict:
                raise UserError(key, f"set twice, as {where[key]} = {out[key]!r} and as {form} "
                                f"= {v!r}; keep one")
            else:
                out[key], where[key] = v, form

    walk(d, prefix, "")
    return out


def _known_keys() -> set[str]:
    keys = {f.name for f in dataclasses.fields(RunConfig)} - set(PARSED_LATER) - set(SECTIONS)
    for sec, cls in SECTIONS.items():
        keys |= {f"{sec}.{f.name}" for f in dataclasses.fields(cls)}
    return keys | {"method.name"}


def suggest(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(_known_keys()), n=1)
    return (f"; did you mean {close[0]!r}?" if close
            else "; see `python -m harness config` for every key")


def from_flat(flat: dict[str, Any]) -> RunConfig:
    """Build and type-check a RunConfig from dotted keys. ``method.<option>`` keys and keys of
    a section this module does not know (a task's, ``sr.scale``) are kept raw, for
    resolution (harness/run/resolve.py) to parse with the method's and the task's options."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    method_options: dict[str, Any] = {}
    task_options: dict[str, dict[str, Any]] = {}
    hints = type_hints(RunConfig)
    known = _known_keys()
    for key, value in flat.items():
        if key.startswith("method.") and key != "method.name":
            method_options[key[len("method."):]] = value
            continue
        head, dot, rest = key.partition(".")
        if dot and head not in SECTIONS and head != "method":
            task_options.setdefault(head, {})[rest] = value
            continue
        if key == "method.name":
            key = "method"
        if key in SECTIONS:
            raise UserError(key, f"expected a table of {key} keys, e.g. [{key}] or "
                            f"{key}.{dataclasses.fields(SECTIONS[key])[0].name} = ..., got "
                            f"{value!r}")
        if key not in known and key != "method":
            raise UserError(key, f"unknown config key{suggest(key)}")
        if "." in key:
            sec, name = key.split(".", 1)
            sec_hints = type_hints(SECTIONS[sec])
            sections[sec][name] = coerce(value, sec_hints[name], key)
        else:
            top[key] = coerce(value, hints[key], key)
    return RunConfig(**top, method_options=method_options, task_options=task_options,
                     **{s: SECTIONS[s](**v) for s, v in sections.items()})


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a config or options dataclass, evaluated once."""
    return typing.get_type_hints(cls)


def parse_value(text: str) -> Any:
    """A --set value as TOML (numbers, booleans, lists, quoted strings) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def parse_sets(sets: list[str]) -> dict[str, Any]:
    out = {}
    for item in sets:
        if "=" not in item:
            raise UserError("--set", f"expected key=value, got {item!r}; "
                            "e.g. --set model.width=0.5")
        key, text = item.split("=", 1)
        out[key.strip()] = parse_value(text.strip())
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON config file as dotted keys. ``method = "ste"`` or ``[method] name=``."""
    p = Path(path)
    if not p.is_file():
        raise UserError("--config", f"file {str(p)!r} not found; pass an existing .toml/.json "
                        "file")
    kind = "json" if p.suffix == ".json" else "toml"
    try:
        with open(p, "rb") as f:
            text = f.read(CONFIG_MAX_BYTES + 1).decode()
        if len(text) > CONFIG_MAX_BYTES:
            raise UserError("--config", f"{p} is larger than {CONFIG_MAX_BYTES:,} bytes; pass a "
                            "config file")
        d = json.loads(text) if kind == "json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError("--config", f"{p} is not valid {kind}: "
                        f"{str(e).splitlines()[0][:160]}") from None
    except RecursionError:
        raise UserError("--config", f"{p} is nested too deeply to be a config") from None
    if not isinstance(d, dict):
        raise UserError("--config", f"{p} holds a JSON {type(d).__name__}, not an object of "
                        "config keys; pass a run's config.json or a TOML file")
    d = {k: v for k, v in d.items() if k not in ("config_hash",)}
    return flatten(d, strict=True)


def gather(file: str | Path | None = None, flags: dict[str, Any] | None = None,
           sets: list[str] | None = None) -> dict[str, Any]:
    """Dotted keys of defaults <- file <- flags (None values ignored) <- --set."""
    flat: dict[str, Any] = {}
    if file:
        flat.update(load_file(file))
    flat.update({k: v for k, v in (flags or {}).items() if v is not None})
    flat.update(parse_sets(sets or []))
    return flat


def from_dict(d: dict[str, Any]) -> RunConfig:
    """An unresolved RunConfig from a config.json object."""
    d = {k: v for k, v in d.items() if k != "config_hash"}
    return from_flat(flatten(d, strict=True))


# --------------------------------------------------------------------------- validation

def check_fields(obj: Any, prefix: str = "") -> None:
    """Every field of a config dataclass within what its ``opt`` declares: numbers finite and
    inside their range, strings among their choices."""
    for f in dataclasses.fields(obj):
        value, meta, key = getattr(obj, f.name), f.metadata, prefix + f.name
        if f.name in PARSED_LATER:
            continue  # checked by their own registries
        if dataclasses.is_dataclass(value):
            check_fields(value, key + ".")
            continue
        if meta.get("choices") is not None:
            require(value in meta["choices"], key,
                    f"{value!r} is not one of {list(meta['choices'])}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_range(key, value, meta)


def show_number(x: float) -> str:
    """Integers exactly (a seed of 2^32 is 4294967296, not 4.29497e+09), floats short."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def _check_range(key: str, value: float, meta: dict) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    if not math.isfinite(value):
        raise UserError(key, f"must be a finite number, got {value}")
    n = show_number   # messages are built only for a value out of range (specs check many)
    if lo is not None and not (value > lo if meta["lo_open"] else value >= lo):
        raise UserError(key, f"must be {'>' if meta['lo_open'] else '>='} {n(lo)}, got "
                        f"{n(value)}")
    if hi is not None and not (value < hi if meta["hi_open"] else value <= hi):
        raise UserError(key, f"must be {'<' if meta['hi_open'] else '<='} {n(hi)}, got "
                        f"{n(value)}" + ("; is it a typo?" if hi >= 64 else ""))


def describe_diff(old: dict[str, Any], new: RunConfig) -> list[str]:
    """The keys that make two configs different runs, each with both values
    ("optim.lr = 0.1 there, 0.05 here"); keys left out of the hash are ignored."""
    a = flatten({k: v for k, v in old.items() if k != "config_hash"})
    b = flatten(to_dict(new))
    out = []
    for k in sorted(set(a) | set(b)):
        if k in NON_SEMANTIC or (k in LATER_KEYS and a.get(k, LATER_KEYS[k]) ==
                                 b.get(k, LATER_KEYS[k])):
            continue
        if a.get(k) != b.get(k):
            out.append(f"{k} = {a.get(k)!r} there, {b.get(k)!r} here")
    return out


def cell_key(cfg: RunConfig) -> dict[str, Any]:
    """The matched-comparison cell: everything but the method block and the variant name."""
    flat = flatten(to_dict(cfg))
    for k in list(flat):
        if k.startswith("method.") or k in NON_SEMANTIC or k in ("meta.variant",):
            flat.pop(k)
        elif k in LATER_KEYS and flat[k] == LATER_KEYS[k]:
            flat.pop(k)
    return flat
