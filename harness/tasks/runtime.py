"""The torch side of a task: what the trainer asks its task, never which one it is.

A task folder's ``runtime.py`` holds one :class:`TaskRuntime` subclass instance as
``RUNTIME`` (its card, harness/tasks/<name>/__init__.py, names the module). It checks names
and task keys, loads the data, gives the training loss, sums per-step training statistics,
evaluates a network into its metrics.csv test columns, fills the summary's result fields and
writes the epoch line. The method hooks (methods/base.py) are the same for every task: a
method quantizes an SR network's convolutions exactly as a classifier's.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import UserError, did_you_mean, require
from harness.tasks import base, models


class TaskRuntime:
    """The interface; see the module docstring."""

    card: type[base.Task] = base.Task
    models: dict[str, models.Model] = {}
    datasets: dict[str, str] = {}    # name -> one-line description (help texts, `config`)
    has_val_split = False            # whether data.val_split may hold out validation images

    # --- checks (config resolution; no I/O)
    def check(self, cfg) -> None:
        """Model and dataset names and options, and the task's own keys."""
        if cfg.model.name not in self.models:
            raise UserError("model.name", self.unknown_model(cfg.model.name))
        models.check(cfg.model, self.models)
        require(cfg.data.name in self.datasets, "data.name",
                self.unknown(cfg.data.name, "dataset", "datasets"))
        require(not cfg.data.val_split or self.has_val_split, "data.val_split",
                f"task {self.card.name} has no validation split yet; drop data.val_split")

    def unknown_model(self, name: str) -> str:
        return self.unknown(name, "model", "models")

    def unknown(self, name: str, kind: str, registry: str) -> str:
        """Why ``name`` is not one of this task's models (or datasets), and the fix."""
        for card in base.load_all().values():
            if card is not self.card and name in getattr(card.runtime(), registry):
                return (f"{name} is a {kind} of task {card.name}, not {self.card.name}; pass "
                        f"--set task={card.name} or choose one of "
                        f"{sorted(getattr(self, registry))}")
        return f"unknown {kind} {name!r}{did_you_mean(name, getattr(self, registry))}"

    def default_augment(self, data_name: str) -> bool:
        return False

    def check_root(self, cfg) -> None:
        """Fail fast on missing data, before any work is submitted."""

    # --- training
    def load_data(self, cfg, device: torch.device):
        raise NotImplementedError

    def build_model(self, cfg, data, method=None) -> nn.Module:
        return models.build(cfg, self.models, data.num_classes, data.in_channels,
                            data.image_size, method)

    def loss(self, out: torch.Tensor, y: torch.Tensor, cfg) -> torch.Tensor:
        raise NotImplementedError

    def new_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-epoch training sums, on the device (one host sync per epoch)."""
        z = {"dtype": torch.float64, "device": device}
        return {"loss": torch.zeros((), **z), "total": torch.zeros((), **z),
                "n": torch.zeros((), dtype=torch.int64, device=device)}

    def accumulate(self, sums: dict[str, torch.Tensor], loss: torch.Tensor, total: torch.Tensor,
                   out: torch.Tensor, y: torch.Tensor) -> None:
        sums["loss"] += loss.double() * len(y)
        sums["total"] += total.double()
        sums["n"] += len(y)

    def train_stats(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"train_loss": float(sums["loss"]) / int(sums["n"])}

    def evaluate(self, model: nn.Module, data, cfg, device: torch.device, dist) -> dict[str, float]:
        """The test columns of metrics.csv (test_loss first, then the scores)."""
        raise NotImplementedError

    def evaluate_val(self, model: nn.Module, data, cfg, device: torch.device,
                     dist) -> dict[str, float]:
        """The validation columns (``val_loss`` and ``val_`` + each score, on the images
        data.val_split holds out; a task with ``has_val_split`` implements it)."""
        raise NotImplementedError

    # --- records and output
    def summary_fields(self, rows: list[dict[str, Any]], final: dict[str, float] | None,
                       data) -> dict[str, Any]:
        """RunSummary fields holding the result (``final``: the last evaluation, or None)."""
        raise NotImplementedError

    def epoch_line(self, row: dict[str, Any], epochs: int) -> str:
        """One epoch as the log and the terminal show it: losses, the card's test scores,
        the learning rate, the time, then the method's own columns."""
        scores = " ".join(f"{m.title} {m.fmt(row[m.column])}" for m in self.card.metrics
                          if m.column in row)
        extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                         if k not in self.card.columns and isinstance(v, (int, float)))
        return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} {scores} "
                f"lr {row['lr']:.4g} {row['epoch_time_s']:.1f}s {extra}").rstrip()

    def result_text(self, final: dict[str, float]) -> str:
        """'final deployed test accuracy 91.20%': how the log states the result."""
        m = self.card.headline()
        return f"final deployed {m.title} {m.fmt(final[m.column])}"

    def save_samples(self, model: nn.Module, data, run_dir: Path) -> None:
        """Files for the report written at the end of a run (default: none)."""


def autocast(cfg, device: torch.device):
    if cfg.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
