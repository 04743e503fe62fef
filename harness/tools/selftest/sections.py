"""The selftest's sections, each guarded (a crash fails its check, never the selftest):
train, switches, epoch times, step ratios, DDP."""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from harness import files
from harness.config import RunConfig, to_dict
from harness.run import checkpoint, resolve
from harness.run.env import resolve_device
from harness.run.trainer import Trainer
from harness.tasks.classify import data as classify_data
from harness.tasks.classify import loader
from harness.tools import bench
from harness.tools.selftest import packing
from harness.tools.selftest.checks import (
    BUDGET_S,
    CHECK_BITS,
    EPOCH_VARIANTS,
    LOSS_FALL,
    SECTIONS,
    SWITCH_METHODS,
    SWITCH_RUNS,
    SWITCHES,
    Check,
    Summary,
    deployed_equals_export,
    detect_dataset,
    deterministic,
    device_env,
    finite,
    loss_falls,
    pct,
    resolve_methods,
    same_run,
    train_once,
    unique_dir,
)
from harness.tools.selftest.ddp import (
    DDP_METHOD,
    compare_ddp,
    pythonpath,
    rank_line,
    rel_diff,
    run_ranks,
    sharded_first_grads,
)
from methods.base import load_all


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
            self.data = loader.load(self.base.data, self.device)
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
                           f"{pct(summ.final_test_acc)}"
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
                all_finite = all(map(finite, fig["train_loss"]))
                self.add(Check("epoch", name, "pass" if all_finite else "fail",
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
                           "; ".join(rank_line(folder, r, code, rec)
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

    def section_packing(self) -> None:
        """Aggregate images/s of K runs at once on the device (selftest/packing.py); the
        suggestion is runs_per_gpu for this model, width and batch size."""
        cfg = self.cfg("fp", 32)
        folder = self.out / "packing"
        folder.mkdir(parents=True, exist_ok=True)
        files.atomic_write_json(folder / "config.json", to_dict(cfg))
        env = {**os.environ, "PYTHONPATH": pythonpath()}
        rows = []
        for k in self.args.packing_ks:
            with self.guarded("packing", f"K={k}"):
                row = packing.measure(folder / "config.json", k, self.args.packing_steps,
                                      folder / f"k{k}", env)
                rows.append(row)
                self.add(Check("packing", f"K={k}", "pass",
                               f"{row['images_per_s']:.0f} images/s in all", row))
        self.summary.packing = rows
        if rows:
            k = packing.suggest(rows)
            self.summary.notes.append(
                f"packing: suggested [executor] runs_per_gpu = {k} for {self.args.model} "
                f"width {self.args.width}, batch {self.args.batch_size} (the smallest K within "
                f"{packing.SUGGEST_WITHIN:.0%} of the best aggregate throughput)")

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
