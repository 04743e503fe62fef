"""Run directories -> the runs table: every record of a study read through
``harness.records.load_run`` (the one record validator), one row per run.

``runs_table(STUDY_DIR, manifest, jobs)`` reads every runs/<id>/ directory (``load_record``
reads only the metrics.csv columns the report uses; a thousand of them in forked processes)
and the manifest's runs that have none, and returns

- the runs DataFrame: per run its status and why it is excluded (failed, diverged, corrupt,
  missing, still running, unmatched, stale, a copy or another study's run), method, variant
  label, options, cell (w_bits, a_bits, epochs), seed, setting (data/model identity), recipe,
  the costs and memory it recorded, env; its ``stage`` (harness/stages.py: "tune" for a
  tuning trial, "pretrain" for an fp run that is only a pretraining source, else "final":
  only final runs are ever in the numbers) and ``init_epochs`` (the fp epochs a pretrained
  run started from: its cell's epochs are the budget, pretraining + quantized, and its
  metrics' epochs count from the end of pretraining);
- the metrics of the included runs ({column: float array});
- each record's summary.json ``method_info`` (load.py resolves display names and internal
  metrics from them).

Also ``read_spec`` (study.toml) and ``read_manifest`` (manifest.json).
"""
from __future__ import annotations

import functools
import json
import multiprocessing as mp
import re
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from harness import files, stages
from harness.config import LATER_KEYS, NON_SEMANTIC, flatten
from harness.errors import UserError
from harness.records import load_run, metric_columns
from harness.report import plots

# metrics.csv columns the report reads besides the methods' internal metrics: the deployed
# test accuracy, or for super-resolution runs PSNR and SSIM
SCORE_COLUMNS = ("epoch", "test_acc", "test_psnr", "test_ssim")


# --------------------------------------------------------------------------- reading files

def read_spec(study_dir: Path) -> dict[str, Any]:
    path = study_dir / "study.toml"
    if not path.exists():
        return {}
    try:  # a regular file of a spec's size (a FIFO or device is never read)
        return tomllib.loads(files.read_bytes(path, files.RECORD_MAX_BYTES).decode())
    except (OSError, ValueError, RecursionError, tomllib.TOMLDecodeError) as e:
        raise UserError("study.toml", f"{path} is not valid TOML ({str(e)[:200]}); fix or "
                        "remove it")


def read_manifest(study_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    path = study_dir / "manifest.json"
    if not path.exists():
        return None
    try:
        m = files.read_json(path, files.MANIFEST_MAX_BYTES)
    except (OSError, ValueError) as e:
        notes.append(f"manifest.json unreadable ({e}): missing runs cannot be detected")
        return None
    runs = m.get("runs", []) if isinstance(m, dict) else None
    if not isinstance(runs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("run_id"), str) for r in runs):
        notes.append("manifest.json is not a study manifest (a table with a list of runs): "
                     "missing runs cannot be detected; re-run the sweep command to rebuild it")
        return None
    return m


def declared_metrics(info: dict[str, Any] | None) -> dict[str, tuple[str, Any]] | None:
    """A method_info's internal metrics as {column: (panel title, [low, high] or None)};
    None for a record without method_info (written before runs recorded it)."""
    if not info:
        return None
    declared = info.get("internal_metrics")
    if not isinstance(declared, dict):
        return {}
    out = {}
    for col, entry in declared.items():
        entry = list(entry) if isinstance(entry, (list, tuple)) else [entry]
        out[str(col)] = (str(entry[0] if entry and entry[0] else col),
                         entry[1] if len(entry) > 1 else None)
    return out


def _metric_columns(rec, header: list[str]) -> list[str]:
    """The metrics.csv columns the report reads: epoch, the deployed test accuracy and the
    internal metrics the run's method declares; for a record without method_info, every
    column its method added (which of them are internal metrics is decided once the study
    is loaded: ``_resolve_internal_metrics``)."""

    declared = declared_metrics(rec.summary.method_info if rec.summary else None)
    if declared is None:
        extra = [c for c in header if c not in metric_columns(rec.config)]
    else:
        extra = [c for c in header if c in declared]
    return ([c for c in SCORE_COLUMNS if c in header]
            + (["epoch_time_s"] if "epoch_time_s" in header else []) + extra)


def load_record(run_dir: Path):
    """harness.records.load_run (the one record validator), loading only the metrics columns
    the report uses (parsing every column of a thousand metrics.csv files would dominate a
    report's time)."""
    return load_run(run_dir, columns=_metric_columns, in_study=True, arrays=True)


def _load_one(run_dir: Path, man_runs: dict[str, Any]):
    """(record, its runs-table row) of one run directory."""
    rec = load_record(run_dir)
    return rec, _run_row(run_dir.name, rec, man_runs.get(run_dir.name, {}), NON_SEMANTIC)


def _load_all(dirs: list[Path], man_runs: dict[str, Any], jobs: int = 0) -> list:
    """_load_one over every run directory; big studies in forked processes (parsing a
    thousand metrics.csv files is a good part of a report's time)."""

    load = functools.partial(_load_one, man_runs=man_runs)
    jobs = min(jobs or plots.default_jobs(), len(dirs) // 100)
    if jobs <= 1:
        return [load(d) for d in dirs]

    try:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(load, dirs, chunksize=max(1, len(dirs) // (4 * jobs))))
    except OSError:  # no processes to be had: read them here
        return [load(d) for d in dirs]


# --------------------------------------------------------------------------- the runs table

def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return flatten(d, prefix)


# data keys that are the recipe, not the setting: a tuning trial holds out a validation split
# its final runs do not, and is still of their setting
_RECIPE_DATA = ("data.val_split", "data.val_seed")
TUNED = "tuned on validation"   # the recipe value of a key a variant's tuning chose


def _identity_and_recipe(cfg: dict[str, Any], non_semantic: tuple) -> tuple[dict, dict]:
    """(data/model keys: the setting, every other training key: the recipe) of a config.
    The pretraining source (init.*) is not the recipe (the budget counts its epochs), and a
    key the variant's tuning chose (meta.tuned) is the recipe as ``TUNED``."""
    flat = _flatten({k: v for k, v in cfg.items() if k != "config_hash"}) if cfg else {}
    for k, old in LATER_KEYS.items():  # keys newer than some records: at their old value,
        if flat.get(k, old) == old:    # present or not, they are the same setting
            flat.pop(k, None)
    ident = {k: v for k, v in flat.items() if (k.split(".")[0] in ("data", "model")
                                               or k == "sr.scale") and k not in non_semantic
             and k not in _RECIPE_DATA}
    recipe = {k: v for k, v in flat.items() if not k.startswith(("method.", "meta.", "init."))
              and k not in non_semantic and k not in ("seed", "w_bits", "a_bits", "epochs")}
    tuned = (cfg.get("meta") or {}).get("tuned") if cfg else None
    recipe.update({k: TUNED for k in tuned or () if isinstance(k, str)
                   and not k.startswith("method.")})
    return ident, recipe


def _summary_columns(summ: dict[str, Any]) -> dict[str, Any]:
    """The runs-table columns that come from summary.json."""
    env = summ.get("env") or {}
    return {
        # best_test_acc (the best epoch chosen on the test set) is not read: never a result
        "final_acc": summ.get("final_test_acc"),
        "epochs_completed": summ.get("epochs_completed"),
        "wall_time_s": summ.get("wall_time_s"),
        "mean_epoch_time_s": summ.get("mean_epoch_time_s"),
        "peak_mem_mb": summ.get("peak_mem_mb"), "peak_mem_kind": summ.get("peak_mem_kind", ""),
        "param_bytes": summ.get("param_bytes"),
        "method_param_bytes": summ.get("method_param_bytes"),
        "optimizer_state_bytes": summ.get("optimizer_state_bytes"),
        "method_optimizer_state_bytes": summ.get("method_optimizer_state_bytes"),
        "device": env.get("device", ""), "device_name": env.get("device_name", ""),
        "torch": env.get("torch", ""), "python": env.get("python", ""),
        "commit": env.get("harness_commit", ""), "hostname": env.get("hostname", ""),
        "error": summ.get("error", ""), "task": summ.get("task", "classify"),
        "final_metrics": summ.get("final_metrics") or {},
        **_cost_columns(summ), **_seed_columns(summ),
    }


def _seed_columns(summ: dict[str, Any]) -> dict[str, Any]:
    """What the run's seed controlled (summary.json seed_fingerprint: "" in records that
    predate it) and the size of its training and test sets (data_fingerprint)."""
    seed, data = summ.get("seed_fingerprint") or {}, summ.get("data_fingerprint") or {}
    return {"data_order": str(seed.get("data_order") or ""), "init": str(seed.get("init") or ""),
            "n_train": data.get("n_train"), "n_test": data.get("n_test")}


def _cost_columns(summ: dict[str, Any]) -> dict[str, Any]:
    """The deployed network's size and op counts and the training cost a run recorded
    (harness.costs.opcount; None in records that predate them: the report shows n/a);
    device-hours default to the wall-clock hours of one process."""
    inf, tr = summ.get("inference_cost") or {}, summ.get("training_cost") or {}
    wall = summ.get("wall_time_s")
    hours = tr.get("device_hours", wall / 3600 if wall is not None else None)
    return {"size_bytes": inf.get("size_bytes"), "bops": inf.get("bops"), "ops": inf.get("ops"),
            "inf_flops": inf.get("flops"), "train_flops_step": tr.get("flops_per_step"),
            "device_hours": hours}


def _run_row(run_id: str, rec, man: dict[str, Any], non_semantic: tuple) -> dict[str, Any]:
    """One row of the runs table from a loaded record (and its manifest entry).

    ``display_name`` is filled in by ``_resolve_method_info``."""
    cfg = rec.config or {}
    method = cfg.get("method", {})
    mname = method.get("name") if isinstance(method, dict) else method
    options = {k: v for k, v in method.items() if k != "name"} if isinstance(method, dict) else {}
    meta = cfg.get("meta") or {}
    summ = rec.summary.to_json() if rec.summary is not None else {}
    ident, recipe = _identity_and_recipe(cfg, non_semantic)
    mname = mname or man.get("method")
    label = meta.get("variant") or man.get("variant") or mname
    unmatched = bool(meta.get("unmatched") or man.get("unmatched"))
    init, epochs = _init_epochs(cfg, man), cfg.get("epochs")
    if init:  # a pretrained run: its cell is the budget (pretraining + quantized epochs)
        options["init"] = f"from fp, {init} ep"
    row = {
        "run_id": run_id, "status": rec.status, "problem": rec.problem, "label": label,
        "method": mname, "display_name": None,
        "options": json.dumps(options, sort_keys=True, default=str),
        "w_bits": cfg.get("w_bits", man.get("w_bits")),
        "a_bits": cfg.get("a_bits", man.get("a_bits")),
        "epochs": epochs + init if isinstance(epochs, int) else man.get("epochs"),
        "seed": cfg.get("seed", man.get("seed")),
        "stage": man.get("stage") or meta.get("stage") or "final", "init_epochs": init,
        "setting": json.dumps(sorted(ident.items()), default=str) if ident else None,
        "recipe": json.dumps(sorted(recipe.items()), default=str),
        "unmatched": unmatched, "scale": meta.get("scale", ""), **_summary_columns(summ),
    }
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    for part in ("train", "test"):  # records without data_fingerprint: the configured subset
        if row[f"n_{part}"] is None and isinstance(data.get(f"subset_{part}"), int) \
                and data[f"subset_{part}"] > 0:
            row[f"n_{part}"] = data[f"subset_{part}"]
    row["stale"] = man.get("current") is False
    row["included"] = (rec.status == "completed" and not unmatched and not row["stale"]
                       and row["stage"] == "final")
    row["reason"] = _exclusion_reason(row)
    return row


def _init_epochs(cfg: dict[str, Any], man: dict[str, Any]) -> int:
    """The fp epochs a run started from (config.json init.epochs with an init.source), 0
    for a run from scratch."""
    init = cfg.get("init") if isinstance(cfg.get("init"), dict) else {}
    if cfg:
        n = init.get("epochs") if init.get("source") else 0
    else:
        n = man.get("init_epochs")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def _exclusion_reason(row: dict[str, Any]) -> str:
    status = row["status"]
    if status == "corrupt":
        return row["problem"]
    if status == "pending":
        return "no summary.json (not started, or killed before its first summary)"
    if status == "running":
        return "status running (still running, or killed without a final summary)"
    if status in ("failed", "diverged"):
        return (row["error"] or status).strip().splitlines()[-1][:160]
    if status == "completed" and row["unmatched"]:
        return "flagged unmatched (meta.unmatched): its recipe differs from the study's"
    if status == "completed" and row["stale"]:
        return "not in the current study spec (manifest.json: current = false)"
    return ""


class _NoRecord:
    """Stands in for a RunRecord when only the column names of a runs row are wanted."""
    config = summary = None
    problem = ""
    status = "missing"


def _missing_row(entry: dict[str, Any]) -> dict[str, Any]:
    row = {"run_id": entry.get("run_id", "?"), "status": "missing", "problem": "",
           "label": entry.get("variant") or entry.get("method"), "method": entry.get("method"),
           "display_name": None, "options": "{}", "w_bits": entry.get("w_bits"),
           "a_bits": entry.get("a_bits"), "epochs": entry.get("epochs"), "seed": entry.get("seed"),
           "stage": entry.get("stage") or "final", "init_epochs": entry.get("init_epochs") or 0,
           "setting": None,
           "recipe": "", "unmatched": bool(entry.get("unmatched")), "stale": False,
           "included": False, "reason": entry.get("waiting") or
           "listed in manifest.json, no run directory"}
    return row


def _manifest_runs(study_dir: Path, manifest: dict[str, Any] | None) -> dict[str, dict]:
    """The manifest's entries by run directory name: a deferred final run of a tuned variant
    (harness/stages.py) under the run its binding names, or, while it is unbound, under its
    own id with why it waits (its slot file's ``blocked`` reason when it has one)."""
    out = {}
    for r in (manifest or {}).get("runs", []):
        if not isinstance(r, dict):
            continue
        rid = r.get("run_id")
        if r.get("slot") and isinstance(rid, str):
            bound = stages.bound_run(study_dir, rid)
            if bound:
                out[bound] = {**r, "run_id": bound, "slot_id": rid}
                continue
            slot = stages.read_slot(study_dir, rid) or {}
            r = {**r, "waiting": "deferred: not bound to its chosen values yet ("
                 + str(slot.get("blocked") or "its tuning trials are not complete") + ")"}
        out[rid] = r
    return out


def _foreign(run_id: str, rec, manifest: dict[str, Any] | None, man_runs: dict,
             seen: dict[str, str]) -> str:
    """Why a completed run directory does not belong in this study's numbers, or "": only
    runs the manifest lists count, once each, and only when the record is the run the
    directory name says (a copied seed or a run of another study is excluded, with why)."""
    if manifest is not None and run_id not in man_runs:
        return "not listed in manifest.json (a copied or foreign run directory)"
    cfg = rec.config or {}
    h = str(cfg.get("config_hash", ""))
    m = re.search(r"_w\d+a\d+_e\d+_s\d+_([0-9a-f]{8})$", run_id)  # the sweep's run ids
    suffix = m.group(1) if m else ""
    if suffix and h and not h.startswith(suffix):
        return f"its config (hash {h[:8]}) is not the run its name says ({suffix}): a copy"
    study = (cfg.get("meta") or {}).get("study")
    if manifest is not None and study and manifest.get("study") and study != manifest["study"]:
        return f"a run of study {study!r}, not {manifest['study']!r}"
    if h in seen:
        return f"duplicate of {seen[h]} (same config)"
    seen[h] = run_id
    return ""


def runs_table(study_dir: Path, manifest: dict[str, Any] | None, jobs: int):
    """(runs DataFrame, metrics of the included runs, method_info of every record) from
    every run directory and the manifest's runs that have none."""

    runs_dir = study_dir / "runs"
    dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    if not dirs and not (manifest or {}).get("runs"):
        raise UserError("study", f"{study_dir} has no runs/ folder with run records and no "
                         "manifest.json; run the sweep first")
    man_runs = _manifest_runs(study_dir, manifest)
    loaded = _load_all(dirs, man_runs, jobs)
    rows, metrics, infos, seen = [], {}, {}, {}
    for d, (rec, row) in zip(dirs, loaded):
        row["in_manifest"] = d.name in man_runs if manifest else True
        foreign = _foreign(d.name, rec, manifest, man_runs, seen)
        row["foreign"] = bool(foreign) and row["included"]
        if row["foreign"]:
            row["included"], row["reason"] = False, foreign
        rows.append(row)
        infos[d.name] = (rec.summary.method_info if rec.summary else None) or {}
        if row["included"]:
            metrics[d.name] = rec.metrics
            if row["init_epochs"] and rec.metrics and "epoch" in rec.metrics:
                # epochs of the budget: pretraining came first
                rec.metrics["epoch"] = rec.metrics["epoch"] + row["init_epochs"]
    present = {d.name for d in dirs}
    for run_id, entry in man_runs.items():
        if run_id not in present and entry.get("current") is not False:
            rows.append({**_missing_row(entry), "in_manifest": True})
    runs = pd.DataFrame(rows)
    for col in _run_row("", _NoRecord(), {}, NON_SEMANTIC):  # every column, even if no run
        if col not in runs.columns:  # directory exists (only missing runs)
            runs[col] = None
    runs["included"] = runs["included"].astype(bool)
    runs["unmatched"] = runs["unmatched"].astype(bool)
    return runs, metrics, infos
