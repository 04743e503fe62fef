"""The task card: what a run learns and how it is scored, the harness's one plug-in axis
besides methods. Torch-free: config resolution, the record validator, `status`, `show`, the
sweep's lines and the report read cards without loading a network.

A task is one folder ``harness/tasks/<name>/``: its ``__init__.py`` registers a card (a
:class:`Task` subclass under ``@register_task``) and its other modules hold the torch side
(data, networks, loss, evaluation), which :meth:`Task.runtime` loads only when a run trains.
The card declares:

- ``Options``: its config section, a frozen dataclass of ``config.opt`` fields, read from
  ``[<name>]`` keys (``sr.scale``) and recorded under that key in config.json; ``NoOptions``
  when the task has none (classification: its config.json holds no task keys at all);
- ``columns``: its standard metrics.csv columns (what the record validator requires);
- ``metrics``: its test scores with unit, bounds and direction; the first is the headline,
  the score `status`, `show`, the sweep's lines and the report name the run by;
- ``final_field``/``best_field``: the summary.json fields holding the headline's final and
  best values (classification keeps its historical ``final_test_acc``/``best_test_acc``).
"""
from __future__ import annotations

import importlib
import math
import os
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.errors import UserError, did_you_mean


@dataclass(frozen=True)
class NoOptions:
    """A task without a config section of its own."""


@dataclass(frozen=True)
class Metric:
    """One test score of a task: its metrics.csv column, how to name and print it, what
    values it may take (``bounds``, None for an open side) and which way is better."""

    column: str
    title: str
    unit: str = ""
    bounds: tuple[float | None, float | None] = (None, None)
    higher_is_better: bool = True
    digits: int = 2
    short: str = ""               # a short title for labels ("test acc"); "" = ``title``

    def fmt(self, value: float | None) -> str:
        """'91.20%' or '28.41 dB'; 'n/a' for a missing value."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        space = "" if self.unit in ("", "%") else " "
        return f"{value:.{self.digits}f}{space}{self.unit}"

    def within(self, value: float) -> bool:
        lo, hi = self.bounds
        return math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi)

    def __post_init__(self):
        if not self.short:
            object.__setattr__(self, "short", self.title)

    @property
    def label(self) -> str:
        """'test accuracy (%)': an axis or column label."""
        return f"{self.title} ({self.unit})" if self.unit else self.title


class Task:
    """The card base; see the module docstring."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    columns: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[Metric, ...]] = ()
    final_field: ClassVar[str] = "final_metric"
    best_field: ClassVar[str] = "best_metric"
    runtime_module: ClassVar[str] = ""     # the torch side: a module with RUNTIME

    @classmethod
    def headline(cls) -> Metric:
        return cls.metrics[0]

    @classmethod
    def val_column(cls, column: str) -> str:
        """The validation column of a test column (test_acc -> val_acc)."""
        return "val_" + column.removeprefix("test_")

    @classmethod
    def val_columns(cls) -> tuple[str, ...]:
        """What a run with a validation split (data.val_split) adds to metrics.csv."""
        return ("val_loss",) + tuple(cls.val_column(m.column) for m in cls.metrics)

    @classmethod
    def metric(cls, column: str) -> Metric | None:
        return next((m for m in cls.metrics if m.column == column), None)

    @classmethod
    def info(cls) -> dict[str, Any]:
        """What a run records about its task for readers (summary.json ``task_info``)."""
        return {"name": cls.name, "headline": cls.headline().column,
                "metrics": {m.column: {"title": m.title, "unit": m.unit,
                                       "bounds": list(m.bounds),
                                       "higher_is_better": m.higher_is_better}
                            for m in cls.metrics}}

    @classmethod
    def runtime(cls) -> Any:
        """The torch side of the task (loaded on first use)."""
        return importlib.import_module(cls.runtime_module).RUNTIME


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task card available under ``cls.name``."""
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise RuntimeError(f"task name {cls.name!r} registered twice")
    TASKS[cls.name] = cls
    return cls


_SCANNED: dict[str, int] = {}   # folder -> its mtime when its tasks were last imported


def load_all() -> dict[str, type[Task]]:
    """Import every task folder under harness/tasks/ so each registers its card (the folder
    is scanned again only when a task was added or removed since: its mtime)."""
    import harness.tasks as package

    for folder in package.__path__:
        mtime = os.stat(folder).st_mtime_ns
        if _SCANNED.get(folder) == mtime:
            continue
        for info in pkgutil.iter_modules([folder]):
            if info.ispkg:
                importlib.import_module(f"harness.tasks.{info.name}")
        _SCANNED[folder] = mtime
    return TASKS


def get(name: str) -> type[Task]:
    if name not in load_all():
        raise UserError("task", f"unknown task {name!r}{did_you_mean(name, TASKS)}")
    return TASKS[name]


def of_config(config: dict[str, Any] | None) -> type[Task]:
    """The card of a run's config.json (no ``task`` key: classification, as records were
    written before there were tasks)."""
    return get((config or {}).get("task", "classify"))
