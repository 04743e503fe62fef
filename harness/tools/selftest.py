"""`python -m harness selftest`: the training path on one device, proven in one command.

    python -m harness selftest --device cuda --data-root DIR        # make gpu-check
    python -m harness selftest --device cpu --dataset digits --model small_cnn --width 0.25 ...

DIR holds CIFAR-10 (the official python pickles) or its JPEG ImageFolder copy; the whole
training set is loaded onto the device once and shared by every run. Sections, in order
(``--skip`` leaves any out, and the summary says so):

  train     every method at W1/A32 and W2/A32 where it supports them (fp at W32), ``--epochs``
            over the training set, under deterministic settings; checks per run that
            - the loss falls: the mean of the last tenth of the steps <= LOSS_FALL x the first's;
            - deployed == export: deployed.pt written by harness.deploy.export, rebuilt from that
              file alone (harness.deploy.export.load_deployed), gives every test image the class the
              trained deployed network gives it, and the run's final accuracy;
            - same seed, same run: a second run agrees bitwise in every step's loss, every
              parameter and buffer, and every metrics row.
  switches  fp and SLB W1 under channels_last, bf16 autocast, and both with torch.compile:
            the loss falls and deployed == export under each.
  epoch     one fp training epoch timed (CUDA events after a warm-up epoch: harness.tools.bench
            time_epochs) with default settings, channels_last, bf16 autocast, both, and all
            three with torch.compile; the GPU target (harness.tools.bench.EPOCH_TARGET_S).
  ratios    harness.tools.bench.run_bench: every method's step time over fp, the ratios and
            targets `python -m harness bench` reports.
  ddp       2 processes (NCCL on a node with 2 or more GPUs, gloo on the CPU) running the
            trainer as torchrun would (RANK/WORLD_SIZE/LOCAL_RANK), against one process with
            the same global batch: the first gradient, the replicas, the distributed
            evaluation (see :func:`compare_ddp` for what must agree, how closely, and why).

Writes OUT/selftest-<time>-<device>/selftest.json and selftest.md (device name, driver,
versions, every check and figure, what was skipped and why; the runs' records beside them)
and exits 1 when any check failed. A check that raises is a failed check with its
traceback in the JSON, never the end of the selftest. Targets (times) are reported PASS/MISS
and never fail it: performance targets live in the benchmark, not in checks.

Determinism on CUDA needs CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts: the command
sets it (unless already set) before anything touches the GPU.
"""
from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from harness import files, records
from harness.config import RunConfig, to_dict
from harness.deploy import export
from harness.dist import Dist
from harness.errors import UserError, require
from harness.run import checkpoint, resolve
from harness.run.env import environment, resolve_device
from harness.run.rundir import prepare_run_dir
from harness.run.trainer import Trainer
from harness.tasks.classify import data as classify_data
from harness.tasks.classify.runtime import evaluate as classify_evaluate
from harness.tasks.runtime import autocast
from harness.tools import bench
from methods.base import load_all

FORMAT = "slbench-selftest/1"
SECTIONS = ("train", "switches", "epoch", "ratios", "ddp")
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
DDP_METHOD = ("slb", 1)
# DDP vs one process (see compare_ddp): each rank normalises its own half of the batch.
DDP_GRAD_RTOL = 1e-3         # DDP's first gradient vs the same halves in one process
DDP_FIRST_LOSS_RTOL = 0.02   # first-step loss vs one process on whole batches (BN only)
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


# --------------------------------------------------------------------------- environment

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pythonpath() -> str:
    """This checkout first, so worker processes import the code under test."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


# --------------------------------------------------------------------------- DDP

def ddp_worker(argv: list[str]) -> int:
    """One process of the DDP check: train CONFIG into RUN_DIR as rank $RANK of $WORLD_SIZE,
    then save RESULT (losses, final state, accuracies) for the parent to compare."""
    cfg_path, run_dir, result = argv
    cfg = resolve.build(cfg_path)
    dist = Dist.from_env()
    if dist.main:
        prepare_run_dir(Path(run_dir), cfg)
    t = recording_trainer(cfg, Path(run_dir))
    s = t.run_guarded()
    with t.method.deployed(t.model):  # this rank alone, the whole test set
        _, alone = classify_evaluate(t.model, t.data, cfg, t.device)
    checkpoint.save_tensors(Path(result), {
        "rank": dist.rank, "world": dist.world, "status": s.status,
        "final_test_acc": s.final_test_acc, "alone_test_acc": alone, "steps": t.step_count,
        "losses": t.on_step.trace(), "rows": t.rows, "first_grads": t.on_step.first_grads,
        "state": {k: v.detach().cpu() for k, v in t.model.state_dict().items()}})
    return 0


def sharded_first_grads(cfg: RunConfig, data, world: int) -> dict[str, torch.Tensor]:
    """The first step's gradient as ``world`` DDP ranks compute it, in one process: each
    rank's rows (r, r + world, ... of the first batch, as Dist.shard takes them) through
    their own forward (their own BN statistics) and backward, then averaged, as DDP's
    all-reduce does."""
    from methods.base import Progress

    grads = []
    for rank in range(world):
        t = recording_trainer(cfg, Path("/nonexistent-selftest-run"), data)
        t.build()
        t.model.train()
        t.method.on_epoch_start(t.model, t.progress(0))
        x, y = next(iter(t.data.train_batches(cfg.batch_size, t.gen)))
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t.step(x[rank::world], y[rank::world], Progress(0, cfg.epochs, 0, t.steps_per_epoch))
        grads.append(t.on_step.first_grads)
    return {k: sum(g[k] for g in grads) / world for k in grads[0]}


def rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all tensors of two gradient dicts with the same keys."""
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in b)
    den = sum(float(b[k].double().pow(2).sum()) for k in b)
    return (num / max(den, 1e-300)) ** 0.5


def compare_ddp(ranks: list[dict], emulated: dict[str, torch.Tensor],
                single: dict[str, Any]) -> list[Check]:
    """What a 2-process run must share with one process:
    - its first gradient (all-reduced, the same on both ranks) equals the gradient one process
      computes for the same global batch when each half goes through its own forward (each
      rank normalises its own half: the trainer has no SyncBatchNorm), to DDP_GRAD_RTOL;
      a rank that took the wrong rows or skipped the all-reduce is off by ~0.7 (measured on
      the CPU: one half's gradient vs the pair's mean);
    - bitwise: both replicas at the end (parameters and buffers); the distributed evaluation
      (each rank a share of the test set, sums all-reduced) equals one process evaluating
      rank 0's final network; the steps per epoch;
    - the run of one process on whole batches: the same number of steps and a first-step
      loss within DDP_FIRST_LOSS_RTOL. Its gradient differs by the BN statistics of 64 vs
      128 images (0.18-0.24 on the CPU test's tiny model) and trajectories then drift apart
      as any two runs do, so epoch losses and accuracies are reported, not compared."""
    r0, r1 = ranks
    out = []
    same_grads = all(torch.equal(r0["first_grads"][k], r1["first_grads"][k])
                     for k in r0["first_grads"])
    rel = rel_diff(r0["first_grads"], emulated)
    out.append(Check("ddp", "first gradient equals one process on the same global batch",
                     "pass" if same_grads and rel <= DDP_GRAD_RTOL else "fail",
                     f"relative difference {rel:.2e} (limit {DDP_GRAD_RTOL:g}) over "
                     f"{len(emulated)} tensors; ranks {'agree' if same_grads else 'DIFFER'}",
                     {"rel_diff": rel, "ranks_agree": same_grads}))
    differ = [k for k in r0["state"] if not torch.equal(r0["state"][k], r1["state"][k])]
    out.append(Check("ddp", "replicas identical", "fail" if differ else "pass",
                     f"{len(differ)} of {len(r0['state'])} tensors differ between the ranks"
                     + (f" ({', '.join(differ[:4])})" if differ else ""),
                     {"tensors": len(r0["state"]), "differing": len(differ)}))
    same_eval = r0["final_test_acc"] == r0["alone_test_acc"] == r1["final_test_acc"]
    out.append(Check("ddp", "distributed evaluation", "pass" if same_eval else "fail",
                     f"2 ranks {r0['final_test_acc']:.2f}% (rank 1 {r1['final_test_acc']:.2f}%)"
                     f", rank 0's network alone {r0['alone_test_acc']:.2f}%"))
    first = float((r0["losses"][0] + r1["losses"][0]) / 2)
    first_single = float(single["losses"][0])
    rel_first = abs(first - first_single) / first_single
    ok = r0["steps"] == single["steps"] and rel_first <= DDP_FIRST_LOSS_RTOL
    out.append(Check(
        "ddp", "one process on whole batches", "pass" if ok else "fail",
        f"{r0['steps']} vs {single['steps']} steps; first-step loss {first:.4f} vs "
        f"{first_single:.4f} ({100 * rel_first:.2f}%, limit {100 * DDP_FIRST_LOSS_RTOL:g}%); "
        f"first gradient differs by {single['grad_rel_diff']:.3f} (BN over halves); epoch "
        f"losses {_floats([r['train_loss'] for r in r0['rows']])} vs "
        f"{_floats([r['train_loss'] for r in single['rows']])}; final accuracy "
        f"{r0['final_test_acc']:.2f}% vs {single['final_test_acc']:.2f}%",
        {"first_step_loss_rel_diff": rel_first, "grad_rel_diff": single["grad_rel_diff"],
         "ddp_final_acc": r0["final_test_acc"], "single_final_acc": single["final_test_acc"],
         "ddp_epoch_loss": [r["train_loss"] for r in r0["rows"]],
         "single_epoch_loss": [r["train_loss"] for r in single["rows"]]}))
    return out


def _pct(x: float | None) -> str:
    return "none" if x is None else f"{x:.2f}%"


def _floats(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


# --------------------------------------------------------------------------- the selftest

class Selftest:
    """The sections of the module docstring, each timed and guarded, into one Summary."""

    def __init__(self, args, say: Callable[[str], None] = print):
        self.args, self.say = args, say
        self.device = resolve_device(args.device)
        self.dataset = args.dataset or detect_dataset(args.data_root, args.download)
        self.skip = set(args.skip)
        self.methods = resolve_methods(args.methods)
        self.base = resolve.build(flags=self.flags("fp", 32), sets=args.set)  # validates every key
        classify_data.check_root(self.base.data)
        files.ensure_writable_dir(Path(args.out), "--out", "choose a writable directory")
        self.summary = Summary(started=time.strftime("%Y-%m-%d %H:%M:%S"),
                               command=list(sys.argv))
        self.out = Path(args.out)  # the selftest's own folder once the data has loaded
        self.data = None

    # --- configs
    def flags(self, method: str, bits: int, **switches) -> dict[str, Any]:
        a = self.args
        return {"method": method, "w_bits": bits, "a_bits": 32, "model.name": a.model,
                "model.width": a.width, "data.name": self.dataset, "data.root": a.data_root,
                "data.subset_train": a.train_images, "data.subset_test": a.test_images,
                "data.download": a.download or None, "epochs": a.epochs,
                "batch_size": a.batch_size, "seed": 0, "device": a.device,
                "progress": "none", **switches}

    def cfg(self, method: str, bits: int, **switches) -> RunConfig:
        return resolve.build(flags=self.flags(method, bits, **switches), sets=self.args.set)

    # --- bookkeeping
    def add(self, check: Check) -> None:
        self.summary.checks.append(check)
        if check.status == "fail":
            self.summary.ok = False
        self.say(f"[{check.section}] {check.name}: {check.status.upper()}"
                 + (f" ({check.detail})" if check.detail else ""))

    def skipped(self, what: str, reason: str) -> None:
        self.summary.skipped.append({"what": what, "reason": reason})
        self.say(f"skipped {what}: {reason}")

    @contextlib.contextmanager
    def guarded(self, section: str, name: str) -> Iterator[None]:
        """A check (or a section) that raises becomes a failed check, with its traceback."""
        try:
            yield
        except Exception as e:
            self.add(Check(section, name, "fail", f"raised {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:300] if str(e) else ''}",
                           traceback=traceback.format_exc()))

    # --- the whole thing
    def run(self) -> Summary:
        s, a = self.summary, self.args
        t0 = time.perf_counter()
        s.settings = {k: v for k, v in vars(a).items() if k not in ("command",)}
        s.settings.update(dataset=self.dataset, methods=self.methods)
        s.env = device_env(self.device)
        if self.needs_data():  # unreadable data is a one-line error, before anything is written
            t = time.perf_counter()
            self.data = classify_data.load(self.base.data, self.device)
            s.section_s["load_data"] = time.perf_counter() - t
        self.out = unique_dir(self.out, f"selftest-{time.strftime('%Y%m%d-%H%M%S')}-"
                                        f"{self.device.type}")
        s.settings["out"] = str(self.out)
        self.say(f"selftest on {s.env['device_name']} (torch {torch.__version__}, CUDA "
                 f"{torch.version.cuda or 'none'}); writing {self.out}")
        if self.data is not None:
            self.say(f"data: {self.dataset}, {self.data.num_train} training and "
                     f"{self.data.num_test} test images on {self.device}")
        self.describe_skips()
        for name in SECTIONS:
            if name in self.skip or not self.section_possible(name):
                continue
            t = time.perf_counter()
            with self.guarded(name, "section"):
                getattr(self, f"section_{name}")()
            s.section_s[name] = time.perf_counter() - t
        s.wall_s = time.perf_counter() - t0
        self.budget_target()
        return s

    def needs_data(self) -> bool:
        return bool({"train", "switches", "epoch", "ddp"} - self.skip)

    def section_possible(self, name: str) -> bool:
        return name != "ddp" or self.ddp_world() > 1

    def ddp_world(self) -> int:
        if self.device.type == "cuda":
            return 2 if torch.cuda.device_count() >= 2 else 1
        return 2

    def describe_skips(self) -> None:
        for name in sorted(self.skip):
            self.skipped(name, "--skip " + name)
        if self.device.type == "cpu":
            self.skipped("CUDA path", "--device cpu: CUDA events, the device-side augmentation "
                         "generator, NCCL and cuDNN are not exercised; times are CPU times; "
                         "DDP runs with gloo")
        elif "ddp" not in self.skip and self.ddp_world() < 2:
            self.skipped("ddp", f"{torch.cuda.device_count()} GPU on this node; the 2-process "
                         "NCCL check needs 2 or more (tests/test_selftest.py runs the same "
                         "check with gloo on the CPU)")
        if "compile" in self.skip:
            self.summary.notes.append("torch.compile variants left out (--skip compile)")

    def switch_names(self, names) -> list[str]:
        return [n for n in names if not ("compile" in self.skip and "compile" in n)]

    # --- sections
    def section_train(self) -> None:
        cases = [(m, b) for m in self.methods
                 for b in (sorted(load_all()[m].bits & set(CHECK_BITS))
                           or [load_all()[m].default_bits])]
        with deterministic(self.summary.notes):
            for method, bits in cases:
                self.check_run("train", method, bits, {}, repeat=True)

    def section_switches(self) -> None:
        for method, bits in SWITCH_METHODS:
            if method not in self.methods:
                continue
            for name in self.switch_names(SWITCH_RUNS):
                self.check_run("switches", method, bits, SWITCHES[name], repeat=False,
                               tag=name)

    def check_run(self, section: str, method: str, bits: int, switches: dict[str, bool],
                  repeat: bool, tag: str = "") -> None:
        """One run and its checks: trains, loss falls, deployed == export and, with
        ``repeat``, a second run of the same seed (each check guarded on its own)."""
        label = f"{method} W{bits}/A32" + (f" [{tag}]" if tag else "")
        cfg = self.cfg(method, bits, **switches)
        folder = self.out / "runs" / (f"{section}-{method}-w{bits}" + (f"-{tag}" if tag else ""))
        t = summ = None
        with self.guarded(section, f"{label}: trains"):
            t, summ = train_once(cfg, folder / "a", self.data)
            ok = summ.status == "completed"
            self.add(Check(section, f"{label}: trains", "pass" if ok else "fail",
                           f"{summ.status}, {t.step_count} steps, final deployed accuracy "
                           f"{_pct(summ.final_test_acc)}"
                           + (f": {summ.error}" if summ.error else ""),
                           {"steps": t.step_count, "final_test_acc": summ.final_test_acc,
                            "epoch_time_s": [r["epoch_time_s"] for r in t.rows]}))
        if summ is None or summ.status != "completed":
            return  # the failed "trains" check says why; the rest need a finished run
        falls, fig = loss_falls(t)
        self.add(Check(section, f"{label}: loss falls", "pass" if falls else "fail",
                       f"{fig['first_tenth_loss']:.4f} -> {fig['last_tenth_loss']:.4f} (first "
                       f"and last tenth of {fig['steps']} steps; must fall to <= "
                       f"{LOSS_FALL}x)", fig))
        with self.guarded(section, f"{label}: deployed == export"):
            ok, detail, fig = deployed_equals_export(t, summ, folder / "a", self.data)
            self.add(Check(section, f"{label}: deployed == export", "pass" if ok else "fail",
                           detail, fig))
        if repeat:
            with self.guarded(section, f"{label}: same seed, same run"):
                t2, _ = train_once(cfg, folder / "b", self.data)
                ok, detail, fig = same_run(t, t2)
                self.add(Check(section, f"{label}: same seed, same run",
                               "pass" if ok else "fail", detail, fig))

    def section_epoch(self) -> None:
        a = self.args
        setting = {"model": a.model, "width": a.width, "batch_size": a.batch_size,
                   "train_images": self.data.num_train}
        for name in self.switch_names(EPOCH_VARIANTS):
            with self.guarded("epoch", name):
                cfg = self.cfg("fp", 32, **SWITCHES.get(name, {}),
                               epochs=1 + a.timing_epochs)
                t = Trainer(cfg, self.out / "runs" / f"epoch-{name}", echo=lambda s: None,
                            data=self.data)
                t.build()
                fig = bench.time_epochs(t, a.timing_epochs)
                self.summary.epoch_times.append({"variant": name, **fig})
                finite = all(map(_finite, fig["train_loss"]))
                self.add(Check("epoch", name, "pass" if finite else "fail",
                               f"{fig['median_epoch_s']:.3f} s per epoch of "
                               f"{fig['train_images']} images ({fig['images_per_s']:.0f} "
                               f"images/s), warm-up {fig['warmup_s']:.1f} s", fig))
                del t
        times = {r["variant"]: r["median_epoch_s"] for r in self.summary.epoch_times}
        name = self.summary.env["device_name"]
        if "default" in times:
            self.target(*bench.epoch_target(name, setting, times["default"],
                                            "fp epoch, default settings"))
        if times:
            best = min(times, key=times.get)
            self.target(*bench.epoch_target(name, setting, times[best],
                                            f"fp epoch, fastest switches ({best})"))

    def section_ratios(self) -> None:
        a = self.args
        wanted = bench.settings(device=a.device, model=a.model, width=a.width,
                                batch_size=a.batch_size, rounds=a.bench_rounds,
                                steps=a.bench_steps, warmup=2, bits=list(a.bench_bits),
                                methods=list(self.methods))
        df, lines = bench.run_bench(wanted, echo=self.say)
        cols = ["variant", "median_step_s", "vs_bare", "vs_fp", "vs_fp_with_epoch_hook",
                "peak_train_mb"]
        self.summary.ratios = df[cols].to_dict("records")
        for line in lines:
            status, _, rest = line.partition(" ")
            if status in ("PASS", "MISS"):
                self.target(status, f"step ratio {rest}")
            else:
                self.summary.notes.append(f"ratios: {line}")
        ok = bool(df.median_step_s.gt(0).all())
        self.add(Check("ratios", "every variant timed", "pass" if ok else "fail",
                       f"{len(df)} variants, {a.bench_rounds} rounds x {a.bench_steps} steps; "
                       f"fp step {float(df[df.variant == 'fp'].median_step_s.iloc[0]):.4f} s"))

    def section_ddp(self) -> None:
        method, bits = DDP_METHOD if DDP_METHOD[0] in self.methods else ("fp", 32)
        cfg = self.cfg(method, bits)
        folder = self.out / "ddp"
        folder.mkdir(parents=True, exist_ok=True)
        files.atomic_write_json(folder / "config.json", to_dict(cfg))
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        label = f"{method} W{bits}/A32, 2 processes ({backend})"
        with self.guarded("ddp", f"{label}: trains"):
            codes = run_ranks(folder, world=2, cpu=self.device.type == "cpu",
                              timeout=self.args.ddp_timeout)
            ranks = [checkpoint.load_tensors(folder / f"rank{r}.pt") if code == 0 else None
                     for r, code in enumerate(codes)]
            ok = all(r is not None and r["status"] == "completed" for r in ranks)
            self.add(Check("ddp", f"{label}: trains", "pass" if ok else "fail",
                           "; ".join(_rank_line(folder, r, code, rec)
                                     for r, (code, rec) in enumerate(zip(codes, ranks)))))
            if not ok:
                return
            emulated = sharded_first_grads(cfg, self.data, world=2)
            t, summ = train_once(cfg, folder / "single", self.data)
            single = {"losses": t.on_step.trace(), "rows": t.rows, "steps": t.step_count,
                      "final_test_acc": summ.final_test_acc,
                      "grad_rel_diff": rel_diff(t.on_step.first_grads, emulated)}
            for check in compare_ddp(ranks, emulated, single):
                self.add(check)

    # --- targets
    def target(self, status: str, line: str) -> None:
        self.summary.targets.append({"status": status, "target": line})
        self.say(f"target {status}: {line}")

    def budget_target(self) -> None:
        s, a = self.summary, self.args
        full = (a.model, a.width, a.train_images, a.epochs) == ("resnet20", 1.0, 0, 1) \
            and not self.skip and self.dataset in ("cifar10", "imagefolder")
        name = s.env["device_name"]
        line = f"whole selftest {s.wall_s:.0f} s"
        if not bench.is_h100_class(name) or not full:
            self.target("n/a", f"{line}; the {BUDGET_S // 60}-minute budget is for an "
                        "H100-class GPU at the default sizes with nothing skipped")
        else:
            self.target("PASS" if s.wall_s <= BUDGET_S else "MISS",
                        f"{line} (budget <= {BUDGET_S} s)")


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _rank_line(folder: Path, rank: int, code: int, rec: dict | None) -> str:
    if rec is not None:
        return f"rank {rank}: {rec['status']}, {rec['steps']} steps"
    log = folder / f"rank{rank}.log"
    tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    return f"rank {rank}: exit {code}" + (f" ({tail[0][:200]})" if tail else "")


def run_ranks(folder: Path, world: int, cpu: bool, timeout: float) -> list[int]:
    """Start ``world`` worker processes as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT) on folder/config.json; their exit codes (124: killed at ``timeout``)."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "PYTHONPATH": _pythonpath(), "CUBLAS_WORKSPACE_CONFIG":
                   os.environ.get("CUBLAS_WORKSPACE_CONFIG", CUBLAS)}
        if cpu:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // world))
        cmd = [sys.executable, "-c", "import sys; from harness.tools.selftest import ddp_worker; "
               "sys.exit(ddp_worker(sys.argv[1:]))", str(folder / "config.json"),
               str(folder / "run"), str(folder / f"rank{rank}.pt")]
        log = open(folder / f"rank{rank}.log", "w")
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT),
                      log))
    deadline = time.monotonic() + timeout
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(124)
        log.close()
    return codes


# --------------------------------------------------------------------------- inputs

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


# --------------------------------------------------------------------------- output

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]]


def to_markdown(s: Summary) -> str:
    env = s.env
    failed = s.failed()
    verdict = (f"**{len(failed)} of {len(s.checks)} checks FAILED**" if failed else
               f"all {len(s.checks)} checks passed")
    lines = [f"# slbench selftest: {verdict}", "",
             f"{s.started}, {s.wall_s:.0f} s. Device **{env.get('device_name')}** "
             f"(GPUs on the node: {env.get('gpu_count')}; driver {env.get('driver')}; "
             f"compute capability {env.get('compute_capability', '-')}; "
             f"{env.get('gpu_memory_gb', '-')} GB), torch {env.get('torch')}, CUDA "
             f"{env.get('cuda')}, cuDNN {env.get('cudnn')}, python {env.get('python')}, "
             f"commit {env.get('harness_commit')}, host {env.get('hostname')}.", "",
             f"Settings: {s.settings.get('dataset')} ({s.settings.get('data_root') or 'built in'}"
             f"), {s.settings.get('model')} width {s.settings.get('width')}, batch "
             f"{s.settings.get('batch_size')}, {s.settings.get('epochs')} epoch(s) per check "
             f"run, training images {s.settings.get('train_images') or 'all'}.", "",
             "## Checks", "", *_table([asdict(c) for c in s.checks],
                                      ["section", "name", "status", "detail"]), ""]
    if s.epoch_times:
        lines += ["## fp epoch times", "", *_table(s.epoch_times, [
            "variant", "median_epoch_s", "images_per_s", "warmup_s", "steps_per_epoch",
            "train_images"]), ""]
    if s.ratios:
        lines += ["## Step time of every method over fp (harness.tools.bench)", "",
                  *_table(s.ratios, list(s.ratios[0])), ""]
    targets = [f"- {t['status']}: {t['target']}" for t in s.targets] or ["- none measured"]
    skipped = [f"- {k['what']}: {k['reason']}" for k in s.skipped] or ["- nothing"]
    lines += ["## Targets (reported, never a failed check)", "", *targets, "",
              "## Skipped", "", *skipped, ""]
    if s.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in s.notes], ""]
    lines += ["## Section times (s)", "", *[f"- {k}: {v:.1f}" for k, v in s.section_s.items()],
              ""]
    return "\n".join(lines)


def write(s: Summary, out: Path) -> tuple[Path, Path]:
    js, md = out / "selftest.json", out / "selftest.md"
    files.atomic_write_json(js, asdict(s))
    files.atomic_write_text(md, to_markdown(s))
    return js, md


# --------------------------------------------------------------------------- the command

def cmd_selftest(args) -> int:
    """`python -m harness selftest`: exit 0 when every check passed, 1 otherwise."""
    if not torch.cuda.is_initialized():  # cuBLAS reads it when CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS)
    for name in ("epochs", "timing_epochs", "bench_rounds", "bench_steps", "batch_size"):
        require(getattr(args, name) >= 1, f"--{name.replace('_', '-')}", "must be >= 1")
    require(args.width > 0, "--width", "must be > 0")
    require(args.ddp_timeout > 0, "--ddp-timeout", "must be > 0 seconds")
    st = Selftest(args)
    summary = st.run()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if cublas != CUBLAS and st.device.type == "cuda":
        summary.notes.append(f"CUBLAS_WORKSPACE_CONFIG is {cublas!r}, not {CUBLAS!r}: cuBLAS "
                             "may not be deterministic")
    js, md = write(summary, st.out)
    failed = summary.failed()
    print(f"selftest: {len(summary.checks) - len(failed)} of {len(summary.checks)} checks "
          f"passed in {summary.wall_s:.0f} s; wrote {js} and {md}")
    for c in failed:
        print(f"FAILED [{c.section}] {c.name}: {c.detail}")
    return 0 if summary.ok else 1
