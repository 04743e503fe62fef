"""The selftest's checks of one training path: a run's loss falls, its deployed network is
its export, two same-seed runs are bitwise equal; the results' records (Check, Summary) and
the small helpers the sections share."""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from harness import files, records
from harness.config import RunConfig
from harness.deploy import export
from harness.errors import UserError, require
from harness.run import checkpoint
from harness.run.env import environment
from harness.run.rundir import prepare_run_dir
from harness.run.trainer import Trainer
from harness.tasks.runtime import autocast
from methods.base import load_all

FORMAT = "slbench-selftest/1"
SECTIONS = ("train", "switches", "epoch", "ratios", "ddp", "packing")
LOSS_FALL = 0.95          # last tenth's mean loss <= 0.95 x the first tenth's
CHECK_BITS = (1, 2)       # weight bits of the train section (A32); fp runs at its own 32
SWITCHES = {              # name -> config switches (switches and epoch sections)
    "channels_last": {"channels_last": True},
    "amp": {"amp": True},
    "channels_last+amp": {"channels_last": True, "amp": True},
    "channels_last+amp+compile": {"channels_last": True, "amp": True, "compile": True},
}
SWITCH_RUNS = ("channels_last", "amp", "channels_last+amp+compile")
SWITCH_METHODS = (("fp", 32), ("slb", 1))
EPOCH_VARIANTS = ("default", "channels_last", "amp", "channels_last+amp",
                  "channels_last+amp+compile")
BUDGET_S = 480               # the whole selftest on one H100-class GPU at the default sizes
CUBLAS = ":4096:8"



# --------------------------------------------------------------------------- results

@dataclass
class Check:
    section: str
    name: str
    status: str                      # "pass" or "fail" (what was left out: Summary.skipped)
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    traceback: str = ""


@dataclass
class Summary:
    """Everything the JSON holds; the markdown is drawn from it."""
    format: str = FORMAT
    ok: bool = True
    started: str = ""
    wall_s: float = 0.0
    command: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    epoch_times: list[dict[str, Any]] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    packing: list[dict[str, Any]] = field(default_factory=list)   # K, aggregate images/s
    targets: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    section_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


# --------------------------------------------------------------------------- training runs

class StepRecorder:
    """A trainer's ``on_step`` hook: every step's loss (kept on the device: no extra host
    syncs) and the first step's gradients (all-reduced under DDP)."""

    def __init__(self):
        self.losses: list[torch.Tensor] = []
        self.first_grads: dict[str, torch.Tensor] = {}

    def __call__(self, trainer: Trainer, loss, total, out) -> None:
        if not self.losses:
            self.first_grads = {n: p.grad.detach().cpu().clone()
                                for n, p in trainer.model.named_parameters()
                                if p.grad is not None}
        self.losses.append(loss)

    def trace(self) -> torch.Tensor:
        return torch.stack(self.losses).float().cpu() if self.losses else torch.zeros(0)


def recording_trainer(cfg: RunConfig, run_dir: Path, data=None) -> Trainer:
    """The real Trainer, quiet, on data loaded once, recording its steps (``on_step``)."""
    return Trainer(cfg, run_dir, echo=lambda line: None, data=data, on_step=StepRecorder())


def train_once(cfg: RunConfig, run_dir: Path, data) -> tuple[Trainer,
                                                               records.RunSummary]:
    """One run through the trainer's guarded path into ``run_dir``."""
    prepare_run_dir(run_dir, cfg)
    t = recording_trainer(cfg, run_dir, data)
    return t, t.run_guarded()


def loss_falls(t: Trainer) -> tuple[bool, dict[str, Any]]:
    trace = t.on_step.trace()
    k = max(1, len(trace) // 10)
    first, last = float(trace[:k].mean()), float(trace[-k:].mean())
    return last <= LOSS_FALL * first, {"steps": len(trace), "first_tenth_loss": first,
                                       "last_tenth_loss": last}


@torch.no_grad()
def logits(model: torch.nn.Module, data, cfg: RunConfig,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every test image's logits (as the trainer evaluates: layout, autocast) and label."""
    was = model.training
    model.eval()
    outs, ys = [], []
    for x, y in data.test_batches(cfg.data.eval_batch_size):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, device):
            outs.append(model(x).float())
        ys.append(y)
    model.train(was)
    return torch.cat(outs), torch.cat(ys)


def deployed_equals_export(t: Trainer, summary: records.RunSummary,
                           run_dir: Path, data) -> tuple[bool, str, dict[str, Any]]:
    """Export the finished run (harness.deploy.export), rebuild the network from deployed.pt alone,
    and compare it with the trained network in its deployed state on every test image."""
    path = run_dir / "deployed.pt"
    checkpoint.save_tensors(path, export.export(run_dir, str(t.device), data=data))
    cfg, rebuilt = export.load_deployed(path, t.device)
    if cfg.channels_last:
        rebuilt.to(memory_format=torch.channels_last)
    with t.method.deployed(t.model):
        a, y = logits(t.model, data, t.cfg, t.device)
    b, _ = logits(rebuilt, data, cfg, t.device)
    same = int((a.argmax(1) == b.argmax(1)).sum())
    acc = 100.0 * int((b.argmax(1) == y).sum()) / len(y)
    figures = {"test_images": len(y), "same_class": same, "rebuilt_acc": acc,
               "final_test_acc": summary.final_test_acc,
               "logits_bitwise_equal": bool(torch.equal(a, b)),
               "max_abs_logit_diff": float((a - b).abs().max())}
    ok = same == len(y) and acc == summary.final_test_acc
    how = ("bitwise equal" if figures["logits_bitwise_equal"] else
           f"differ by up to {figures['max_abs_logit_diff']:.3g}")
    detail = (f"{same}/{len(y)} test images get the same class; rebuilt {acc:.2f}% vs final "
              f"{summary.final_test_acc:.2f}%; logits {how}")
    return ok, detail, figures


def same_run(a: Trainer, b: Trainer) -> tuple[bool, str, dict[str, Any]]:
    """Two runs of one config and seed: every step's loss, every tensor of the final model
    and every metrics row (timing columns aside) bitwise equal."""
    la, lb = a.on_step.trace(), b.on_step.trace()
    steps_equal = la.shape == lb.shape and torch.equal(la, lb)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    strip = [{k: v for k, v in r.items() if k not in records.TIMING_COLUMNS} for r in a.rows]
    strip_b = [{k: v for k, v in r.items() if k not in records.TIMING_COLUMNS} for r in b.rows]
    ok = steps_equal and not differ and strip == strip_b
    if ok:
        detail = f"all {len(la)} step losses, {len(sa)} tensors and {len(a.rows)} rows equal"
    else:
        n = min(len(la), len(lb))
        first = next((i for i in range(n) if la[i] != lb[i]), n)
        detail = (f"first differing step {first} of {len(la)}; {len(differ)} of {len(sa)} "
                  f"tensors differ ({', '.join(differ[:3])}); rows "
                  f"{'equal' if strip == strip_b else 'differ'}")
    return ok, detail, {"steps": len(la), "tensors": len(sa), "differing_tensors": len(differ)}


@contextlib.contextmanager
def deterministic(notes: list[str]) -> Iterator[None]:
    """torch.use_deterministic_algorithms(warn_only=True), cuDNN deterministic, no autotuning;
    the previous settings come back after. Ops without a deterministic kernel warn (listed
    in the notes) and the same-seed check then says whether the runs still agreed."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]
        seen = {str(w.message).splitlines()[0] for w in caught
                if "determinis" in str(w.message).lower()}
        notes.extend(f"non-deterministic op under deterministic settings: {m}"
                     for m in sorted(seen))


def nvidia_driver(proc: Path = Path("/proc/driver/nvidia/version")) -> str:
    """The NVIDIA driver version (/proc, else nvidia-smi), or why it is unknown."""
    with contextlib.suppress(OSError):
        for line in proc.read_text().splitlines():
            if "Kernel Module" in line:
                return next((w for w in line.split() if w[:1].isdigit() and "." in w),
                            line.strip())
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    return "unknown (no /proc/driver/nvidia/version, no nvidia-smi)"


def device_env(device: torch.device) -> dict[str, Any]:
    env = environment(device)
    env["cpu"] = platform.processor() or platform.machine()
    env["cpu_count"] = os.cpu_count()
    env["gpu_count"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu_name=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1),
                   compute_capability=f"{p.major}.{p.minor}", driver=nvidia_driver(),
                   gpus=[torch.cuda.get_device_name(i) for i in range(env["gpu_count"])])
    else:
        env.update(gpu_name="none", driver="none")
    return env


def detect_dataset(root: str | None, download: bool) -> str:
    """cifar10 (the official pickles) or imagefolder (train/ + test/), from --data-root."""
    require(bool(root), "--data-root", "give the folder holding CIFAR-10 (official python "
            "pickles, or the JPEG ImageFolder copy with train/ and test/), or pass --dataset "
            "digits for a CPU run on the built-in digits")
    p = Path(root)
    if any((d / "data_batch_1").is_file() for d in (p, p / "cifar-10-batches-py")) or download:
        return "cifar10"
    if (p / "train").is_dir():
        return "imagefolder"
    raise UserError("--data-root", f"{root!r} holds neither CIFAR-10's data_batch_1 ... (the "
                    "official python version) nor a train/ and test/ image folder; point it at "
                    "one, or pass --download to fetch CIFAR-10 into it")


def resolve_methods(names: list[str] | None) -> list[str]:
    registry = load_all()
    for n in names or []:
        require(n in registry, "--methods", f"unknown method {n!r}; choose from "
                f"{', '.join(sorted(registry))}")
    return sorted(names or registry)


def unique_dir(parent: Path, name: str) -> Path:
    """parent/name, or parent/name-2, -3, ...: a selftest never overwrites an earlier one."""
    files.ensure_writable_dir(parent, "--out", "choose a writable directory")
    path, i = parent / name, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            i += 1
            path = parent / f"{name}-{i}"


def pct(x: float | None) -> str:
    return "none" if x is None else f"{x:.2f}%"


def floats(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


def finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")
