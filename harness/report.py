"""python -m harness report results/<study>: run records -> tables, figures and answers.

Reads only what a study leaves behind: runs/<id>/{config,summary}.json and metrics.csv (via
harness.records.load_run, which classifies corrupt and partial records), study.toml (its
optional [report] table: reference, reference_dataset, ours) and manifest.json (the expected
runs, so runs without a directory are reported as missing). Writes, under OUT (default
results/<study>/report):

  report.md                 the narrative, tables and figures embedded
  tables/NAME.{md,tex,csv}  markdown, booktabs LaTeX (paste-ready), numbers as CSV
  figures/NAME.{png,pdf}

Every number is computed from the records (statistics in harness/stats.py, drawing in
harness/plots.py). Runs that failed, diverged, are corrupt, missing, still running or
flagged unmatched are listed and left out of every number.

Heavy libraries (pandas, scipy, matplotlib, torch via harness.config) are imported inside
functions: the CLI imports this module at start-up for every command.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import stats as S

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OURS = "slb"
# Columns SLB adds to metrics.csv that get companion panels: (column, panel title).
INTERNALS = (("test_acc_continuous", "continuous-state test acc (%)"),
             ("temperature", "temperature tau"),
             ("quant_gap", "quant_gap"))
# Colours per row, stable across figures (matplotlib's tab10 then tab20 odd shades).
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
          "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
MAX_BULLETS = 8  # per reviewer answer; the rest is in the named table


# --------------------------------------------------------------------------- CLI

def add_commands(sub) -> None:
    p = sub.add_parser("report", help="tables, figures and reviewer answers from a study's "
                                      "run records")
    p.add_argument("study_dir", metavar="STUDY_DIR", help="results/<study>")
    p.add_argument("--out", metavar="DIR", help="output folder (default STUDY_DIR/report)")
    p.add_argument("--reference", metavar="CSV",
                   help="reported numbers (method,dataset,model,w_bits,a_bits,top1[,source]); "
                        "default: study.toml [report] reference")
    p.add_argument("--reference-dataset", metavar="NAME",
                   help="dataset label to match in the reference CSV (e.g. cifar10 when the "
                        "data is the imagefolder copy)")
    p.add_argument("--ours", metavar="METHOD",
                   help=f"method compared with every baseline (default: study.toml [report] "
                        f"ours, else {DEFAULT_OURS})")
    p.add_argument("--jobs", type=int, default=0,
                   help="processes reading records and drawing figures (0 = one per core, "
                        "at most 4; 1 = none)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    path = write_report(Path(args.study_dir), out=args.out and Path(args.out),
                        reference=args.reference, reference_dataset=args.reference_dataset,
                        ours=args.ours, jobs=args.jobs)
    print(f"report: {path}")
    return 0


def _user_error(field_: str, message: str) -> Exception:
    from methods.errors import UserError

    return UserError(field_, message)


# --------------------------------------------------------------------------- loading

@dataclass
class Study:
    name: str
    dir: Path
    spec: dict[str, Any]
    manifest: dict[str, Any] | None
    runs: Any                         # DataFrame: one row per run (present or missing)
    metrics: dict[str, Any]           # run_id -> {column: array}, included runs only
    ours: str
    setting_labels: dict[str, str]    # setting id -> "cifar10 / resnet20"
    reference: Any = None             # DataFrame of reported numbers, or None
    reference_path: str = ""
    reference_dataset: str = ""       # label matched in the CSV instead of data.name
    notes: list[str] = field(default_factory=list)   # warnings for the header
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)   # row labels, display order
    method_of: dict[str, str] = field(default_factory=dict)
    options_of: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def included(self):
        if "included" not in self._cache:
            self._cache["included"] = self.runs[self.runs["included"]]
        return self._cache["included"]

    def settings(self) -> list[str]:
        ids = self.runs["setting"].dropna().unique().tolist()
        return sorted(ids, key=lambda s: self.setting_labels.get(s, s))

    def labels(self, setting: str) -> list[str]:
        key = ("labels", setting)
        if key not in self._cache:
            have = set(self.runs.loc[self.runs["setting"] == setting, "label"])
            self._cache[key] = [lab for lab in self.order if lab in have]
        return self._cache[key]

    def default_variant(self, method: str, labels: list[str]) -> str | None:
        """The variant named exactly like the method, else the first in display order."""
        mine = [lab for lab in labels if self.method_of.get(lab) == method]
        if not mine:
            return None
        return method if method in mine else mine[0]

    def cells(self, setting: str, included_only: bool = False) -> list[tuple[int, int, int]]:
        key = ("cells", setting, included_only)
        if key not in self._cache:
            df = self.included if included_only else self.runs
            df = df[(df["setting"] == setting) & df["w_bits"].notna() & df["epochs"].notna()]
            self._cache[key] = sorted({(int(w), int(a), int(e)) for w, a, e in
                                       zip(df["w_bits"], df["a_bits"], df["epochs"])})
        return self._cache[key]

    def group(self, setting: str, label: str, cell: tuple[int, int, int]) -> dict[str, Any]:
        return self.groups.get((setting, label, *cell), _EMPTY_GROUP)


_EMPTY_GROUP = {"acc": [], "seeds": [], "run_ids": [], "summary": S.EMPTY}


def _read_spec(study_dir: Path) -> dict[str, Any]:
    import tomllib

    path = study_dir / "study.toml"
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise _user_error("study.toml", f"{path} is not valid TOML ({e}); fix or remove it")


def _read_manifest(study_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    path = study_dir / "manifest.json"
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"manifest.json unreadable ({e}): missing runs cannot be detected")
        return None
    return m if isinstance(m, dict) else None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    from harness.config import flatten

    return flatten(d, prefix)


def _run_row(run_id: str, rec, man: dict[str, Any], non_semantic: tuple) -> dict[str, Any]:
    """One row of the runs table from a loaded record (and its manifest entry)."""
    cfg = rec.config or {}
    method = cfg.get("method", {})
    mname = method.get("name") if isinstance(method, dict) else method
    options = {k: v for k, v in method.items() if k != "name"} if isinstance(method, dict) else {}
    meta = cfg.get("meta") or {}
    summ = rec.summary.to_json() if rec.summary is not None else {}
    env = summ.get("env") or {}
    flat = _flatten({k: v for k, v in cfg.items() if k != "config_hash"}) if cfg else {}
    ident = {k: v for k, v in flat.items() if k.split(".")[0] in ("data", "model")
             and k not in non_semantic}
    recipe = {k: v for k, v in flat.items() if not k.startswith(("method.", "meta."))
              and k not in non_semantic and k not in ("seed", "w_bits", "a_bits", "epochs")}
    mname = mname or man.get("method")
    label = meta.get("variant") or man.get("variant") or mname
    unmatched = bool(meta.get("unmatched") or man.get("unmatched"))
    status = rec.status
    row = {
        "run_id": run_id, "status": status, "problem": rec.problem, "label": label,
        "method": mname, "options": json.dumps(options, sort_keys=True, default=str),
        "w_bits": cfg.get("w_bits", man.get("w_bits")), "a_bits": cfg.get("a_bits", man.get("a_bits")),
        "epochs": cfg.get("epochs", man.get("epochs")), "seed": cfg.get("seed", man.get("seed")),
        "setting": json.dumps(sorted(ident.items()), default=str) if ident else None,
        "recipe": json.dumps(sorted(recipe.items()), default=str),
        "unmatched": unmatched, "scale": meta.get("scale", ""),
        "final_acc": summ.get("final_test_acc"), "best_acc": summ.get("best_test_acc"),
        "epochs_completed": summ.get("epochs_completed"),
        "wall_time_s": summ.get("wall_time_s"), "mean_epoch_time_s": summ.get("mean_epoch_time_s"),
        "peak_mem_mb": summ.get("peak_mem_mb"), "peak_mem_kind": summ.get("peak_mem_kind", ""),
        "param_bytes": summ.get("param_bytes"), "method_param_bytes": summ.get("method_param_bytes"),
        "optimizer_state_bytes": summ.get("optimizer_state_bytes"),
        "method_optimizer_state_bytes": summ.get("method_optimizer_state_bytes"),
        "device": env.get("device", ""), "device_name": env.get("device_name", ""),
        "torch": env.get("torch", ""), "python": env.get("python", ""),
        "commit": env.get("harness_commit", ""), "hostname": env.get("hostname", ""),
        "error": summ.get("error", ""),
    }
    row["stale"] = man.get("current") is False
    row["included"] = status == "completed" and not unmatched and not row["stale"]
    row["reason"] = _exclusion_reason(row)
    return row


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
           "options": "{}", "w_bits": entry.get("w_bits"), "a_bits": entry.get("a_bits"),
           "epochs": entry.get("epochs"), "seed": entry.get("seed"), "setting": None,
           "recipe": "", "unmatched": bool(entry.get("unmatched")), "stale": False,
           "included": False, "reason": "listed in manifest.json, no run directory"}
    return row


def load_record(run_dir: Path):
    """harness.records.load_run, reading only the metrics columns the report uses.

    load_run(with_metrics=True) parses every column of every metrics.csv, most of the time
    of a 1,000-run report; this applies load_run's metrics checks (readable, the standard
    columns, one row per epoch of a completed run) to a column subset instead.
    """
    import csv

    import pandas as pd

    from harness.records import METRIC_COLUMNS, load_run

    rec = load_run(run_dir, with_metrics=False)
    if rec.problem or rec.status != "completed":
        return rec
    path = rec.path / "metrics.csv"
    want = (rec.config or {}).get("epochs")
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        missing = [c for c in METRIC_COLUMNS if c not in header]
        if missing:
            rec.problem = f"metrics.csv lacks columns {missing}"
            return rec
        use = ["epoch", "test_acc"] + [c for c, _ in INTERNALS if c in header]
        rec.metrics = pd.read_csv(path, usecols=use)
    except FileNotFoundError:
        rec.metrics = None
    except (OSError, ValueError) as e:
        rec.problem = f"metrics.csv unreadable: {e}"
        return rec
    n = 0 if rec.metrics is None else len(rec.metrics)
    if n != want:
        rec.problem = f"metrics.csv has {n} rows for {want} epochs"
    return rec


def _load_one(run_dir: Path):
    rec = load_record(run_dir)
    if rec.metrics is not None:
        rec.metrics = _columns(rec.metrics)
    return rec


def _load_all(dirs: list[Path], jobs: int = 0) -> list:
    """load_record over every run directory; big studies in forked processes (parsing a
    thousand metrics.csv files is a good part of a report's time)."""
    from harness import plots

    jobs = min(jobs or plots.default_jobs(), len(dirs) // 100)
    if jobs <= 1:
        return [_load_one(d) for d in dirs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    try:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(_load_one, dirs, chunksize=max(1, len(dirs) // (4 * jobs))))
    except OSError:  # no processes to be had: read them here
        return [_load_one(d) for d in dirs]


def _columns(df) -> dict[str, Any]:
    """metrics as {column: float array}; text that is not a number becomes nan."""
    import pandas as pd

    out = {}
    for c in df.columns:
        col = df[c]
        if col.dtype == object:
            col = pd.to_numeric(col, errors="coerce")
        out[c] = col.to_numpy(dtype=float)
    return out


def load_study(study_dir: Path, reference: str | None = None,
               reference_dataset: str | None = None, ours: str | None = None,
               jobs: int = 0, bootstrap: bool = True) -> Study:
    """Every record of a study, grouped by (setting, row, cell) with summaries.

    ``bootstrap=False`` defers the bootstrap intervals (see add_bootstraps): build_report
    computes them while the figures are being drawn."""
    import pandas as pd

    from harness.config import NON_SEMANTIC

    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise _user_error("study", f"{study_dir} is not a folder; pass results/<study>")
    notes: list[str] = []
    spec = _read_spec(study_dir)
    manifest = _read_manifest(study_dir, notes)
    runs_dir = study_dir / "runs"
    dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    if not dirs and not (manifest or {}).get("runs"):
        raise _user_error("study", f"{study_dir} has no runs/ folder with run records and no "
                          "manifest.json; run the sweep first")
    man_runs = {r.get("run_id"): r for r in (manifest or {}).get("runs", []) if isinstance(r, dict)}
    recs = _load_all(dirs, jobs)
    rows, metrics = [], {}
    for d, rec in zip(dirs, recs):
        row = _run_row(d.name, rec, man_runs.get(d.name, {}), NON_SEMANTIC)
        row["in_manifest"] = d.name in man_runs if manifest else True
        rows.append(row)
        if row["included"]:
            metrics[d.name] = rec.metrics
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
    rep = spec.get("report") or {}
    st = Study(name=(manifest or {}).get("study") or spec.get("name") or study_dir.name,
               dir=study_dir, spec=spec, manifest=manifest, runs=runs, metrics=metrics,
               ours=ours or rep.get("ours") or DEFAULT_OURS, setting_labels={}, notes=notes)
    _label_settings(st)
    _order_rows(st)
    _check_matched(st)
    _build_groups(st, bootstrap)
    ref = reference or rep.get("reference")
    if ref:
        st.reference, st.reference_path = _load_reference(st, ref, explicit=bool(reference))
    st.reference_dataset = reference_dataset or rep.get("reference_dataset") or ""
    return st


def _label_settings(st: Study) -> None:
    """'cifar10 / resnet20', plus any other data/model key that differs between settings."""
    ids = st.runs["setting"].dropna().unique().tolist()
    dicts = {s: dict(json.loads(s)) for s in ids}
    varying = sorted({k for d in dicts.values() for k in d
                      if len({json.dumps(x.get(k)) for x in dicts.values()}) > 1}
                     - {"data.name", "model.name"})
    for s, d in dicts.items():
        extra = ", ".join(f"{k}={d.get(k)}" for k in varying)
        st.setting_labels[s] = f"{d.get('data.name')} / {d.get('model.name')}" + (
            f" ({extra})" if extra else "")
    # runs without a readable config (missing, corrupt) join their variant's only setting
    known = st.runs.dropna(subset=["setting"])
    for i in st.runs.index[st.runs["setting"].isna()]:
        opts = known.loc[known["label"] == st.runs.at[i, "label"], "setting"].unique()
        if len(opts) == 1:
            st.runs.at[i, "setting"] = opts[0]


def _order_rows(st: Study) -> None:
    """fp first, then the baselines, then ours; variants of a method together, the default
    variant first; within those, the manifest's order (else alphabetical)."""
    runs = st.runs.dropna(subset=["label"])
    first_seen: dict[str, int] = {}
    for entry in (st.manifest or {}).get("runs", []):
        for k in (entry.get("variant") or entry.get("method"), entry.get("method")):
            if k:
                first_seen.setdefault(k, len(first_seen))
    for lab, m in zip(runs["label"], runs["method"]):
        st.method_of.setdefault(lab, m or lab)
    for lab, opts, inc in zip(runs["label"], runs["options"], runs["included"]):
        if inc or lab not in st.options_of:
            st.options_of[lab] = json.loads(opts) if opts else {}
    labels = sorted(st.method_of)

    def rank(name: str) -> tuple:
        return (first_seen.get(name, len(first_seen)), name)

    def key(lab: str) -> tuple:
        m = st.method_of[lab]
        tier = 0 if m == "fp" else 2 if m == st.ours else 1
        return (tier, rank(m), lab != m, rank(lab))

    st.order = sorted(labels, key=key)


def _check_matched(st: Study) -> None:
    """Inside one cell every included run should share the recipe: list keys that differ."""
    inc = st.included
    for (setting, w, a, e), df in inc.groupby(["setting", "w_bits", "a_bits", "epochs"]):
        if df["recipe"].nunique() <= 1:
            continue
        dicts = [dict(json.loads(r)) for r in df["recipe"]]
        keys = sorted({k for d in dicts for k in d if len({json.dumps(x.get(k)) for x in dicts}) > 1})
        for k in keys:
            by_value: dict[str, set] = {}
            for d, lab in zip(dicts, df["label"]):
                by_value.setdefault(json.dumps(d.get(k)), set()).add(lab)
            st.mismatches.append({"setting": setting, "cell": (int(w), int(a), int(e)),
                                  "key": k, "values": {v: sorted(ls) for v, ls in by_value.items()}})


def add_bootstraps(st: Study) -> None:
    for g in st.groups.values():
        if g["summary"].boot is None:
            g["summary"] = S.with_bootstrap(g["summary"], g["acc"])


def _build_groups(st: Study, bootstrap: bool = True) -> None:
    inc = st.included
    for key, df in inc.groupby(["setting", "label", "w_bits", "a_bits", "epochs"]):
        df = df.sort_values("seed")
        acc = [float(x) for x in df["final_acc"]]
        st.groups[(key[0], key[1], int(key[2]), int(key[3]), int(key[4]))] = {
            "acc": acc, "seeds": df["seed"].tolist(), "run_ids": df["run_id"].tolist(),
            "summary": S.describe(acc, bootstrap)}


def _resolve_reference(st: Study, ref: str) -> Path | None:
    p = Path(ref).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    spec_src = (st.manifest or {}).get("spec_path") or (st.manifest or {}).get("spec")
    bases = ([Path(spec_src).parent] if spec_src else []) + [
        REPO / "studies", st.dir, Path.cwd(), REPO]
    for base in bases:
        if (base / p).exists():
            return (base / p).resolve()
    return None


def _load_reference(st: Study, ref: str, explicit: bool):
    """Reported numbers: a CSV with method, w_bits, a_bits and top1 (or acc/accuracy),
    optionally dataset, model, source; '#' lines are comments."""
    import pandas as pd

    path = _resolve_reference(st, ref)
    if path is None:
        if explicit:
            raise _user_error("--reference", f"{ref!r} not found; pass an existing CSV")
        st.notes.append(f"reference CSV {ref!r} from study.toml not found (looked next to the "
                        "spec in studies/, the study folder, the working directory and the "
                        "repository); reported numbers are left out")
        return None, ""
    try:
        df = pd.read_csv(path, comment="#", skipinitialspace=True)
    except (OSError, ValueError) as e:
        raise _user_error("reference", f"{path} is not a readable CSV: {e}")
    df.columns = [c.strip().lower() for c in df.columns]
    acc = next((c for c in ("top1", "acc", "accuracy", "top1_acc") if c in df.columns), None)
    need = [c for c in ("method", "w_bits", "a_bits") if c not in df.columns]
    if need or acc is None:
        raise _user_error("reference", f"{path} needs columns method, w_bits, a_bits and top1 "
                          f"(missing: {need + ([] if acc else ['top1'])})")
    df = df.rename(columns={acc: "top1"})
    df["top1"] = pd.to_numeric(df["top1"], errors="coerce")
    return df.dropna(subset=["top1"]), str(path)


def reported(st: Study, setting: str, label: str, w: int, a: int) -> tuple[float, str] | None:
    """The reported number for a default-variant row, or None."""
    ref = st.reference
    if ref is None:
        return None
    method = st.method_of.get(label)
    if st.default_variant(method, st.labels(setting)) != label:
        return None
    ident = dict(json.loads(setting))
    dataset = st.reference_dataset or ident.get("data.name")
    m = ref[(ref["method"].astype(str).str.lower() == str(method).lower())
            & (ref["w_bits"] == w) & (ref["a_bits"] == a)]
    if "dataset" in m.columns:
        m = m[m["dataset"].astype(str).str.lower() == str(dataset).lower()]
    if "model" in m.columns:
        m = m[m["model"].astype(str).str.lower() == str(ident.get("model.name")).lower()]
    if m.empty:
        return None
    src = str(m["source"].iloc[0]) if "source" in m.columns else ""
    return float(m["top1"].iloc[0]), src


# --------------------------------------------------------------------------- tables

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "−": "$-$", "†": r"$^\dagger$",
        "×": r"$\times$", "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$", "<": r"$<$",
        ">": r"$>$", "·": r"$\cdot$", "τ": r"$\tau$", "*": r"$^*$", "½": r"$\frac{1}{2}$",
        "…": r"\ldots{}", "≈": r"$\approx$", "→": r"$\to$", "—": "---"}


def tex_escape(text: str) -> str:
    """LaTeX-safe ASCII: specials escaped, known symbols as math, other non-ASCII as '?'."""
    return "".join(_TEX.get(c, c if c.isascii() else "?") for c in str(text))


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


@dataclass
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    data: Any = None                     # DataFrame written as NAME.csv (numbers)
    bold: set = field(default_factory=set)   # (row index, column index)
    notes: list[str] = field(default_factory=list)
    n_label_cols: int = 1                # left-aligned leading columns
    left_extra: tuple[int, ...] = ()     # other left-aligned (text) columns

    def _left(self, j: int) -> bool:
        return j < self.n_label_cols or j in self.left_extra or j - len(self.header) in \
            self.left_extra

    def markdown(self) -> str:
        def cell(i: int, j: int, v: str) -> str:
            v = md_escape(v)
            return f"**{v}**" if (i, j) in self.bold else v

        align = [":--" if self._left(j) else "--:" for j in range(len(self.header))]
        lines = ["| " + " | ".join(md_escape(h) for h in self.header) + " |",
                 "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(cell(i, j, v) for j, v in enumerate(r)) + " |"
                  for i, r in enumerate(self.rows)]
        return "\n".join(lines)

    def latex(self) -> str:
        def cell(i: int, j: int, v: str) -> str:
            v = tex_escape(v)
            return rf"\textbf{{{v}}}" if (i, j) in self.bold else v

        spec = "".join("l" if self._left(j) else "r" for j in range(len(self.header)))
        out = [f"% {tex_escape(self.caption)}",
               "% generated by `python -m harness report`; needs \\usepackage{booktabs}",
               r"\begin{table}[t]", r"\centering", r"\small",
               rf"\caption{{{tex_escape(self.caption)}}}",
               rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', self.name)}}}",
               rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
               " & ".join(tex_escape(h) for h in self.header) + r" \\", r"\midrule"]
        out += [" & ".join(cell(i, j, v) for j, v in enumerate(r)) + r" \\"
                for i, r in enumerate(self.rows)]
        out += [r"\bottomrule", r"\end{tabular}"]
        for note in self.notes:
            out.append(rf"\par\smallskip{{\footnotesize {tex_escape(note)}}}")
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        import pandas as pd

        df = self.data if self.data is not None else pd.DataFrame(self.rows, columns=self.header)
        return df.to_csv(index=False)

    def write(self, folder: Path) -> None:
        from harness.records import atomic_write_text

        caption = f"**{md_escape(self.caption)}**\n\n"
        notes = "".join(f"\n\n{md_escape(n)}" for n in self.notes)
        atomic_write_text(folder / f"{self.name}.md", caption + self.markdown() + notes + "\n")
        atomic_write_text(folder / f"{self.name}.tex", self.latex())
        atomic_write_text(folder / f"{self.name}.csv", self.csv())


def cell_name(w: int, a: int, epochs: int | None = None) -> str:
    return f"W{w}/A{a}" + (f", {epochs} ep" if epochs is not None else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _fmt_cell(s: S.Summary) -> str:
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{s.mean:.2f} (1)*"
    return f"{s.mean:.2f} ± {s.std:.2f} ({s.n})"


def _fmt_diff(c: S.Comparison) -> str:
    return f"{c.diff:+.2f}"


def _stat_row(st: Study, setting: str, label: str, cell: tuple[int, int, int]) -> dict:
    s = st.group(setting, label, cell)["summary"]
    return {"setting": st.setting_labels.get(setting, setting), "row": label,
            "method": st.method_of.get(label), "w_bits": cell[0], "a_bits": cell[1],
            "epochs": cell[2], "n": s.n, "mean": s.mean, "std": s.std,
            "ci_low": s.ci[0] if s.ci else None, "ci_high": s.ci[1] if s.ci else None,
            "median": s.median, "iqm": s.iqm,
            "boot_low": s.boot[0] if s.boot else None, "boot_high": s.boot[1] if s.boot else None,
            "min": s.min, "max": s.max}


def main_table(st: Study, setting: str) -> Table:
    import pandas as pd

    cells = st.cells(setting)
    labels = st.labels(setting)
    multi = len({c[2] for c in cells}) > 1
    columns: list[tuple[str, Any]] = []   # ("measured", cell) | ("reported", (w, a))
    for i, c in enumerate(cells):
        columns.append(("measured", c))
        last_of_pair = i + 1 == len(cells) or cells[i + 1][:2] != c[:2]
        if last_of_pair and any(reported(st, setting, lab, *c[:2]) for lab in labels):
            columns.append(("reported", c[:2]))
    header = ["Method"] + [cell_name(*c[:2], c[2] if multi else None) if k == "measured"
                           else f"{cell_name(*c)} reported†" for k, c in columns]
    rows, data, sources, bold = [], [], set(), set()
    exc = st.runs[(st.runs["setting"] == setting) & ~st.runs["included"]]
    n_exc = exc.groupby(["label", "w_bits", "a_bits", "epochs"]).size().to_dict()
    for lab in labels:
        row = [lab]
        for kind, c in columns:
            if kind == "measured":
                s = st.group(setting, lab, c)["summary"]
                k = n_exc.get((lab, *c), 0)
                row.append(f"excl. ({k})" if s.n == 0 and k else _fmt_cell(s))
                data.append({**_stat_row(st, setting, lab, c), "kind": "measured"})
            else:
                r = reported(st, setting, lab, *c)
                row.append(f"{r[0]:.1f}" if r else "")
                if r:
                    sources.add(r[1])
                    data.append({"setting": st.setting_labels[setting], "row": lab,
                                 "method": st.method_of[lab], "w_bits": c[0], "a_bits": c[1],
                                 "kind": "reported (not measured)", "mean": r[0], "source": r[1]})
        rows.append(row)
    for j, (kind, c) in enumerate(columns, start=1):
        if kind == "measured":
            winner = _bold_winner(st, setting, labels, c)
            if winner is not None:
                bold.add((labels.index(winner), j))
    notes = ["Final deployed test accuracy (%): mean ± sample std (n seeds). Bold: the best "
             "mean in its column (among rows with n ≥ 2) whose 95% t-interval does not overlap "
             "the runner-up's and lies above every single-seed row; no bold otherwise."]
    if any("(1)*" in v for r in rows for v in r):
        notes.append("* n = 1: a single seed, no error bar, not compared.")
    if any(v == "–" for r in rows for v in r):
        notes.append("– not run in this study.")
    if any(v.startswith("excl.") for r in rows for v in r):
        notes.append("excl. (k): k runs, none usable (failed, diverged, corrupt, missing or "
                     "unmatched; see the excluded runs).")
    if sources or any(k == "reported" for k, _ in columns):
        src = "; ".join(sorted(x for x in sources if x)) or "the reference CSV"
        notes.append(f"† reported, not measured: copied from {_rel(st.reference_path)} ({src}).")
    cap = f"Main results, {st.setting_labels[setting]}"
    return Table(f"main_{_slug(st.setting_labels[setting])}", cap, header, rows,
                 pd.DataFrame(data), bold, notes)


def _bold_winner(st: Study, setting: str, labels: list[str], cell) -> str | None:
    """The best row (n >= 2) when its 95% CI does not overlap the runner-up's, and no
    single-seed row (no interval) reaches into its interval."""
    summ = [(st.group(setting, lab, cell)["summary"], lab) for lab in labels]
    ranked = sorted([(s, lab) for s, lab in summ if s.n >= 2], key=lambda t: -t[0].mean)
    if len(ranked) < 2:
        return None
    (best, lab), (second, _) = ranked[0], ranked[1]
    if S.intervals_overlap(best.ci, second.ci):
        return None
    if any(s.n == 1 and s.mean >= best.ci[0] for s, _ in summ):
        return None
    return lab


def uncertainty_table(st: Study, setting: str) -> Table:
    import pandas as pd

    rows, data = [], []
    for lab in st.labels(setting):
        for c in st.cells(setting, included_only=True):
            s = st.group(setting, lab, c)["summary"]
            if s.n == 0:
                continue
            data.append(_stat_row(st, setting, lab, c))
            rows.append([lab, cell_name(*c), str(s.n), f"{s.mean:.2f}",
                         f"{s.std:.2f}" if s.n > 1 else "–", S.fmt_interval(s.ci),
                         S.fmt_interval(s.boot), f"{s.median:.2f}", f"{s.iqm:.2f}",
                         f"{s.min:.2f}–{s.max:.2f}"])
    header = ["Method", "Cell", "n", "mean", "std", "95% t-CI", "95% bootstrap CI", "median",
              "IQM", "min–max"]
    notes = ["t-CI: t-interval of the mean (n ≥ 2). Bootstrap: BCa, 9999 resamples, fixed "
             f"seed, only when n ≥ {S.BOOTSTRAP_MIN_N}. IQM: mean of the middle 50% of seeds."]
    return Table(f"uncertainty_{_slug(st.setting_labels[setting])}",
                 f"Uncertainty per method and cell, {st.setting_labels[setting]}", header, rows,
                 pd.DataFrame(data), notes=notes, n_label_cols=2)


def _cached(fn):
    """Memoise a (study, setting) -> rows function on the study (tables and answers share)."""
    import functools

    @functools.wraps(fn)
    def wrapper(st: Study, setting: str):
        key = (fn.__name__, setting)
        if key not in st._cache:
            st._cache[key] = fn(st, setting)
        return st._cache[key]

    return wrapper


@_cached
def comparisons(st: Study, setting: str) -> list[dict[str, Any]]:
    """Ours (its default variant) minus every row of another method, per shared cell."""
    labels = st.labels(setting)
    ours = st.default_variant(st.ours, labels)
    if ours is None:
        return []
    out = []
    for c in st.cells(setting, included_only=True):
        a = st.group(setting, ours, c)
        if not a["acc"]:
            continue
        for lab in labels:
            if st.method_of.get(lab) == st.ours:
                continue
            b = st.group(setting, lab, c)
            if b["acc"]:
                out.append({"cell": c, "ours": ours, "baseline": lab,
                            "cmp": S.compare(a["acc"], b["acc"]), "a": a["summary"],
                            "b": b["summary"]})
    adj = S.adjust_pvalues([r["cmp"].p for r in out])
    for r, p in zip(out, adj):
        r["p_bh"] = p
    return out


def comparison_table(st: Study, setting: str, comps: list[dict[str, Any]]) -> Table:
    import pandas as pd

    rows, data = [], []
    for r in comps:
        c: S.Comparison = r["cmp"]
        rows.append([cell_name(*r["cell"]), r["baseline"], _fmt_cell(r["a"]), _fmt_cell(r["b"]),
                     _fmt_diff(c), S.fmt_interval(c.ci, signed=True), S.fmt_p(c.p),
                     S.fmt_p(r["p_bh"]), f"{c.p_a_greater:.2f}",
                     c.verdict(r["ours"], r["baseline"])])
        data.append({"setting": st.setting_labels[setting], "w_bits": r["cell"][0],
                     "a_bits": r["cell"][1], "epochs": r["cell"][2], "ours": r["ours"],
                     "baseline": r["baseline"], "n_ours": c.n_a, "n_baseline": c.n_b,
                     "mean_ours": c.mean_a, "mean_baseline": c.mean_b, "diff": c.diff,
                     "ci_low": c.ci[0] if c.ci else None, "ci_high": c.ci[1] if c.ci else None,
                     "p_welch": c.p, "p_bh": r["p_bh"], "welch_df": c.df,
                     "p_ours_greater": c.p_a_greater,
                     "verdict": c.verdict(r["ours"], r["baseline"])})
    ours = comps[0]["ours"] if comps else st.ours
    header = ["Cell", "Baseline", ours, "baseline", f"Δ ({ours} − baseline)", "95% CI (Welch)",
              "p (Welch)", "p (BH)", f"P({ours} > baseline)", "Verdict"]
    notes = [f"Δ: difference of mean final deployed accuracy (points). CI and p: Welch's "
             f"t-test (unequal variances). p (BH): Benjamini-Hochberg adjusted over this "
             f"table. P({ours} > baseline): share of seed pairs where {ours} wins (ties ½). "
             f"Fewer than {S.MIN_N_CONCLUDE} seeds on a side: {S.TOO_SMALL}."]
    return Table(f"comparisons_{_slug(st.setting_labels[setting])}",
                 f"{ours} minus each baseline, {st.setting_labels[setting]}", header, rows,
                 pd.DataFrame(data), notes=notes, n_label_cols=2, left_extra=(-1,))


# --------------------------------------------------------------------------- budgets

def readoff(st: Study, setting: str, label: str, w: int, a: int, at: int,
            from_epochs: int) -> list[float]:
    """Deployed test accuracy at epoch ``at`` of the ``from_epochs``-epoch runs."""
    g = st.group(setting, label, (w, a, from_epochs))
    out = []
    for rid in g["run_ids"]:
        acc = st.metrics[rid]["test_acc"] if rid in st.metrics else ()
        if 0 < at <= len(acc):
            out.append(float(acc[at - 1]))
    return out


@_cached
def budget_rows(st: Study, setting: str) -> list[dict[str, Any]]:
    cells = st.cells(setting, included_only=True)
    budgets = sorted({c[2] for c in cells})
    if len(budgets) < 2:
        return []
    out = []
    for lab in st.labels(setting):
        for w, a in sorted({c[:2] for c in cells}):
            have = [e for e in budgets if st.group(setting, lab, (w, a, e))["acc"]]
            if len(have) < 2:
                continue
            for e in budgets:
                g = st.group(setting, lab, (w, a, e))
                if g["acc"]:
                    out.append({"row": lab, "w": w, "a": a, "epoch": e, "source": "trained",
                                "from": e, "values": g["acc"], "summary": g["summary"]})
                for longer in [x for x in have if x > e]:
                    vals = readoff(st, setting, lab, w, a, e, longer)
                    if vals:
                        out.append({"row": lab, "w": w, "a": a, "epoch": e, "source": "readoff",
                                    "from": longer, "values": vals, "summary": S.describe(vals)})
    return out


def budget_table(st: Study, setting: str, rows_: list[dict[str, Any]]) -> Table:
    import pandas as pd

    rows, data = [], []
    for r in rows_:
        s = r["summary"]
        src = (f"trained for {r['epoch']} epochs" if r["source"] == "trained" else
               f"epoch {r['epoch']} of the {r['from']}-epoch runs (read off the curve)†")
        rows.append([r["row"], cell_name(r["w"], r["a"]), str(r["epoch"]), src, _fmt_cell(s),
                     S.fmt_interval(s.ci)])
        data.append({"setting": st.setting_labels[setting], "row": r["row"], "w_bits": r["w"],
                     "a_bits": r["a"], "epoch": r["epoch"], "source": r["source"],
                     "run_epochs": r["from"], "n": s.n, "mean": s.mean, "std": s.std,
                     "ci_low": s.ci[0] if s.ci else None, "ci_high": s.ci[1] if s.ci else None})
    notes = ["Trained: final deployed accuracy of runs whose whole schedule had this budget. "
             "† Read off: the deployed test accuracy logged at that epoch by longer runs; their "
             "learning-rate (and temperature) schedule had not finished, so this is not the "
             "accuracy of a run trained with that budget."]
    return Table(f"budget_{_slug(st.setting_labels[setting])}",
                 f"Accuracy vs epoch budget, {st.setting_labels[setting]}",
                 ["Method", "W/A", "Epochs", "Source", "Accuracy", "95% CI"], rows,
                 pd.DataFrame(data), notes=notes, n_label_cols=4)


# --------------------------------------------------------------------------- ablations

def _option_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: a.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _fmt_opts(d: dict[str, Any]) -> str:
    def v(x):
        return "[" + ", ".join(map(str, x)) + "]" if isinstance(x, list) else str(x)

    return ", ".join(f"{k}={v(x)}" for k, x in d.items()) or "(same options)"


@_cached
def ablations(st: Study, setting: str) -> list[dict[str, Any]]:
    """For each method with several variants in this setting: every non-default variant
    against the default one, per shared cell."""
    labels = st.labels(setting)
    out = []
    methods = []
    for lab in labels:
        m = st.method_of[lab]
        if m not in methods:
            methods.append(m)
    for m in methods:
        variants = [lab for lab in labels if st.method_of[lab] == m]
        if len(variants) < 2:
            continue
        default = st.default_variant(m, labels)
        base_opts = st.options_of.get(default, {})
        for c in st.cells(setting, included_only=True):
            d = st.group(setting, default, c)
            for lab in variants:
                g = st.group(setting, lab, c)
                if not g["acc"]:
                    continue
                diff = _option_diff(st.options_of.get(lab, {}), base_opts)
                cmp_ = None if lab == default or not d["acc"] else S.compare(g["acc"], d["acc"])
                out.append({"method": m, "default": default, "variant": lab, "cell": c,
                            "options": diff, "summary": g["summary"], "cmp": cmp_})
    return out


def ablation_table(st: Study, setting: str, rows_: list[dict[str, Any]], method: str) -> Table:
    import pandas as pd

    rows, data = [], []
    for r in rows_:
        c: S.Comparison | None = r["cmp"]
        is_default = r["variant"] == r["default"]
        rows.append([cell_name(*r["cell"]), r["variant"] + (" (default)" if is_default else ""),
                     "" if is_default else _fmt_opts(r["options"]), _fmt_cell(r["summary"]),
                     "" if c is None else _fmt_diff(c),
                     "" if c is None else S.fmt_interval(c.ci, signed=True),
                     "" if c is None else S.fmt_p(c.p),
                     "" if c is None else c.verdict(r["variant"], r["default"])])
        s = r["summary"]
        data.append({"setting": st.setting_labels[setting], "method": method,
                     "w_bits": r["cell"][0], "a_bits": r["cell"][1], "epochs": r["cell"][2],
                     "variant": r["variant"], "default": r["default"],
                     "options_vs_default": json.dumps(r["options"], default=str),
                     "n": s.n, "mean": s.mean, "std": s.std,
                     "diff_vs_default": c.diff if c else None,
                     "ci_low": c.ci[0] if c and c.ci else None,
                     "ci_high": c.ci[1] if c and c.ci else None, "p_welch": c.p if c else None})
    header = ["Cell", "Variant", "Options (vs default)", "Accuracy", "Δ vs default",
              "95% CI (Welch)", "p (Welch)", "Verdict"]
    default = rows_[0]["default"] if rows_ else ""
    notes = [f"Variants of {method}; Δ = variant minus the default variant ({default}), "
             "Welch's t-test."]
    return Table(f"ablation_{_slug(method)}_{_slug(st.setting_labels[setting])}",
                 f"Ablation of {method} variants, {st.setting_labels[setting]}", header, rows,
                 pd.DataFrame(data), notes=notes, n_label_cols=3, left_extra=(-1,))


# --------------------------------------------------------------------------- cost

def _human_bytes(b: float | None) -> str:
    if b is None or not math.isfinite(b):
        return "n/a"
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= k:
            return f"{b / k:.1f} {unit}"
    return f"{b:.0f} B"


def _ratio(x: float | None, ref: float | None) -> str:
    if x is None or ref is None or not ref or not math.isfinite(x) or not math.isfinite(ref):
        return "n/a"
    return f"×{x / ref:.2f}"


@_cached
def cost_rows(st: Study, setting: str) -> list[dict[str, Any]]:
    inc = st.included[st.included["setting"] == setting]
    if inc.empty:
        return []
    cols = ["mean_epoch_time_s", "wall_time_s", "peak_mem_mb", "param_bytes",
            "method_param_bytes", "optimizer_state_bytes", "method_optimizer_state_bytes"]
    inc = inc.assign(**{c: inc[c].astype(float) for c in cols})
    inc = inc.assign(wall_time_h=inc["wall_time_s"] / 3600)
    agg = inc.groupby(["label", "w_bits", "a_bits", "epochs", "device_name"], dropna=False).agg(
        n=("run_id", "size"), epoch_s=("mean_epoch_time_s", "mean"),
        hours=("wall_time_h", "sum"), mem=("peak_mem_mb", "mean"),
        mem_kind=("peak_mem_kind", "first"), device=("device", "first"),
        params=("param_bytes", "mean"), mparams=("method_param_bytes", "mean"),
        opt=("optimizer_state_bytes", "mean"), mopt=("method_optimizer_state_bytes", "mean"))
    fp = inc[inc["method"] == "fp"]
    means = {"epoch_s": "mean_epoch_time_s", "mem": "peak_mem_mb",
             "mparams": "method_param_bytes", "mopt": "method_optimizer_state_bytes"}

    def refs(keys: list[str]) -> dict:
        g = fp.groupby(keys)[list(means.values())].mean()
        return {k: {m: float(row[c]) for m, c in means.items()} for k, row in g.iterrows()}

    # fp on the same hardware, at the same activation bits when there is such a run
    by_dev_a, by_dev = refs(["device_name", "a_bits"]), refs(["device_name"])
    by_dev = {(k[0] if isinstance(k, tuple) else k): v for k, v in by_dev.items()}
    out = []
    for (lab, w, a, e, dev), r in agg.iterrows():
        refd = by_dev_a.get((dev, a)) or by_dev.get(dev)
        out.append({"row": lab, "cell": (int(w), int(a), int(e)), "device_name": dev,
                    **r.to_dict(), "fp": refd})
    order = {lab: i for i, lab in enumerate(st.order)}
    out.sort(key=lambda r: (order.get(r["row"], 1e9), r["cell"], r["device_name"]))
    return out


def cost_table(st: Study, setting: str, rows_: list[dict[str, Any]]) -> Table:
    import pandas as pd

    hw = sorted({r["device_name"] for r in rows_})
    hw_id = {h: f"H{i + 1}" for i, h in enumerate(hw)}
    rows, data = [], []
    for r in rows_:
        fp = r["fp"] or {}
        unit = "GPU-h" if str(r["device"]).startswith("cuda") else "CPU-h"
        row = [r["row"], cell_name(*r["cell"])] + ([hw_id[r["device_name"]]] if len(hw) > 1 else [])
        row += [str(r["n"]), f"{r['epoch_s']:.2f}", _ratio(r["epoch_s"], fp.get("epoch_s")),
                f"{r['hours']:.2f} {unit}", f"{r['mem']:.0f}", _ratio(r["mem"], fp.get("mem")),
                _human_bytes(r["mparams"]), _ratio(r["mparams"], fp.get("mparams")),
                _human_bytes(r["mopt"]), _ratio(r["mopt"], fp.get("mopt"))]
        rows.append(row)
        data.append({"setting": st.setting_labels[setting], "row": r["row"],
                     "w_bits": r["cell"][0], "a_bits": r["cell"][1], "epochs": r["cell"][2],
                     "hardware": r["device_name"], "device": r["device"], "n": r["n"],
                     "mean_epoch_time_s": r["epoch_s"], "total_hours": r["hours"],
                     "peak_mem_mb": r["mem"], "peak_mem_kind": r["mem_kind"],
                     "param_bytes": r["params"], "method_param_bytes": r["mparams"],
                     "optimizer_state_bytes": r["opt"],
                     "method_optimizer_state_bytes": r["mopt"],
                     "fp_epoch_time_s": fp.get("epoch_s"), "fp_peak_mem_mb": fp.get("mem"),
                     "fp_method_param_bytes": fp.get("mparams"),
                     "fp_method_optimizer_state_bytes": fp.get("mopt")})
    header = ["Method", "Cell"] + (["HW"] if len(hw) > 1 else []) + [
        "n", "s/epoch", "× fp", "total", "peak MB", "× fp", "method params", "× fp",
        "method opt. state", "× fp"]
    kinds = sorted({str(r["mem_kind"]) for r in rows_})
    notes = ["s/epoch: mean training time per epoch (without evaluation). total: summed "
             "wall-clock hours of the included runs. peak MB: " + ", ".join(kinds) +
             ". method params / opt. state: bytes of the quantized layers' parameters and of "
             "their optimizer state. × fp: relative to the fp runs on the same hardware (same "
             "activation bits when available); n/a without such runs."]
    if len(hw) > 1:
        notes.append("Hardware: " + "; ".join(f"{hw_id[h]} = {h}" for h in hw) + ".")
    else:
        notes.append(f"Hardware: {hw[0] if hw else 'unknown'}.")
    return Table(f"cost_{_slug(st.setting_labels[setting])}",
                 f"Cost per method and cell, {st.setting_labels[setting]}", header, rows,
                 pd.DataFrame(data), notes=notes, n_label_cols=3 if len(hw) > 1 else 2)


# --------------------------------------------------------------------------- honesty

def excluded_table(st: Study) -> Table:
    exc = st.runs[~st.runs["included"]].copy()
    order = {"missing": 0, "failed": 1, "diverged": 2, "corrupt": 3, "running": 4,
             "pending": 5, "completed": 6}
    exc["_o"] = exc["status"].map(order).fillna(9)
    exc = exc.sort_values(["_o", "label", "run_id"])
    rows = []
    for _, r in exc.iterrows():
        status = r["status"]
        if status == "completed":
            status = "unmatched" if r["unmatched"] else "stale"
        cell = (cell_name(int(r["w_bits"]), int(r["a_bits"]), int(r["epochs"]))
                if _known(r["w_bits"]) and _known(r["a_bits"]) and _known(r["epochs"]) else "?")
        seed = str(int(r["seed"])) if _known(r["seed"]) else "?"
        label = str(r["label"]) if _known(r["label"]) and r["label"] else "?"
        rows.append([str(r["run_id"]), label, cell, seed, status,
                     str(r["reason"])])
    data = exc.drop(columns=["_o"])[["run_id", "label", "method", "w_bits", "a_bits", "epochs",
                                     "seed", "status", "unmatched", "reason"]]
    return Table("excluded_runs", "Runs excluded from every number",
                 ["Run", "Method", "Cell", "Seed", "Status", "Reason"], rows, data,
                 n_label_cols=6)


def _known(v) -> bool:
    """Neither None nor NaN."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


# --------------------------------------------------------------------------- figures

def _color_map(st: Study) -> dict[str, str]:
    return {lab: COLORS[i % len(COLORS)] for i, lab in enumerate(st.order)}


def _curves(st: Study, setting: str, label: str, cell, column: str):
    g = st.group(setting, label, cell)
    mats = [st.metrics[r][column] for r in g["run_ids"] if column in st.metrics[r]]
    if not mats:
        return None
    import numpy as np

    n = min(len(m) for m in mats)
    mean, lo, hi = S.curve_band(np.stack([m[:n] for m in mats]))
    return {"x": list(range(1, n + 1)), "mean": mean, "lo": lo, "hi": hi, "n": len(mats)}


BUDGET_STYLES = ("-", "--", ":", "-.")  # longest budget solid, then shorter ones
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))


def figure_specs(st: Study, setting: str) -> tuple[list[dict], list[dict]]:
    """(specs for plots.start_render, captions for report.md) for one setting.

    One convergence figure per setting (several budgets share a panel, told apart by line
    style), SLB-style companion panels, per-seed dots for the main budget (the one with
    most runs, then the longest) and the budget figure when there are several budgets."""
    from harness import plots

    colors = _color_map(st)
    slug = _slug(st.setting_labels[setting])
    sl = st.setting_labels[setting]
    cells = st.cells(setting, included_only=True)
    if not cells:
        return [], []
    labels = st.labels(setting)
    budgets = sorted({c[2] for c in cells}, reverse=True)
    style = {e: BUDGET_STYLES[i % len(BUDGET_STYLES)] for i, e in enumerate(budgets)}
    pairs = sorted({c[:2] for c in cells})
    specs, caps = [], []
    single = sorted({f"{lab} {cell_name(*c)}" for c in cells for lab in labels
                     if st.group(setting, lab, c)["summary"].n == 1})
    n1 = (" n = 1 (no band, no error bar): " + ", ".join(single) + ".") if single else ""
    stride = plots.stride(budgets[0])
    thin = (f" Drawn at every {stride}-th epoch (and the last)." if stride > 1 else "")

    panels, shown = [], []
    for w, a in pairs:
        lines = []
        for lab in labels:
            for e in budgets:
                cur = _curves(st, setting, lab, (w, a, e), "test_acc")
                if cur:
                    lines.append({**cur, "color": colors[lab], "ls": style[e]})
                    shown.append(lab)
        panels.append({"title": cell_name(w, a), "lines": lines, "ylim": _zoom(lines)})
    legend = [{"label": lab, "color": colors[lab]} for lab in labels if lab in shown]
    if len(budgets) > 1:
        legend += [{"label": f"{e} epochs", "color": "0.3", "ls": style[e]} for e in budgets]
    name = f"convergence_{slug}"
    specs.append({"kind": "curves", "name": name, "panels": panels, "legend": legend,
                  "xlabel": "epoch", "ylabel": "deployed test accuracy (%)",
                  "title": f"Deployed test accuracy per epoch, {sl} (mean, 95% CI band)"})
    caps.append({"name": name, "section": "convergence",
                 "caption": f"Deployed test accuracy per epoch ({sl}): mean over seeds with a "
                            f"95% t-interval band, one panel per W/A cell"
                            + (", one line style per epoch budget (a shorter run's curve is "
                               "not the start of a longer run's: the schedules differ)"
                               if len(budgets) > 1 else "")
                            + "; the y-axis is zoomed to the last three quarters of training."
                            + thin + n1})
    internals = _internals_spec(st, setting, labels, budgets, f"internals_{slug}", sl)
    if internals:
        specs.append(internals)
        caps.append({"name": internals["name"], "section": "convergence",
                     "caption": f"Companion panels ({sl}) for the rows that log them: "
                                "continuous-state (not deployable) test accuracy, its gap to "
                                "the deployed accuracy, temperature tau and quant_gap per "
                                "epoch; colour: W/A cell, line style: variant"
                                + (" and budget" if len(budgets) > 1 else "")
                                + "; mean over seeds with a 95% CI band." + thin})
    budget = _budget_spec(st, setting, colors, f"budget_{slug}")
    per_budget = st.included[st.included["setting"] == setting]["epochs"].value_counts()
    main_e = int(max(per_budget.index, key=lambda e: (per_budget[e], e)))
    panels, shown = [], []
    for c in [c for c in cells if c[2] == main_e]:
        prow = []
        for lab in labels:
            g = st.group(setting, lab, c)
            sm = g["summary"]
            if sm.n:
                shown.append(lab)
                prow.append({"color": colors[lab], "seeds": g["acc"], "mean": sm.mean,
                             "lo": sm.ci[0] if sm.ci else None, "hi": sm.ci[1] if sm.ci else None})
        panels.append({"title": cell_name(*c[:2]), "rows": prow})
    name = f"seeds_{slug}"
    specs.append({"kind": "points", "name": name, "panels": panels,
                  "legend": [{"label": lab, "color": colors[lab], "marker": "o", "ls": ""}
                             for lab in labels if lab in shown],
                  "ylabel": "final deployed test accuracy (%)",
                  "title": f"Final accuracy per seed, {sl}, {main_e} epochs (dots: seeds; "
                           "bar: mean with 95% CI)"})
    other = (" The other budgets' seeds are in the budget figure." if budget else "")
    caps.append({"name": name, "section": "seeds",
                 "caption": f"Final deployed accuracy of every seed ({sl}, {main_e} epochs), one "
                            f"colour per row; the larger marker beside the dots is the mean with "
                            f"its 95% t-interval (hollow, no bar: n = 1).{other}{n1}"})
    if budget:
        specs.append(budget)
        caps.append({"name": budget["name"], "section": "budget",
                     "caption": f"Final accuracy vs epoch budget ({sl}): filled markers and CI "
                                "bars are runs trained for that budget (dots: seeds); hollow "
                                "markers on dashed lines are accuracies read off the longest "
                                "runs' curves at the shorter budgets (their schedule had not "
                                "finished: not the same as training for that budget)."})
    return specs, caps


def _zoom(lines: list[dict]) -> tuple[float, float] | None:
    """y-limits that skip the first quarter of the epochs, where accuracy is still low."""
    import numpy as np

    vals = []
    for ln in lines:
        k = len(ln["mean"]) // 4
        for arr in (ln["mean"], ln.get("lo"), ln.get("hi")):
            if arr is not None:
                vals.append(np.asarray(arr, dtype=float)[k:])
    vals = np.concatenate(vals) if vals else np.array([])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    lo, hi = float(vals.min()), float(vals.max())
    pad = max(0.5, 0.05 * (hi - lo))
    return (lo - pad, hi + pad)


def _internals_spec(st: Study, setting: str, labels, budgets, name: str, title: str):
    """Companion panels (continuous-state accuracy, its gap to the deployed one, temperature,
    quant_gap): one line per (variant, cell, budget) that logs them; colour = cell, line style
    = variant (and budget)."""
    import numpy as np

    def has(lab, c, col):
        return any(col in st.metrics[r] for r in st.group(setting, lab, c)["run_ids"])

    cols = [col for col, _ in INTERNALS]
    keys = [(lab, c) for lab in labels for c in st.cells(setting, True)
            if any(has(lab, c, k) for k in cols)]
    if not keys:
        return None
    combos = sorted({(lab, c[2]) for lab, c in keys},
                    key=lambda t: (labels.index(t[0]), -t[1]))  # (variant, budget)
    pairs = list(dict.fromkeys(c[:2] for _, c in keys))
    color = {p: COLORS[i % len(COLORS)] for i, p in enumerate(pairs)}
    styles = {k: LINE_STYLES[i % len(LINE_STYLES)] for i, k in enumerate(combos)}
    panel_defs = [(c, t) for c, t in INTERNALS]
    if any(has(lab, c, "test_acc_continuous") for lab, c in keys):
        panel_defs.insert(1, ("gap", "continuous − deployed acc (points)"))
    panels = []
    for col, ptitle in panel_defs:
        lines = []
        for lab, c in keys:
            src = "test_acc_continuous" if col == "gap" else col
            if not has(lab, c, src):
                continue
            if col == "gap":
                g = st.group(setting, lab, c)
                runs = [r for r in g["run_ids"] if src in st.metrics[r]]
                mats = [st.metrics[r][src] - st.metrics[r]["test_acc"] for r in runs]
                n = min(len(m) for m in mats)
                mean, lo, hi = S.curve_band(np.stack([m[:n] for m in mats]))
                cur = {"x": list(range(1, n + 1)), "mean": mean, "lo": lo, "hi": hi}
            else:
                cur = _curves(st, setting, lab, c, col)
            lines.append({**cur, "color": color[c[:2]], "ls": styles[(lab, c[2])]})
        if not lines:
            continue
        vals = np.concatenate([np.asarray(ln["mean"], float) for ln in lines])
        vals = vals[np.isfinite(vals)]
        logy = bool(col == "temperature" and len(vals) and vals.min() > 0
                    and vals.max() / vals.min() > 20)
        panels.append({"title": ptitle, "lines": lines, "logy": logy,
                       "ylim": _zoom(lines) if col == "test_acc_continuous" else None})
    legend = [{"label": cell_name(*p), "color": color[p]} for p in pairs]
    legend += [{"label": lab + (f", {e} ep" if len(budgets) > 1 else ""), "color": "0.3",
                "ls": styles[(lab, e)]} for lab, e in combos]
    return {"kind": "curves", "name": name, "panels": panels,
            "ncols": min(len(panels), 4), "legend": legend, "xlabel": "epoch",
            "title": f"Companion panels, {title}"}


def _budget_spec(st: Study, setting: str, colors, name: str):
    rows_ = budget_rows(st, setting)
    if not rows_:
        return None
    budgets = sorted({r["epoch"] for r in rows_})
    panels = []
    for w, a in sorted({(r["w"], r["a"]) for r in rows_}):
        prow = []
        for lab in st.labels(setting):
            mine = [r for r in rows_ if r["row"] == lab and (r["w"], r["a"]) == (w, a)]
            tr = [r for r in mine if r["source"] == "trained"]
            if not tr:
                continue
            longest = max(r["epoch"] for r in tr)
            ro = [r for r in mine if r["source"] == "readoff" and r["from"] == longest]
            prow.append({"label": lab, "color": colors[lab], "trained": {
                "x": [r["epoch"] for r in tr], "mean": [r["summary"].mean for r in tr],
                "lo": [r["summary"].ci[0] if r["summary"].ci else None for r in tr],
                "hi": [r["summary"].ci[1] if r["summary"].ci else None for r in tr],
                "seeds": [r["values"] for r in tr]},
                "readoff": {"x": [r["epoch"] for r in ro],
                            "mean": [r["summary"].mean for r in ro]}})
        if any(len(p["trained"]["x"]) > 1 for p in prow):
            panels.append({"title": cell_name(w, a), "rows": prow, "budgets": budgets,
                           "wa": (w, a)})
    if not panels:
        return None
    have = {r["label"] for p in panels for r in p["rows"]}
    shown = [lab for lab in st.labels(setting) if lab in have]
    legend = [{"label": lab, "color": colors[lab], "marker": "o"} for lab in shown]
    if any(r["readoff"]["x"] for p in panels for r in p["rows"]):
        legend.append({"label": "read off the longest runs' curves\n(not trained for that "
                                "budget)", "color": "0.4", "ls": "--", "marker": "o",
                       "mfc": "white"})
    return {"kind": "budget", "name": name, "panels": panels, "legend": legend,
            "xlabel": "epoch budget", "ylabel": "final deployed test accuracy (%)",
            "title": f"Accuracy vs epoch budget, {st.setting_labels[setting]}"}


# --------------------------------------------------------------------------- reviewer questions

QUESTIONS = (
    ("budget", "Epochs and budget",
     "Does the comparison hold at matched epoch budgets, and at longer ones (200 vs 500 "
     "epochs)?"),
    ("seeds", "Seed variance",
     "How large is the seed-to-seed variation next to the differences between methods?"),
    ("bn", "SBN vs recalibration",
     "Does State BN matter, or does recalibrating the BN statistics do as well?"),
    ("schedule", "Temperature schedule",
     "How sensitive is the result to the temperature schedule (exp, linear, cos, SGDR)?"),
    ("candidates", "Candidate set", "Does the choice of the candidate values V matter?"),
    ("cost", "Cost", "What does the method cost in time and memory, relative to fp and to the "
                     "baselines?"),
    ("bop", "Bop", "How does it compare with Bop, which trains binary weights without latent "
                   "weights?"),
)
NOT_ANSWERED = "Not answered by this study"

# Which method option an ablation question is about.
OPTION_TOPICS = {
    "bn": lambda k: re.search(r"(^|_)s?bn($|_)", k) is not None,
    "schedule": lambda k: "sched" in k or k.startswith("temp"),
    "candidates": lambda k: "cand" in k,
}


def _vs(a: str, sa: S.Summary, b: str, sb: S.Summary, c: S.Comparison) -> str:
    return f"{a} {S.fmt_summary(sa)} vs {b} {S.fmt_summary(sb)}: {S.fmt_comparison(c)}"


def _tally(cmps: list[S.Comparison], a: str, b: str) -> str:
    hi = sum(c.conclusive and c.p < S.ALPHA and c.diff > 0 for c in cmps)
    lo = sum(c.conclusive and c.p < S.ALPHA and c.diff < 0 for c in cmps)
    small = sum(min(c.n_a, c.n_b) < S.MIN_N_CONCLUDE for c in cmps)
    ns = len(cmps) - hi - lo - small
    parts = [f"{a} is significantly higher (p < {S.ALPHA:g}) in {hi}",
             f"{b} is significantly higher in {lo}", f"there is no significant difference in {ns}"]
    if small:
        parts.append(f"n is too small to conclude in {small}")
    if len(cmps) == 1:
        parts = [p for p, k in zip(parts, (hi, lo, ns, small)) if k] or parts
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _bullets(items: list[str], where: str) -> list[str]:
    if len(items) <= MAX_BULLETS:
        return items
    return items[:MAX_BULLETS] + [f"… {len(items) - MAX_BULLETS} more in {where}."]


def _where(st: Study, setting: str, c) -> str:
    multi = len(st.settings()) > 1
    return cell_name(*c) + (f", {st.setting_labels[setting]}" if multi else "")


def answer_budget(st: Study) -> tuple[str, list[str]]:
    multi = [s for s in st.settings() if len({c[2] for c in st.cells(s, True)}) > 1]
    if not multi:
        budgets = sorted({c[2] for s in st.settings() for c in st.cells(s, True)})
        what = (f"every included run has the same budget ({budgets[0]} epochs), so it shows "
                "only the matched comparison at that budget (see the comparisons)"
                if budgets else "no run completed")
        return f"{NOT_ANSWERED}: {what}.", []
    cmps, items, own = [], [], []
    for s in multi:
        labels = st.labels(s)
        ours = st.default_variant(st.ours, labels)
        if ours is None:
            continue
        base_labels = [lab for lab in labels if st.method_of[lab] != st.ours]
        for w, a in sorted({c[:2] for c in st.cells(s, True)}):
            parts, budgets = [], []
            for e in sorted({c[2] for c in st.cells(s, True) if c[:2] == (w, a)}):
                g = st.group(s, ours, (w, a, e))
                if not g["acc"]:
                    continue
                budgets.append(e)
                rivals = [(st.group(s, b, (w, a, e))["summary"], b) for b in base_labels]
                rivals = [r for r in rivals if r[0].n]
                if not rivals:
                    parts.append(f"at {e} epochs {ours} {S.fmt_summary(g['summary'])} "
                                 "(no baseline at this budget)")
                    continue
                sb, b = max(rivals, key=lambda r: r[0].mean)
                c = S.compare(g["acc"], st.group(s, b, (w, a, e))["acc"])
                cmps.append(c)
                parts.append(f"at {e} epochs {_vs(ours, g['summary'], b, sb, c)}")
            if len(budgets) > 1:
                lo_e, hi_e = budgets[0], budgets[-1]
                c = S.compare(st.group(s, ours, (w, a, hi_e))["acc"],
                              st.group(s, ours, (w, a, lo_e))["acc"])
                own.append(c)
                parts.append(f"{ours} at {hi_e} minus {lo_e} epochs: {S.fmt_comparison(c)}")
            if parts:
                items.append(f"{_where(st, s, (w, a))}: " + "; ".join(parts) + ".")
    if not items:
        return (f"{NOT_ANSWERED}: the study has several budgets but no {st.ours} runs "
                "at them.", [])
    text = (f"Against the strongest baseline at each budget (the one with the highest mean), "
            f"over {len(cmps)} cell×budget comparisons {_tally(cmps, st.ours, 'the baseline')}.")
    if own:
        up = sum(c.conclusive and c.p < S.ALPHA and c.diff > 0 for c in own)
        text += (f" Training {st.ours} longer changes its accuracy significantly upward in {up} "
                 f"of {len(own)} W/A cells.")
    text += (" Accuracies read off longer runs at shorter epochs are in the budget table, "
             "marked as such.")
    return text, _bullets(items, "the budget tables")


def answer_seeds(st: Study) -> tuple[str, list[str]]:
    import numpy as np

    groups = [(k, g["summary"]) for k, g in st.groups.items() if g["summary"].n >= 2]
    if not groups:
        return f"{NOT_ANSWERED}: no row has two or more seeds in any cell.", []
    stds = np.array([s.std for _, s in groups])
    (ks, worst) = max(groups, key=lambda t: t[1].std)
    text = (f"Over {len(groups)} method×cell groups with n ≥ 2, the seed standard deviation of "
            f"the final deployed accuracy has median {np.median(stds):.2f} points (range "
            f"{stds.min():.2f}–{stds.max():.2f}); the largest is {ks[1]} at "
            f"{_where(st, ks[0], ks[2:])} ({worst.std:.2f}, n={worst.n}, seeds spanning "
            f"{worst.min:.2f}–{worst.max:.2f}).")
    comps = [r for s in st.settings() for r in comparisons(st, s)]
    if len(comps) == 1:
        c = comps[0]["cmp"]
        text += (f" The one {st.ours}-vs-baseline difference is {c.diff:+.2f} points, "
                 + (S.TOO_SMALL if not c.conclusive else
                    "its 95% CI " + ("excludes" if c.p < S.ALPHA else "includes") + " 0") + ".")
    elif comps:
        diffs = np.array([abs(r["cmp"].diff) for r in comps])
        sig = sum(r["cmp"].conclusive and r["cmp"].p < S.ALPHA for r in comps)
        small = sum(min(r["cmp"].n_a, r["cmp"].n_b) < S.MIN_N_CONCLUDE for r in comps)
        text += (f" The {len(comps)} {st.ours}-vs-baseline differences have median |Δ| "
                 f"{np.median(diffs):.2f} points; {sig} of them have a 95% CI that excludes 0"
                 + (f", and {small} {'has' if small == 1 else 'have'} {S.TOO_SMALL}"
                    if small else "") + ".")
    ns = sorted({s.n for _, s in groups})
    text += f" Seeds per group: {', '.join(map(str, ns))}."
    return text, []


def answer_option(st: Study, topic: str) -> tuple[str, list[str]]:
    pred = OPTION_TOPICS[topic]
    rows = []
    for s in st.settings():
        for r in ablations(st, s):
            keys = [k for k in r["options"] if pred(k)]
            if keys and r["cmp"] is not None:
                rows.append((s, r, keys))
    if not rows:
        return (f"{NOT_ANSWERED}: no variants of one method differ in a "
                f"{'bn' if topic == 'bn' else topic} option.", [])
    rows.sort(key=lambda t: (t[1]["method"] != st.ours,))
    items, cmps = [], []
    for s, r, keys in rows:
        dopts = st.options_of.get(r["default"], {})
        mine = ", ".join(f"{k}={_fmt_opts({k: r['options'][k]}).split('=', 1)[1]}" for k in keys)
        base = ", ".join(f"{k}={_fmt_opts({k: dopts.get(k)}).split('=', 1)[1]}" for k in keys)
        other = {k: v for k, v in r["options"].items() if k not in keys}
        extra = f" (also differs: {_fmt_opts(other)})" if other else ""
        d = st.group(s, r["default"], r["cell"])["summary"]
        cmps.append(r["cmp"])
        items.append(f"{_where(st, s, r['cell'])}: {r['variant']} [{mine}]{extra} "
                     f"{S.fmt_summary(r['summary'])} vs {r['default']} [{base}] "
                     f"{S.fmt_summary(d)}: {S.fmt_comparison(r['cmp'])}.")
    methods = sorted({r["method"] for _, r, _ in rows})
    text = (f"Variants of {', '.join(methods)} against the default variant, over "
            f"{len(cmps)} variant×cell comparisons: {_tally(cmps, 'the variant', 'the default')}.")
    if len(rows) > 1:
        lo_ = min(rows, key=lambda t: t[1]["cmp"].diff)[1]
        hi_ = max(rows, key=lambda t: t[1]["cmp"].diff)[1]
        text += (f" The differences range from {lo_['cmp'].diff:+.2f} ({lo_['variant']} at "
                 f"{cell_name(*lo_['cell'])}) to {hi_['cmp'].diff:+.2f} ({hi_['variant']} at "
                 f"{cell_name(*hi_['cell'])}) points.")
    return text, _bullets(items, "the ablation tables")


def answer_cost(st: Study) -> tuple[str, list[str]]:
    import numpy as np

    items = []
    for s in st.settings():
        labels = st.labels(s)
        ours = st.default_variant(st.ours, labels)
        if ours is None:
            continue
        rows_ = cost_rows(st, s)
        mine = [r for r in rows_ if r["row"] == ours]
        for dev in sorted({r["device_name"] for r in mine}):
            here = [r for r in mine if r["device_name"] == dev]
            med = float(np.median([r["epoch_s"] for r in here]))
            txt = (f"{st.setting_labels[s]} on {dev}: {ours} takes {med:.2f} s per epoch "
                   + (f"(median over {len(here)} cells)" if len(here) > 1 else
                      f"({cell_name(*here[0]['cell'])})"))
            with_fp = [r for r in here if r["fp"]]
            if with_fp:
                def rat(key: str, fpkey: str, rows=with_fp) -> list[float]:
                    return [r[key] / r["fp"][fpkey] for r in rows
                            if r["fp"][fpkey] and math.isfinite(r[key])]

                t, m = rat("epoch_s", "epoch_s"), rat("mem", "mem")
                p, o = rat("mparams", "mparams"), rat("mopt", "mopt")
                fmt = (lambda xs: f"×{np.median(xs):.2f}" if xs else "n/a")
                txt += (f", {fmt(t)} fp's epoch time" + (
                    f" (range ×{min(t):.2f}–×{max(t):.2f})" if len(t) > 1 else "") if t else "")
                txt += (f"; peak memory {fmt(m)}, method parameters {fmt(p)} and their "
                        f"optimizer state {fmt(o)} fp's" +
                        (" (medians over cells)" if len(with_fp) > 1 else ""))
            else:
                txt += "; no fp run on this hardware, so no ratio to fp"
            others = []
            for lab in labels:
                if st.method_of[lab] == st.ours or st.method_of[lab] == "fp":
                    continue
                theirs = {(r["cell"]): r["epoch_s"] for r in rows_
                          if r["row"] == lab and r["device_name"] == dev}
                rs = [r["epoch_s"] / theirs[r["cell"]] for r in here
                      if theirs.get(r["cell"])]
                if rs:
                    others.append(f"×{np.median(rs):.2f} {lab}")
            if others:
                txt += "; epoch time relative to the baselines (median over shared cells): " + \
                       ", ".join(others)
            items.append(txt + ".")
    if not items:
        return f"{NOT_ANSWERED}: no completed {st.ours} run records its cost.", []
    total = st.runs.dropna(subset=["wall_time_s"])
    hours = total.groupby(total["device"].astype(str).str.startswith("cuda"))["wall_time_s"].sum()
    spent = "; ".join(f"{h / 3600:.2f} {'GPU' if k else 'CPU'}-hours" for k, h in hours.items())
    text = (f"Cost of {st.ours} from the summaries (full table: cost tables). The whole study "
            f"used {spent} (all records, failed runs included).")
    return text, _bullets(items, "the cost tables")


def answer_bop(st: Study) -> tuple[str, list[str]]:
    items, cmps = [], []
    for s in st.settings():
        for r in comparisons(st, s):
            if st.method_of.get(r["baseline"]) == "bop":
                cmps.append(r["cmp"])
                items.append(f"{_where(st, s, r['cell'])}: "
                             f"{_vs(r['ours'], r['a'], r['baseline'], r['b'], r['cmp'])}.")
    if not items:
        have = "bop" in st.method_of.values()
        why = (f"no cell has both {st.ours} and bop runs" if have
               else "the study has no bop runs")
        return f"{NOT_ANSWERED}: {why}.", []
    return (f"{st.ours} against bop over {len(cmps)} cells: "
            f"{_tally(cmps, st.ours, 'bop')}.", _bullets(items, "the comparison tables"))


def reviewer_answers(st: Study) -> list[dict[str, Any]]:
    fns = {"budget": answer_budget, "seeds": answer_seeds, "cost": answer_cost,
           "bop": answer_bop, "bn": lambda st: answer_option(st, "bn"),
           "schedule": lambda st: answer_option(st, "schedule"),
           "candidates": lambda st: answer_option(st, "candidates")}
    out = []
    for key, title, question in QUESTIONS:
        text, bullets = fns[key](st)
        out.append({"key": key, "title": title, "question": question, "text": text,
                    "bullets": bullets, "answered": not text.startswith(NOT_ANSWERED)})
    return out


# --------------------------------------------------------------------------- report.md

def _header(st: Study) -> list[str]:
    runs = st.runs
    withsum = runs[runs["device_name"].fillna("") != ""]
    basis = st.included if not st.included.empty else withsum

    def counts(col: str) -> str:
        vc = basis[col].replace("", "unknown").value_counts()
        return "; ".join(f"{k} ({v} runs)" for k, v in vc.items()) or "unknown (no summaries)"

    scale = sorted({str(x) for x in runs.get("scale", []) if _known(x) and x}) or \
        ([str(st.manifest["scale"])] if st.manifest and st.manifest.get("scale") else [])
    commits = sorted({c for c in basis["commit"] if c})
    done = runs["status"].eq("completed")
    status = runs["status"].where(~(done & runs["unmatched"]), "unmatched")
    status = status.where(~(done & ~runs["unmatched"] & runs["stale"].fillna(False).astype(bool)),
                          "stale")
    exc = status[~runs["included"]].value_counts()
    exc_txt = ", ".join(f"{v} {k}" for k, v in exc.items()) or "none"
    labels = st.order
    ours = [lab for lab in labels if st.method_of[lab] == st.ours]
    lines = [f"# Study report: {st.name}", "",
             f"- **Records:** `{_rel(st.dir)}` ({int((runs['status'] != 'missing').sum())} run "
             f"directories" + (f"; manifest.json lists {len(st.manifest.get('runs', []))} runs"
                               if st.manifest else "; no manifest.json, so missing runs cannot "
                               "be detected") + ")",
             f"- **Scale:** {', '.join(scale) or 'not recorded'}",
             f"- **Hardware:** {counts('device_name')}",
             f"- **torch:** {counts('torch')}; **Python:** {counts('python')}",
             "- **Harness commit:** " + (", ".join(f"`{c}`" for c in commits) or "unknown")
             + (" (records come from more than one commit)" if len(commits) > 1 else "")
             + (" (some runs had uncommitted changes: -dirty)" if any(c.endswith("-dirty")
                                                                     for c in commits) else ""),
             "- **Settings:** " + "; ".join(st.setting_labels[s] for s in st.settings()),
             f"- **Ours:** {st.ours}" + (f" (rows: {', '.join(ours)})" if ours else
                                         " (no runs of it in this study)")
             + f"; other rows: {', '.join(lab for lab in labels if lab not in ours) or 'none'}",
             "- **Reported numbers:** " + (f"`{_rel(st.reference_path)}` (reported "
                                            "elsewhere, not measured here; marked †)"
                                            if st.reference_path else "none"),
             f"- **In the numbers:** {int(runs['included'].sum())} of {len(runs)} runs; "
             f"excluded: {exc_txt} (listed in [Runs excluded from the numbers]"
             f"(#runs-excluded-from-the-numbers))", ""]
    lines += [f"> Note: {n}" for n in st.notes] + ([""] if st.notes else [])
    lines += ["Every number is the final deployed test accuracy (%) over seeds unless stated "
              "otherwise: mean ± sample std (n), 95% t-intervals, Welch's t-test for "
              "differences. Cells with n < 2 have no error bar and are marked. See "
              "[Statistical methods](#statistical-methods).", ""]
    return lines


def _rel(path) -> str:
    """A path relative to the working directory when it lies below it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _table_md(t: Table, rel: str) -> list[str]:
    out = [f"**{md_escape(t.caption)}** ([md]({rel}/{t.name}.md) · [tex]({rel}/{t.name}.tex) "
           f"· [csv]({rel}/{t.name}.csv))", "", t.markdown(), ""]
    out += [f"<sub>{md_escape(n)}</sub>" + "\n" for n in t.notes]
    return out


def _figure_md(cap: dict[str, str], rel: str) -> list[str]:
    return [f"![{cap['name']}]({rel}/{cap['name']}.png)", "",
            f"*{md_escape(cap['caption'])}* ([pdf]({rel}/{cap['name']}.pdf))", ""]


def _stats_section() -> list[str]:
    return ["## Statistical methods", "",
            f"- Per method and cell: mean, sample std (ddof = 1), 95% t-interval of the mean "
            f"(`scipy.stats.t.interval` with `scipy.stats.sem`), median and interquartile mean "
            f"(`scipy.stats.trim_mean`, 25% cut); a BCa bootstrap interval "
            f"(`scipy.stats.bootstrap`, {S.BOOTSTRAP_RESAMPLES} resamples, seed "
            f"{S.BOOTSTRAP_SEED}) when n ≥ {S.BOOTSTRAP_MIN_N}.",
            "- Differences: Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`) and its "
            "95% interval of the difference; P(A > B) is the Mann-Whitney U statistic over all "
            "seed pairs divided by n_A·n_B (ties ½); Benjamini-Hochberg adjusted p-values "
            "(`scipy.stats.false_discovery_control`) over each comparison table. p-values "
            "elsewhere are unadjusted.",
            f"- Fewer than {S.MIN_N_CONCLUDE} seeds on a side: the difference is shown but "
            f"marked \"{S.TOO_SMALL}\"; with one seed there is no interval and no test.",
            "- Bold in the main tables only when the best mean's 95% interval does not overlap "
            "the runner-up's.",
            "- Curves: per-epoch mean with a 95% t-interval band over seeds (none for n = 1).",
            ""]


def _excluded_section(st: Study, tables: dict[str, Table], rel: str) -> list[str]:
    out = ["## Runs excluded from the numbers", ""]
    t = tables.get("excluded_runs")
    if t is not None and t.rows:
        out += ["These runs are not in any table, figure or answer above.", ""]
        out += _table_md(t, rel)
    else:
        out += ["None: every run record found is completed and matched.", ""]
    for e in (st.manifest or {}).get("excluded", []):
        if e == (st.manifest or {}).get("excluded", [])[0]:
            out += ["Combinations the study spec excludes (not run):", ""]
        out.append(f"- {e.get('variant', '?')} {cell_name(e.get('w_bits'), e.get('a_bits'), e.get('epochs'))}: "
                   f"{e.get('reason', '')}")
    if (st.manifest or {}).get("excluded"):
        out.append("")
    if st.mismatches:
        out += ["Recipe differences inside a cell (these comparisons are not matched):", ""]
        for m in st.mismatches:
            vals = "; ".join(f"{v} ({', '.join(ls)})" for v, ls in m["values"].items())
            out.append(f"- {_where(st, m['setting'], m['cell'])}: `{m['key']}` = {vals}")
        out.append("")
    small = [(k, g["summary"].n) for k, g in st.groups.items() if g["summary"].n < 2]
    if small:
        out += ["Cells with a single seed (shown without error bars, not compared): "
                + ", ".join(f"{k[1]} at {_where(st, k[0], k[2:])}" for k, _ in sorted(small))
                + ".", ""]
    if st.manifest and "in_manifest" in st.runs and not st.runs["in_manifest"].all():
        extra = st.runs.loc[~st.runs["in_manifest"], "run_id"].tolist()
        out += [f"Run directories not in manifest.json (still used when completed): "
                f"{', '.join(extra[:20])}" + (" …" if len(extra) > 20 else "") + ".", ""]
    return out


def build_report(st: Study, out: Path, jobs: int = 0) -> Path:
    """Write every table, figure and report.md for a loaded study; returns report.md."""
    from harness import plots
    from harness.records import atomic_write_text

    tdir, fdir = out / "tables", out / "figures"
    tdir.mkdir(parents=True, exist_ok=True)
    specs, caps = [], []
    for s in st.settings():
        sp, cp = figure_specs(st, s)
        specs += sp
        caps += [{**x, "setting": s} for x in cp]
    # figures are drawn by other processes while the tables are computed and written
    wait_figures = plots.start_render(specs, fdir, jobs)
    add_bootstraps(st)  # figures do not need them; the uncertainty tables do
    tables: dict[str, Table] = {}
    per_setting: dict[str, dict[str, Any]] = {}
    for s in st.settings():
        d: dict[str, Any] = {"main": main_table(st, s), "uncertainty": uncertainty_table(st, s)}
        comps = comparisons(st, s)
        if comps:
            d["comparisons"] = comparison_table(st, s, comps)
        b = budget_rows(st, s)
        if b:
            d["budget"] = budget_table(st, s, b)
        abl = ablations(st, s)
        d["ablations"] = [ablation_table(st, s, [r for r in abl if r["method"] == m], m)
                          for m in dict.fromkeys(r["method"] for r in abl)]
        c = cost_rows(st, s)
        if c:
            d["cost"] = cost_table(st, s, c)
        d = {k: ([t for t in v if t.rows] if isinstance(v, list) else v)
             for k, v in d.items() if isinstance(v, list) or v.rows}  # no empty tables
        per_setting[s] = d
        for v in d.values():
            for t in (v if isinstance(v, list) else [v]):
                tables[t.name] = t
    exc = excluded_table(st)
    if exc.rows:
        tables[exc.name] = exc
    for t in tables.values():
        t.write(tdir)
    answers = reviewer_answers(st)
    md = _header(st)
    md += ["## Reviewer questions", ""]
    for a in answers:
        md += [f"**{a['title']}.** *{a['question']}* {a['text']}", ""]
        md += [f"- {b}" for b in a["bullets"]] + ([""] if a["bullets"] else [])

    def section(title: str, key: str, intro: str = "") -> None:
        items = [(s, per_setting[s].get(key)) for s in st.settings()]
        items = [(s, t) for s, t in items if t]
        if not items:
            return
        md.extend([f"## {title}", ""] + ([intro, ""] if intro else []))
        for _, t in items:
            for tt in (t if isinstance(t, list) else [t]):
                md.extend(_table_md(tt, "tables"))

    def figures(title: str, kind: str, intro: str = "") -> None:
        mine = [c for c in caps if c["section"] == kind]
        if mine:
            md.extend([f"## {title}", ""] + ([intro, ""] if intro else []))
            for c in mine:
                md.extend(_figure_md(c, "figures"))

    section("Main results", "main")
    section(f"Comparisons: {st.ours} minus each baseline", "comparisons")
    figures("Convergence", "convergence")
    figures("Per-seed final accuracy", "seeds")
    section("Budget study", "budget")
    figures("Budget figures", "budget")
    section("Ablations", "ablations",
            "Named variants of one method against its default variant (the variant named "
            "like the method, else the first).")
    section("Cost", "cost")
    section("Uncertainty details", "uncertainty")
    md += _excluded_section(st, tables, "tables")
    md += _stats_section()
    written = wait_figures()
    report = out / "report.md"
    atomic_write_text(report, "\n".join(md).rstrip() + "\n")
    _prune_stale(out, [report] + [Path(p) for p in written]
                 + [tdir / f"{n}.{x}" for n in tables for x in ("md", "tex", "csv")])
    return report


def _prune_stale(out: Path, files: list[Path]) -> None:
    """Remove outputs an earlier report wrote and this one did not (a removed cell's
    figure, say); only files listed in our own index are ever removed."""
    from harness.records import atomic_write_json

    index = out / ".report-files.json"
    now = sorted(str(Path(f).resolve().relative_to(out.resolve())) for f in files)
    try:
        before = json.loads(index.read_text())
    except (OSError, ValueError):
        before = []
    for rel in set(before) - set(now):
        p = out / rel
        if p.is_file() and ".." not in Path(rel).parts:
            p.unlink()
    atomic_write_json(index, now)


def write_report(study_dir: Path, out: Path | None = None, reference: str | None = None,
                 reference_dataset: str | None = None, ours: str | None = None,
                 jobs: int = 0) -> Path:
    st = load_study(Path(study_dir), reference, reference_dataset, ours, jobs, bootstrap=False)
    return build_report(st, Path(out) if out else Path(study_dir) / "report", jobs)
