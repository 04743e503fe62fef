"""The shared training core: one loop drives every method through the hooks of methods/base.py.

Read :meth:`Trainer.fit` first: set-up (seed, data, model, method, optimizer) -> resume ->
epochs (method epoch hook, training steps, method epoch-end hook, deployed evaluation, method
scalars, checkpoint, records) -> end-of-training hook -> final deployed evaluation -> summary.
:meth:`Trainer.run_guarded` records every way a run can end (completed, diverged, failed,
interrupted); :func:`run` adds the run-directory checks and the lock.
"""
from __future__ import annotations

import contextlib
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
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from harness import config as C
from harness import data as data_mod
from harness import models, opcount, procs, records, source
from harness.cost import memory_costs
from harness.env import environment, peak_memory_mb, reset_peak_memory, resolve_device
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
    return [{"params": ps, "weight_decay": wd[k], "kind": k} for k, ps in groups.items() if ps]


def make_optimizer(groups: list[dict], ocfg: C.OptimConfig) -> torch.optim.Optimizer:
    if ocfg.name == "sgd":
        return torch.optim.SGD(groups, lr=ocfg.lr, momentum=ocfg.momentum,
                               nesterov=ocfg.nesterov and ocfg.momentum > 0)
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


# --------------------------------------------------------------------------- distributed

@dataclass(frozen=True)
class Dist:
    """torch.distributed placement from the usual env vars (torchrun, or submitit's
    TorchDistributedEnvironment for multi-task jobs). world == 1: plain single process.

    The global batch is ``batch_size``; rank r trains on rows r, r+world, ... of every batch
    (each rank draws the same permutation and augmentation, so no sampler state can drift).
    Only rank 0 writes records and checkpoints.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @staticmethod
    def from_env() -> "Dist":
        env = os.environ
        return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                    int(env.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *tensors: torch.Tensor) -> None:
        if self.world > 1:
            for t in tensors:
                torch.distributed.all_reduce(t)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.world == 1 else x[self.rank::self.world]


# --------------------------------------------------------------------------- loop pieces

@dataclass
class RunContext:
    """What hooks may use besides the model: data, evaluation and logging."""
    cfg: C.RunConfig
    device: torch.device
    data: Any
    evaluate: Callable[[nn.Module], tuple[float, float]]
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


def autocast(cfg: C.RunConfig, device: torch.device):
    if cfg.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, data, cfg: C.RunConfig, device: torch.device,
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
        except (BrokenPipeError, ValueError):  # ValueError: print to a closed file
            state["open"] = False
            with contextlib.suppress(OSError):  # nothing left for the exit-time flush
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
        self.rows: list[dict[str, Any]] = []
        self.epoch, self.step_count, self.wall, self.final_done = 0, 0, 0.0, False

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
            method.on_epoch_start(model, self.progress(epoch))
            train_stats = self.train_epoch(epoch)         # before_step, loss, after_step
            method.after_epoch(model, self.run)           # recalibration, bookkeeping
            train_time = self.clock() - t0
            test_loss, test_acc = self.evaluate_deployed()
            row = {"epoch": epoch + 1, **train_stats, "test_loss": test_loss,
                   "test_acc": test_acc, "lr": self.lr_at_epoch_start, "epoch_time_s": train_time,
                   "samples_per_s": self.data.num_train / train_time,
                   **method.scalars(model, self.run)}
            self.end_epoch(row, t0)                       # checkpoint, records, progress line
        if not self.final_done:                           # once, also across a resume
            self.run.epoch = cfg.epochs
            method.after_training(model, self.run)
            self.final_done = True
            self.save_checkpoint()
        final = self.evaluate_deployed()[1]
        self.write_records("completed", final)
        self.log(f"completed: final deployed test acc {final:.2f}%")
        return self.summary("completed", final)

    # --- set-up
    def setup(self, data=None) -> None:
        """Build everything a run needs; ``data`` replaces the configured dataset (bench)."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.data = data if data is not None else data_mod.load(cfg.data, self.device)
        self.method = make_method(cfg)
        self.model = models.build(cfg, self.data.num_classes, self.data.in_channels,
                                  self.data.image_size, self.method).to(self.device)
        self.run = RunContext(cfg, self.device, self.data,
                              lambda m: evaluate(m, self.data, cfg, self.device, self.dist),
                              self.log)
        self.method.prepare(self.model, self.run)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        groups = self.method.param_groups(self.model, default_param_groups(self.model, cfg.optim))
        self.optimizer = make_optimizer(groups, cfg.optim)
        self.spe = self.data.steps_per_epoch(cfg.batch_size)
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
        copies (harness.opcount): the run itself is untouched."""
        if not self.dist.main:
            return
        d = self.data
        inf = opcount.inference_cost(self.cfg, d.num_classes, d.in_channels, d.image_size)
        self.costs = ({k: v for k, v in inf.items() if k != "layers"},
                      opcount.count_training_flops(self))

    def progress(self, epoch: int) -> Progress:
        return Progress(epoch, self.cfg.epochs, self.step_count, self.spe)

    # --- one epoch, one step
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; train loss and accuracy (summed on the device,
        one host sync at the end). A non-finite loss raises Diverged."""
        cfg, dev = self.cfg, self.device
        self.model.train()
        self.lr_at_epoch_start = self.optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        total_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        n = torch.zeros((), device=dev, dtype=torch.int64)
        for x, y in self.data.train_batches(cfg.batch_size, self.gen):
            x, y = self.dist.shard(x), self.dist.shard(y)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, total, out = self.train_step(x, y, Progress(epoch, cfg.epochs,
                                                              self.step_count, self.spe))
            loss_sum += loss.double() * len(y)
            total_sum += total.double()
            correct += (out.argmax(1) == y).sum()
            n += len(y)
            self.step_count += 1
        self.dist.all_sum(loss_sum, total_sum, correct, n)
        if not bool(torch.isfinite(total_sum)):
            raise Diverged(f"non-finite loss in epoch {epoch + 1}")
        return {"train_loss": float(loss_sum) / int(n), "train_acc": 100.0 * int(correct) / int(n)}

    def train_step(self, x: torch.Tensor, y: torch.Tensor,
                   prog: Progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step through every method hook. Returns (task loss, total loss,
        logits), detached and still on the device (no host sync)."""
        method, model = self.method, self.model
        method.before_step(model, prog)
        with autocast(self.cfg, self.device):
            out = self.forward(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=self.cfg.optim.label_smoothing)
            extra = method.loss(model)
            total = loss if extra is None else loss + extra
        model.zero_grad(set_to_none=True)  # all parameters, also those a method updates itself
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        method.after_step(model, x, y, prog)
        return loss.detach(), total.detach(), out.detach()

    def evaluate_deployed(self) -> tuple[float, float]:
        """(test loss, test accuracy %) of the discrete, deployable network."""
        with self.method.deployed(self.model):
            return self.run.evaluate(self.model)

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
        line = _epoch_line(row, self.cfg.epochs)
        self.log(line)
        self.bar(line)

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
        resumed = self.load_checkpoint()
        cfg = self.cfg
        self.log(f"resumed at epoch {self.epoch}" if resumed else
                 f"start {cfg.method} W{cfg.w_bits}/A{cfg.a_bits} {cfg.model.name} on "
                 f"{cfg.data.name} ({self.data.num_train} train images), device {self.device}")
        reset_peak_memory(self.device)
        self.bar = _progress(cfg, self.epoch, self.echo) if self.dist.main else (lambda s: None)
        src = source.state()
        if src.dirty and self.dist.main:  # the uncommitted code this run used, kept with it
            records.atomic_write_text(self.run_dir / "source.diff", src.diff)

    # --- records
    def log(self, line: str) -> None:
        if self.dist.main:
            records.append_log(self.run_dir, f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}")

    def summary(self, status: str, final_acc: float | None = None,
                error: str = "") -> records.RunSummary:
        return records.RunSummary.from_rows(
            status, self.rows, self.cfg.epochs, final_acc, wall_time_s=self.wall,
            peak_mem_mb=peak_memory_mb(self.device),
            peak_mem_kind="cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss",
            **memory_costs(self.model, self.optimizer), config_hash=C.config_hash(self.cfg),
            env=environment(self.device), method_info=type(self.method).info(),
            **self.cost_fields(), error=error)

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

    def write_records(self, status: str, final_acc: float | None = None, error: str = "") -> None:
        if not self.dist.main:
            return
        records.write_metrics(self.run_dir, self.rows)
        records.write_summary(self.run_dir, self.summary(status, final_acc, error))

    # --- the guarded run: every way it can end is recorded
    def run_guarded(self) -> records.RunSummary:
        if self.dist.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo",
                rank=self.dist.rank, world_size=self.dist.world)
        self.bar = lambda line: None
        try:
            return self.fit()
        except Diverged as e:
            return self._ended("diverged", str(e))
        except (Interrupted, KeyboardInterrupt) as e:
            self._ended("interrupted", f"interrupted ({e or 'Ctrl-C'}) after epoch {self.epoch}; "
                                       "re-run to resume from its checkpoint")
            raise
        except Exception as e:
            self.log("failed:\n" + traceback.format_exc())
            self._ended("failed", f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        finally:
            self.bar(None)
            if self.dist.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

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


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                     if k not in records.METRIC_COLUMNS and isinstance(v, (int, float)))
    return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} "
            f"train {row['train_acc']:.2f}% test {row['test_acc']:.2f}% lr {row['lr']:.4g} "
            f"{row['epoch_time_s']:.1f}s {extra}").rstrip()


def _progress(cfg: C.RunConfig, start: int, echo) -> Callable[[str | None], None]:
    """A tqdm bar on a TTY, one line per epoch otherwise (``progress`` can force either)."""
    mode = cfg.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "line"
    if mode == "none":
        return lambda line: None
    if mode == "line":
        return lambda line: line is not None and echo(line)

    bar = tqdm(total=cfg.epochs, initial=start, unit="epoch", dynamic_ncols=True)

    def update(line):
        if line is None:
            bar.close()
        else:
            bar.set_postfix_str(line.split(" ", 2)[2][:80])
            bar.update(1)
    return update


def prepare_run_dir(run_dir: Path, cfg: C.RunConfig) -> str:
    """Create or check RUN_DIR. Returns its state: 'new', 'resume' or the finished status."""
    run_dir = Path(run_dir)
    records.ensure_writable_dir(run_dir, "--out", "choose a writable directory")
    cfg_path = run_dir / "config.json"
    want = C.config_hash(cfg)
    if not cfg_path.exists():
        records.atomic_write_json(cfg_path, {**C.to_dict(cfg), "config_hash": want})
        return "new"
    try:
        have = records.read_json(cfg_path).get("config_hash")
    except (ValueError, AttributeError):
        raise UserError("--out", f"{cfg_path} is corrupt; delete {str(run_dir)!r} or choose "
                        "another --out") from None
    if have != want:
        raise UserError("--out", f"{str(run_dir)!r} holds a run with a different config "
                        f"(hash {have}, this one {want}); choose another --out or delete it")
    try:
        status = records.read_summary(run_dir).status
    except (OSError, ValueError, TypeError):
        status = None
    return status if status in ("completed", "diverged") else "resume"


def run(cfg: C.RunConfig, run_dir: Path,
        echo: Callable[[str], None] = print) -> records.RunSummary:
    """Train (or resume, or do nothing if finished) one run into ``run_dir``.

    An exclusive lock on RUN_DIR/.lock makes a second process on the same run (a duplicate
    job, a user re-running the command) stop at once instead of interleaving records."""
    run_dir = Path(run_dir)
    data_mod.check_root(cfg.data)
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
    from harness.cli import RUN_FLAGS

    flags = {key: getattr(args, key) for _, key, _, _ in RUN_FLAGS}
    flags["data.download"] = getattr(args, "data.download")
    cfg = C.build(args.config, flags, args.set)
    raise_on_sigterm()  # SIGTERM: the run ends interrupted with its last checkpoint
    try:
        summary = run(cfg, Path(args.out))
    except Interrupted:
        print(f"{args.out}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 143
    if summary.status == "completed":
        if Dist.from_env().main:
            print(f"{args.out}: completed, final deployed test accuracy "
                  f"{summary.final_test_acc:.2f}%")
        return 0
    return 3 if summary.status == "diverged" else 1
