"""Run records -> StudyRecords: the one object every table, figure and answer reads.

Data flow: ``load_study(STUDY_DIR)`` reads study.toml (its optional [report] table),
manifest.json (the expected runs) and every runs/<id>/ directory (runs.py: through
``harness.records.load_run``). It builds

- ``runs``: a DataFrame with one row per run, present or missing (runs.py): status, why it
  is excluded, method, variant label, options, cell (w_bits, a_bits, epochs), seed, setting
  (data/model identity), recipe, costs, env;
- ``metrics``: run id -> {column: array} for the included runs: the deployed test accuracy
  and the internal metrics its method declares (summary.json ``method_info``, see
  ``methods.base.Method.info``; a method none of whose records holds one declares none),
  described study-wide in ``internal_metrics``;
- ``groups``: (setting, row label, w_bits, a_bits, epochs) -> the seeds' final accuracies
  and their ``harness.report.stats`` summary;
- the display order of the rows, "ours" (study.toml [report] ours, or --ours; None when
  neither names one), the reported reference numbers, the recipe differences inside a cell;
- display names: ``st.display(label)`` for a row (the method's declared display name, e.g.
  "DoReFa-Net"; "SLB (sbn4)" for a variant slb-sbn4) and ``st.setting_name(setting)``,
  both renamed by study.toml's [report.methods], [report.variants] and [report.settings]
  (``REPORT_KEYS``). Tables, figures and answers print these; the CSVs keep the ids.

Paths shown in a report are relative to the repository, the study or as the user wrote
them (``shown_path``), never the machine's absolute paths.

Tables (tables.py), figures (figures.py) and reviewer answers (questions.py) only read a
``StudyRecords``; what they compute per setting is memoised on it (``cached_per_setting``).
"""
from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness import files
from harness.errors import UserError, raise_all
from harness.report import stats
from harness.report.keys import REPORT_KEYS, check_report_table, name_problems
from harness.report.runs import (
    SCORE_COLUMNS,
    declared_metrics,
    read_manifest,
    read_spec,
    runs_table,
)

REPO = Path(__file__).resolve().parents[2]
SR_NOTE = ("This study holds super-resolution runs: their numbers (PSNR in dB and SSIM, on "
           "Y) are in the Super-resolution section only; every other table, figure and "
           "answer is about the classification runs.")
# What comparisons and answers that need "ours" say when the study names none.
OURS_NOT_SET = ("no `[report] ours` is set, so no method is compared with the others; name "
                "one with `ours = \"METHOD\"` in the [report] table of study.toml, or pass "
                "`--ours METHOD`")


def user_error(field_: str, message: str) -> Exception:
    return UserError(field_, message)


def is_known(v) -> bool:
    """Neither None nor NaN."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def shown_path(path, written: str = "") -> str:
    """How a report names a file: relative to the repository when inside it, else as the
    user wrote it when that was relative, else its name alone (never an absolute path)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        pass
    if written and not Path(written).expanduser().is_absolute():
        return written
    return p.name


def cell_name(w: int, a: int, epochs: int | None = None) -> str:
    """A W/A cell and its budget as every table, figure and answer names it: 'W1/A32, 8 ep'."""
    return f"W{w}/A{a}" + (f", {epochs} ep" if epochs is not None else "")


# --------------------------------------------------------------------------- the study

@dataclass
class StudyRecords:
    """Everything the report knows about a study, read from its records."""
    name: str
    dir: Path
    spec: dict[str, Any]
    manifest: dict[str, Any] | None
    runs: Any                         # DataFrame: one row per run (present or missing)
    # of the final stage only; the runs of earlier stages (tuning trials, pretraining
    # sources: runs.py ``stage``) are in ``stage_runs``, never in a number
    metrics: dict[str, Any]           # run_id -> {column: array}, included runs only
    ours: str | None                  # the method compared with every other; None: not set
    setting_labels: dict[str, str]    # setting id -> "cifar10 / resnet20"
    reference: Any = None             # DataFrame of reported numbers, or None
    reference_path: str = ""         # as shown in the report (``shown_path``)
    reference_dataset: str = ""       # label matched in the CSV instead of data.name
    notes: list[str] = field(default_factory=list)   # warnings for the header
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)   # row labels, display order
    method_of: dict[str, str] = field(default_factory=dict)
    options_of: dict[str, dict[str, Any]] = field(default_factory=dict)
    # metrics.csv column -> (panel title, [low, high] or None) of the internal metrics the
    # included runs' methods declare and log; percentages (bounds [0, 100]) first
    internal_metrics: dict[str, tuple[str, Any]] = field(default_factory=dict)
    log_scale: set[str] = field(default_factory=set)  # internal metrics drawn on a log axis
    options: dict[str, Any] = field(default_factory=dict)       # the [report] table
    names: dict[str, str] = field(default_factory=dict)         # row label -> display name
    setting_names: dict[str, str] = field(default_factory=dict)  # setting id -> display
    stage_runs: Any = None            # DataFrame: the earlier stages' runs, like ``runs``
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def display(self, label: str) -> str:
        """A row's display name (the label itself for a row the study does not know)."""
        return self.names.get(label, label)

    def setting_name(self, setting: str) -> str:
        return self.setting_names.get(setting) or self.setting_labels.get(setting, setting)

    @property
    def ours_name(self) -> str:
        """How the report names "ours": the display name of its default row."""
        mine = [lab for lab in self.order if self.method_of.get(lab) == self.ours]
        if not self.ours:
            return ""
        default = self.default_variant(self.ours, mine)
        return self.display(default) if default else self.ours

    @property
    def included(self):
        if "included" not in self._cache:
            self._cache["included"] = self.runs[self.runs["included"]]
        return self._cache["included"]

    def settings(self, task: str = "classify") -> list[str]:
        """The settings of one task (super-resolution settings: ``task="sr"``)."""
        ids = self.runs["setting"].dropna().unique().tolist()
        return sorted((s for s in ids if task_of(s) == task),
                      key=lambda s: self.setting_labels.get(s, s))

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

    def seed_info(self, run_id: str) -> tuple[int | None, str]:
        """(seed, data-order fingerprint or "") of a run (summary.json seed_fingerprint)."""
        if "seed_info" not in self._cache:
            self._cache["seed_info"] = {
                r: (int(s) if is_known(s) else None, str(o) if is_known(o) else "")
                for r, s, o in zip(self.runs["run_id"], self.runs["seed"],
                                   self.runs["data_order"])}
        return self._cache["seed_info"].get(run_id, (None, ""))

    def group(self, setting: str, label: str, cell: tuple[int, int, int]) -> dict[str, Any]:
        return self.groups.get((setting, label, *cell), _EMPTY_GROUP)


_EMPTY_GROUP = {"acc": [], "seeds": [], "run_ids": [], "summary": stats.EMPTY}


def task_of(setting: str) -> str:
    """A setting's task: "sr" when its identity holds the SR scale (only SR runs record
    sr.* keys), else "classify"."""
    return "sr" if "sr.scale" in dict(json.loads(setting)) else "classify"


def cached_per_setting(fn):
    """Memoise a (study, setting) -> rows function on the study (tables and answers share)."""
    @functools.wraps(fn)
    def wrapper(st: StudyRecords, setting: str):
        key = (fn.__name__, setting)
        if key not in st._cache:
            st._cache[key] = fn(st, setting)
        return st._cache[key]

    return wrapper


# --------------------------------------------------------------------------- method_info

def _resolve_method_info(st: StudyRecords, infos: dict[str, dict[str, Any]]) -> None:
    """Per run: its method's display name (runs table ``display_name``) and internal
    metrics; keeps in ``st.metrics`` only the declared ones and describes them in
    ``st.internal_metrics``.

    A run without method_info takes that of another record of its method; when none has
    one (records written before runs recorded it), the method id names its rows and none
    of its metrics is an internal metric (the header says so: the report reads only the
    records, never today's method code)."""
    by_method: dict[str, dict[str, Any]] = {}
    for run_id, method in zip(st.runs["run_id"], st.runs["method"]):
        if infos.get(run_id):
            by_method.setdefault(method, infos[run_id])
    st.runs["display_name"] = [
        (infos.get(r) or by_method.get(m) or {}).get("display_name") or m
        for r, m in zip(st.runs["run_id"], st.runs["method"])]
    found: dict[str, tuple[str, Any]] = {}
    for run_id, method in zip(st.runs["run_id"], st.runs["method"]):
        cols = st.metrics.get(run_id)
        if cols is None:
            continue
        info = infos.get(run_id) or by_method.get(method) or {}
        declared = declared_metrics(info) or {}
        st.log_scale |= {str(c) for c in info.get("log_scale") or () if c in declared}
        st.metrics[run_id] = {c: v for c, v in cols.items()
                              if c in SCORE_COLUMNS or c == "epoch_time_s" or c in declared}
        for c in st.metrics[run_id]:
            if c in declared and c not in found:
                found[c] = declared[c]
    percent = [c for c, (_, b) in found.items() if is_percentage(b)]
    st.internal_metrics = {c: found[c] for c in percent + [c for c in found if c not in percent]}
    undeclared = sorted({str(m) for r, m, status in zip(st.runs["run_id"], st.runs["method"],
                                                        st.runs["status"])
                         if status != "missing" and m and m not in by_method})
    if undeclared:
        st.notes.append(f"the records of {', '.join(undeclared)} hold no method_info (written "
                        "before runs recorded their method's display name and internal "
                        "metrics): their rows are named by the method id and their internal "
                        "metrics are not drawn (the report reads only the records)")


def is_percentage(bounds) -> bool:
    """Declared on [0, 100]: drawn like the deployed accuracy (first, y-axis zoomed)."""
    return isinstance(bounds, (list, tuple)) and list(bounds) == [0, 100]


# --------------------------------------------------------------------------- load_study

def load_study(study_dir: Path, reference: str | None = None,
               reference_dataset: str | None = None, ours: str | None = None,
               jobs: int = 0, bootstrap: bool = True) -> StudyRecords:
    """Every record of a study, grouped by (setting, row, cell) with summaries.

    ``bootstrap=False`` defers the bootstrap intervals (see add_bootstraps): build_report
    computes them while the figures are being drawn."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise user_error("study", f"{study_dir} is not a folder; pass results/<study>")
    notes: list[str] = []
    spec = read_spec(study_dir)
    manifest = read_manifest(study_dir, notes)
    rep = _report_options(spec, notes)
    runs, metrics, infos = runs_table(study_dir, manifest, jobs)
    final = runs["stage"] == "final"
    st = StudyRecords(name=(manifest or {}).get("study") or spec.get("name") or study_dir.name,
                      dir=study_dir, spec=spec, manifest=manifest,
                      runs=runs[final].reset_index(drop=True), metrics=metrics,
                      ours=ours or rep.get("ours") or None, setting_labels={},
                      notes=notes, options=rep, stage_runs=runs[~final].reset_index(drop=True))
    _resolve_method_info(st, infos)
    _label_settings(st)
    if st.settings("sr") and st.settings():  # both tasks: which numbers are where
        st.notes.append(SR_NOTE)
    _order_rows(st)
    _check_names(st, ours)
    _display_names(st)
    for lab in st.order:  # a pretrained row says how its budget was spent
        if budget_text(st, lab):
            st.names[lab] = f"{st.names[lab]} ({budget_text(st, lab)})"
    _recipe_mismatches(st)
    _build_groups(st, bootstrap)
    ref = reference or rep.get("reference")
    if ref:
        st.reference, st.reference_path = _load_reference(st, ref, explicit=bool(reference))
    st.reference_dataset = reference_dataset or rep.get("reference_dataset") or ""
    return st


def init_epochs(st: StudyRecords, label: str) -> int:
    """The fp epochs a row's runs started from (0: from scratch; report/pretrain.py)."""
    epochs = st.runs.loc[st.runs["label"] == label, "init_epochs"].dropna()
    return int(max(epochs, default=0))


def budget_text(st: StudyRecords, label: str) -> str:
    """How a pretrained row spent its budget: '4 fp + 8 ep' (one budget), '4 fp ep + the
    rest of each budget' (several); '' for a row from scratch."""
    n = init_epochs(st, label)
    if not n:
        return ""
    budgets = sorted({int(e) for e in st.runs.loc[st.runs["label"] == label, "epochs"].dropna()})
    if len(budgets) == 1:
        return f"{n} fp + {budgets[0] - n} ep"
    return f"{n} fp ep + the rest of each budget"


def _report_options(spec: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """study.toml's [report] table: a key of the wrong type is a one-line error; a key the
    report does not know is noted in the header (another version's key is not fatal)."""
    table = spec.get("report") or {}
    problems = check_report_table(table)
    for f, msg in problems:
        if f == "report" or f.split(".", 1)[1] in REPORT_KEYS:
            raise user_error(f, msg + " in study.toml")
    notes += [f"study.toml [report] key `{f.split('.', 1)[1]}` is not one the report reads "
              f"({', '.join(REPORT_KEYS)}); it is ignored" for f, _ in problems]
    return {k: v for k, v in table.items() if k in REPORT_KEYS}


def _display_names(st: StudyRecords) -> None:
    """Row and setting display names: declared by the methods, renamed by [report]."""
    methods = dict(st.options.get("methods") or {})
    variants = dict(st.options.get("variants") or {})
    settings = dict(st.options.get("settings") or {})
    declared = dict(zip(st.runs["method"], st.runs["display_name"]))
    taken: set[str] = set()
    for lab in st.order:
        m = st.method_of[lab]
        mname = methods.get(m) or declared.get(m) or m
        if lab in variants:
            name = variants[lab]
        elif lab == m:
            name = mname
        else:
            rest = lab[len(m) + 1:] if lab.startswith(m) and lab[len(m):len(m) + 1] in "-_" \
                else lab
            name = f"{mname} ({rest or lab})"
        if name in taken:  # two rows may not print alike
            name = f"{name} ({lab})"
        taken.add(name)
        st.names[lab] = name
    for s in st.setting_labels:
        ident = dict(json.loads(s))
        label = st.setting_labels[s]
        if label in settings:
            st.setting_names[s] = settings[label]
            continue
        data, model = (str(ident.get(k)) for k in ("data.name", "model.name"))
        st.setting_names[s] = (f"{settings.get(data, data)} / {settings.get(model, model)}"
                               + label[len(f"{data} / {model}"):])


def known_names(st: StudyRecords) -> dict[str, set[str]]:
    """The names [report] tables may use: the study's methods, variants (rows) and settings
    (labels, data and model names)."""
    return {"methods": set(st.method_of.values()), "variants": set(st.order),
            "settings": set(st.setting_labels.values()) | {
                str(dict(json.loads(s)).get(k)) for s in st.setting_labels
                for k in ("data.name", "model.name")}}


def _check_names(st: StudyRecords, ours_flag: str | None) -> None:
    """Every name of [report] (and --ours) names something of the study: a typo is a
    one-line error with "did you mean", never a silently empty comparison."""
    table = {**st.options, "ours": st.ours} if st.ours else dict(st.options)
    problems = name_problems(table, known_names(st), "--ours" if ours_flag else "report.ours")
    where = {f: "" if f == "--ours" else " in study.toml" for f, _ in problems}
    raise_all([user_error(f, msg + where[f]) for f, msg in problems])


def _label_settings(st: StudyRecords) -> None:
    """'cifar10 / resnet20', plus any other data/model key that differs between settings."""
    ids = st.runs["setting"].dropna().unique().tolist()
    dicts = {s: dict(json.loads(s)) for s in ids}
    varying = sorted({k for d in dicts.values() for k in d
                      if len({json.dumps(x.get(k)) for x in dicts.values()}) > 1}
                     - {"data.name", "model.name", "sr.scale"})
    for s, d in dicts.items():
        extra = ", ".join(f"{k}={d.get(k)}" for k in varying)
        scale = f" x{d['sr.scale']}" if "sr.scale" in d else ""
        st.setting_labels[s] = f"{d.get('data.name')} / {d.get('model.name')}{scale}" + (
            f" ({extra})" if extra else "")
    # runs without a readable config (missing, corrupt) join their variant's only setting
    known = st.runs.dropna(subset=["setting"])
    for i in st.runs.index[st.runs["setting"].isna()]:
        opts = known.loc[known["label"] == st.runs.at[i, "label"], "setting"].unique()
        if len(opts) == 1:
            st.runs.at[i, "setting"] = opts[0]


def _order_rows(st: StudyRecords) -> None:
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


def _recipe_mismatches(st: StudyRecords) -> None:
    """Inside one cell every included run should share the recipe: list keys that differ."""
    inc = st.included
    for (setting, w, a, e), df in inc.groupby(["setting", "w_bits", "a_bits", "epochs"]):
        if df["recipe"].nunique() <= 1:
            continue
        dicts = [dict(json.loads(r)) for r in df["recipe"]]
        keys = sorted({k for d in dicts for k in d
                       if len({json.dumps(x.get(k)) for x in dicts}) > 1})
        for k in keys:
            by_value: dict[str, set] = {}
            for d, lab in zip(dicts, df["label"]):
                by_value.setdefault(json.dumps(d.get(k)), set()).add(lab)
            st.mismatches.append({"setting": setting, "cell": (int(w), int(a), int(e)), "key": k,
                                  "values": {v: sorted(ls) for v, ls in by_value.items()}})


def add_bootstraps(st: StudyRecords) -> None:
    for g in st.groups.values():
        if g["summary"].boot is None:
            g["summary"] = stats.with_bootstrap(g["summary"], g["acc"])


def _build_groups(st: StudyRecords, bootstrap: bool = True) -> None:
    inc = st.included
    for key, df in inc.groupby(["setting", "label", "w_bits", "a_bits", "epochs"]):
        if task_of(key[0]) != "classify":  # SR runs: harness/report/sr.py groups them
            continue
        df = df.sort_values("seed")
        acc = [float(x) for x in df["final_acc"]]
        st.groups[(key[0], key[1], int(key[2]), int(key[3]), int(key[4]))] = {
            "acc": acc, "seeds": df["seed"].tolist(), "run_ids": df["run_id"].tolist(),
            "summary": stats.describe(acc, bootstrap, bounds=stats.PERCENT)}


# --------------------------------------------------------------------------- reported numbers

def _resolve_reference(st: StudyRecords, ref: str) -> Path | None:
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


def _load_reference(st: StudyRecords, ref: str, explicit: bool):
    """Reported numbers: a CSV with method, w_bits, a_bits and top1 (or acc/accuracy),
    optionally dataset, model, source; '#' lines are comments."""
    path = _resolve_reference(st, ref)
    if path is None:
        if explicit:
            raise user_error("--reference", f"{ref!r} not found; pass an existing CSV")
        st.notes.append(f"reference CSV {ref!r} from study.toml not found (looked next to the "
                        "spec in studies/, the study folder, the working directory and the "
                        "repository); reported numbers are left out")
        return None, ""
    try:
        data = files.read_bytes(path, files.RECORD_MAX_BYTES)  # a regular file, bounded
        df = pd.read_csv(io.BytesIO(data), comment="#", skipinitialspace=True)
    except (OSError, ValueError) as e:
        raise user_error("reference", f"{path} is not a readable CSV: {e}")
    if not isinstance(df.index, pd.RangeIndex):  # pandas shifts every column right then
        raise user_error("reference", f"{path}: a row has more fields than the header "
                         f"{list(df.columns)}; fix the CSV")
    df.columns = [c.strip().lower() for c in df.columns]
    acc = next((c for c in ("top1", "acc", "accuracy", "top1_acc") if c in df.columns), None)
    need = [c for c in ("method", "w_bits", "a_bits") if c not in df.columns]
    if need or acc is None:
        raise user_error("reference", f"{path} needs columns method, w_bits, a_bits and top1 "
                         f"(missing: {need + ([] if acc else ['top1'])})")
    df = df.rename(columns={acc: "top1"})
    top1 = pd.to_numeric(df["top1"], errors="coerce")
    bad = df.index[top1.isna() & df["top1"].notna()]
    if len(bad):  # an empty cell is a number not reported; a word is a mistake
        raise user_error("reference", f"{path}: {acc} {df['top1'][bad[0]]!r} on data row "
                         f"{bad[0] + 1} is not a number; fix the CSV")
    df["top1"] = top1
    return df.dropna(subset=["top1"]), shown_path(path, ref)


def reported(st: StudyRecords, setting: str, label: str, w: int,
             a: int) -> tuple[float, str] | None:
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
