"""`python -m harness config` (every config key, from the dataclasses the parser uses) and
`python -m harness show RUN_DIR` (a run's config, state and last metrics)."""
from __future__ import annotations

import csv
import dataclasses
import io
import socket
import typing
from pathlib import Path
from typing import Any

from harness import config, files, records
from harness.errors import UserError, require
from harness.run.procs import owner_alive
from harness.tasks import base as tasks


def config_keys() -> list[dict[str, Any]]:
    """One entry per config key: key, type, default, allowed values, help."""
    out = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "method_options":
                continue
            if f.name == "task_options":  # each task's own section, under its name
                for card in tasks.load_all().values():
                    if dataclasses.is_dataclass(card.Options) and dataclasses.fields(card.Options):
                        walk(card.Options, f"{card.name}.")
                continue
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append({"key": prefix + f.name, "type": _type_name(hints[f.name]),
                        "default": default, "allowed": _allowed(prefix + f.name, f.metadata),
                        "help": f.metadata.get("help", "")})
    walk(config.RunConfig, "")
    return out


def _type_name(t: Any) -> str:
    return str(t).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _allowed(key: str, meta: dict) -> str:
    if meta.get("choices") is not None:
        return " | ".join(str(c) for c in meta["choices"])
    if key in ("method", "model.name", "data.name"):
        return "(listed below)"
    if key == "task":
        return " | ".join(sorted(tasks.load_all()))
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return ""
    left = "(" if meta.get("lo_open") else "["
    right = ")" if meta.get("hi_open") else "]"
    show = config.show_number
    return f"{left}{'' if lo is None else show(lo)}, {'' if hi is None else show(hi)}{right}"


def method_options(name: str) -> list[dict[str, Any]]:
    """A method's ``method.<option>`` keys with type, default and choices."""
    from methods.base import get

    cls = get(name)
    hints = typing.get_type_hints(cls.Options)
    return [{"key": f"method.{f.name}", "type": _type_name(hints[f.name]),
             "default": f.default if f.default is not dataclasses.MISSING else f.default_factory(),
             "allowed": " | ".join(map(str, f.metadata.get("choices") or ())),
             "help": f.metadata.get("help", "")} for f in dataclasses.fields(cls.Options)]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cols = ("key", "type", "default", "allowed")
    width = {c: max(len(c), *(len(repr(r[c]) if c == "default" else str(r[c])) for r in rows))
             for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols) + "  help"]
    for r in rows:
        cells = [repr(r[c]) if c == "default" else str(r[c]) for c in cols]
        lines.append("  ".join(v.ljust(width[c]) for v, c in zip(cells, cols)) + "  " + r["help"])
    return lines


def cmd_config(args) -> int:
    """Every config key first (from the dataclasses alone, before torch is loaded), then the
    registries' names: the methods, and each task's models and datasets, which load their
    modules (and torch)."""
    if args.method:
        return _method_config(args.method)
    print("\n".join(_table(config_keys())), flush=True)
    from methods.base import load_all

    print("\nmethods (method.<option>: python -m harness config --method NAME):")
    for name, cls in sorted(load_all().items()):
        print(f"  {name:<10} {cls.display_name or name}, weight bits {sorted(cls.bits)}")
    for name, card in sorted(tasks.load_all().items()):
        runtime = card.runtime()
        print(f"task {name}: {card.description}\n  models:")
        for model, entry in sorted(runtime.models.items()):
            print(f"    {model:<16} {entry.description}")
        print("  datasets:")
        for dataset, desc in sorted(runtime.datasets.items()):
            print(f"    {dataset:<16} {desc}")
    return 0


def _method_config(name: str) -> int:
    from methods.base import get

    cls = get(name)
    print(f"method {cls.name} ({cls.display_name or cls.name}): weight bits "
          f"{sorted(cls.bits)}, default {cls.default_bits}")
    rows = method_options(name)
    print("\n".join(_table(rows)) if rows else "no options")
    return 0


def cmd_show(args) -> int:
    run_dir = Path(args.run_dir)
    require((run_dir / "config.json").is_file(), "RUN_DIR",
            f"{str(run_dir)!r} has no config.json; pass a run directory")
    rec = records.load_run(run_dir)
    cfg = rec.config or {}
    flat = config.flatten({k: v for k, v in cfg.items() if k != "config_hash"})
    if "method.name" in flat:
        flat = {"method": flat.pop("method.name"), **flat}
    defaults = {**{r["key"]: r["default"] for r in config_keys()}, **_resolved_defaults(cfg)}
    state, note = rec.status, rec.problem
    if state == "running":
        state, note = _running_or_stale(run_dir, rec.summary)
    print(f"{run_dir}: {state}" + (f" ({note})" if note else ""))
    s = rec.summary
    if s is not None:
        headline = tasks.load_all().get(s.task, tasks.get(config.DEFAULT_TASK)).headline()
        print(f"  epochs {s.epochs_completed}/{s.epochs}, wall {s.wall_time_s:.1f}s"
              + (f", final deployed {headline.title} {headline.fmt(s.result)}"
                 if s.result is not None else "")
              + (f", error: {s.error}" if s.error else ""))
        env = s.env
        print(f"  code {env.get('harness_commit', '?')}"
              + (f" (snapshot {env['source_snapshot']})" if env.get("source_snapshot") else "")
              + f", torch {env.get('torch', '?')}, {env.get('device_name', '?')}")
    print(f"  config (hash {cfg.get('config_hash', '?')}; * = not the default):")
    for k, v in flat.items():
        mark = "*" if k in defaults and _norm(defaults[k]) != _norm(v) else " "
        print(f"   {mark} {k} = {v!r}")
    rows = _last_rows(run_dir)
    if rows:
        print("  last epoch: " + ", ".join(f"{k} {_fmt(v)}" for k, v in rows[-1].items()))
    return 0


def _resolved_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """The defaults as this run's method, model, dataset and task resolve them (the method's
    weight bits and options, the dataset's augmentation), flat; {} when they do not resolve."""
    names = {"method": {"name": (cfg.get("method") or {}).get("name", "fp")},
             "data": {"name": (cfg.get("data") or {}).get("name", "digits")},
             "model": {"name": (cfg.get("model") or {}).get("name", "small_cnn")},
             "task": cfg.get("task", config.DEFAULT_TASK)}
    try:
        from harness.run import resolve

        flat = config.flatten(config.to_dict(resolve.from_dict(names)))
    except (UserError, ValueError, TypeError, KeyError):
        return {}
    return {k: v for k, v in flat.items()  # the names themselves keep their plain defaults
            if k not in ("method.name", "data.name", "model.name", "task")}


def _running_or_stale(run_dir: Path, s: records.RunSummary) -> tuple[str, str]:
    """A summary that says running is believed only while its trainer lives (RUN_DIR/.owner,
    the rule `status` and `sweep` use); a trainer on another machine cannot be checked."""
    try:
        owner = files.read_json(run_dir / ".owner")
    except (OSError, ValueError):
        owner = None
    if not isinstance(owner, dict):
        owner = {}
    if owner.get("host") not in (None, socket.gethostname()):
        return "running", (f"on {owner['host']}, pid {owner.get('pid', '?')}; not checked from "
                           "this machine")
    if owner_alive(run_dir):
        return "running", f"pid {owner.get('pid', '?')}"
    who = f"pid {owner['pid']}" if owner.get("pid") is not None else "no .owner file"
    return "interrupted", (f"stale: summary.json says running but its trainer ({who}) is gone, "
                           f"killed before it could record that; stopped at epoch "
                           f"{s.epochs_completed}: resume with python -m harness run --resume "
                           f"{run_dir} (or sweep again)")


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _fmt(v: str) -> str:
    try:
        return f"{float(v):.4g}"
    except ValueError:
        return v


def _last_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv's rows (a regular file of at most the records' limit, else none)."""
    try:
        data = files.read_bytes(run_dir / "metrics.csv", records.METRICS_MAX_BYTES)
        return list(csv.DictReader(io.StringIO(data.decode(errors="replace"), newline="")))
    except (OSError, ValueError, csv.Error):
        return []


def run_help_names() -> dict[str, Any]:
    """What `run --help` fills in: the config defaults of the run flags' keys, and the names
    of the methods and of every task's models and datasets."""
    from methods.base import load_all

    defaults = config.flatten(config.to_dict(config.RunConfig()))  # the run flags' keys
    defaults["method"] = defaults.pop("method.name")
    runtimes = [card.runtime() for card in tasks.load_all().values()]
    return {"defaults": {k: "none" if v == "" else v for k, v in defaults.items()},
            "method": ", ".join(sorted(load_all())),
            "model": ", ".join(sorted(m for r in runtimes for m in r.models)),
            "dataset": ", ".join(sorted(d for r in runtimes for d in r.datasets))}
