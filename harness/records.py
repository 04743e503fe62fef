"""The run-directory contract. Everything downstream (sweep status, report) reads only this.

RUN_DIR/
  config.json      fully resolved config + config_hash
  metrics.csv      one row per epoch: METRIC_COLUMNS (an SR run: SR_METRIC_COLUMNS), then
                   the method's scalars
  summary.json     RunSummary: status, accuracies (an SR run: task, final PSNR...), timings,
                   env, costs
  checkpoint.pt    model, optimizer, scheduler, method state, RNG states, epoch, metric rows
  log.txt          human-readable log (appended)
  deployed.pt      written by `python -m harness export`
  sr_crop*.png     an SR run's output, HR and bicubic crops (harness/tasks/), for reports

Every file is replaced atomically (write a temp file in the same folder, fsync, rename), so
a killed process leaves either the old or the new file, never half of one. log.txt is an
append-only log (a torn last line at worst).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import files
from harness.config import DEFAULT_TASK
from harness.tasks import base as tasks

TIMING_COLUMNS = ["epoch_time_s", "samples_per_s"]  # the only columns that vary run to run
STATUSES = ("running", "completed", "failed", "diverged", "interrupted")
PEAK_MEM_KINDS = ("cuda_max_allocated", "cpu_peak_rss")
METRICS_MAX_BYTES = 256 * 2**20  # metrics.csv (10^6 epochs of ~100 bytes fit)


def metric_columns(config: dict[str, Any] | None) -> list[str]:
    """The standard metrics.csv columns of a run with this config.json (its task's)."""
    task = tasks.load_all().get((config or {}).get("task", DEFAULT_TASK))
    return list(task.columns) if task else []


def metrics_csv(rows: list[dict[str, Any]], columns: list[str] | tuple[str, ...] = ()) -> str:
    """metrics.csv of ``rows``: the standard ``columns`` first (default: the default task's),
    then the method's."""
    columns = list(columns) or list(tasks.get(DEFAULT_TASK).columns)
    if not rows:
        return ",".join(columns) + "\n"
    extra = [k for k in rows[0] if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns + extra, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    """Floats (numpy and torch scalars included) at full precision; others as they are."""
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    return repr(float(v)) if isinstance(v, float) else v


def write_metrics(run_dir: Path, rows: list[dict[str, Any]],
                  columns: list[str] | tuple[str, ...] = ()) -> None:
    files.atomic_write_text(Path(run_dir) / "metrics.csv", metrics_csv(rows, columns))


# --------------------------------------------------------------------------- summary.json

@dataclass
class RunSummary:
    """summary.json: the one schema every writer (trainer, tests, the report's benchmark)
    and every reader (status, sweep, report, export) goes through.

    ``status``: running (being trained, or killed without a last word), completed, failed
    (an exception; ``error`` says which), diverged (non-finite loss), interrupted (stopped
    by a signal after writing its last checkpoint: a re-run resumes it).
    Accuracies are percentages of the deployed network; times in seconds; memory in MiB
    (``peak_mem_kind`` says what was measured); sizes in bytes. ``env`` describes where and
    with which code the run ran (harness.run.env.environment). Keys this version does not know
    are kept in ``extra`` and written back unchanged.

    A run of another task than classification (``task``, e.g. "sr") has no accuracies: its
    result is ``final_metric``/``best_metric`` of the metrics.csv column ``metric`` (SR:
    "test_psnr", dB) and ``final_metrics`` (every final test column, and for SR the bicubic
    floor). A classification summary.json does not hold these five keys.
    """

    status: str
    epochs: int
    epochs_completed: int = 0
    final_test_acc: float | None = None
    best_test_acc: float | None = None
    wall_time_s: float = 0.0
    mean_epoch_time_s: float | None = None
    peak_mem_mb: float | None = None
    peak_mem_kind: str = ""
    param_bytes: int | None = None
    method_param_bytes: int | None = None
    optimizer_state_bytes: int | None = None
    method_optimizer_state_bytes: int | None = None
    config_hash: str = ""
    env: dict[str, Any] = field(default_factory=dict)
    # the method's self-description for reports: {"display_name": str, "internal_metrics":
    # {column: [title, [low, high] or null]}} (methods.base.Method.display_name, ...)
    method_info: dict[str, Any] = field(default_factory=dict)
    # what identifies the training data: source files, subset indices, content hash
    # (harness.tasks.classify.data.fingerprint)
    data_fingerprint: dict[str, Any] = field(default_factory=dict)
    # what the deployed network costs to run and the run cost to train (harness.costs.opcount,
    # measured at the run's start): {"macs", "bops", "flops", "ops", "size_bytes",
    # "code_bytes", "input_shape", "num_classes"} and {"flops_per_step", "epoch_hook_flops",
    # "end_hook_flops", "total_flops", "steps_per_epoch", "step_time_s", "device_hours",
    # "world_size", "threads"}; empty in records that predate them
    inference_cost: dict[str, Any] = field(default_factory=dict)
    training_cost: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    task: str = "classify"
    metric: str = ""
    final_metric: float | None = None
    best_metric: float | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    # what the run's seed controlled, hashed before the first step (harness.run.seeding):
    # {"data_order": ..., "init": ...}; empty in records that predate it
    seed_fingerprint: dict[str, str] = field(default_factory=dict)
    # what the method changed in the network after its last epoch (methods.base.Method.
    # changed_after_training, e.g. SLB's end-of-training BN recalibration; "" = nothing): only
    # then may the final score differ from the last epoch's. None: a record written before the
    # trainer said (the check is skipped for it)
    changed_after_training: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name != "extra"}
        if not d["error"]:
            del d["error"]
        if d["changed_after_training"] is None:
            del d["changed_after_training"]
        if _result_fields(self.task)[0] != "final_metric":
            for k in GENERIC_RESULT_FIELDS:  # a task with result fields of its own
                del d[k]
        return {**self.extra, **d}

    @property
    def result(self) -> float | None:
        """The final score of the task's headline metric (accuracy %, PSNR dB, ...)."""
        return getattr(self, _result_fields(self.task)[0])

    def score_text(self) -> str:
        """The final headline score with its unit ('98.00%', '28.41 dB'); '' when none."""
        card = tasks.load_all().get(self.task)
        if card is None or self.result is None:
            return ""
        return card.headline().fmt(self.result)

    @property
    def best(self) -> float | None:
        return getattr(self, _result_fields(self.task)[1])

    @classmethod
    def from_json(cls, d: Any) -> "RunSummary":
        """Parse a summary.json object; ValueError names what is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if d.get("status") not in STATUSES:
            raise ValueError(f"unknown status {d.get('status')!r}")
        if not isinstance(d.get("epochs"), int) or isinstance(d.get("epochs"), bool):
            raise ValueError(f"epochs is {d.get('epochs')!r}, not an integer")
        known = {k: v for k, v in d.items() if k in names}
        for f in dataclasses.fields(cls):
            if f.name in known and f.name != "extra":
                _check_type(f.name, known[f.name], f.type)
        if known.get("error") is None:
            known.pop("error", None)
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})


    @classmethod
    def from_rows(cls, status: str, rows: list[dict[str, Any]], epochs: int,
                  final_test_acc: float | None = None, **fields: Any) -> "RunSummary":
        """The summary of a run whose metrics.csv holds ``rows`` (best accuracy and mean
        epoch time come from them); ``fields`` fill the rest (costs, env, ...)."""
        accs = [r["test_acc"] for r in rows if "test_acc" in r] + (
            [final_test_acc] if final_test_acc is not None else [])
        times = [r["epoch_time_s"] for r in rows]
        return cls(status=status, epochs=epochs, epochs_completed=len(rows),
                   final_test_acc=final_test_acc, best_test_acc=max(accs) if accs else None,
                   mean_epoch_time_s=sum(times) / len(times) if times else None, **fields)


def _result_fields(task: str) -> tuple[str, str]:
    """The summary fields holding a task's final and best headline score (an unknown task,
    in a record from elsewhere: the generic ones)."""
    card = tasks.load_all().get(task)
    return (card.final_field, card.best_field) if card else ("final_metric", "best_metric")


# where a task without result fields of its own (harness/tasks/base.py: final_field) keeps
# its result; left out of the summary of a task with its own (classification's accuracies)
GENERIC_RESULT_FIELDS = ("task", "metric", "final_metric", "best_metric", "final_metrics")


def _check_type(name: str, value: Any, annotation: str) -> None:
    """summary.json values must have their field's type (numbers finite)."""
    if value is None and "None" in annotation:
        return
    if annotation.startswith("dict"):
        ok = isinstance(value, dict)
    elif annotation.startswith("str"):
        ok = isinstance(value, str)
    elif annotation.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)
    else:
        ok = True
    if not ok:
        raise ValueError(f"{name} is {value!r}, not a {annotation.split(' ')[0]}")


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    files.atomic_write_json(Path(run_dir) / "summary.json", summary.to_json())


def record_failure(run_dir: Path, status: str, error: str, epochs: int, config_hash: str,
                   env: dict[str, Any]) -> None:
    """Mark a run failed (or interrupted) when the trainer has no state to summarise (it
    could not even start): what an earlier summary said (epochs done, times) is kept."""
    try:
        old = read_summary(run_dir)
    except (OSError, ValueError, TypeError):
        old = RunSummary(status=status, epochs=epochs)
    write_summary(run_dir, dataclasses.replace(old, status=status, error=error, epochs=epochs,
                                               config_hash=config_hash, env=env))


def read_summary(run_dir: Path) -> RunSummary:
    """RUN_DIR/summary.json as a RunSummary (OSError/ValueError when unreadable)."""
    return RunSummary.from_json(files.read_json(Path(run_dir) / "summary.json"))


# --------------------------------------------------------------------------- loading records

@dataclass
class RunRecord:
    """One run as status, sweep and report see it. ``problem`` is set when it is unusable."""

    path: Path
    config: dict[str, Any] | None = None
    summary: RunSummary | None = None
    metrics: Any = None  # the columns asked for (completed runs): DataFrame or arrays
    problem: str = ""

    @property
    def status(self) -> str:
        if self.problem:
            return "corrupt"
        if self.summary is None:
            return "pending"
        return self.summary.status


Columns = Callable[["RunRecord", list[str]], list[str]] | list[str] | None


def load_run(run_dir: Path, with_metrics: bool = True, columns: Columns = None,
             in_study: bool = False, arrays: bool = False) -> RunRecord:
    """Read and validate a run directory: the one validator behind `status`, `sweep` and
    `report`. Corrupt or partial files become ``problem`` (the run is then "corrupt", shown
    with that reason, repaired by the next sweep and never counted), never an exception.

    A run is completed only when its three records agree: config.json is an object with a
    config hash; summary.json parses as a RunSummary with the same hash, epochs_completed
    equal to the config's epochs, a final score (accuracy in [0, 100]; another task's
    ``final_metric``) equal to the last epoch's unless the method changed the network after
    it (``changed_after_training``; records older than that field are not held to it), and a
    best score equal to the best of the epochs and the final one; metrics.csv has its task's
    standard columns, one row per epoch numbered 1..n, and finite numbers in every standard
    column.
    ``columns``: the metrics columns to load and check (a list, or a function of the record
    and the CSV header); None = all. ``with_metrics=False`` still validates the standard
    columns but keeps no DataFrame. ``in_study``: RUN_DIR is a study's ``runs/<id>``, which
    must be a real folder there (reached through a link, to anywhere, the run is corrupt).
    ``arrays``: metrics as {column: float array} (text that is not a number: nan) instead of
    a DataFrame (a report reads 10^4 of them)."""
    rec = RunRecord(Path(run_dir))
    if in_study and not in_place(rec.path):
        rec.problem = (f"runs/{rec.path.name} resolves to {os.path.realpath(rec.path)!r} through "
                       "a symbolic link; a study's runs must be real folders inside it: "
                       "replace the link with the run folder or remove it")
        return rec
    rec.problem = _read_config(rec) or _read_summary(rec)
    if rec.problem or rec.summary is None:
        return rec
    if rec.summary.status == "completed":
        rec.problem = _check_completed(rec, with_metrics, columns, arrays)
    return rec


def _check_columns(df, numeric, standard: list[str], want: int) -> str:
    """The standard columns finite numbers, the epochs numbered 1..n (any column types)."""
    for c in standard:  # the method's own columns may hold nan (nothing to report)
        bad = numeric[c].isna() | ~numeric[c].abs().lt(float("inf"))
        if bad.any():
            i = int(bad.to_numpy().argmax())
            return f"metrics.csv row {i + 1}: {c} = {df[c].iloc[i]!r} is not a finite number"
    if numeric["epoch"].tolist() != list(range(1, want + 1)):
        return "metrics.csv epochs are not numbered 1..n"
    return ""


def _check_numbers(df, standard: list[str], want: int) -> str:
    """What ``_check_columns`` checks, on columns that are all numbers, in one array (a
    report reads 10^4 records)."""
    import numpy as np

    values = df.to_numpy(dtype=float)[:, [df.columns.get_loc(c) for c in standard]]
    if not np.isfinite(values).all():
        return _check_columns(df, df, standard, want)  # the first one, named
    if not np.array_equal(values[:, standard.index("epoch")], np.arange(1, want + 1)):
        return "metrics.csv epochs are not numbered 1..n"
    return ""


def in_place(run_dir: Path) -> bool:
    """Whether a study's ``runs/<id>`` is a real folder there (neither it nor ``runs`` a
    link): its resolved path is the resolved study folder's ``runs/<id>``."""
    run_dir = Path(run_dir)  # two lstat calls (a report makes 10^4), not two realpath walks:
    # a link never resolves to its own path, so "resolves in place" is "neither is a link"
    return (run_dir.name not in ("", ".", "..") and run_dir.parent.name == "runs"
            and not os.path.islink(run_dir) and not os.path.islink(run_dir.parent))


def _read_config(rec: RunRecord) -> str:
    path = rec.path / "config.json"
    if not path.exists():
        return "no config.json"
    try:
        rec.config = files.read_json(path)
    except (OSError, ValueError) as e:
        return f"config.json unreadable: {e}"
    if not isinstance(rec.config, dict) or not isinstance(rec.config.get("config_hash"), str):
        rec.config = None
        return "config.json is not a run config (no config_hash)"
    epochs = rec.config.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        return f"config.json has epochs = {str(epochs)[:80]!r}"
    if not isinstance(rec.config.get("task", DEFAULT_TASK), str):
        return f"config.json has task = {str(rec.config.get('task'))[:80]!r}, not a name"
    return ""


def _read_summary(rec: RunRecord) -> str:
    path = rec.path / "summary.json"
    if not path.exists():
        return ""
    try:
        rec.summary = RunSummary.from_json(files.read_json(path))
    except (OSError, ValueError, TypeError) as e:
        return f"summary.json unreadable: {e}"
    if rec.summary.config_hash and rec.summary.config_hash != rec.config["config_hash"]:
        return (f"summary.json belongs to config {rec.summary.config_hash}, config.json is "
                f"{rec.config['config_hash']}")
    return ""


def _bounds(bounds: tuple[float | None, float | None]) -> str:
    lo, hi = bounds
    return f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _val_split(config: dict[str, Any]) -> bool:
    """Whether a config.json holds out a validation split (its metrics then have val columns)."""
    data = config.get("data")
    return isinstance(data, dict) and bool(data.get("val_split"))


# nan and inf as pandas reads them; numpy also reads NAN, +nan, " inf" (text to pandas)
_PANDAS_NONFINITE = re.compile(r"[+-]?(?i:inf|infinity)|-?(?:nan|NaN)")


def _plain_numbers(text: str):
    """(header, float array) of a CSV that is only a header of distinct plain names and rows
    of numbers, one per column (what the trainer writes), else None and pandas reads it
    (quoting, empty cells, text, ragged rows: pandas' rules and errors apply)."""
    import numpy as np

    first, _, body = text.partition("\n")
    if not text.isascii() or any(ch in text for ch in '"\r\x1c\x1d\x1e\x1f') or "_" in body:
        return None  # quoted, Windows lines, a BOM, 1_000, or what numpy strips as whitespace
        # and pandas keeps ("\xa00.1"): text to pandas, not a number
    header = first.split(",")
    if not first or len(set(header)) != len(header) or any(
            not c or c != c.strip() or c.startswith("Unnamed") for c in header):
        return None
    if not body.strip("\n"):
        return header, np.empty((0, len(header)))
    try:  # numpy's C reader: blank lines skipped, a ragged row or a non-number refused
        values = np.loadtxt(io.StringIO(body), delimiter=",", comments=None, ndmin=2,
                            dtype=float)
    except ValueError:  # an empty cell, text or a ragged row: pandas decides
        return None
    if values.shape[1] != len(header) or not np.isfinite(values).all() and not all(
            _PANDAS_NONFINITE.fullmatch(cell) for cell in set(body.replace("\n", ",").split(","))
            if "n" in cell or "N" in cell):  # every nan and inf has an n
        return None  # nan or inf spelled as pandas does not read them: pandas decides
    return header, values


def _coerced(col):
    """pd.to_numeric(col, errors="coerce"), which raises on the Python int pandas reads for
    an integer beyond float range ("1" * 400): that one is +-inf, as numpy reads it."""
    import pandas as pd

    try:
        return pd.to_numeric(col, errors="coerce")
    except OverflowError:
        return pd.to_numeric(col.map(lambda v: (math.inf if v > 0 else -math.inf)
                                     if isinstance(v, int) and abs(v) > sys.float_info.max
                                     else v), errors="coerce")


def _read_metrics(rec: RunRecord, standard: list[str], columns: Columns, want: int
                  ) -> str | tuple[list[str], list[str], Any]:
    """metrics.csv checked: (columns read, columns wanted, float array of them; text that is
    not a number is nan) or the problem. The standard columns come first."""
    import numpy as np
    import pandas as pd

    path = rec.path / "metrics.csv"
    try:
        st = os.stat(path)  # a FIFO would block pandas: never opened
        if not stat.S_ISREG(st.st_mode):
            return "metrics.csv is not a regular file"
        if st.st_size > METRICS_MAX_BYTES:
            return f"metrics.csv is larger than the limit of {METRICS_MAX_BYTES:,} bytes"
        text = files.read_bytes(path, METRICS_MAX_BYTES).decode("utf-8")
        plain = _plain_numbers(text)  # the trainer's files: parsed here, not by pandas
        header = plain[0] if plain else pd.read_csv(io.StringIO(text), nrows=0).columns.tolist()
        missing = [c for c in standard if c not in header]
        if missing:
            return f"metrics.csv lacks columns {missing}"
        wanted = header if columns is None else \
            columns(rec, header) if callable(columns) else [c for c in columns if c in header]
        use = list(dict.fromkeys(standard + [c for c in wanted if c in header]))
        df = None if plain else pd.read_csv(io.StringIO(text), usecols=use)[use]
    except FileNotFoundError:
        return "metrics.csv is missing"
    except (OSError, ValueError, pd.errors.ParserError) as e:
        return f"metrics.csv unreadable: {str(e).splitlines()[0][:160]}"
    if df is None:
        values = plain[1][:, [header.index(c) for c in use]]
        if (len(values) == want and np.isfinite(values[:, :len(standard)]).all()
                and np.array_equal(values[:, use.index("epoch")], np.arange(1, want + 1))):
            return use, wanted, values  # all well: no DataFrame needed to say what is wrong
        df = pd.DataFrame(values, columns=use)
    if len(df) != want:
        return f"metrics.csv has {len(df)} rows for {want} epochs"
    if all(t.kind in "iuf" for t in df.dtypes):  # numbers only (as written): checked at once
        numeric, problem = df, _check_numbers(df, standard, want)
    else:
        numeric = df.apply(_coerced)
        problem = _check_columns(df, numeric, standard, want)
    return problem or (use, wanted, numeric.to_numpy(dtype=float))


def _check_completed(rec: RunRecord, with_metrics: bool, columns: Columns,
                     arrays: bool = False) -> str:
    import pandas as pd  # only here: status of a study without completed runs needs none

    s, want = rec.summary, rec.config["epochs"]
    task = tasks.load_all().get(rec.config.get("task", DEFAULT_TASK))
    if task is None:
        return f"config.json names an unknown task {rec.config.get('task')!r}"
    standard = list(task.columns) + list(task.val_columns() if _val_split(rec.config) else ())
    if s.epochs_completed != want:
        return f"completed with {s.epochs_completed} of {want} epochs"
    if s.task != task.name:
        return f"summary.json is of task {s.task!r}, config.json of {task.name!r}"
    headline = task.headline()
    score, final, best = headline.column, _number(s.result), _number(s.best)
    if task.final_field == "final_metric" and s.metric != score:
        return f"final_metric is {s.final_metric!r} for metric {s.metric!r}"
    if final is None or not headline.within(final):
        return (f"{task.final_field} is {s.result!r}, not a {headline.title} in "
                f"{_bounds(headline.bounds)}")
    table = _read_metrics(rec, standard, columns, want)
    if isinstance(table, str):
        return table
    use, wanted, values = table
    col = values[:, use.index(score)]
    last = float(col[-1])
    if s.changed_after_training == "" and abs(final - last) > 1e-6 * max(1.0, abs(last)):
        return (f"the final {score} in summary.json ({final!r}) is not the last epoch's "
                f"({last!r}) and the method changed nothing after training")
    pick = max if headline.higher_is_better else min
    top = pick(col.max() if pick is max else col.min(), final)
    if best is None or abs(best - top) > 1e-6 * max(1.0, abs(top)):
        return f"the best {score} in summary.json ({best!r}) disagrees with the metrics ({top!r})"
    if with_metrics:
        keep = [i for i, c in enumerate(use) if c in wanted or c in ("epoch", score)]
        names = [use[i] for i in keep]
        rec.metrics = dict(zip(names, values[:, keep].T.copy())) if arrays else \
            pd.DataFrame(values[:, keep], columns=names)
    return ""
