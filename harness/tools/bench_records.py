"""Synthetic run records for timing the report (`python -m harness bench --what report`).

``synthetic_run`` writes one run directory through the same schema and writers as the
trainer: config.json from ``harness.config`` (``config.RunConfig``, ``config.to_dict``,
``resolve.config_hash``), metrics.csv with ``records.write_metrics`` and summary.json as a
``records.RunSummary`` (``method_info`` from the method's own declaration, ``peak_mem_kind``
one of ``records.PEAK_MEM_KINDS``) with ``records.write_summary``. The numbers are whatever
the caller passes.

``synthesize_study`` lays out a realistic study of such records (``BENCH_ROWS`` x
``BENCH_CELLS``, two models, two budgets, a few failed, diverged, corrupt and missing runs)
and ``bench_report`` times ``harness.report.write_report`` over it.
"""
from __future__ import annotations

import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness import config, files, records
from harness.files import atomic_write_json, atomic_write_text
from harness.run import resolve

BENCH_CELLS = ((1, 1), (1, 2), (1, 4), (1, 32), (2, 2), (2, 32), (4, 4), (4, 32))
# (method, variant, options, weight bits allowed, accuracy offset in points)
BENCH_ROWS = (("fp", "", {}, (32,), 2.0), ("ste", "", {}, (1, 2, 4), -1.0),
              ("dorefa", "", {}, (1, 2, 4), -0.6), ("lqnet", "", {}, (1, 2, 4), -0.3),
              ("hashing", "", {}, (1,), -0.8), ("bop", "", {}, (1,), -0.7),
              ("slb", "", {"bn": "sbn", "schedule": "exp"}, (1, 2, 4), 0.0),
              ("slb", "slb-recal_epoch", {"bn": "recal_epoch", "schedule": "exp"}, (1,), -0.1),
              ("slb", "slb-cos", {"bn": "sbn", "schedule": "cos"}, (1,), -0.2))


def method_info(method: str) -> dict[str, Any]:
    """What the trainer records as summary.json ``method_info`` for a run of ``method``."""
    from methods.base import get

    return get(method).info()


def _write_config(run_dir: Path, *, method: str, options: dict[str, Any] | None,
                  variant: str, w_bits: int, a_bits: int, epochs: int, seed: int, model: str,
                  dataset: str, study: str, scale: str, unmatched: bool) -> str:
    """config.json as the trainer writes it; returns its config_hash."""
    cfg = config.RunConfig(method=method, method_options=dict(options or {}), w_bits=w_bits,
                           a_bits=a_bits, epochs=epochs, seed=seed,
                           model=config.ModelConfig(name=model),
                           data=config.DataConfig(name=dataset),
                           meta=config.MetaConfig(study=study, variant=variant, scale=scale,
                                                  unmatched=unmatched))
    d = config.to_dict(cfg)
    d["config_hash"] = resolve.config_hash(cfg)
    files.atomic_write_json(run_dir / "config.json", d)
    return d["config_hash"]


def _metric_rows(curve: list[float], epoch_time_s: float,
                 extra: dict[str, list[float]] | None) -> list[dict[str, Any]]:
    rows = []
    for e, acc in enumerate(float(x) for x in curve):
        row = {"epoch": e + 1, "train_loss": 2.0 / (e + 1), "train_acc": min(100.0, acc + 3),
               "test_loss": 1.5 / (e + 1), "test_acc": acc, "lr": 0.1, "epoch_time_s":
               epoch_time_s, "samples_per_s": 50000 / epoch_time_s}
        for k, vals in (extra or {}).items():
            row[k] = float(vals[e])
        rows.append(row)
    return rows


def synthetic_run(run_dir: Path, *, method: str, options: dict[str, Any] | None = None,
                  variant: str = "", w_bits: int, a_bits: int, epochs: int, seed: int,
                  final_acc: float | None, curve: list[float] | None = None,
                  status: str = "completed", extra: dict[str, list[float]] | None = None,
                  model: str = "resnet20", dataset: str = "cifar10", study: str = "synthetic",
                  scale: str = "synthetic", unmatched: bool = False,
                  epoch_time_s: float = 1.0, device: str = "cpu",
                  device_name: str = "cpu: synthetic (2 threads)",
                  method_param_bytes: int = 1000, method_opt_bytes: int = 1000,
                  error: str = "", info: dict[str, Any] | None = None) -> Path:
    """Write one run record (config.json, metrics.csv, summary.json) as the trainer would.

    ``extra``: the method's own metrics.csv columns; ``info``: summary.json ``method_info``
    (default: the method's declaration, as the trainer records it)."""

    run_dir = Path(run_dir)
    config_hash = _write_config(run_dir, method=method, options=options, variant=variant,
                                w_bits=w_bits, a_bits=a_bits, epochs=epochs, seed=seed,
                                model=model, dataset=dataset, study=study, scale=scale,
                                unmatched=unmatched)
    if curve is None:  # rises from 10 to the final accuracy, which is the last epoch's
        target = final_acc if final_acc is not None else 10.0
        floor = math.exp(-4.0)
        curve = [target - (target - 10) * (math.exp(-4 * (e + 1) / epochs) - floor) / (1 - floor)
                 for e in range(epochs)]
    rows = _metric_rows(curve, epoch_time_s, extra)
    records.write_metrics(run_dir, rows)
    peak_mem_kind = "cuda_max_allocated" if device == "cuda" else "cpu_peak_rss"
    assert peak_mem_kind in records.PEAK_MEM_KINDS
    summary = records.RunSummary(
        status=status, epochs=epochs, epochs_completed=len(rows),
        final_test_acc=final_acc if status == "completed" else None,
        best_test_acc=max(curve + ([final_acc] if final_acc is not None else []))
        if curve else None, wall_time_s=epoch_time_s * len(rows),
        mean_epoch_time_s=epoch_time_s, peak_mem_mb=800.0 + method_param_bytes / 2**20,
        peak_mem_kind=peak_mem_kind, param_bytes=1_100_000,
        method_param_bytes=method_param_bytes, optimizer_state_bytes=1_100_000,
        method_optimizer_state_bytes=method_opt_bytes, config_hash=config_hash,
        env={"python": "3.11.9", "torch": "2.14.1", "device": device,
             "device_name": device_name, "harness_commit": "synthetic0000",
             "hostname": "synthetic"},
        method_info=method_info(method) if info is None else info, error=error)
    records.write_summary(run_dir, summary)
    return run_dir


def _bench_groups(epochs: tuple[int, ...]) -> list[tuple]:
    """(model, epochs, method, variant, options, w, a, expected accuracy) of every group."""
    groups = []
    for model, base in (("resnet20", 90.0), ("vgg_small", 92.0)):
        for e in epochs:
            for method, variant, opts, wbits, off in BENCH_ROWS:
                if variant and e != epochs[0]:
                    continue
                cells = [(32, 32)] if method == "fp" else [c for c in BENCH_CELLS if c[0] in wbits]
                for w, a in cells:
                    acc = base + off - 3.0 / w - 2.0 / a + 0.3 * math.log(e / epochs[0])
                    groups.append((model, e, method, variant, opts, w, a, acc))
    return groups


def _slb_scalars(rng, curve, e: int) -> dict[str, list[float]]:
    """SLB-like metrics.csv columns: temperature, quant_gap, continuous accuracy, ..."""
    t = np.minimum(np.maximum(np.arange(e) - 0.4 * e, 0), 0.5 * e)
    temp = list(1.04 ** t)
    return {"inv_temperature": temp, "temperature": [1 / x for x in temp],
            "quant_gap": list(np.exp(-np.arange(e) / (0.3 * e))),
            "flip_ratio": list(0.05 * np.exp(-np.arange(e) / 50)),
            "entropy": list(np.exp(-np.arange(e) / (0.4 * e))),
            "test_acc_continuous": list(np.asarray(curve) + 0.3 + 3 * np.exp(
                -np.arange(e) / (0.3 * e)) + rng.normal(0, 0.2, e))}


def synthesize_study(root: Path, n_runs: int = 1000, epochs: tuple[int, ...] = (200, 500),
                     seed: int = 0) -> Path:
    """A realistic study of ``n_runs`` records: two CIFAR-10 models, the paper's W/A grid,
    fp + five baselines + SLB and two SLB variants, two budgets, seeds until n_runs; about
    1% failed, 0.5% diverged, 0.5% corrupt; a manifest listing a few missing runs."""


    rng = np.random.default_rng(seed)
    root = Path(root)
    groups = _bench_groups(epochs)
    infos = {method: method_info(method) for method, *_ in BENCH_ROWS}
    manifest_runs, k = [], 0
    while k < n_runs:
        for model, e, method, variant, opts, w, a, acc in groups:
            if k >= n_runs:
                break
            s = k // len(groups)
            run_id = f"r{k:05d}"
            target = float(acc + rng.normal(0, 0.25))
            curve = [float(v) for v in target - (target - 10) * np.exp(-5 * np.arange(1, e + 1)
                                                                       / e) + rng.normal(0, 0.3, e)]
            final = curve[-1]   # the final score is the last epoch's, as the validator checks
            extra = _slb_scalars(rng, curve, e) if method == "slb" else None
            status, error, r = "completed", "", rng.random()
            if r < 0.01:
                status, error = "failed", "RuntimeError: synthetic failure"
            elif r < 0.015:
                status, error = "diverged", "non-finite loss in epoch 3"
            manifest_runs.append({"run_id": run_id, "variant": variant or method,
                                  "method": method, "w_bits": w, "a_bits": a, "epochs": e,
                                  "seed": s, "unmatched": False})
            k += 1
            if rng.random() < 0.003:
                continue  # in the manifest, never written: a missing run
            d = synthetic_run(root / "runs" / run_id, method=method, options=opts,
                              variant=variant, w_bits=w, a_bits=a, epochs=e, seed=s,
                              final_acc=final, curve=curve[:3] if status != "completed" else curve,
                              status=status, extra=None if status != "completed" else extra,
                              model=model, study="bench", scale="bench",
                              epoch_time_s=float(5 * (1.8 if method == "slb" else 1.0)),
                              device="cuda", device_name="NVIDIA H100 80GB HBM3",
                              method_param_bytes=270_000 * (2 if method == "slb" else 1),
                              method_opt_bytes=270_000 * (2 if method == "slb" else 1),
                              error=error, info=infos[method])
            if rng.random() < 0.005:
                atomic_write_text(d / "summary.json", '{"status": "completed", "final_')
    atomic_write_json(root / "manifest.json", {"study": "bench", "scale": "bench",
                                               "runs": manifest_runs, "excluded": []})
    atomic_write_text(root / "study.toml", 'name = "bench"\n[report]\nours = "slb"\n')
    return root


# seconds the report may take over this many synthetic runs (issue 27: 10^4 runs in 30 s)
REPORT_TARGETS = {1000: 15.0, 10_000: 30.0}


def report_line(n_runs: int, secs: float, cpu_s: float | None = None) -> str:
    """The report bench's line: PASS/MISS where a target is set for ``n_runs``."""
    line = f"report over {n_runs} synthetic runs: {secs:.1f} s" + (
        f", {cpu_s:.1f} s of CPU (all processes)" if cpu_s is not None else "")
    limit = REPORT_TARGETS.get(n_runs)
    if limit is None:
        return f"{line} (targets are set for {' and '.join(map(str, REPORT_TARGETS))} runs)"
    return f"{'PASS' if secs < limit else 'MISS'} {line} (target < {limit:g} s)"


def bench_report(n_runs: int = 1000) -> float:
    """Seconds for `report` over ``n_runs`` synthetic records (written first, not timed)."""
    return report_times(n_runs)[0]


def report_times(n_runs: int = 1000) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and the ones it forked) of `report` over
    ``n_runs`` synthetic records (on a shared machine the CPU time shows what it costs)."""
    from harness.report import write_report

    with tempfile.TemporaryDirectory(prefix="slbench-report-") as tmp:
        study = synthesize_study(Path(tmp) / "bench", n_runs)
        before = _cpu()
        t0 = time.perf_counter()
        write_report(study)
        return time.perf_counter() - t0, _cpu() - before


def _cpu() -> float:
    own, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
