"""The run-directory contract. Everything downstream (sweep status, report) reads only this.

RUN_DIR/
  config.json      fully resolved config + config_hash
  metrics.csv      one row per epoch: METRIC_COLUMNS, then the method's scalars
  summary.json     RunSummary: status, accuracies, timings, env, costs
  checkpoint.pt    model, optimizer, scheduler, method state, RNG states, epoch, metric rows
  log.txt          human-readable log (appended)
  deployed.pt      written by `python -m harness export`

Every file is replaced atomically (write a temp file in the same folder, fsync, rename), so
a killed process leaves either the old or the new file, never half of one. log.txt is an
append-only log (a torn last line at worst).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
                  "epoch_time_s", "samples_per_s"]
TIMING_COLUMNS = ["epoch_time_s", "samples_per_s"]  # the only columns that vary run to run
STATUSES = ("running", "completed", "failed", "diverged", "interrupted")
PEAK_MEM_KINDS = ("cuda_max_allocated", "cpu_peak_rss")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files 0600


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def _clean(obj: Any) -> Any:
    """JSON cannot hold NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    _atomic(path, lambda f: torch.save(obj, f))


def load_tensors(path: Path, device: Any = "cpu") -> Any:
    """torch.load that can never run code: ``weights_only=True`` accepts tensors and plain
    Python containers and numbers only, so a crafted checkpoint.pt or deployed.pt shared by
    someone else raises instead of executing (checkpoints are written to fit this)."""
    import torch

    return torch.load(path, map_location=device, weights_only=True)


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    _atomic(path, lambda f: np.save(f, arr))


def metrics_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ",".join(METRIC_COLUMNS) + "\n"
    extra = [k for k in rows[0] if k not in METRIC_COLUMNS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS + extra, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    """Floats (numpy and torch scalars included) at full precision; others as they are."""
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    return repr(float(v)) if isinstance(v, float) else v


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(run_dir) / "metrics.csv", metrics_csv(rows))


def ensure_writable_dir(path: Path, field: str, fix: str) -> None:
    """Create ``path`` and check a file can be written there, or raise a UserError."""
    from methods.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(field, f"{str(path)!r} is a file; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(field, f"cannot write to {str(path)!r} ({e.strerror}); {fix}") from None


def append_log(run_dir: Path, line: str) -> None:
    with open(Path(run_dir) / "log.txt", "a") as f:
        f.write(line.rstrip("\n") + "\n")


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


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
    with which code the run ran (harness.env.environment). Keys this version does not know
    are kept in ``extra`` and written back unchanged.
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
    # what the deployed network costs to run and the run cost to train (harness.opcount,
    # measured at the run's start): {"macs", "bops", "flops", "ops", "size_bytes",
    # "code_bytes", "input_shape", "num_classes"} and {"flops_per_step", "epoch_hook_flops",
    # "end_hook_flops", "total_flops", "steps_per_epoch", "step_time_s", "device_hours",
    # "world_size", "threads"}; empty in records that predate them
    inference_cost: dict[str, Any] = field(default_factory=dict)
    training_cost: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name != "extra"}
        if not d["error"]:
            del d["error"]
        return {**self.extra, **d}

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
        for name in ("env", "inference_cost", "training_cost"):
            if not isinstance(known.get(name, {}), dict):
                raise ValueError(f"{name} is not an object")
        if known.get("error") is None:
            known.pop("error", None)
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})


    @classmethod
    def from_rows(cls, status: str, rows: list[dict[str, Any]], epochs: int,
                  final_test_acc: float | None = None, **fields: Any) -> "RunSummary":
        """The summary of a run whose metrics.csv holds ``rows`` (best accuracy and mean
        epoch time come from them); ``fields`` fill the rest (costs, env, ...)."""
        accs = [r["test_acc"] for r in rows] + ([final_test_acc] if final_test_acc is not None
                                                 else [])
        times = [r["epoch_time_s"] for r in rows]
        return cls(status=status, epochs=epochs, epochs_completed=len(rows),
                   final_test_acc=final_test_acc, best_test_acc=max(accs) if accs else None,
                   mean_epoch_time_s=sum(times) / len(times) if times else None, **fields)


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    atomic_write_json(Path(run_dir) / "summary.json", summary.to_json())


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
    return RunSummary.from_json(read_json(Path(run_dir) / "summary.json"))


# --------------------------------------------------------------------------- loading records

@dataclass
class RunRecord:
    """One run as the report and the sweep see it. ``problem`` is set when it is unusable."""

    path: Path
    config: dict[str, Any] | None = None
    summary: RunSummary | None = None
    metrics: Any = None  # pandas.DataFrame
    problem: str = ""

    @property
    def status(self) -> str:
        if self.problem:
            return "corrupt"
        if self.summary is None:
            return "pending"
        return self.summary.status


def load_run(run_dir: Path, with_metrics: bool = True) -> RunRecord:
    """Read a run directory; corrupt or partial files become ``problem``, never an exception."""
    import pandas as pd

    rec = RunRecord(Path(run_dir))
    cfg_path, sum_path, met_path = (rec.path / n for n in ("config.json", "summary.json",
                                                           "metrics.csv"))
    if not cfg_path.exists():
        rec.problem = "no config.json"
        return rec
    try:
        rec.config = read_json(cfg_path)
    except (OSError, ValueError) as e:
        rec.problem = f"config.json unreadable: {e}"
        return rec
    if not sum_path.exists():
        return rec
    try:
        rec.summary = RunSummary.from_json(read_json(sum_path))
    except (OSError, ValueError, TypeError) as e:
        rec.problem = f"summary.json unreadable: {e}"
        return rec
    if with_metrics and met_path.exists():
        try:
            rec.metrics = pd.read_csv(met_path)
        except (OSError, ValueError) as e:
            rec.problem = f"metrics.csv unreadable: {e}"
            return rec
        missing = [c for c in METRIC_COLUMNS if c not in rec.metrics.columns]
        if missing:
            rec.problem = f"metrics.csv lacks columns {missing}"
            return rec
    if rec.summary.status == "completed":
        done = rec.summary.epochs_completed
        want = (rec.config or {}).get("epochs")
        if done != want:
            rec.problem = f"completed with {done} of {want} epochs"
        elif with_metrics and (rec.metrics is None or len(rec.metrics) != want):
            n = 0 if rec.metrics is None else len(rec.metrics)
            rec.problem = f"metrics.csv has {n} rows for {want} epochs"
        elif rec.summary.final_test_acc is None:
            rec.problem = "completed without final_test_acc"
    return rec
