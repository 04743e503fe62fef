"""Tasks: what a run learns and how it is scored. The trainer asks its task, never which one.

A :class:`Task` says which datasets and models it accepts (``check``), loads its data, gives
the training loss, sums per-step training statistics, evaluates a network into its
metrics.csv test columns, fills the summary's result fields and writes its epoch line.
The method hooks (methods/base.py) are the same for every task: a method quantizes an SR
network's convolutions exactly as a classifier's.

- ``classify`` (the default): cross-entropy, accuracy (%); records as they always were
  (metrics.csv ``records.METRIC_COLUMNS``, summary ``final_test_acc``).
- ``sr``: super-resolution (harness/sr_data.py, sr_models.py, sr_metrics.py): L1 (or MSE) on
  [0, 1] pixels, whole-image PSNR/SSIM on Y with a ``scale``-pixel border
  (metrics.csv ``records.SR_METRIC_COLUMNS``; summary ``task``, ``metric`` = "test_psnr",
  ``final_metric``, ``best_metric``, ``final_metrics``). ``RunContext.evaluate`` (what
  methods call, e.g. SLB's continuous-state score) returns (test loss, test PSNR).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness import records
from harness.dist import Dist
from harness.errors import require
from harness.tasks import models
from harness.tasks.classify import data as data_mod
from harness.tasks.sr import data as sr_data
from harness.tasks.sr.metrics import psnr_y, ssim_y, to_uint8


class Task:
    """The interface; see the module docstring."""

    name = ""
    columns: list[str] = []     # the standard metrics.csv columns (records.py)
    primary = ""                # the test column tables and summaries report

    def check(self, cfg) -> None:
        """Names and task keys, without I/O (config.resolve)."""

    def default_augment(self, data_name: str) -> bool:
        return False

    def check_root(self, cfg) -> None:
        """Fail fast on missing data, before any work is submitted."""

    def load_data(self, cfg, device: torch.device):
        raise NotImplementedError

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

    def summary_fields(self, rows: list[dict[str, Any]], final: dict[str, float] | None,
                       data) -> dict[str, Any]:
        """RunSummary fields holding the result (``final``: the last evaluation, or None)."""
        raise NotImplementedError

    def epoch_line(self, row: dict[str, Any], epochs: int) -> str:
        raise NotImplementedError

    def result_text(self, final: dict[str, float]) -> str:
        """'final deployed test acc 91.20%': how the log states the result."""
        raise NotImplementedError

    def save_samples(self, model: nn.Module, data, run_dir: Path) -> None:
        """Files for the report written at the end of a run (default: none)."""


# --------------------------------------------------------------------------- shared pieces

def autocast(cfg, device: torch.device):
    if cfg.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, data, cfg, device: torch.device,
             dist: Dist = Dist()) -> tuple[float, float]:
    """(mean loss, accuracy %) on the test set, in the model's current (deployed or not) state.

    With several ranks each evaluates every world-th batch and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = torch.zeros((), device=device, dtype=torch.int64)
    for i, (x, y) in enumerate(data.test_batches(cfg.data.eval_batch_size)):
        if i % dist.world != dist.rank:
            continue
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, device):
            out = model(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    dist.all_sum(loss, correct, n)
    model.train(was_training)
    return float(loss) / int(n), 100.0 * int(correct) / int(n)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                     if k not in records.METRIC_COLUMNS and isinstance(v, (int, float)))
    return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} "
            f"train {row['train_acc']:.2f}% test {row['test_acc']:.2f}% lr {row['lr']:.4g} "
            f"{row['epoch_time_s']:.1f}s {extra}").rstrip()


# --------------------------------------------------------------------------- classification

class Classify(Task):
    name = "classify"
    columns = records.METRIC_COLUMNS
    primary = "test_acc"

    def check(self, cfg) -> None:
        models.check(cfg.model)
        data_mod.check_name(cfg.data.name)
        require(models.MODELS[cfg.model.name].task == "classify", "model.name",
                f"{cfg.model.name} is a super-resolution network; pass --set task=sr or "
                "choose a classification model")
        require(cfg.sr == type(cfg.sr)(), "task",
                "sr.* keys apply to task=sr only; remove them or pass --set task=sr")

    def default_augment(self, data_name: str) -> bool:
        return data_mod.default_augment(data_name)

    def check_root(self, cfg) -> None:
        data_mod.check_root(cfg.data)

    def load_data(self, cfg, device):
        return data_mod.load(cfg.data, device)

    def loss(self, out, y, cfg):
        return F.cross_entropy(out.float(), y, label_smoothing=cfg.optim.label_smoothing)

    def new_sums(self, device):
        sums = super().new_sums(device)
        sums["correct"] = torch.zeros((), dtype=torch.int64, device=device)
        return sums

    def accumulate(self, sums, loss, total, out, y):
        super().accumulate(sums, loss, total, out, y)
        sums["correct"] += (out.argmax(1) == y).sum()

    def train_stats(self, sums):
        return {**super().train_stats(sums),
                "train_acc": 100.0 * int(sums["correct"]) / int(sums["n"])}

    def evaluate(self, model, data, cfg, device, dist):
        loss, acc = evaluate(model, data, cfg, device, dist)
        return {"test_loss": loss, "test_acc": acc}

    def summary_fields(self, rows, final, data):
        return {"final_test_acc": None if final is None else final["test_acc"]}

    def epoch_line(self, row, epochs):
        return _epoch_line(row, epochs)

    def result_text(self, final):
        return f"final deployed test acc {final['test_acc']:.2f}%"


# --------------------------------------------------------------------------- super-resolution

class SuperResolution(Task):
    name = "sr"
    columns = records.SR_METRIC_COLUMNS
    primary = "test_psnr"

    def check(self, cfg) -> None:
        models.check(cfg.model)
        require(models.MODELS[cfg.model.name].task == "sr", "model.name",
                f"{cfg.model.name} is not a super-resolution network; with task=sr use one of "
                f"{sorted(n for n, m in models.MODELS.items() if m.task == 'sr')}")
        sr_data.check_name(cfg.data.name)
        s = cfg.sr
        require(s.patch_size >= s.scale and s.patch_size % s.scale == 0, "sr.patch_size",
                f"{s.patch_size} must be a positive multiple of sr.scale={s.scale}, "
                f"e.g. {s.scale * 16}")

    def default_augment(self, data_name: str) -> bool:
        return True  # flips and transposes (EDSR)

    def check_root(self, cfg) -> None:
        sr_data.check_root(cfg.data)

    def load_data(self, cfg, device):
        return sr_data.load(cfg, device)

    def loss(self, out, y, cfg):
        out = out.float()
        return F.l1_loss(out, y) if cfg.sr.loss == "l1" else F.mse_loss(out, y)

    @torch.no_grad()
    def evaluate(self, model, data, cfg, device, dist):
        """Whole test images one at a time; per test set the mean PSNR/SSIM over its images
        (the primary columns are the first set's; with several sets each set also gets
        test_psnr_<set>, test_ssim_<set>). test_loss: the L1/MSE of the unrounded output,
        averaged over every test image. Ranks share the images and all-reduce the sums."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(data.test_sets), 3, dtype=torch.float64, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        i = 0
        for k, (_, items) in enumerate(data.test_sets):
            for t in items:
                i += 1
                if (i - 1) % dist.world != dist.rank:
                    continue
                hr = t.hr[None].float() / 255.0
                with autocast(cfg, device):
                    out = model(t.lr[None].float() / 255.0).float()
                loss_sum += self.loss(out, hr, cfg).double()
                sr = to_uint8(out[0])
                sums[k, 0] += psnr_y(sr, t.hr, data.scale)
                sums[k, 1] += ssim_y(sr, t.hr, data.scale)
                sums[k, 2] += 1
        dist.all_sum(sums, loss_sum)
        model.train(was_training)
        per_set = [(name, float(sums[k, 0] / sums[k, 2]), float(sums[k, 1] / sums[k, 2]))
                   for k, (name, _) in enumerate(data.test_sets)]
        out = {"test_loss": float(loss_sum) / float(sums[:, 2].sum()),
               "test_psnr": per_set[0][1], "test_ssim": per_set[0][2]}
        if len(per_set) > 1:
            for name, p, s in per_set:
                out[f"test_psnr_{name}"], out[f"test_ssim_{name}"] = p, s
        return out

    def summary_fields(self, rows, final, data):
        """The primary score (test PSNR) as ``final_metric``/``best_metric``; in
        ``final_metrics`` every final test column and the bicubic floor of the first test
        set (``bicubic_psnr``, ``bicubic_ssim``, and per set with several)."""
        scores = [r[self.primary] for r in rows] + ([final[self.primary]] if final else [])
        floor = {}
        if data is not None and final:
            sets = list(data.bicubic.items())
            floor = {"bicubic_psnr": sets[0][1]["psnr"], "bicubic_ssim": sets[0][1]["ssim"]}
            if len(sets) > 1:
                for name, b in sets:
                    floor[f"bicubic_psnr_{name}"] = b["psnr"]
                    floor[f"bicubic_ssim_{name}"] = b["ssim"]
        return {"task": self.name, "metric": self.primary,
                "final_metric": None if final is None else final[self.primary],
                "best_metric": max(scores) if scores else None,
                "final_metrics": {**(final or {}), **floor}}

    def epoch_line(self, row, epochs):
        extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                         if k not in self.columns and isinstance(v, (int, float)))
        return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} "
                f"test PSNR {row['test_psnr']:.2f} dB SSIM {row['test_ssim']:.4f} "
                f"lr {row['lr']:.4g} {row['epoch_time_s']:.1f}s {extra}").rstrip()

    def result_text(self, final):
        return (f"final deployed test PSNR {final['test_psnr']:.2f} dB, "
                f"SSIM {final['test_ssim']:.4f} (Y channel)")

    @torch.no_grad()
    def save_samples(self, model, data, run_dir):
        """RUN_DIR/sr_crop.png: the network's output on a CROP x CROP HR-pixel window at
        the centre of the first test image; sr_crop_hr.png and sr_crop_bicubic.png: the same
        window of the HR image and of its bicubic upscaling (for the report's figure)."""
        from PIL import Image

        from harness.tasks.sr.metrics import bicubic_upscale

        t = data.test_sets[0][1][0]
        was_training = model.training
        model.eval()
        out = to_uint8(model(t.lr[None].float() / 255.0).float()[0]).cpu()
        model.train(was_training)
        bic = to_uint8(bicubic_upscale(t.lr.cpu(), data.scale))
        h, w = t.hr.shape[-2:]
        c = min(sr_data.CROP, h, w)
        y0, x0 = (h - c) // 2, (w - c) // 2
        for name, img in (("sr_crop", out), ("sr_crop_hr", t.hr.cpu()), ("sr_crop_bicubic", bic)):
            crop = img[:, y0: y0 + c, x0: x0 + c].permute(1, 2, 0).numpy()
            records._atomic(Path(run_dir) / f"{name}.png",
                            lambda f, a=crop: Image.fromarray(a).save(f, format="PNG"))


TASKS: dict[str, Task] = {t.name: t for t in (Classify(), SuperResolution())}


def get(name: str) -> Task:
    require(name in TASKS, "task", f"unknown task {name!r}; use one of {sorted(TASKS)}")
    return TASKS[name]
