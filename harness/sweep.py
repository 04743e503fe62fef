"""Studies: spec -> expanded runs -> submitit jobs (slurm | local | debug) -> run records.

    python -m harness sweep STUDY.toml [--executor slurm|local|debug] [--scale NAME] [--dry-run]
                                       [--retry-failed] [--wait] [--results DIR]
    python -m harness status results/<study>
    python -m harness cancel results/<study>

A study directory holds ``study.toml`` (frozen copy of the spec), ``manifest.json`` (the
expanded runs and the excluded cells), ``runs/<run_id>/`` (run records), ``submissions.jsonl``
(one line per submitted run: job id, executor, time) and ``submitit/`` (job logs).

Safety: the whole spec is validated before anything is written or submitted; a lock file
serialises sweeps of one study, and a run whose last job is still queued or running is never
submitted again, so re-running a sweep command is always safe.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import submitit

from harness import config as C
from methods.errors import UserError

EXECUTORS = ("slurm", "local", "debug")
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
          "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
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
}
RESOURCE_KEYS = ("timeout_min", "gpus_per_task", "cpus_per_task", "mem_gb", "tasks_per_node",
                 "nodes", "partition", "constraint", "qos", "account")


# --------------------------------------------------------------------------- spec

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


@dataclass
class Run:
    run_id: str
    variant: str
    method: str
    cfg: C.RunConfig
    w_bits: int
    a_bits: int
    epochs: int
    seed: int
    unmatched: bool
    shape: tuple

    def manifest(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "variant": self.variant, "method": self.method,
                "w_bits": self.w_bits, "a_bits": self.a_bits, "epochs": self.epochs,
                "seed": self.seed, "unmatched": self.unmatched}


@dataclass
class Study:
    path: Path
    name: str
    raw: dict[str, Any]
    scale: str
    runs: list[Run] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class SpecErrors(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def _fix_root(flat: dict[str, Any], spec_dir: Path) -> None:
    """data.root: ${VARS} and ~ expanded; relative paths are relative to the spec file."""
    root = flat.get("data.root")
    if isinstance(root, str) and root:
        root = os.path.expanduser(os.path.expandvars(root))
        flat["data.root"] = str((spec_dir / root).resolve()) if not os.path.isabs(root) else root


def _pairs(value: Any, where: str, errors: list[str]) -> list[tuple[int, int]]:
    ok = isinstance(value, list) and value and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(b, int) for b in p) for p in value)
    if not ok:
        errors.append(f"{where}: expected W/A pairs like [[1, 32], [2, 2]], got {value!r}")
        return []
    return [tuple(p) for p in value]


def _int_list(value: Any, where: str, errors: list[str]) -> list[int]:
    if not (isinstance(value, list) and value and all(isinstance(v, int) and not
                                                       isinstance(v, bool) for v in value)):
        errors.append(f"{where}: expected a non-empty list of integers, got {value!r}")
        return []
    return list(value)


EXECUTOR_TYPES = {  # key: (type check, what to write)
    "timeout_min": (lambda v: _int(v) and v > 0, "a positive number of minutes"),
    "gpus_per_task": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "cpus_per_task": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "mem_gb": (lambda v: _num(v) and v > 0, "a positive number of GB"),
    "tasks_per_node": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "nodes": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "array_parallelism": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "local_concurrency": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "setup": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              'a list of shell lines, e.g. ["module load cuda"]'),
    "sbatch": (lambda v: isinstance(v, dict), 'a table, e.g. { exclusive = "" }'),
    **{k: (lambda v: isinstance(v, str), "a string") for k in
       ("partition", "account", "qos", "constraint")},
}
SCALE_TYPES = {
    "epochs_divisor": (lambda v: _num(v) and v > 0, "a number > 0"),
    "min_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "max_seeds": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 = all)"),
    "set": (lambda v: isinstance(v, dict), 'a table of recipe keys, e.g. { "model.width" = 0.5 }'),
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _typed(table: Any, types: dict, where: str, errors: list[str]) -> dict:
    """Unknown keys and values of the wrong type are errors; returns the valid part."""
    if not isinstance(table, dict):
        errors.append(f"{where}: expected a table")
        return {}
    _known(table, set(types), where, errors)
    ok = {}
    for key, value in table.items():
        if key in types:
            check, want = types[key]
            if check(value):
                ok[key] = value
            else:
                errors.append(f"{where}.{key}: expected {want}, got {value!r}")
    return ok


def _known(table: dict, allowed: set[str], where: str, errors: list[str]) -> None:
    for key in table:
        if key not in allowed:
            errors.append(f"{where}.{key}: unknown key; allowed: {', '.join(sorted(allowed))}")


def load_spec(path: str | Path, scale: str | None = None, sets: list[str] | None = None) -> Study:
    """Parse and expand a study spec; raises SpecErrors listing every problem at once.

    ``sets`` ("key=value", as for `run --set`) override the shared recipe for every run, so
    the comparison stays matched (e.g. --set data.root=/data/cifar on another machine)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise SpecErrors([f"{where}: no such study file; pass a path like studies/demo.toml"])
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecErrors([f"{where}: not valid TOML ({e}); fix the syntax"]) from None
    errors: list[str] = []
    _known(raw, {"study", "recipe", "grid", "variants", "executor", "scales", "report"},
           where, errors)
    study_t = raw.get("study", {})
    name = study_t.get("name", path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):
        errors.append(f"{where}: study.name: {name!r} must be letters, digits, '-', '_', '.'")
    _known(study_t, {"name", "description", "allow_unmatched", "question", "gpu_hours"},
           f"{where}: study", errors)
    allow_unmatched = bool(study_t.get("allow_unmatched", False))

    spec_scales = raw.get("scales", {})
    if not isinstance(spec_scales, dict):
        errors.append(f"{where}: scales: expected [scales.NAME] tables")
        spec_scales = {}
    scales = {**BUILTIN_SCALES, **{k: _typed(v, SCALE_TYPES, f"{where}: scales.{k}", errors)
                                   for k, v in spec_scales.items()}}
    scale = scale or "full"
    if scale not in scales:
        errors.append(f"{where}: --scale {scale!r} is not defined; use one of {sorted(scales)} "
                      "or add a [scales.NAME] table")
        scale_t = BUILTIN_SCALES["full"]
    else:
        scale_t = {**BUILTIN_SCALES["full"], **scales[scale]}

    recipe = C.flatten(raw.get("recipe", {}))
    try:
        overrides = C.parse_sets(sets or [])
    except UserError as e:
        errors.append(f"{where}: {e}")
        overrides = {}
    for key, value in overrides.items():
        if key == "data.root" and isinstance(value, str) and value and not os.path.isabs(value):
            value = str(Path(value).resolve())  # --set paths are relative to the caller
        recipe[key] = value
    for key in recipe:
        if key in GRID_KEYS or key.startswith("method.") or key.startswith("meta."):
            errors.append(f"{where}: recipe.{key}: set by the grid or a variant, not the shared "
                          "recipe; move it to [grid] or [variants.NAME]")
    _fix_root(recipe, path.parent)

    grid = raw.get("grid", {})
    _known(grid, {"bits", "epochs", "seeds", "exclude", "variants"}, f"{where}: grid", errors)
    bits = _pairs(grid.get("bits"), f"{where}: grid.bits", errors)
    budgets = _int_list(grid.get("epochs"), f"{where}: grid.epochs", errors)
    seeds = _int_list(grid.get("seeds"), f"{where}: grid.seeds", errors)
    if scale_t.get("max_seeds"):
        seeds = seeds[: scale_t["max_seeds"]]
    div, lo = scale_t.get("epochs_divisor", 1), scale_t.get("min_epochs", 1)
    budget_map = {e: max(lo, int(round(e / div))) for e in budgets}
    if len(set(budget_map.values())) < len(budget_map):
        errors.append(f"{where}: --scale {scale} maps the budgets {budgets} to "
                      f"{[budget_map[e] for e in budgets]} epochs, which collide; use larger "
                      "budgets or a scale with a smaller epochs_divisor")

    variants = _variants(raw.get("variants", {}), where, errors, allow_unmatched, path.parent)
    chosen = grid.get("variants")
    if chosen is not None:
        unknown = [v for v in chosen if v not in variants]
        if unknown:
            errors.append(f"{where}: grid.variants: {unknown} not defined under [variants]")
        variants = {k: v for k, v in variants.items() if k in chosen}

    executor = {**EXECUTOR_DEFAULTS,
                **_typed(raw.get("executor", {}), EXECUTOR_TYPES, f"{where}: executor", errors)}

    study = Study(path, str(name), raw, scale, executor=executor)
    excludes = _exclude_list(grid.get("exclude", []), f"{where}: grid.exclude", errors)
    scale_set = C.flatten(scale_t.get("set", {}))
    for v in variants.values():
        cells = v.bits or ([(32, 32)] if v.reference else bits)
        for w, a in cells:
            for e in budgets:
                reason = _excluded(excludes, v.name, w, a, e)
                if reason is None:
                    reason = _unsupported(v.method, w)
                if reason is not None:
                    study.excluded.append({"variant": v.name, "w_bits": w, "a_bits": a,
                                           "epochs": budget_map[e], "reason": reason})
                    continue
                for s in seeds:
                    flat = {**recipe, **v.recipe, **scale_set, "method": v.method,
                            **{f"method.{k}": val for k, val in v.options.items()},
                            "w_bits": w, "a_bits": a, "epochs": budget_map[e], "seed": s,
                            "progress": "line", "meta.study": str(name), "meta.variant": v.name,
                            "meta.scale": scale, "meta.unmatched": v.unmatched}
                    try:
                        cfg = C.resolve(C.from_flat(flat))
                    except UserError as err:
                        msg = f"{where}: variants.{v.name}: {err}"
                        if msg not in errors:
                            errors.append(msg)
                        continue
                    res = {**executor, **v.executor}
                    h = C.config_hash(cfg)
                    study.runs.append(Run(
                        f"{v.name}_w{w}a{a}_e{budget_map[e]}_s{s}_{h[:8]}", v.name, v.method, cfg,
                        w, a, budget_map[e], s, v.unmatched,
                        tuple((k, json.dumps(res[k])) for k in RESOURCE_KEYS)))
    _check_data_roots(study, where, errors)
    _check_matched(study, where, errors)
    seen: dict[str, str] = {}
    for r in study.runs:
        key = json.dumps([r.method, r.cfg.method_options, C.flatten(C.to_dict(r.cfg))["w_bits"],
                          C.cell_key(r.cfg)], sort_keys=True, default=str)
        other = seen.setdefault(key, r.variant)
        if other != r.variant:
            msg = (f"{where}: variants.{r.variant} and variants.{other} are the same method with "
                   "the same options; give them different options or drop one")
            if msg not in errors:
                errors.append(msg)
    if not study.runs and not errors:
        errors.append(f"{where}: the grid expands to no runs; check grid and variants")
    if errors:
        raise SpecErrors(errors)
    return study


def _variants(table: dict, where: str, errors: list[str], allow_unmatched: bool,
              spec_dir: Path) -> dict[str, Variant]:
    out = {}
    if not table:
        errors.append(f"{where}: variants: define at least one [variants.NAME] with a method")
    for name, t in table.items():
        w = f"{where}: variants.{name}"
        if not isinstance(t, dict):
            errors.append(f"{w}: expected a table")
            continue
        _known(t, {"method", "options", "recipe", "unmatched", "reference", "bits", "executor",
                   "description"}, w, errors)
        if "method" not in t:
            errors.append(f"{w}.method: missing; name the method, e.g. method = \"slb\"")
            continue
        for key in ("options", "recipe", "executor"):
            if not isinstance(t.get(key, {}), dict):
                errors.append(f"{w}.{key}: expected a table, e.g. {key} = {{ ... }}")
                t = {**t, key: {}}
        recipe = C.flatten(t.get("recipe", {}))
        unmatched = bool(t.get("unmatched", False))
        if recipe and not unmatched:
            errors.append(f"{w}.recipe: changes the shared recipe; set unmatched = true on the "
                          "variant (and study.allow_unmatched = true) for a deliberately "
                          "unmatched comparison")
        if unmatched and not allow_unmatched:
            errors.append(f"{w}.unmatched: set study.allow_unmatched = true to allow "
                          "unmatched comparisons in this study")
        for key in recipe:
            if key in GRID_KEYS or key.startswith(("method.", "meta.")):
                errors.append(f"{w}.recipe.{key}: not a recipe key; use options or the grid")
        _fix_root(recipe, spec_dir)
        bits = _pairs(t["bits"], f"{w}.bits", errors) if "bits" in t else None
        ex = _typed(t.get("executor", {}), {k: EXECUTOR_TYPES[k] for k in RESOURCE_KEYS},
                    f"{w}.executor", errors)
        out[name] = Variant(name, t["method"], dict(t.get("options", {})), recipe, unmatched,
                            bool(t.get("reference", False)), bits, dict(ex))
    return out


def _exclude_list(value: Any, where: str, errors: list[str]) -> list[dict]:
    types = {"variant": (lambda v: isinstance(v, str), "a variant name"),
             "bits": (lambda v: isinstance(v, list) and len(v) == 2 and all(_int(b) for b in v),
                      "a W/A pair like [2, 32]"),
             "epochs": (lambda v: _int(v), "an epoch budget of the grid"),
             "reason": (lambda v: isinstance(v, str), "a string")}
    if not isinstance(value, list):
        errors.append(f"{where}: expected a list of tables like "
                      '[{ variant = "bop", bits = [2, 32], reason = "..." }]')
        return []
    out = []
    for i, entry in enumerate(value):
        n = len(errors)
        ok = _typed(entry, types, f"{where}[{i}]", errors)
        if len(errors) == n:
            if not set(ok) - {"reason"}:
                errors.append(f"{where}[{i}]: name at least one of variant, bits, epochs")
            else:
                out.append(ok)
    return out


def _excluded(excludes: list[dict], variant: str, w: int, a: int, e: int) -> str | None:
    for ex in excludes:
        if ex.get("variant", variant) != variant:
            continue
        if "bits" in ex and list(ex["bits"]) != [w, a]:
            continue
        if "epochs" in ex and ex["epochs"] != e:
            continue
        return "excluded by the spec" + (f": {ex['reason']}" if ex.get("reason") else "")
    return None


def _unsupported(method: str, w_bits: int) -> str | None:
    from methods.base import REGISTRY, load_all

    load_all()
    cls = REGISTRY.get(method)
    if cls is not None and w_bits not in cls.bits:
        return f"{method} cannot run {w_bits}-bit weights (supports {sorted(cls.bits)})"
    return None


def _check_data_roots(study: Study, where: str, errors: list[str]) -> None:
    from harness import data as data_mod

    seen = set()
    for r in study.runs:
        key = (r.cfg.data.name, r.cfg.data.root, r.cfg.data.download)
        if key in seen:
            continue
        seen.add(key)
        try:
            data_mod.check_root(r.cfg.data)
        except UserError as e:
            errors.append(f"{where}: recipe.{e} (in a study: set [recipe] data.root, the "
                          "variable it names, or pass --set data.root=DIR)")


def _check_matched(study: Study, where: str, errors: list[str]) -> None:
    """Every matched run of a (bits, budget, seed) cell must share the recipe exactly."""
    cells: dict[tuple, dict] = {}
    for r in study.runs:
        if r.unmatched:
            continue
        key = C.cell_key(r.cfg)
        cell = (r.w_bits, r.a_bits, r.epochs, r.seed)
        ref = cells.setdefault(cell, key)
        if key != ref:  # pragma: no cover - guards the expansion itself
            diff = sorted(k for k in set(key) | set(ref) if key.get(k) != ref.get(k))
            errors.append(f"{where}: variants.{r.variant}: recipe differs from the cell's on {diff}")


def print_plan(study: Study, echo=print) -> None:
    import collections

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


# --------------------------------------------------------------------------- study directory

def study_dir(results: Path, study: Study) -> Path:
    return Path(results) / study.name


@contextlib.contextmanager
def locked(sdir: Path) -> Iterator[None]:
    """An exclusive lock on the study directory (two sweeps never submit the same run)."""
    sdir.mkdir(parents=True, exist_ok=True)
    with open(sdir / ".sweep.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another sweep of {sdir} to finish submitting...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def freeze_spec(study: Study, sdir: Path, echo=print) -> None:
    """Keep a copy of the spec; an edited spec never silently replaces the previous copy."""
    from harness import records

    frozen = sdir / "study.toml"
    text = study.path.read_text()
    if frozen.exists() and frozen.read_text() != text:
        n = 1
        while (sdir / f"study.toml.{n}").exists():
            n += 1
        shutil.copy2(frozen, sdir / f"study.toml.{n}")
        echo(f"note: the spec changed since the last sweep; previous copy kept as study.toml.{n}")
    records.atomic_write_text(frozen, text)


def write_manifest(study: Study, sdir: Path) -> None:
    from harness import records

    path = sdir / "manifest.json"
    old = records.read_json(path) if path.exists() else {}
    runs = {r["run_id"]: r for r in old.get("runs", [])}
    runs.update({r.run_id: r.manifest() for r in study.runs})
    current = {r.run_id for r in study.runs}
    for rid, r in runs.items():
        r["current"] = rid in current
    records.atomic_write_json(path, {
        "study": study.name, "scale": study.scale, "spec": str(study.path),
        "runs": list(runs.values()), "excluded": study.excluded})


def read_submissions(sdir: Path) -> dict[str, dict[str, Any]]:
    """The last submission of each run id."""
    last: dict[str, dict[str, Any]] = {}
    path = sdir / "submissions.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn last line from a killed sweep
            last[rec["run_id"]] = rec
    return last


def append_submissions(sdir: Path, entries: list[dict[str, Any]]) -> None:
    with open(sdir / "submissions.jsonl", "a") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- job states

def _expand_array_id(jid: str) -> list[str]:
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", jid)
    if not m:
        return [jid]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out += [f"{m.group(1)}_{i}" for i in range(int(a), int(b) + 1)]
        else:
            out.append(f"{m.group(1)}_{part}")
    return out


class JobQueryError(RuntimeError):
    pass


def _query(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise JobQueryError(f"{cmd[0]}: {e}") from None
    if p.returncode != 0:
        raise JobQueryError(f"{cmd[0]} exited {p.returncode}: "
                            f"{(p.stderr or p.stdout).strip()[:200]}")
    return p.stdout


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """JOBID -> SLURM state from sacct (finished) and squeue (live).

    Raises JobQueryError when SLURM cannot be asked: then nobody can tell whether a job still
    runs, and the sweep refuses to resubmit rather than start a second copy."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None or shutil.which("sacct") is None:
        raise JobQueryError("squeue/sacct not on PATH")
    states: dict[str, str] = {}
    bases = sorted({j.split("_")[0] for j in job_ids})
    out = _query(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases)])
    for line in out.splitlines():
        if "|" in line:
            jid, st = line.split("|", 1)
            for j in _expand_array_id(jid.strip()):
                states[j] = st.split()[0] if st.strip() else "UNKNOWN"
    # squeue exits non-zero when every listed job has left its memory: that is fine
    try:
        p = subprocess.run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(bases)],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise JobQueryError(f"squeue: {e}") from None
    for line in p.stdout.splitlines():
        if "|" in line:
            jid, st = line.split("|", 1)
            for j in _expand_array_id(jid.strip()):
                states[j] = st.strip()
    return states


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def job_states(subs: dict[str, dict[str, Any]], strict: bool = True) -> dict[str, str]:
    """run_id -> state of its last job (SLURM state names; local: RUNNING or GONE).

    strict=False: when SLURM cannot be queried, its jobs are reported as UNKNOWN."""
    out = {}
    slurm_ids = [s["job_id"] for s in subs.values() if s.get("executor") == "slurm"]
    try:
        states = slurm_states(slurm_ids)
    except JobQueryError as e:
        if strict:
            raise UserError("--executor", f"cannot ask SLURM about this study's earlier jobs "
                            f"({e}); nothing was submitted, since they may still be running; "
                            "fix SLURM access (e.g. SLURM_CONF) and sweep again") from None
        print(f"warning: cannot query SLURM ({e}); job states shown as UNKNOWN",
              file=sys.stderr)
        states = {}
    for rid, s in subs.items():
        if s.get("executor") == "slurm":
            out[rid] = states.get(s["job_id"], "UNKNOWN")
        elif s.get("executor") == "local":
            pid = s.get("pid")
            out[rid] = "RUNNING" if pid and s.get("host") == os.uname().nodename and \
                _pid_alive(int(pid)) else "GONE"
        else:
            out[rid] = "GONE"
    return out


# --------------------------------------------------------------------------- run states

STATES = ("pending", "running", "completed", "failed", "diverged", "interrupted", "missing",
          "corrupt")


def run_state(run_dir: Path, job_state: str | None) -> tuple[str, str]:
    """(state, detail) of one expected run from its record and its last job's state."""
    from harness import records

    active = job_state in ACTIVE
    rec = records.load_run(run_dir, with_metrics=False)
    if rec.problem == "no config.json":
        return ("pending", "") if active else ("missing", "")
    if rec.problem:
        return ("running", "") if active else ("corrupt", rec.problem)
    status = rec.status
    if status in ("completed", "diverged"):
        return status, rec.summary.error
    if status == "failed" and not active:
        return "failed", rec.summary.error
    if active:
        return ("running" if job_state != "PENDING" and status is not None
                and status != "pending" else "pending"), ""
    if status == "pending":
        return "missing", "submitted but never started" if job_state else ""
    done = rec.summary.epochs_completed if rec.summary is not None else 0
    return "interrupted", f"stopped at epoch {done}" + (
        f" (last job {job_state})" if job_state else "")


# --------------------------------------------------------------------------- jobs

class RunJob(submitit.helpers.Checkpointable):
    """The callable a job runs: train (or resume) one run directory, or several in turn.

    A submitit Checkpointable: on preemption or timeout submitit calls ``checkpoint`` and
    requeues the same callable, which resumes from each run's last epoch checkpoint on disk
    (at most one epoch is lost; results live in the run records, never in submitit pickles).
    SLURM array tasks get one run each; the local executor gives each worker process a
    queue of runs so the interpreter and torch start once per worker, not once per run.
    """

    def __init__(self, run_dirs: str | list[str], threads: int = 0):
        self.run_dirs = [str(run_dirs)] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
        self.threads = threads

    def __call__(self) -> str:
        import torch

        from harness import records, train

        _setup_distributed()
        if self.threads > 0:  # one job per cpus_per_task: don't oversubscribe the cores
            torch.set_num_threads(self.threads)
        out = []
        for run_dir in self.run_dirs:
            cfg = C.resolve(C.from_dict(records.read_json(Path(run_dir) / "config.json")))
            try:
                out.append(train.run(cfg, Path(run_dir)).status)
            except Exception:  # recorded as failed in the run's summary; go on with the queue
                if len(self.run_dirs) == 1:
                    raise
                out.append("failed")
        return ",".join(out)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(RunJob(self.run_dirs, self.threads))


def _setup_distributed() -> None:
    """Multi-task submitit jobs: export MASTER_ADDR/PORT, RANK, WORLD_SIZE for torch."""
    try:
        env = submitit.JobEnvironment()
        num_tasks = env.num_tasks
    except RuntimeError:  # not inside a submitit job (debug executor)
        return
    if num_tasks > 1 and "WORLD_SIZE" not in os.environ:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=True)


def make_executor(kind: str, folder: Path, shape: dict[str, Any], executor: dict[str, Any]):
    if kind == "debug":
        return submitit.AutoExecutor(folder=str(folder), cluster="debug")
    if kind == "local":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="local")
        ex.update_parameters(timeout_min=int(shape["timeout_min"]),
                             tasks_per_node=int(shape["tasks_per_node"]),
                             gpus_per_node=int(shape["gpus_per_task"]) * int(shape["tasks_per_node"]),
                             cpus_per_task=int(shape["cpus_per_task"]))
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, Any] = {
        "timeout_min": int(shape["timeout_min"]), "cpus_per_task": int(shape["cpus_per_task"]),
        "mem_gb": shape["mem_gb"], "tasks_per_node": int(shape["tasks_per_node"]),
        "nodes": int(shape["nodes"]), "slurm_array_parallelism": int(executor["array_parallelism"]),
        "slurm_setup": list(executor["setup"]), "name": "slbench"}
    if int(shape["gpus_per_task"]):
        params["gpus_per_node"] = int(shape["gpus_per_task"]) * int(shape["tasks_per_node"])
    for key in ("partition", "account", "qos", "constraint"):
        if shape[key]:
            params[f"slurm_{key}"] = shape[key]
    if executor["sbatch"]:
        params["slurm_additional_parameters"] = dict(executor["sbatch"])
    ex.update_parameters(**params)
    return ex


def submit(study: Study, sdir: Path, runs: list[Run], kind: str, echo=print) -> list:
    """Submit runs as one job array per resource shape; returns the submitit jobs."""
    import collections

    by_shape: dict[tuple, list[Run]] = collections.defaultdict(list)
    for r in runs:
        by_shape[r.shape].append(r)
    jobs = []
    for shape, group in by_shape.items():
        res = {k: json.loads(v) for k, v in shape}
        ex = make_executor(kind, sdir / "submitit", res, study.executor)
        if kind == "local":
            jobs += _run_local_waves(ex, group, sdir, int(study.executor["local_concurrency"]),
                                     int(res["cpus_per_task"]), echo)
            continue
        fns = [RunJob(str(sdir / "runs" / r.run_id), int(res["cpus_per_task"])) for r in group]
        try:
            with ex.batch():
                batch = [ex.submit(fn) for fn in fns]
        except Exception as e:  # sbatch refused (partition, account, limits, ...)
            text = str(e).strip().splitlines()
            raise UserError("executor", f"the scheduler refused the jobs "
                            f"({text[-1][:300] if text else type(e).__name__}); check "
                            "[executor] partition/account/qos/resources") from None
        entries = [{"run_id": r.run_id, "job_id": str(j.job_id), "executor": kind,
                    "time": time.time()} for r, j in zip(group, batch)]
        append_submissions(sdir, entries)
        base = str(batch[0].job_id).split("_")[0] if batch else "-"
        echo(f"submitted {len(batch)} runs as {kind} array {base} ({_shape_str(res)})")
        jobs += batch
    return jobs


def _shape_str(res: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in res.items() if v not in ("", 0, None))


def _run_local_waves(ex, group: list[Run], sdir: Path, concurrency: int, threads: int,
                     echo) -> list:
    """Local worker processes (at most ``concurrency``), each working through its share of
    the runs; blocks until all finish."""
    n = max(1, min(concurrency, len(group)))
    shares = [group[i::n] for i in range(n)]
    with ex.batch():
        jobs = [ex.submit(RunJob([str(sdir / "runs" / r.run_id) for r in share], threads))
                for share in shares]
    append_submissions(sdir, [{"run_id": r.run_id, "job_id": str(job.job_id), "executor": "local",
                               "pid": int(job.job_id), "host": os.uname().nodename,
                               "time": time.time()} for share, job in zip(shares, jobs)
                              for r in share])
    echo(f"running {len(group)} runs in {n} local worker processes")
    for share, job in zip(shares, jobs):
        outcome = _job_outcome(job).split(",")
        for r, o in zip(share, outcome + [""] * (len(share) - len(outcome))):
            echo(f"  {r.run_id}: {o or 'see its log.txt'}")
    return jobs


def _job_outcome(job) -> str:
    """The job's return value, or its last error line (the run's summary.json has details).

    ``exception()`` first: it runs a debug job without submitit's post-mortem debugger.
    """
    try:
        err = job.exception()
        if err is None:
            return str(job.result())
    except Exception as e:  # noqa: BLE001 - any job failure is reported, not raised
        err = e
    text = str(err).strip()
    return f"failed ({text.splitlines()[-1][:200] if text else type(err).__name__})"


# --------------------------------------------------------------------------- commands

def plan_runs(study: Study, sdir: Path, retry_failed: bool,
              strict: bool = True) -> tuple[list[Run], dict[str, int]]:
    subs = read_submissions(sdir)
    jstates = job_states(subs, strict)
    todo, skipped = [], {}
    for r in study.runs:
        state, _ = run_state(sdir / "runs" / r.run_id, jstates.get(r.run_id))
        if state in ("missing", "interrupted") or (state == "failed" and retry_failed):
            todo.append(r)
        elif state == "corrupt":
            todo.append(r)  # the trainer restarts it from its checkpoint or from scratch
        else:
            skipped[state] = skipped.get(state, 0) + 1
    return todo, skipped


def prepare_records(runs: list[Run], sdir: Path) -> None:
    """Write each run's config.json. A run that exists keeps its id (same hash) but takes the
    new values of the keys left out of the hash (data.root, device), so `--set data.root=...`
    on another machine reaches resumed and retried runs too."""
    from harness import records, train

    for r in runs:
        run_dir = sdir / "runs" / r.run_id
        path = run_dir / "config.json"
        want = {**C.to_dict(r.cfg), "config_hash": C.config_hash(r.cfg)}
        if path.exists():
            try:
                have = json.loads(path.read_text())
            except ValueError:
                have = None  # corrupt: rewritten from the spec
            if have is None or (have.get("config_hash") == want["config_hash"] and have != want):
                records.atomic_write_json(path, want)
        train.prepare_run_dir(run_dir, r.cfg)


def cmd_sweep(args) -> int:
    try:
        study = load_spec(args.spec, args.scale, args.set)
    except SpecErrors as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(e.errors)} problem(s) in {args.spec}; nothing was submitted",
              file=sys.stderr)
        return 2
    if args.executor == "slurm" and shutil.which("sbatch") is None:
        raise UserError("--executor", "slurm needs sbatch on PATH; use --executor local or "
                        "start the local cluster (python slurm/cluster.py start)")
    sdir = study_dir(Path(args.results), study)
    print_plan(study)
    if args.dry_run:  # writes nothing, not even the study directory
        todo, skipped = plan_runs(study, sdir, args.retry_failed, strict=False)
        _print_todo(todo, skipped)
        print("dry run: nothing submitted")
        return 0
    from harness import records

    records.ensure_writable_dir(sdir, "--results", "pass a writable --results directory")
    with locked(sdir):
        todo, skipped = plan_runs(study, sdir, args.retry_failed)
        _print_todo(todo, skipped)
        freeze_spec(study, sdir)
        write_manifest(study, sdir)
        if not todo:
            return 0
        prepare_records(todo, sdir)
        # local waves block until done, holding the lock: a second sweep of the study waits
        jobs = submit(study, sdir, todo, args.executor)
    if args.executor == "debug":
        for r, job in zip(todo, jobs):
            print(f"  {r.run_id}: {_job_outcome(job)}")
    elif args.executor == "slurm" and args.wait:
        wait_for(sdir)
    print(f"study directory: {sdir}")
    return summarize_exit(sdir)


def _print_todo(todo: list, skipped: dict[str, int]) -> None:
    msg = ", ".join(f"{n} {s}" for s, n in sorted(skipped.items()))
    print(f"to submit: {len(todo)} runs" + (f" (skipping {msg})" if msg else ""))


def summarize_exit(sdir: Path) -> int:
    """1 when a run of the study failed, diverged or is corrupt (so scripts notice)."""
    counts = status_counts(sdir)[0]
    print("states: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    bad = counts["failed"] + counts["diverged"] + counts["corrupt"]
    if bad:
        print(f"{bad} run(s) failed, diverged or are corrupt: "
              f"python -m harness status {sdir}", file=sys.stderr)
    return 1 if bad else 0


def wait_for(sdir: Path, poll_s: float = 2.0, timeout_s: float = 1e9) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        subs = read_submissions(sdir)
        jstates = job_states(subs, strict=False)
        if not any(st in ACTIVE for st in jstates.values()):
            return
        time.sleep(poll_s)


def status_counts(sdir: Path) -> tuple[dict[str, int], list[dict[str, Any]]]:
    from harness import records

    manifest_path = sdir / "manifest.json"
    if not manifest_path.exists():
        raise UserError("STUDY_DIR", f"{str(sdir)!r} has no manifest.json; pass a study "
                        "directory made by `python -m harness sweep`")
    try:
        manifest = records.read_json(manifest_path)
        runs = list(manifest["runs"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError("STUDY_DIR", f"{manifest_path} is corrupt ({e}); re-run the sweep "
                        "command (with --dry-run to write nothing but the plan)") from None
    subs = read_submissions(sdir)
    jstates = job_states(subs, strict=False)
    rows = []
    for r in runs:
        if not r.get("current", True):
            continue
        state, detail = run_state(sdir / "runs" / r["run_id"], jstates.get(r["run_id"]))
        sub = subs.get(r["run_id"], {})
        rows.append({**r, "state": state, "detail": detail, "job_id": sub.get("job_id", ""),
                     "job_state": jstates.get(r["run_id"], "")})
    counts = {s: sum(1 for x in rows if x["state"] == s) for s in STATES}
    return counts, rows


def _last_error_line(sdir: Path, row: dict[str, Any]) -> tuple[str, str]:
    run_dir = sdir / "runs" / row["run_id"]
    log = run_dir / "log.txt"
    line = row.get("detail", "")
    if log.exists():
        lines = [l for l in log.read_text().splitlines() if l.strip()]
        if lines and not line:
            line = lines[-1]
    job_log = ""
    if row.get("job_id"):
        cand = sdir / "submitit" / f"{row['job_id']}_0_log.err"
        job_log = str(cand) if cand.exists() else str(sdir / "submitit")
    return line, job_log or str(log)


def cmd_status(args) -> int:
    sdir = Path(args.study_dir)
    counts, rows = status_counts(sdir)
    print(f"{sdir}: {len(rows)} runs: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    import collections

    per = collections.defaultdict(collections.Counter)
    for r in rows:
        per[(r["variant"], f"W{r['w_bits']}/A{r['a_bits']}", r["epochs"])][r["state"]] += 1
    for (variant, bits, e), c in sorted(per.items()):
        print(f"  {variant:<20} {bits:<8} e{e:<5} " + ", ".join(f"{k} {v}" for k, v in
                                                                 sorted(c.items())))
    bad = [r for r in rows if r["state"] in ("failed", "diverged", "interrupted", "corrupt")]
    for r in bad:
        line, log = _last_error_line(sdir, r)
        print(f"  {r['state']}: {r['run_id']}: {line[:200]}  [log: {log}]")
    jobs = sorted({r["job_id"].split("_")[0] for r in rows if r["job_id"]})
    if jobs:
        print("jobs: " + " ".join(jobs))
    return 0


def cmd_cancel(args) -> int:
    sdir = Path(args.study_dir)
    if not (sdir / "manifest.json").exists():
        raise UserError("STUDY_DIR", f"{str(sdir)!r} is not a study directory")
    subs = read_submissions(sdir)
    jstates = job_states(subs)
    slurm = sorted({subs[r]["job_id"] for r, st in jstates.items()
                    if st in ACTIVE and subs[r]["executor"] == "slurm"})
    local = [int(subs[r]["pid"]) for r, st in jstates.items()
             if st == "RUNNING" and subs[r]["executor"] == "local"]
    if slurm:
        subprocess.run(["scancel", *slurm], check=False)
    for pid in local:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    print(f"cancelled {len(slurm)} SLURM jobs and {len(local)} local processes")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("sweep", help="expand a study spec and submit the runs not yet completed")
    p.add_argument("spec", metavar="STUDY.toml")
    p.add_argument("--executor", choices=EXECUTORS, default="slurm")
    p.add_argument("--scale", default=None, help="scale profile, e.g. smoke (default: full)")
    p.add_argument("--dry-run", action="store_true", help="validate and print; submit nothing")
    p.add_argument("--retry-failed", action="store_true", help="also resubmit failed runs")
    p.add_argument("--wait", action="store_true", help="slurm: block until the jobs finish")
    p.add_argument("--results", default="results", help="parent of the study directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a shared recipe key for every run, e.g. data.root=DIR")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("status", help="states of a study's runs, failures and job ids")
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("cancel", help="cancel a study's queued and running jobs")
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.set_defaults(func=cmd_cancel)
