"""The shared training core: one loop drives every method through the hooks of methods/base.py.

Read :meth:`Trainer.fit` first: build (seed, data, model, method, optimizer) -> resume ->
epochs (method epoch hook, training steps, method epoch-end hook, deployed evaluation, method
scalars, checkpoint, records) -> end-of-training hook -> final deployed evaluation -> summary.
:meth:`Trainer.run_guarded` records every way a run can end (completed, diverged, failed,
interrupted); harness/run/rundir.py adds the run-directory checks and the lock.

The public surface, used by export, bench, selftest and the cost counter (nothing else reaches
into a Trainer): ``Trainer(cfg, run_dir, echo, data=..., on_step=...)``, :meth:`build`,
:meth:`step`, :meth:`train_epoch`, :meth:`epoch_hook`, :meth:`evaluate`, :meth:`restore`,
:meth:`counting_copy`, :meth:`fit`, :meth:`run_guarded`, and the attributes ``cfg``,
``device``, ``data``, ``model``, ``method``, ``optimizer``, ``steps_per_epoch``, ``finished``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import math
import random
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness import files, records
from harness.config import RunConfig, to_dict
from harness.costs import opcount
from harness.costs.memory import memory_costs
from harness.dist import Dist
from harness.errors import UserError
from harness.run import checkpoint, seeding, source
from harness.run.checkpoint import plain_row, rng_state, set_rng_state
from harness.run.display import Display
from harness.run.env import environment, peak_memory_mb, reset_peak_memory, resolve_device
from harness.run.loggers import SINKS
from harness.run.optim import default_param_groups, lr_factor, make_optimizer
from harness.run.pretrained import load_source
from harness.run.resolve import config_hash, make_method
from harness.run.signals import Interrupted, hold_point, safe_echo
from harness.tasks.base import get as get_task
from harness.tasks.runtime import autocast
from methods.base import Progress


@dataclass
class RunContext:
    """What hooks may use besides the model: data, evaluation and logging."""
    cfg: RunConfig
    device: torch.device
    data: Any
    evaluate: Callable[[nn.Module], tuple[float, float]]  # (test loss, the task's score)
    log: Callable[[str], None]
    score: Any = None        # the task's headline metric (harness/tasks/base.py Metric)
    epoch: int = 0

    def train_batches(self, n: int,
                      seed_offset: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """n training batches (the recipe's augmentation) from a generator of their own, so
        using them never shifts the training stream (recalibration passes)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 100003 + self.epoch * 101 + seed_offset)
        done = 0
        while done < n:
            for batch in self.data.train_batches(self.cfg.batch_size, gen):
                yield batch
                done += 1
                if done >= n:
                    return


class Diverged(Exception):
    pass


class Trainer:
    """One run. ``fit()`` is the whole story, top to bottom; everything it needs is on self.

    Only rank 0 of a distributed run writes records and checkpoints."""

    def __init__(self, cfg: RunConfig, run_dir: Path, echo: Callable[[str], None] = print,
                 data: Any = None, on_step: Callable[..., None] | None = None):
        """``data``: use these data instead of loading the configured dataset (bench,
        selftest); ``on_step(trainer, loss, total, out)``: called after every training step
        (the selftest's loss trace)."""
        self.cfg, self.run_dir, self.echo = cfg, Path(run_dir), safe_echo(echo)
        self.preloaded, self.on_step = data, on_step
        self.dist = Dist.from_env()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.dist.world > 1:
            self.device = torch.device("cuda", self.dist.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)  # NCCL's collectives use the current device
        self.task = get_task(cfg.task).runtime()
        self.rows: list[dict[str, Any]] = []
        self.epoch, self.step_count, self.wall, self.finished = 0, 0, 0.0, False
        self.display = Display(cfg, self.echo, 0, main=False)
        self.sinks: list = []

    # --- the whole run
    def fit(self) -> records.RunSummary:
        """Train (or resume) to the end, in the order of the hooks in methods/base.py."""
        cfg = self.cfg
        self.build()                                      # seed, data, model, method.prepare
        self.measure_costs()                              # op counts, FLOPs of a step
        self.resume()                                     # the last checkpoint, if any
        method, model = self.method, self.model
        self.write_records("running")
        for epoch in range(self.epoch, cfg.epochs):
            hold_point(self.run_dir, epoch)               # tests only (SLBENCH_HOLD_DIR)
            self.run.epoch = epoch
            t0 = self.clock()
            self.display.epoch_start(epoch)
            method.on_epoch_start(model, self.progress(epoch))
            train_stats = self.train_epoch(epoch)         # before_step, loss, after_step
            method.after_epoch(model, self.run)           # recalibration, bookkeeping
            train_time = self.clock() - t0
            test = self.evaluate()              # the task's test columns
            val = self.evaluate_val()           # and validation columns (data.val_split)
            self.check_finite(epoch, test["test_loss"], val.get("val_loss", 0.0))  # diverged?
            row = {"epoch": epoch + 1, **train_stats, **test, **val, "lr": self.lr_at_epoch_start,
                   "epoch_time_s": train_time, "samples_per_s": self.data.num_train / train_time,
                   **method.scalars(model, self.run)}
            self.end_epoch(row, t0)                       # checkpoint, records, progress line
        if not self.finished:                           # once, also across a resume
            self.run.epoch = cfg.epochs
            method.after_training(model, self.run)
            self.finished = True
            self.save_checkpoint()
        final = self.evaluate()
        if self.dist.main:                                # e.g. SR output crops for the report
            with method.deployed(model):
                self.task.save_samples(model, self.data, self.run_dir)
        self.write_records("completed", final)
        self.log(f"completed: {self.task.result_text(final)}")
        return self.summary("completed", final)

    # --- set-up
    def build(self) -> None:
        """Build everything a run needs: seeds, data, model, method, optimizer, schedule."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.data = self.preloaded if self.preloaded is not None else \
            self.task.load_data(cfg, self.device)
        self.method = make_method(cfg)
        self.model = self.task.build_model(cfg, self.data, self.method).to(self.device)
        source = cfg.init.source and load_source(self.run_dir, cfg.init.source, self.device)
        if source:                                        # pretrained: the method maps an
            self.method.init_from_fp(self.model, source)  # fp run's weights to its state
        self.run = RunContext(cfg, self.device, self.data, self.evaluate_model, self.log,
                              score=self.task.card.headline())
        self.method.prepare(self.model, self.run)
        if source:
            self.method.calibrate_from_fp(self.model, self.run)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        groups = self.method.param_groups(self.model, default_param_groups(self.model, cfg.optim))
        self.optimizer = make_optimizer(groups, cfg.optim)
        self.seed_fingerprint = seeding.seed_fingerprint(self.model, self.gen)
        self.steps_per_epoch = self.data.steps_per_epoch(cfg.batch_size)
        self.display = Display(cfg, self.echo, self.steps_per_epoch, self.dist.main)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.steps_per_epoch, cfg.epochs, cfg.optim))
        self.forward = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.forward = torch.compile(self.forward)

    def measure_costs(self) -> None:
        """The deployed network's op counts and size, and the FLOPs of a training step, on
        copies (harness.costs.opcount): the run itself is untouched."""
        if not self.dist.main:
            return
        self.costs = self.recorded_costs()   # a resume: the first attempt counted them
        if self.costs is not None:
            return
        d = self.data
        inf = opcount.inference_cost(self.cfg, d.num_classes, d.in_channels, d.image_size)
        self.costs = ({k: v for k, v in inf.items() if k != "layers"},
                      opcount.count_training_flops(self.counting_copy()))

    def recorded_costs(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The costs an earlier attempt of this run recorded in its summary.json (same config,
        same number of processes), without the parts cost_fields measures afresh; None when
        there are none."""
        try:
            s = records.read_summary(self.run_dir)
        except (OSError, ValueError, TypeError):
            return None
        train = s.training_cost
        if s.config_hash != config_hash(self.cfg) or not s.inference_cost or \
                "flops_per_step" not in train or train.get("world_size") != self.dist.world:
            return None
        fresh = ("step_time_s", "device_hours", "world_size", "threads")
        return s.inference_cost, {k: v for k, v in train.items() if k not in fresh}

    def counting_copy(self) -> "Trainer":
        """A copy whose steps touch nothing of this run (the cost counter's): deep copies of
        the model, method and optimizer, no LR schedule (it changes no FLOPs), no logging,
        no on_step."""
        shadow = copy.copy(self)
        shadow.model, shadow.method, shadow.optimizer = copy.deepcopy(
            (self.model, self.method, self.optimizer))
        shadow.scheduler = types.SimpleNamespace(step=lambda: None)
        shadow.forward, shadow.on_step = shadow.model, None
        shadow.run = dataclasses.replace(self.run, log=lambda line: None)
        return shadow

    def progress(self, epoch: int) -> Progress:
        return Progress(epoch, self.cfg.epochs, self.step_count, self.steps_per_epoch)

    # --- one epoch, one step
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; the task's train columns (train loss, and for
        classification accuracy), summed on the device with one host sync at the end. A
        non-finite loss raises Diverged."""
        cfg = self.cfg
        self.model.train()
        self.lr_at_epoch_start = self.optimizer.param_groups[0]["lr"]
        sums = self.task.new_sums(self.device)
        for x, y in self.data.train_batches(cfg.batch_size, self.gen):
            x, y = self.dist.shard(x), self.dist.shard(y)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            prog = Progress(epoch, cfg.epochs, self.step_count, self.steps_per_epoch)
            loss, total, out = self.step(x, y, prog)
            self.task.accumulate(sums, loss, total, out, y)
            self.step_count += 1
            self.display.step()
        self.dist.sync_buffers(self.model)
        self.dist.all_sum(*sums.values())
        if not bool(torch.isfinite(sums["total"])):
            raise Diverged(f"non-finite loss in epoch {epoch + 1}")
        return self.task.train_stats(sums)

    def step(self, x: torch.Tensor, y: torch.Tensor,
             prog: Progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step through every method hook. Returns (task loss, total loss,
        network output), detached and still on the device (no host sync)."""
        method, model = self.method, self.model
        method.before_step(model, prog)
        with autocast(self.cfg, self.device):
            out = self.forward(x)
            loss = self.task.loss(out, y, self.cfg)
            extra = method.loss(model)
            total = loss if extra is None else loss + extra
        model.zero_grad(set_to_none=True)  # all parameters, also those a method updates itself
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        method.after_step(model, x, y, prog)
        result = loss.detach(), total.detach(), out.detach()
        if self.on_step is not None:
            self.on_step(self, *result)
        return result

    def epoch_hook(self) -> None:
        """The method's end-of-epoch work (recalibration, bookkeeping) on its own."""
        self.method.after_epoch(self.model, self.run)

    def evaluate(self) -> dict[str, float]:
        """The test columns (test loss, accuracy % or PSNR/SSIM) of the discrete, deployable
        network."""
        with self.method.deployed(self.model):
            return self.task.evaluate(self.model, self.data, self.cfg, self.device, self.dist)

    def evaluate_val(self) -> dict[str, float]:
        """The validation columns of the deployed network (val_loss, val_acc...), or none
        when the run holds out no validation split."""
        if not self.cfg.data.val_split:
            return {}
        with self.method.deployed(self.model):
            return self.task.evaluate_val(self.model, self.data, self.cfg, self.device, self.dist)

    def evaluate_model(self, model: nn.Module) -> tuple[float, float]:
        """(test loss, the task's headline score) of ``model`` as it is: RunContext.evaluate."""
        test = self.task.evaluate(model, self.data, self.cfg, self.device, self.dist)
        return test["test_loss"], test[self.task.card.headline().column]

    def check_finite(self, epoch: int, *losses: float) -> None:
        """Diverged when an evaluation loss (test, validation) or a parameter is not finite."""
        if not all(math.isfinite(x) for x in losses):
            what = "test" if not math.isfinite(losses[0]) else "validation"
            raise Diverged(f"non-finite {what} loss after epoch {epoch + 1}")
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()])
        if not bool(finite.all()):
            raise Diverged(f"non-finite parameters after epoch {epoch + 1}")

    def clock(self) -> float:
        """Seconds, after the device has finished its queued work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def end_epoch(self, row: dict[str, Any], t0: float) -> None:
        self.wall += time.perf_counter() - t0
        self.rows.append(plain_row(row))
        self.epoch = row["epoch"]
        self.save_checkpoint()
        self.write_records("running")
        line = self.task.epoch_line(row, self.cfg.epochs)
        self.log(line)
        self.display.epoch_end(line)
        self.call_sinks(lambda sink: sink.log(self.rows[-1]))

    def call_sinks(self, call: Callable[[Any], None]) -> None:
        """``call(sink)`` for every open logging sink; a sink that raises (its tracker is
        unreachable, its disk full) is turned off with a warning: a sink never turns a result
        into a failure, and metrics.csv has every row."""
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as e:
                self.echo(f"warning: logger {type(sink).__name__} failed and is turned off "
                          f"for this run ({type(e).__name__}: {e}); metrics.csv is complete")
                self.sinks.remove(sink)

    # --- checkpoints
    def save_checkpoint(self) -> None:
        if not self.dist.main:
            return
        checkpoint.save_tensors(self.run_dir / "checkpoint.pt", {
            "epoch": self.epoch, "step": self.step_count, "wall_time_s": self.wall,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "method": self.method.state_dict(),
            "rng": rng_state(self.gen), "rows": self.rows, "finished": self.finished,
            "config_hash": config_hash(self.cfg)})

    def restore(self) -> bool:
        """Restore the last checkpoint; False (and the run starts over, saying why) when there
        is none, it is unreadable, or it belongs to another config."""
        path = self.run_dir / "checkpoint.pt"
        if not path.exists():
            return False
        try:
            ck = checkpoint.load_tensors(path, self.device)
        except Exception as e:  # unreadable, or not weights-only: start over, never execute it
            why = (str(e).splitlines() or ["empty or malformed file"])[0][:200]
            self.log(f"checkpoint unreadable ({type(e).__name__}: {why}); starting from scratch")
            return False
        want = config_hash(self.cfg)
        if not isinstance(ck, dict) or ck.get("config_hash") != want:
            have = ck.get("config_hash") if isinstance(ck, dict) else None
            self.echo(f"{self.run_dir}: checkpoint.pt belongs to config {have}, not this run's "
                      f"{want}; ignoring it and starting from scratch")
            self.log(f"checkpoint.pt has config hash {have}, not {want}; starting from scratch")
            return False
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.method.load_state_dict(ck["method"])
        set_rng_state(ck["rng"], self.gen)
        self.epoch, self.step_count, self.wall = ck["epoch"], ck["step"], ck["wall_time_s"]
        self.rows, self.finished = ck["rows"], ck.get("finished", False)
        return True

    def resume(self) -> None:
        """Restore the last checkpoint (if any), say where the run starts, open the sinks."""
        resumed = self.restore()
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        line = (f"resumed at epoch {self.epoch} of {cfg.epochs}" if resumed else
                f"start {cfg.method} W{cfg.w_bits}/A{cfg.a_bits} {cfg.model.name} on "
                f"{cfg.data.name} ({self.data.num_train} train images, "
                f"{self.steps_per_epoch} steps per epoch), {n_params:,} parameters, device "
                f"{self.device}")
        self.log(line)
        self.display.say(f"{self.run_dir}: {line}")
        reset_peak_memory(self.device)
        if self.dist.main:
            self.sinks, config = [SINKS[name]() for name in cfg.loggers], to_dict(cfg)
            self.call_sinks(lambda sink: sink.start(self.run_dir, config, self.rows))
        src = source.state()
        if src.dirty and self.dist.main:  # the uncommitted code this run used, kept with it
            files.atomic_write_text(self.run_dir / "source.diff", src.diff)

    # --- records
    def log(self, line: str) -> None:
        if self.dist.main:
            files.append_log(self.run_dir, f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}")

    def summary(self, status: str, final: dict[str, float] | None = None,
                error: str = "") -> records.RunSummary:
        return records.RunSummary.from_rows(
            status, self.rows, self.cfg.epochs,
            **self.task.summary_fields(self.rows, final, getattr(self, "data", None)),
            wall_time_s=self.wall,
            peak_mem_mb=peak_memory_mb(self.device),
            peak_mem_kind="cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss",
            **memory_costs(self.model, self.optimizer), config_hash=config_hash(self.cfg),
            env=environment(self.device),
            method_info=type(self.method).info(self.task.card.headline()),
            data_fingerprint=getattr(self.data, "fingerprint", {}),
            seed_fingerprint=getattr(self, "seed_fingerprint", {}),
            **self.cost_fields(), error=error,
            changed_after_training=self.method.changed_after_training() if self.finished
            else "")

    def cost_fields(self) -> dict[str, dict[str, Any]]:
        """The summary's inference_cost and training_cost (with the measured step time and
        device-hours: wall-clock hours x processes)."""
        inference, training = getattr(self, "costs", None) or ({}, {})
        if not training:
            return {"inference_cost": inference, "training_cost": {}}
        times = [r["epoch_time_s"] for r in self.rows]
        step_s = sum(times) / len(times) / self.steps_per_epoch if times else None
        return {"inference_cost": inference, "training_cost": {
            **training, "step_time_s": step_s, "device_hours": self.wall * self.dist.world / 3600,
            "world_size": self.dist.world, "threads": torch.get_num_threads()}}

    def write_records(self, status: str, final: dict[str, float] | None = None,
                      error: str = "") -> None:
        if not self.dist.main:
            return
        records.write_metrics(self.run_dir, self.rows, self.task.card.columns)
        records.write_summary(self.run_dir, self.summary(status, final, error))

    # --- the guarded run: every way it can end is recorded
    def run_guarded(self) -> records.RunSummary:
        if self.dist.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo",
                rank=self.dist.rank, world_size=self.dist.world)
        try:
            return self.fit()
        except Diverged as e:
            return self._ended("diverged", str(e))
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                self._failed(e)
                raise
            raise UserError("--out", f"no space left on the device while writing "
                            f"{e.filename or self.run_dir}; the last good records and "
                            "checkpoint are kept: free space and re-run the same command to "
                            "resume") from None
        except (Interrupted, KeyboardInterrupt) as e:
            self._ended("interrupted", f"interrupted ({e or 'Ctrl-C'}) after epoch {self.epoch}; "
                                       "re-run to resume from its checkpoint")
            raise
        except Exception as e:
            self._failed(e)
            raise
        finally:
            self.close_outputs()
            if self.dist.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def close_outputs(self) -> None:
        self.display.close()
        for sink in self.sinks:
            with contextlib.suppress(Exception):  # a sink never turns a result into a failure
                sink.close()
        self.sinks = []

    def _failed(self, e: Exception) -> None:
        self.log("failed:\n" + traceback.format_exc())
        self._ended("failed", f"{type(e).__name__}: {e}".splitlines()[0])

    def _ended(self, status: str, error: str) -> records.RunSummary:
        self.log(f"{status}: {error}")
        if status != "failed":
            self.echo(f"{status}: {error}")
        if not hasattr(self, "optimizer"):  # it never got going: nothing to summarise
            if self.dist.main:
                records.record_failure(self.run_dir, status, error, self.cfg.epochs,
                                       config_hash(self.cfg), environment(self.device))
            return records.RunSummary(status=status, epochs=self.cfg.epochs, error=error)
        self.write_records(status, error=error)
        return self.summary(status, error=error)
