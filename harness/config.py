"""Typed, frozen run configuration: defaults <- TOML file <- CLI flags <- ``--set key=value``.

The resolved config is what a run records (config.json) and what its hash (the run id) is
computed from. Every user mistake raises :class:`UserError` naming the key and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methods.errors import UserError, require
from methods.options import _coerce, options_dict

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
A_QUANT = ("pact", "dorefa")
A_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)
# Keys that do not change what is computed; left out of the config hash (the run id).
NON_SEMANTIC = ("device", "data.root", "data.download", "data.workers", "progress")
# Keys added after run records existed, at the value that computes what the code did before
# them: left out of the config hash at that value, so earlier run ids stay valid. (Method
# options say the same through Method.inert_options.)
HASH_STABLE = {"model.block": "standard", "model.shortcut": "B"}


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: str = ""
    subset_train: int = 0          # images per split kept (class balanced); 0 = all
    subset_test: int = 0
    augment: bool | None = None    # None = the dataset's default (crop+flip for photos)
    download: bool = False         # cifar10/100 only: fetch with torchvision when missing
    eval_batch_size: int = 500
    workers: int = 4               # DataLoader workers for streamed (ImageNet-size) folders


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small_cnn"
    width: float = 1.0             # channel multiplier (CPU tests use < 1)
    quantize_first: bool = False   # quantization policy, shared by every method of a study
    quantize_last: bool = False
    quantize_shortcut: bool = True
    block: str = "standard"        # resnet20, bireal_resnet18: standard | convprelubn
    shortcut: str = "B"            # resnet20: A (identity, zero padding) | B (1x1 projection)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 5e-4
    wd_exclude_bn: bool = False     # no decay on BN parameters and biases
    wd_exclude_quant: bool = False  # no decay on quantizer parameters (scales, PACT clip)
    schedule: str = "cosine"
    milestones: tuple[float, ...] = ()  # epochs at which the step schedule multiplies by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0      # linear warm-up from 0, before the schedule
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class MetaConfig:
    """Bookkeeping from the sweep; part of the record, and of the hash."""
    study: str = ""
    variant: str = ""
    scale: str = ""
    unmatched: bool = False


@dataclass(frozen=True)
class RunConfig:
    method: str = "fp"
    method_options: dict = field(default_factory=dict)
    w_bits: int = 0                # 0 = the method's default
    a_bits: int = 32
    a_quant: str = "pact"
    pact_init: float = 10.0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    epochs: int = 10
    seed: int = 0
    batch_size: int = 128
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    channels_last: bool = False
    amp: bool = False              # bf16 autocast (CUDA)
    compile: bool = False          # torch.compile the model
    progress: str = "auto"         # auto | bar | line | none
    meta: MetaConfig = MetaConfig()


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "meta": MetaConfig}


# --------------------------------------------------------------------------- dict <-> config

def to_dict(cfg: RunConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    options = d.pop("method_options")
    d["method"] = {"name": cfg.method, **options}
    for sec in SECTIONS:
        for k, v in d[sec].items():
            if isinstance(v, tuple):
                d[sec][k] = list(v)
    return d


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _known_keys() -> set[str]:
    keys = {f.name for f in dataclasses.fields(RunConfig)} - {"method_options"} - set(SECTIONS)
    for sec, cls in SECTIONS.items():
        keys |= {f"{sec}.{f.name}" for f in dataclasses.fields(cls)}
    return keys | {"method.name"}


def _suggest(key: str) -> str:

    close = difflib.get_close_matches(key, sorted(_known_keys()), n=1)
    return f"; did you mean {close[0]!r}?" if close else "; see `python -m harness run --help`"


def from_flat(flat: dict[str, Any]) -> RunConfig:
    """Build and type-check a RunConfig from dotted keys (method.<opt> kept raw)."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    method_options: dict[str, Any] = {}
    hints = typing.get_type_hints(RunConfig)
    known = _known_keys()
    for key, value in flat.items():
        if key.startswith("method.") and key != "method.name":
            method_options[key[len("method."):]] = value
            continue
        if key == "method.name":
            key = "method"
        if key not in known and key != "method":
            raise UserError(key, f"unknown config key{_suggest(key)}")
        if "." in key:
            sec, name = key.split(".", 1)
            sec_hints = typing.get_type_hints(SECTIONS[sec])
            sections[sec][name] = _coerce(value, sec_hints[name], key)
        else:
            top[key] = _coerce(value, hints[key], key)
    return RunConfig(**top, method_options=method_options,
                     **{s: SECTIONS[s](**v) for s, v in sections.items()})


def parse_value(text: str) -> Any:
    """A --set value as TOML (numbers, booleans, lists, quoted strings) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
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
        raise UserError("--config", f"file {str(p)!r} not found; pass an existing .toml/.json file")
    try:
        if p.suffix == ".json":
            d = json.loads(p.read_text())
        else:
            d = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise UserError("--config", f"{p} is not valid {p.suffix[1:] or 'toml'}: {e}") from None
    d = {k: v for k, v in d.items() if k not in ("config_hash",)}
    return flatten(d)


def build(file: str | Path | None = None, flags: dict[str, Any] | None = None,
          sets: list[str] | None = None) -> RunConfig:
    """defaults <- file <- flags (None values ignored) <- --set, then resolve and validate."""
    flat: dict[str, Any] = {}
    if file:
        flat.update(load_file(file))
    flat.update({k: v for k, v in (flags or {}).items() if v is not None})
    flat.update(parse_sets(sets or []))
    return resolve(from_flat(flat))


def from_dict(d: dict[str, Any]) -> RunConfig:
    d = {k: v for k, v in d.items() if k != "config_hash"}
    return from_flat(flatten(d))


# --------------------------------------------------------------------------- validation

def resolve(cfg: RunConfig) -> RunConfig:
    """Fill defaults that depend on other fields and validate everything (no I/O)."""
    from harness import data as data_mod
    from harness import models as models_mod
    from methods.base import get as get_method

    method_cls = get_method(cfg.method)
    w_bits = cfg.w_bits or method_cls.default_bits
    method_cls.check_bits(w_bits)
    options = method_cls.parse_options(dict(cfg.method_options))
    method_cls.check_options(options, w_bits, cfg.a_bits)
    require(cfg.a_bits in A_BITS, "a_bits",
            f"{cfg.a_bits} is not supported; use one of {list(A_BITS)}")
    require(cfg.a_quant in A_QUANT, "a_quant",
            f"{cfg.a_quant!r} unknown; use one of {list(A_QUANT)}")
    require(cfg.pact_init > 0, "pact_init", "must be > 0")
    require(cfg.epochs > 0, "epochs", f"must be > 0, got {cfg.epochs}; pass --epochs N with N >= 1")
    require(cfg.batch_size > 0, "batch_size", f"must be > 0, got {cfg.batch_size}")
    require(cfg.progress in ("auto", "bar", "line", "none"), "progress",
            "use one of auto, bar, line, none")
    dev = cfg.device
    require(dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev) is not None, "device",
            f"{dev!r} unknown; use auto, cpu, cuda or cuda:N")
    models_mod.check(cfg.model)
    data_mod.check_name(cfg.data.name)
    require(cfg.data.subset_train >= 0, "data.subset_train", "must be >= 0 (0 = all)")
    require(cfg.data.subset_test >= 0, "data.subset_test", "must be >= 0 (0 = all)")
    require(cfg.data.eval_batch_size > 0, "data.eval_batch_size", "must be > 0")
    require(cfg.data.workers >= 0, "data.workers", "must be >= 0 (0 = load in the main process)")
    o = cfg.optim
    require(o.name in OPTIMIZERS, "optim.name",
            f"{o.name!r} unknown; use one of {list(OPTIMIZERS)}")
    require(o.schedule in SCHEDULES, "optim.schedule",
            f"{o.schedule!r} unknown; use one of {list(SCHEDULES)}")
    require(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}; pass --lr")
    require(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    require(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)")
    require(len(o.betas) == 2, "optim.betas", "give two values, e.g. [0.9, 0.999]")
    require(0 <= o.warmup_epochs < cfg.epochs, "optim.warmup_epochs",
            f"must be >= 0 and below the {cfg.epochs} training epochs")
    require(0 <= o.label_smoothing < 1, "optim.label_smoothing", "must be in [0, 1)")
    require(list(o.milestones) == sorted(o.milestones), "optim.milestones",
            "must be increasing epochs, e.g. [100, 150]")
    augment = cfg.data.augment
    if augment is None:
        augment = data_mod.default_augment(cfg.data.name)
    return dataclasses.replace(
        cfg, w_bits=w_bits, method_options=options_dict(options),
        data=dataclasses.replace(cfg.data, augment=augment))


def method_options(cfg: RunConfig) -> Any:
    from methods.base import get as get_method

    return get_method(cfg.method).parse_options(dict(cfg.method_options))


def config_hash(cfg: RunConfig) -> str:
    """sha256 (16 hex) of the resolved config without the keys in NON_SEMANTIC, nor those at
    their HASH_STABLE value, nor the method's inert options."""
    from methods.base import get as get_method

    flat = flatten(to_dict(cfg))
    for k in NON_SEMANTIC:
        flat.pop(k, None)
    for k, v in HASH_STABLE.items():
        if flat.get(k) == v:
            flat.pop(k)
    for k in get_method(cfg.method).inert_options(dict(cfg.method_options)):
        flat.pop(f"method.{k}", None)
    blob = json.dumps(flat, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_key(cfg: RunConfig) -> dict[str, Any]:
    """The matched-comparison cell: everything but the method block and the variant name."""
    flat = flatten(to_dict(cfg))
    for k in list(flat):
        if k.startswith("method.") or k in NON_SEMANTIC or k in ("meta.variant",):
            flat.pop(k)
    return flat
