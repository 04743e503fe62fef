"""Logging sinks beside metrics.csv (which stays the source of truth for every report).

A sink gets the run's resolved config once, then every metrics row (epoch, losses,
accuracies, timings, the method's scalars) as it is written. Turn sinks on with the config
key ``loggers`` (e.g. ``--set 'loggers=["tensorboard"]'``). Adding a tracker (W&B in offline
mode, MLflow) is one more class with these three methods and one entry in SINKS.

TensorBoard: event files in RUN_DIR/tensorboard/. A resumed run (after a kill, a SLURM
requeue, a cancel) opens the log with ``purge_step=1`` and writes every row again from its
checkpoint, so TensorBoard shows exactly the rows of metrics.csv, once each, whatever was
logged before the interruption.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.errors import UserError


class Sink:
    """The interface: ``start`` once (with the rows a resumed run already has), ``log`` per
    epoch, ``close`` at the end (also after a failure); ``check`` before any work."""

    @classmethod
    def check(cls, run_dir: Path) -> None:
        """Raise a UserError when the sink could not write its output in ``run_dir``."""

    def start(self, run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def log(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoard(Sink):
    @classmethod
    def check(cls, run_dir: Path) -> None:
        path = Path(run_dir) / "tensorboard"
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            what = "a link" if path.is_symlink() else "not a folder"
            raise UserError("loggers", f"{str(path)!r} is {what}; TensorBoard writes its event "
                            "files in that folder: move it away or drop tensorboard from "
                            "loggers")

    def start(self, run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                    purge_step=1 if rows else None)
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                for k, v in _flatten(config).items()}
        for summary in hparams(flat, {"test_acc": 0.0}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```")
        for row in rows:
            self.log(row)

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


SINKS: dict[str, type[Sink]] = {"tensorboard": TensorBoard}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
