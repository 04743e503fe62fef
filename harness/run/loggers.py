"""Logging sinks beside metrics.csv (which stays the source of truth for every report).

A sink gets the run's resolved config once, then every metrics row (epoch, losses,
accuracies, timings, the method's scalars) as it is written. Turn sinks on with the config
key ``loggers`` (e.g. ``--set 'loggers=["tensorboard", "wandb"]'``). A tracker is one class
with ``start``/``log``/``close`` (and optionally ``check``) and one entry in SINKS; a sink that
needs a package names it (``package``, ``extra``): a config asking for it without the package
installed is refused before any work, with the pip command.

- ``tensorboard``: event files in RUN_DIR/tensorboard/. Each attempt of a run (after a kill,
  a SLURM requeue, a cancel) writes a new event file holding only the steps the earlier
  files lack, so every epoch is in the log once and TensorBoard sees no step go back (no
  "out of order" purge). When the old files hold epochs the run no longer has (it started
  over), they are deleted and the log is written again from metrics.csv's rows.
- ``wandb`` (``pip install -e '.[wandb]'``): Weights & Biases in offline mode unless
  WANDB_MODE says otherwise, its files in RUN_DIR/wandb/ (``wandb sync RUN_DIR/wandb/
  offline-run-*`` uploads them); project WANDB_PROJECT (default ``slbench``), run name the
  run folder's name, one W&B run id per run folder across attempts. Each attempt is one
  offline run folder holding the whole history up to then (rows as steps = epochs).
- ``mlflow`` (``pip install -e '.[mlflow]'``): the tracking server or store named by
  MLFLOW_TRACKING_URI (required), experiment MLFLOW_EXPERIMENT_NAME (default ``slbench``);
  the config as params, every row as metrics at step = epoch, the run's end as its status
  (FINISHED, FAILED, KILLED). RUN_DIR/mlflow.json keeps the MLflow run id, so a resumed run
  goes on in the same MLflow run and logs only the steps it lacks.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from harness import files, records
from harness.config import flatten
from harness.errors import UserError

HPARAMS_TAG, CONFIG_TAG = "_hparams_/session_start_info", "config/text_summary"


class Sink:
    """The interface: ``start`` once (with the rows a resumed run already has), ``log`` per
    epoch, ``close`` at the end (also after a failure); ``check`` before any work."""
    package: str | None = None   # the Python package the sink needs (None: always there)
    extra: str | None = None     # the project's extra that installs it

    @classmethod
    def check(cls, run_dir: Path) -> None:
        """Raise a UserError when the sink could not write its output in ``run_dir``."""

    def start(self, run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def log(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def unavailable(name: str) -> str | None:
    """Why sink ``name`` cannot run here (its package is missing, a setting it needs is
    unset), as the one-line fix for the ``loggers`` key; None when it can."""
    sink = SINKS[name]
    package, extra = getattr(sink, "package", None), getattr(sink, "extra", None)
    if package and importlib.util.find_spec(package) is None:
        return (f"{name!r} needs the {package} package, which is not installed: "
                f"pip install {package} (or pip install -e '.[{extra}]' in the "
                f"slbench folder), or drop {name} from loggers")
    return getattr(sink, "missing_setting", lambda: None)()


def _own_folder(run_dir: Path, name: str, what: str, sink: str) -> None:
    path = Path(run_dir) / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        kind = "a link" if path.is_symlink() else "not a folder"
        raise UserError("loggers", f"{str(path)!r} is {kind}; {what} writes its files in that "
                        f"folder: move it away or drop {sink} from loggers")


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (the epoch aside): what every sink logs."""
    return {k: float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)}


def _end_status(run_dir: Path) -> str:
    """How the run ended, from its summary.json (written before the sinks close)."""
    try:
        return records.read_summary(run_dir).status
    except (OSError, ValueError, TypeError, KeyError):
        return "unknown"


# --------------------------------------------------------------------------- TensorBoard

def logged_steps(folder: Path) -> dict[str, set[int]]:
    """Every (tag, step) the event files in ``folder`` hold (a torn last record of a killed
    writer is skipped)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out: dict[str, set[int]] = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        try:
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    out.setdefault(value.tag, set()).add(int(event.step))
        except Exception:  # noqa: BLE001 - a damaged file: what was read before it counts
            continue
    return out


class TensorBoard(Sink):
    @classmethod
    def check(cls, run_dir: Path) -> None:
        _own_folder(run_dir, "tensorboard", "TensorBoard", "tensorboard")

    def start(self, run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        folder = files.make_dir(Path(run_dir) / "tensorboard", Path(run_dir))
        self.done = logged_steps(folder)
        last = int(rows[-1]["epoch"]) if rows else 0
        if any(step > last for tag, steps in self.done.items() if tag not in
               (HPARAMS_TAG, CONFIG_TAG) for step in steps):
            # epochs this run no longer has (it started over): the log begins again
            for path in folder.glob("events.out.tfevents.*"):
                files.remove_file(path, Path(run_dir))
            self.done = {}
        self.writer = SummaryWriter(str(folder))
        if HPARAMS_TAG not in self.done:
            flat = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                    for k, v in flatten(config).items()}
            for summary in hparams(flat, {"test_acc": 0.0}):
                self.writer.file_writer.add_summary(summary)
        if CONFIG_TAG not in self.done:
            self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```")
        for row in rows:
            self.log(row)

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for key, value in scalars(row).items():
            if step not in self.done.get(key, ()):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- Weights & Biases

def wandb_id(run_dir: Path) -> str:
    """The W&B run id of a run folder: the same for every attempt, different per folder."""
    return "slbench-" + hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class WandB(Sink):
    package, extra = "wandb", "wandb"

    @classmethod
    def check(cls, run_dir: Path) -> None:
        _own_folder(run_dir, "wandb", "Weights & Biases", "wandb")

    def start(self, run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        import wandb

        self.run_dir = Path(run_dir)
        files.make_dir(self.run_dir / "wandb", self.run_dir)
        settings = wandb.Settings(silent=True, console="off", disable_git=True,
                                  save_code=False, x_save_requirements=False)
        self.run = wandb.init(
            dir=str(self.run_dir), mode=os.environ.get("WANDB_MODE", "offline"),
            project=os.environ.get("WANDB_PROJECT", "slbench"), id=wandb_id(self.run_dir),
            name=self.run_dir.name, config=config, resume="allow", reinit="create_new",
            settings=settings)
        first = int(getattr(self.run, "starting_step", 0) or 0)  # online: steps it has
        for row in rows:
            if int(row["epoch"]) >= first:
                self.log(row)

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=int(row["epoch"]))

    def close(self) -> None:
        self.run.finish(exit_code=0 if _end_status(self.run_dir) == "completed" else 1)


# --------------------------------------------------------------------------- MLflow

MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "diverged": "FAILED"}
MLFLOW_PARAM_MAX = 6000   # MLflow's longest param value
MLFLOW_BATCH = 100        # params per log_batch call (MLflow's limit)


class MLflow(Sink):
    package, extra = "mlflow", "mlflow"

    @staticmethod
    def missing_setting() -> str | None:
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return None
        return ("'mlflow' needs a tracking server or store: export MLFLOW_TRACKING_URI="
                "http://HOST:5000 (or sqlite:////ABS/PATH/mlflow.db), or drop mlflow from "
                "loggers")

    @classmethod
    def check(cls, run_dir: Path) -> None:
        path = Path(run_dir) / "mlflow.json"
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise UserError("loggers", f"{str(path)!r} is not a plain file; the mlflow logger "
                            "keeps its run id there: move it away or drop mlflow from loggers")
        problem = cls.missing_setting()
        if problem:
            raise UserError("loggers", problem)

    def start(self, run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        from mlflow.tracking import MlflowClient

        self.run_dir, uri = Path(run_dir), os.environ["MLFLOW_TRACKING_URI"]
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = self._resumed(uri)
        self.done: dict[str, set[int]] = {}
        if self.run_id is None:
            self.run_id = self._new_run(uri, config)
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            keys = {k for row in rows for k in scalars(row)}
            self.done = {k: {m.step for m in self.client.get_metric_history(self.run_id, k)}
                         for k in keys}
        for row in rows:
            self.log(row)

    def _resumed(self, uri: str) -> str | None:
        """The MLflow run of an earlier attempt on the same tracking URI, if it still exists."""
        path = self.run_dir / "mlflow.json"
        try:
            saved = files.read_json(path) if path.is_file() else None
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict) or saved.get("tracking_uri") != uri:
            return None
        try:
            return self.client.get_run(str(saved.get("run_id"))).info.run_id
        except Exception:  # noqa: BLE001 - deleted or unknown there: a new MLflow run
            return None

    def _new_run(self, uri: str, config: dict[str, Any]) -> str:
        from mlflow.entities import Param

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "slbench")
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(name)
            except Exception:  # noqa: BLE001 - another run created it meanwhile
                exp_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            exp_id = exp.experiment_id
        run = self.client.create_run(exp_id, run_name=self.run_dir.name, tags={
            "slbench.run_dir": str(self.run_dir.resolve())})
        params = [Param(k, (v if isinstance(v, str) else json.dumps(v))[:MLFLOW_PARAM_MAX])
                  for k, v in sorted(flatten(config).items())]
        for i in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(run.info.run_id, params=params[i: i + MLFLOW_BATCH])
        files.atomic_write_json(self.run_dir / "mlflow.json",
                                {"tracking_uri": uri, "run_id": run.info.run_id},
                                root=self.run_dir)
        return run.info.run_id

    def log(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(row["epoch"]), int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars(row).items()
                   if step not in self.done.get(k, ())]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        status = MLFLOW_STATUS.get(_end_status(self.run_dir), "KILLED")
        self.client.set_terminated(self.run_id, status=status)


SINKS: dict[str, type[Sink]] = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}
