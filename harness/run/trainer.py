"""The shared training core: one loop drives every method through the hooks of methods/base.py.

Read :meth:`Trainer.fit` first: set-up (seed, data, model, method, optimizer) -> resume ->
epochs (method epoch hook, training steps, method epoch-end hook, deployed evaluation, method
scalars, checkpoint, records) -> end-of-training hook -> final deployed evaluation -> summary.
:meth:`Trainer.run_guarded` records every way a run can end (completed, diverged, failed,
interrupted); :func:`run` adds the run-directory checks and the lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from harness import config as C
from harness import records, tasks
from harness.cli import RUN_FLAGS
from harness.costs import opcount
from harness.costs.memory import memory_costs
from harness.dist import Dist
from harness.errors import require
from harness.run import procs, seeding, source
from harness.run.env import environment, peak_memory_mb, reset_peak_memory, resolve_device
from harness.run.loggers import SINKS
from harness.tasks import autocast, models
from methods.act import PactAct
from methods.base import Method, Progress, UserError, WeightQuantizer
from methods.base import get as get_method

# --------------------------------------------------------------------------- set-up

def make_method(cfg: C.RunConfig) -> Method:
    cls = get_method(cfg.method)
    return cls(cls.parse_options(dict(cfg.method_options)), cfg.w_bits)


def param_kind(module: nn.Module, pname: str) -> str:
    """'weight', 'bn' (norm parameters and biases) or 'quant' (quantizer parameters)."""
    if isinstance(module, WeightQuantizer):
        return "weight" if pname in module.latent else "quant"
    if isinstance(module, PactAct):
        return "quant"
    if isinstance(module, nn.modules.batchnorm._NormBase) or pname == "bias":
        return "bn"
    return "weight"


def default_param_groups(model: nn.Module, ocfg: C.OptimConfig) -> list[dict]:
    excluded = {id(getattr(m, n)) for m in model.modules() if isinstance(m, WeightQuantizer)
                for n in m.self_updated}
    groups: dict[str, list] = {"weight": [], "bn": [], "quant": []}
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in excluded:
                groups[param_kind(module, pname)].append(p)
    wd = {"weight": ocfg.weight_decay,
          "bn": 0.0 if ocfg.wd_exclude_bn else ocfg.weight_decay,
          "quant": 0.0 if ocfg.wd_exclude_quant else ocfg.weight_decay}
    lr = {"weight": ocfg.lr, "bn": ocfg.lr, "quant": ocfg.lr * ocfg.quant_lr_scale}
    return [{"params": ps, "weight_decay": wd[k], "lr": lr[k], "kind": k}
            for k, ps in groups.items() if ps]


def make_optimizer(groups: list[dict], ocfg: C.OptimConfig) -> torch.optim.Optimizer:
    if ocfg.name == "sgd":
        return torch.optim.SGD(groups, lr=ocfg.lr, momentum=ocfg.momentum,
                               nesterov=ocfg.nesterov and ocfg.momentum > 0)
    if ocfg.name == "adamw":  # decoupled weight decay (Loshchilov & Hutter)
        return torch.optim.AdamW(groups, lr=ocfg.lr, betas=tuple(ocfg.betas))
    return torch.optim.Adam(groups, lr=ocfg.lr, betas=tuple(ocfg.betas))


def lr_factor(step: int, steps_per_epoch: int, epochs: int, ocfg: C.OptimConfig) -> float:
    """Multiplier of the base LR for optimizer step ``step`` (per-step schedules)."""
    t = step / steps_per_epoch  # epochs done, fractional
    warm = ocfg.warmup_epochs
    if warm > 0 and t < warm:
        return (step + 1) / (warm * steps_per_epoch)
    if ocfg.schedule == "cosine":
        u = (t - warm) / max(1e-12, epochs - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, u)))
    if ocfg.schedule == "step":
        return ocfg.gamma ** sum(1 for m in ocfg.milestones if t >= m)
    return 1.0


# --------------------------------------------------------------------------- loop pieces

@dataclass
class RunContext:
    """What hooks may use besides the model: data, evaluation and logging."""
    cfg: C.RunConfig
    device: torch.device
    data: Any
    evaluate: Callable[[nn.Module], tuple[float, float]]  # (test loss, the task's score)
    log: Callable[[str], None]
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


# --------------------------------------------------------------------------- signals and holds

class Diverged(Exception):
    pass


class Interrupted(BaseException):
    """Raised by the SIGTERM handler of `run` and of local workers: the run ends as
    ``interrupted`` with its last epoch checkpoint, and a re-run resumes it. A BaseException,
    so no ``except Exception`` on the way mistakes it for a failure."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Interrupted` in this process (the main thread)."""
    def handler(signum, frame):
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def hold_point(run_dir: Path, epoch: int) -> None:
    """A pause for tests, at an epoch boundary after a checkpoint (off unless SLBENCH_HOLD_DIR
    is set): before epoch SLBENCH_HOLD_AT_EPOCH (0-based, default 1), a run waits while
    HOLD_DIR/hold-all or HOLD_DIR/hold-<run directory name> exists, after writing
    HOLD_DIR/<run directory name>.held. A test then acts on a run at a known point (a
    signal, a requeue, a cancel) on a machine of any speed, and releases it by deleting the
    hold file."""
    hold_dir = os.environ.get("SLBENCH_HOLD_DIR")
    if not hold_dir or epoch != int(os.environ.get("SLBENCH_HOLD_AT_EPOCH", "1")):
        return
    d, name = Path(hold_dir), Path(run_dir).name
    held = False
    while (d / "hold-all").exists() or (d / f"hold-{name}").exists():
        if not held:
            records.atomic_write_text(d / f"{name}.held", f"{os.getpid()}\n")
            held = True
        time.sleep(0.05)


def safe_echo(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` that goes quiet instead of failing once its reader has gone (`run | head`):
    a closed stdout never fails training."""
    state = {"open": True}

    def say(line: str) -> None:
        if not state["open"]:
            return
        try:
            echo(line)
        except BrokenPipeError:
            state["open"] = False
            if sys.stdout is sys.__stdout__:  # the process's own stdout: nothing left to flush
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except ValueError:  # print to a closed file (a finished capture, say)
            state["open"] = False
    return say


# --------------------------------------------------------------------------- checkpoints

def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain values (loadable weights-only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss)],
             "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row as Python numbers (numpy/torch scalars would not load weights-only)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


# --------------------------------------------------------------------------- the run

class Trainer:
    """One run. ``fit()`` is the whole story, top to bottom; everything it needs is on self.

    Only rank 0 of a distributed run writes records and checkpoints."""

    def __init__(self, cfg: C.RunConfig, run_dir: Path, echo: Callable[[str], None] = print):
        self.cfg, self.run_dir, self.echo = cfg, Path(run_dir), safe_echo(echo)
        self.dist = Dist.from_env()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.dist.world > 1:
            self.device = torch.device("cuda", self.dist.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)  # NCCL's collectives use the current device
        self.task = tasks.get(cfg.task)
        self.rows: list[dict[str, Any]] = []
        self.epoch, self.step_count, self.wall, self.final_done = 0, 0, 0.0, False
        self.display = Display(cfg, self.echo, 0, main=False)
        self.sinks: list = []

    # --- the whole run
    def fit(self) -> records.RunSummary:
        """Train (or resume) to the end, in the order of the hooks in methods/base.py."""
        cfg = self.cfg
        self.setup()                                      # seed, data, model, method.prepare
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
            test = self.evaluate_deployed()              # the task's test columns
            self.check_finite(epoch, test["test_loss"])  # else the run ends diverged
            row = {"epoch": epoch + 1, **train_stats, **test, "lr": self.lr_at_epoch_start,
                   "epoch_time_s": train_time, "samples_per_s": self.data.num_train / train_time,
                   **method.scalars(model, self.run)}
            self.end_epoch(row, t0)                       # checkpoint, records, progress line
        if not self.final_done:                           # once, also across a resume
            self.run.epoch = cfg.epochs
            method.after_training(model, self.run)
            self.final_done = True
            self.save_checkpoint()
        final = self.evaluate_deployed()
        if self.dist.main:                                # e.g. SR output crops for the report
            with method.deployed(model):
                self.task.save_samples(model, self.data, self.run_dir)
        self.write_records("completed", final)
        self.log(f"completed: {self.task.result_text(final)}")
        return self.summary("completed", final)

    # --- set-up
    def setup(self, data=None) -> None:
        """Build everything a run needs; ``data`` replaces the configured dataset (bench)."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.data = data if data is not None else self.task.load_data(cfg, self.device)
        self.method = make_method(cfg)
        self.model = models.build(cfg, self.data.num_classes, self.data.in_channels,
                                  self.data.image_size, self.method).to(self.device)
        self.run = RunContext(cfg, self.device, self.data, self.evaluate_pair, self.log)
        self.method.prepare(self.model, self.run)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        groups = self.method.param_groups(self.model, default_param_groups(self.model, cfg.optim))
        self.optimizer = make_optimizer(groups, cfg.optim)
        self.seed_fingerprint = seeding.seed_fingerprint(self.model, self.gen)
        self.spe = self.data.steps_per_epoch(cfg.batch_size)
        self.display = Display(cfg, self.echo, self.spe, self.dist.main)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.spe, cfg.epochs, cfg.optim))
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
                      opcount.count_training_flops(self, Trainer.train_step))

    def recorded_costs(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The costs an earlier attempt of this run recorded in its summary.json (same config,
        same number of processes), without the parts cost_fields measures afresh; None when
        there are none."""
        try:
            s = records.read_summary(self.run_dir)
        except (OSError, ValueError, TypeError):
            return None
        train = s.training_cost
        if s.config_hash != C.config_hash(self.cfg) or not s.inference_cost or \
                "flops_per_step" not in train or train.get("world_size") != self.dist.world:
            return None
        fresh = ("step_time_s", "device_hours", "world_size", "threads")
        return s.inference_cost, {k: v for k, v in train.items() if k not in fresh}

    def progress(self, epoch: int) -> Progress:
        return Progress(epoch, self.cfg.epochs, self.step_count, self.spe)

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
            loss, total, out = self.train_step(x, y, Progress(epoch, cfg.epochs,
                                                              self.step_count, self.spe))
            self.task.accumulate(sums, loss, total, out, y)
            self.step_count += 1
            self.display.step()
        self.dist.sync_buffers(self.model)
        self.dist.all_sum(*sums.values())
        if not bool(torch.isfinite(sums["total"])):
            raise Diverged(f"non-finite loss in epoch {epoch + 1}")
        return self.task.train_stats(sums)

    def train_step(self, x: torch.Tensor, y: torch.Tensor,
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
        return loss.detach(), total.detach(), out.detach()

    def evaluate_deployed(self) -> dict[str, float]:
        """The test columns (test loss, accuracy % or PSNR/SSIM) of the discrete, deployable
        network."""
        with self.method.deployed(self.model):
            return self.task.evaluate(self.model, self.data, self.cfg, self.device, self.dist)

    def evaluate_pair(self, model: nn.Module) -> tuple[float, float]:
        """(test loss, the task's score) of ``model`` as it is: RunContext.evaluate."""
        test = self.task.evaluate(model, self.data, self.cfg, self.device, self.dist)
        return test["test_loss"], test[self.task.primary]

    def check_finite(self, epoch: int, test_loss: float) -> None:
        if not math.isfinite(test_loss):
            raise Diverged(f"non-finite test loss after epoch {epoch + 1}")
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
        self.rows.append(_plain(row))
        self.epoch = row["epoch"]
        self.save_checkpoint()
        self.write_records("running")
        line = self.task.epoch_line(row, self.cfg.epochs)
        self.log(line)
        self.display.epoch_end(line)
        for sink in list(self.sinks):
            try:
                sink.log(self.rows[-1])
            except Exception as e:  # a sink never turns a result into a failure
                self.echo(f"warning: logger {type(sink).__name__} failed and is turned off "
                          f"for this run ({type(e).__name__}: {e}); metrics.csv is complete")
                self.sinks.remove(sink)

    # --- checkpoints
    def save_checkpoint(self) -> None:
        if not self.dist.main:
            return
        records.atomic_torch_save(self.run_dir / "checkpoint.pt", {
            "epoch": self.epoch, "step": self.step_count, "wall_time_s": self.wall,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "method": self.method.state_dict(),
            "rng": _rng_state(self.gen), "rows": self.rows, "final_done": self.final_done,
            "config_hash": C.config_hash(self.cfg)})

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint; False (and the run starts over, saying why) when there
        is none, it is unreadable, or it belongs to another config."""
        path = self.run_dir / "checkpoint.pt"
        if not path.exists():
            return False
        try:
            ck = records.load_tensors(path, self.device)
        except Exception as e:  # unreadable, or not weights-only: start over, never execute it
            self.log(f"checkpoint unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                     "; starting from scratch")
            return False
        want = C.config_hash(self.cfg)
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
        _set_rng_state(ck["rng"], self.gen)
        self.epoch, self.step_count, self.wall = ck["epoch"], ck["step"], ck["wall_time_s"]
        self.rows, self.final_done = ck["rows"], ck.get("final_done", False)
        return True

    def resume(self) -> None:
        """Restore the last checkpoint (if any), say where the run starts, open the sinks."""
        resumed = self.load_checkpoint()
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        line = (f"resumed at epoch {self.epoch} of {cfg.epochs}" if resumed else
                f"start {cfg.method} W{cfg.w_bits}/A{cfg.a_bits} {cfg.model.name} on "
                f"{cfg.data.name} ({self.data.num_train} train images, {self.spe} steps per "
                f"epoch), {n_params:,} parameters, device {self.device}")
        self.log(line)
        self.display.say(f"{self.run_dir}: {line}")
        reset_peak_memory(self.device)
        if self.dist.main:
            self.sinks = [SINKS[name]() for name in cfg.loggers]
            for sink in self.sinks:
                sink.start(self.run_dir, C.to_dict(cfg), self.rows)
        src = source.state()
        if src.dirty and self.dist.main:  # the uncommitted code this run used, kept with it
            records.atomic_write_text(self.run_dir / "source.diff", src.diff)

    # --- records
    def log(self, line: str) -> None:
        if self.dist.main:
            records.append_log(self.run_dir, f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}")

    def summary(self, status: str, final: dict[str, float] | None = None,
                error: str = "") -> records.RunSummary:
        return records.RunSummary.from_rows(
            status, self.rows, self.cfg.epochs,
            **self.task.summary_fields(self.rows, final, getattr(self, "data", None)),
            wall_time_s=self.wall,
            peak_mem_mb=peak_memory_mb(self.device),
            peak_mem_kind="cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss",
            **memory_costs(self.model, self.optimizer), config_hash=C.config_hash(self.cfg),
            env=environment(self.device), method_info=type(self.method).info(),
            data_fingerprint=getattr(self.data, "fingerprint", {}),
            seed_fingerprint=getattr(self, "seed_fingerprint", {}),
            **self.cost_fields(), error=error,
            changed_after_training=self.method.changed_after_training() if self.final_done
            else "")

    def cost_fields(self) -> dict[str, dict[str, Any]]:
        """The summary's inference_cost and training_cost (with the measured step time and
        device-hours: wall-clock hours x processes)."""
        inference, training = getattr(self, "costs", ({}, {}))
        if not training:
            return {"inference_cost": inference, "training_cost": {}}
        times = [r["epoch_time_s"] for r in self.rows]
        step_s = sum(times) / len(times) / self.spe if times else None
        return {"inference_cost": inference, "training_cost": {
            **training, "step_time_s": step_s, "device_hours": self.wall * self.dist.world / 3600,
            "world_size": self.dist.world, "threads": torch.get_num_threads()}}

    def write_records(self, status: str, final: dict[str, float] | None = None,
                      error: str = "") -> None:
        if not self.dist.main:
            return
        records.write_metrics(self.run_dir, self.rows, self.task.columns)
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
                                       C.config_hash(self.cfg), environment(self.device))
            return records.RunSummary(status=status, epochs=self.cfg.epochs, error=error)
        self.write_records(status, error=error)
        return self.summary(status, error=error)


class Display:
    """What the terminal shows of a run. ``bar`` (the default on a terminal): a tqdm bar over
    the steps of the current epoch, with each finished epoch's line left above it; ``line``
    (the default otherwise: logs, pipes, jobs): one line per epoch; ``none``. Only rank 0
    of a distributed run shows anything."""

    def __init__(self, cfg: C.RunConfig, echo: Callable[[str], None], steps: int, main: bool):
        mode = cfg.progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "line"
        self.mode = mode if main else "none"
        self.echo, self.steps, self.epochs, self.bar = echo, steps, cfg.epochs, None

    def say(self, line: str) -> None:
        if self.mode != "none":
            tqdm.write(line) if self.mode == "bar" else self.echo(line)

    def epoch_start(self, epoch: int) -> None:
        if self.mode == "bar":
            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}",
                            unit="step", leave=False, dynamic_ncols=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def epoch_end(self, line: str) -> None:
        self.close()
        self.say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def prepare_run_dir(run_dir: Path, cfg: C.RunConfig) -> str:
    """Create or check RUN_DIR. Returns its state: 'new', 'resume' or the finished status.

    A run whose records say completed but do not agree (records.load_run) is resumed: its
    checkpoint rewrites them (or, without one, it starts over)."""
    run_dir = Path(run_dir)
    records.ensure_writable_dir(run_dir, "--out", "choose a writable directory")
    cfg_path = run_dir / "config.json"
    want = C.config_hash(cfg)
    if not cfg_path.exists():
        records.atomic_write_json(cfg_path, {**C.to_dict(cfg), "config_hash": want})
        return "new"
    try:
        have = records.read_json(cfg_path).get("config_hash")
    except (OSError, ValueError, AttributeError):
        raise UserError("--out", f"{cfg_path} is corrupt; delete {str(run_dir)!r} or choose "
                        "another --out") from None
    if have != want:
        diff = C.describe_diff(records.read_json(cfg_path), cfg)
        raise UserError("--out", f"{str(run_dir)!r} holds a run with a different config ("
                        f"{'; '.join(diff[:6]) or f'hash {have}, this one {want}'}"
                        f"{'; ...' if len(diff) > 6 else ''}); resume it as it was with "
                        f"`python -m harness run --resume {run_dir}`, or choose another --out")
    rec = records.load_run(run_dir, with_metrics=False)
    return rec.status if rec.status in ("completed", "diverged") else "resume"


def run(cfg: C.RunConfig, run_dir: Path,
        echo: Callable[[str], None] = print) -> records.RunSummary:
    """Train (or resume, or do nothing if finished) one run into ``run_dir``.

    An exclusive lock on RUN_DIR/.lock makes a second process on the same run (a duplicate
    job, a user re-running the command) stop at once instead of interleaving records."""
    run_dir = Path(run_dir)
    tasks.get(cfg.task).check_root(cfg)
    if not Dist.from_env().main:  # rank 0 owns (checks, locks, writes) the run directory
        if prepare_state(run_dir) in ("completed", "diverged"):
            return records.read_summary(run_dir)
        return Trainer(cfg, run_dir, echo).run_guarded()
    echo = safe_echo(echo)
    state = prepare_run_dir(run_dir, cfg)
    if state in ("completed", "diverged"):
        echo(f"{run_dir}: already {state}; nothing to do")
        return records.read_summary(run_dir)
    with open(run_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"{run_dir}: another process is training this run; nothing to do")
            return records.RunSummary(status="running", epochs=cfg.epochs,
                                      error="run directory locked by another process")
        state = prepare_run_dir(run_dir, cfg)  # it may have finished while we waited
        if state in ("completed", "diverged"):
            echo(f"{run_dir}: already {state}; nothing to do")
            return records.read_summary(run_dir)
        records.remove_stale_temp_files(run_dir)  # ours alone now: we hold the lock
        problem = records.load_run(run_dir, with_metrics=False).problem
        if problem and problem != "no config.json":
            echo(f"{run_dir}: records are corrupt ({problem}); repairing from the checkpoint")
        with owner_file(run_dir):
            return Trainer(cfg, run_dir, echo).run_guarded()


def prepare_state(run_dir: Path) -> str | None:
    """The finished status recorded in RUN_DIR/summary.json, if readable."""
    try:
        return records.read_summary(run_dir).status
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def owner_file(run_dir: Path) -> Iterator[None]:
    """RUN_DIR/.owner names the process training the run (pid + start token + host) while
    it does: `status` calls a run running only while this process lives."""

    path = run_dir / ".owner"
    records.atomic_write_json(path, procs.identity(os.getpid()))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


# --------------------------------------------------------------------------- the command

def cmd_run(args) -> int:
    """`python -m harness run`: exit 0 completed, 1 failed, 3 diverged, 143 interrupted."""
    if args.resume:  # the run's own config; flags and --set may change what is not semantic
        require(not args.config and (not args.out or Path(args.out) == Path(args.resume)),
                "--resume", "takes the run's own config.json and directory; drop --config and "
                "--out")
        require((Path(args.resume) / "config.json").is_file(), "--resume",
                f"{args.resume!r} has no config.json; pass a run directory")
        args.config, args.out = str(Path(args.resume) / "config.json"), args.resume
    require(bool(args.out and args.out.strip()), "--out",
            "give a run directory, e.g. --out results/runs/mine (or --resume RUN_DIR)")
    flags = {key: getattr(args, key) for _, key, _, _ in RUN_FLAGS}
    flags["data.download"] = getattr(args, "data.download")
    cfg = C.build(args.config, flags, args.set)
    before = raise_on_sigterm()  # SIGTERM: the run ends interrupted with its last checkpoint
    try:
        summary = run(cfg, Path(args.out))
    except Interrupted:
        print(f"{args.out}: interrupted; resume it with `python -m harness run --resume "
              f"{args.out}` (or re-run the same command)", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)
    if summary.status == "completed":
        if Dist.from_env().main:
            if summary.task == "classify":
                print(f"{args.out}: completed, final deployed test accuracy "
                      f"{summary.final_test_acc:.2f}%")
            else:
                print(f"{args.out}: completed, final deployed {summary.metric} "
                      f"{summary.final_metric:.4g}")
        return 0
    return 3 if summary.status == "diverged" else 1
