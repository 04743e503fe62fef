"""The shared training core: one loop drives every method through the hooks of methods/base.py.

Pipeline order: set-up (seed, data, model, method, optimizer) -> resume -> epochs (train,
method epoch hook, deployed evaluation, method scalars, checkpoint, records) -> end of
training hook -> final deployed evaluation -> summary.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import config as C
from harness import data as data_mod
from harness import models, records
from harness.env import environment, peak_memory_mb, reset_peak_memory, resolve_device
from methods.act import PactAct
from methods.base import Method, Progress, UserError, WeightQuantizer, get as get_method


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


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def optimizer_state_bytes(opt: torch.optim.Optimizer, params=None) -> int:
    ids = None if params is None else {id(p) for p in params}
    return sum(tensor_bytes(s.values()) for p, s in opt.state.items()
               if ids is None or id(p) in ids)


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

    def train_batches(self, n: int, seed_offset: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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


def train_step(model, forward, method, optimizer, scheduler, x, y, cfg, device,
               prog: Progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step through every method hook. Returns (task loss, total loss, logits),
    detached and still on the device (no host sync)."""
    method.before_step(model, prog)
    with autocast(cfg, device):
        out = forward(x)
        loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.optim.label_smoothing)
        extra = method.loss(model)
        total = loss if extra is None else loss + extra
    model.zero_grad(set_to_none=True)  # all parameters, also those a method updates itself
    total.backward()
    optimizer.step()
    scheduler.step()
    method.after_step(model, x, y, prog)
    return loss.detach(), total.detach(), out.detach()


def train_one_epoch(model, forward, method, optimizer, scheduler, data, gen, cfg, device,
                    epoch: int, step: int, dist: Dist = Dist()) -> tuple[dict[str, float], int]:
    model.train()
    spe = data.steps_per_epoch(cfg.batch_size)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    total_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = torch.zeros((), device=device, dtype=torch.int64)
    for x, y in data.train_batches(cfg.batch_size, gen):
        x, y = dist.shard(x), dist.shard(y)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss, total, out = train_step(model, forward, method, optimizer, scheduler, x, y, cfg,
                                      device, Progress(epoch, cfg.epochs, step, spe))
        loss_sum += loss.double() * len(y)
        total_sum += total.double()
        correct += (out.argmax(1) == y).sum()
        n += len(y)
        step += 1
    dist.all_sum(loss_sum, total_sum, correct, n)
    stats = {"train_loss": float(loss_sum) / int(n), "train_acc": 100.0 * int(correct) / int(n),
             "finite": bool(torch.isfinite(total_sum))}
    return stats, step


# --------------------------------------------------------------------------- the run

class Diverged(Exception):
    pass


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    except ValueError:
        raise UserError("--out", f"{cfg_path} is corrupt; delete {str(run_dir)!r} or choose "
                        "another --out") from None
    if have != want:
        raise UserError("--out", f"{str(run_dir)!r} holds a run with a different config "
                        f"(hash {have}, this one {want}); choose another --out or delete it")
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            status = records.read_json(summary).get("status")
        except ValueError:
            status = None
        if status in ("completed", "diverged"):
            return status
    return "resume"


class Trainer:
    def __init__(self, cfg: C.RunConfig, run_dir: Path, echo: Callable[[str], None] = print):
        self.cfg, self.run_dir, self.echo = cfg, Path(run_dir), echo
        self.dist = Dist.from_env()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.dist.world > 1:
            self.device = torch.device("cuda", self.dist.local_rank % torch.cuda.device_count())

    def log(self, line: str) -> None:
        if self.dist.main:
            records.append_log(self.run_dir, f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}")

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
        self.ctx = RunContext(cfg, self.device, self.data,
                              lambda m: evaluate(m, self.data, cfg, self.device, self.dist),
                              self.log)
        self.method.prepare(self.model, self.ctx)
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
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.forward = torch.compile(self.forward)
        self.rows: list[dict[str, Any]] = []
        self.start_epoch, self.step, self.wall, self.final_done = 0, 0, 0.0, False

    def _state_buffers(self) -> int:
        """Bytes of buffers a method keeps as optimizer-like state (e.g. Bop's m)."""
        return tensor_bytes(getattr(m, n) for m in self.model.modules()
                            if isinstance(m, WeightQuantizer) for n in m.state_buffers)

    def method_params(self) -> list[torch.Tensor]:
        return [p for m in self.model.modules() if isinstance(m, WeightQuantizer)
                for p in m.parameters()]

    # --- checkpoints
    def save_checkpoint(self, final_done: bool = False) -> None:
        if not self.dist.main:
            return
        records.atomic_torch_save(self.run_dir / "checkpoint.pt", {
            "epoch": self.start_epoch, "step": self.step, "wall_time_s": self.wall,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "method": self.method.state_dict(),
            "rng": _rng_state(self.gen), "rows": self.rows, "final_done": final_done,
            "config_hash": C.config_hash(self.cfg)})

    def load_checkpoint(self) -> bool:
        path = self.run_dir / "checkpoint.pt"
        if not path.exists():
            return False
        try:
            ck = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as e:  # a corrupt checkpoint is reported and the run starts over
            self.log(f"checkpoint unreadable ({e}); starting from scratch")
            return False
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.method.load_state_dict(ck["method"])
        _set_rng_state(ck["rng"], self.gen)
        self.start_epoch, self.step, self.wall = ck["epoch"], ck["step"], ck["wall_time_s"]
        self.rows, self.final_done = ck["rows"], ck.get("final_done", False)
        return True

    # --- records
    def summary(self, status: str, final_acc: float | None = None,
                error: str = "") -> records.RunSummary:
        accs = [r["test_acc"] for r in self.rows] + ([final_acc] if final_acc is not None else [])
        times = [r["epoch_time_s"] for r in self.rows]
        mparams = self.method_params()
        return records.RunSummary(
            status=status, epochs=self.cfg.epochs, epochs_completed=len(self.rows),
            final_test_acc=final_acc, best_test_acc=max(accs) if accs else None,
            wall_time_s=self.wall, mean_epoch_time_s=float(np.mean(times)) if times else None,
            peak_mem_mb=peak_memory_mb(self.device),
            peak_mem_kind="cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss",
            param_bytes=tensor_bytes(self.model.parameters()),
            method_param_bytes=tensor_bytes(mparams),
            optimizer_state_bytes=optimizer_state_bytes(self.optimizer) + self._state_buffers(),
            method_optimizer_state_bytes=optimizer_state_bytes(self.optimizer, mparams)
            + self._state_buffers(),
            config_hash=C.config_hash(self.cfg), env=environment(self.device),
            method_info=type(self.method).info(), error=error)

    def write_records(self, status: str, final_acc: float | None = None, error: str = "") -> None:
        if not self.dist.main:
            return
        records.write_metrics(self.run_dir, self.rows)
        records.write_summary(self.run_dir, self.summary(status, final_acc, error))

    # --- epochs
    def epoch(self, epoch: int) -> dict[str, Any]:
        cfg, sync = self.cfg, self._sync
        self.ctx.epoch = epoch
        lr = self.optimizer.param_groups[0]["lr"]
        sync()
        t0 = time.perf_counter()
        self.method.on_epoch_start(self.model, Progress(epoch, cfg.epochs, self.step, self.spe))
        stats, self.step = train_one_epoch(self.model, self.forward, self.method, self.optimizer,
                                           self.scheduler, self.data, self.gen, cfg,
                                           self.device, epoch, self.step, self.dist)
        if not stats.pop("finite"):
            raise Diverged(f"non-finite loss in epoch {epoch + 1}")
        self.method.after_epoch(self.model, self.ctx)
        sync()
        dt = time.perf_counter() - t0
        with self.method.deployed(self.model):
            test_loss, test_acc = self.ctx.evaluate(self.model)
        row = {"epoch": epoch + 1, **stats, "test_loss": test_loss, "test_acc": test_acc,
               "lr": lr, "epoch_time_s": dt, "samples_per_s": self.data.num_train / dt}
        row.update(self.method.scalars(self.model, self.ctx))
        self.wall += time.perf_counter() - t0
        return row

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def finish(self) -> float:
        """End-of-training hook (once) and the final deployed evaluation."""
        if not self.final_done:
            self.ctx.epoch = self.cfg.epochs
            self.method.after_training(self.model, self.ctx)
            self.final_done = True
            self.save_checkpoint(final_done=True)
        with self.method.deployed(self.model):
            return self.ctx.evaluate(self.model)[1]

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.dist.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo",
                rank=self.dist.rank, world_size=self.dist.world)
        try:
            return self._run()
        finally:
            if self.dist.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _record_setup_failure(self, error: str) -> None:
        """A run that cannot even start is recorded as failed (never left 'missing')."""
        if not self.dist.main:
            return
        path = self.run_dir / "summary.json"
        try:
            old = records.read_json(path) if path.exists() else {}
        except ValueError:
            old = {}
        records.atomic_write_json(path, {
            "epochs_completed": 0, **old, "epochs": self.cfg.epochs, "status": "failed",
            "error": error, "config_hash": C.config_hash(self.cfg),
            "env": environment(self.device)})

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        try:
            self.setup()
            resumed = self.load_checkpoint()
        except Exception as e:
            self.log("failed during set-up:\n" + traceback.format_exc())
            self._record_setup_failure(f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        self.log(("resumed at epoch %d" % self.start_epoch) if resumed else
                 f"start {cfg.method} W{cfg.w_bits}/A{cfg.a_bits} {cfg.model.name} on "
                 f"{cfg.data.name} ({self.data.num_train} train images), device {self.device}")
        reset_peak_memory(self.device)
        self.write_records("running")
        bar = _progress(cfg, self.start_epoch) if self.dist.main else (lambda line: None)
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                row = self.epoch(epoch)
                self.rows.append(row)
                self.start_epoch = epoch + 1
                self.save_checkpoint()
                self.write_records("running")
                line = _epoch_line(row, cfg.epochs)
                self.log(line)
                bar(line)
            final = self.finish()
        except Diverged as e:
            self.log(f"diverged: {e}")
            self.write_records("diverged", error=str(e))
            self.echo(f"diverged: {e}")
            return self.summary("diverged", error=str(e))
        except Exception as e:
            self.log("failed:\n" + traceback.format_exc())
            self.write_records("failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        finally:
            bar(None)
        self.write_records("completed", final)
        self.log(f"completed: final deployed test acc {final:.2f}%")
        return self.summary("completed", final)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    extra = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                     if k not in records.METRIC_COLUMNS and isinstance(v, (int, float)))
    return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} "
            f"train {row['train_acc']:.2f}% test {row['test_acc']:.2f}% lr {row['lr']:.4g} "
            f"{row['epoch_time_s']:.1f}s {extra}").rstrip()


def _progress(cfg: C.RunConfig, start: int) -> Callable[[str | None], None]:
    """A tqdm bar on a TTY, one line per epoch otherwise (``progress`` can force either)."""
    mode = cfg.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "line"
    if mode == "none":
        return lambda line: None
    if mode == "line":
        return lambda line: line is not None and print(line, flush=True)
    from tqdm import tqdm

    bar = tqdm(total=cfg.epochs, initial=start, unit="epoch", dynamic_ncols=True)

    def update(line):
        if line is None:
            bar.close()
        else:
            bar.set_postfix_str(line.split(" ", 2)[2][:80])
            bar.update(1)
    return update


def run(cfg: C.RunConfig, run_dir: Path, echo: Callable[[str], None] = print) -> records.RunSummary:
    """Train (or resume, or do nothing if finished) one run into ``run_dir``.

    An exclusive lock on RUN_DIR/.lock makes a second process on the same run (a duplicate
    job, a user re-running the command) stop at once instead of interleaving records."""
    data_mod.check_root(cfg.data)
    if not Dist.from_env().main:  # rank 0 owns (checks, locks, writes) the run directory
        summary = Path(run_dir) / "summary.json"
        if summary.exists() and records.read_json(summary).get("status") in ("completed", "diverged"):
            return records.read_summary(run_dir)
        return Trainer(cfg, run_dir, echo).run()
    state = prepare_run_dir(run_dir, cfg)
    if state in ("completed", "diverged"):
        echo(f"{run_dir}: already {state}; nothing to do")
        return records.read_summary(run_dir)
    with open(Path(run_dir) / ".lock", "w") as lock:
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
        return Trainer(cfg, run_dir, echo).run()
