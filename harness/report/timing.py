"""Training time from the records, and every row's accuracy at equal compute.

Data flow: each included run's metrics.csv ``epoch_time_s`` (the training part of an epoch,
evaluation excluded; see the README's run records) summed epoch by epoch -> its cumulative
training time (``cumulative_time``). Per cell (W/A pair, epoch budget) of a setting,
``equal_compute_cells``:

- each row's budget time: the mean over its seeds of the whole schedule's training time;
- T*: the cheapest row's budget time;
- each row's accuracy once it had used T*: per seed, the deployed test accuracy at the last
  epoch whose cumulative time is within T* (times ``1 + TIME_TOLERANCE``, as wall-clock
  times vary by a few percent), read off its curve like the budget table's read-offs (its
  schedule had not finished); a row whose whole budget fits is "full"; a row with a seed that
  had not finished one epoch by T* is "not reached" (``not_reached``: how many seeds) and has
  no accuracy at T*: its faster seeds alone would be a biased sample, so it is not compared;
- the row's runs of a shorter budget of the same W/A pair whose whole schedule fits in T*
  ("trained within T*"), shown beside the read-off.

A cell whose runs come from different hardware is not compared (``skipped`` says why).

Device time is CPU time for CPU runs and GPU time for CUDA runs (one device per run: the
records do not say how many a multi-GPU run used). Tables, figures, the verdict family and
the reviewer answer read these rows; nothing here formats text beyond ``fmt_time`` and
``spread_caveat``.

Timing noise: every run of a row at one W/A pair does the same work per epoch, whatever its
seed or budget, so its runs' mean epoch times (summary.json ``mean_epoch_time_s``) on one
hardware should agree within a few percent. ``time_spread`` lists the rows whose runs
disagree by a coefficient of variation above ``TIME_CV_CAVEAT`` (other work on a shared
machine), and ``spread_caveat`` is the sentence the cost and equal-compute tables and answers
add: their time ratios are that uncertain.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.report import stats
from harness.report.load import StudyRecords, cached_per_setting, cell_name, init_epochs

TIME_TOLERANCE = 0.05   # an epoch within T* * 1.05 counts as reached within T*
TIME_CV_CAVEAT = 0.15   # runs of one row whose epoch times vary more than this: a caveat


def cumulative_time(st: StudyRecords, run_id: str):
    """Seconds of training after each epoch of an included run; None when not recorded."""
    t = (st.metrics.get(run_id) or {}).get("epoch_time_s")
    if t is None or not len(t) or not np.all(np.isfinite(t)):
        return None
    return np.cumsum(np.asarray(t, dtype=float))


def device_kind(st: StudyRecords, run_ids) -> str:
    """"GPU" when every run ran on CUDA, "CPU" when none did, "mixed" otherwise."""
    devs = st.runs.set_index("run_id").loc[list(run_ids), "device"].astype(str)
    cuda = devs.str.startswith("cuda")
    return "GPU" if cuda.all() else "CPU" if not cuda.any() else "mixed"


def _sig2(x: float) -> str:
    """Two significant digits without an exponent: 0.015, 1.5, 15, 150."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = 1 - int(math.floor(math.log10(abs(x))))  # negative: round to tens, hundreds
    return f"{round(x, digits):.{max(0, digits)}f}"


def time_unit(seconds: float, kind: str) -> tuple[str, float]:
    """(unit, seconds per unit) for device time: GPU-hours for GPU runs; CPU-minutes for CPU
    runs, CPU-hours from 2 hours up."""
    if kind == "GPU":
        return "GPU-h", 3600.0
    return ("CPU-h", 3600.0) if seconds >= 7200 else ("CPU-min", 60.0)


def fmt_time(seconds: float, kind: str, unit: tuple[str, float] | None = None) -> str:
    """Device time with two significant digits: '1.5 CPU-min', '0.25 GPU-h'."""
    name, per = unit or time_unit(seconds, kind)
    return f"{_sig2(seconds / per)} {name}"


def _group_times(st: StudyRecords, setting: str, label: str, cell) -> list[tuple]:
    """(run id, cumulative times, deployed accuracy per epoch) of a group's runs; none for a
    pretrained row (its fp epochs ran in other runs: its own times are not its budget's)."""
    g = st.group(setting, label, cell)
    out = []
    if init_epochs(st, label):
        return out
    for rid in g["run_ids"]:
        t = cumulative_time(st, rid)
        if t is not None:
            out.append((rid, t, np.asarray(st.metrics[rid]["test_acc"], dtype=float)))
    return out


def readoff_at(runs: list[tuple], t_star: float) -> tuple[list[float], list[int], int]:
    """The accuracy at the last epoch finished within T* (with TIME_TOLERANCE) and that
    epoch, per run that had finished one by then; and how many runs had not (their row is
    "not reached": the caller must not summarise the others alone)."""
    vals, epochs, missed = [], [], 0
    limit = t_star * (1 + TIME_TOLERANCE)
    for _, t, acc in runs:
        k = int(np.searchsorted(t, limit, side="right"))
        if k:
            vals.append(float(acc[k - 1]))
            epochs.append(k)
        else:
            missed += 1
    return vals, epochs, missed


def _trained_within(st: StudyRecords, setting: str, label: str, cell, t_star: float):
    """The row's longest shorter budget (same W/A) whose whole schedule fits in T*:
    (epochs, summary, mean budget time) or None."""
    w, a, e = cell
    best = None
    for c in st.cells(setting, included_only=True):
        if c[:2] != (w, a) or c[2] >= e:
            continue
        runs = _group_times(st, setting, label, c)
        if not runs:
            continue
        budget = float(np.mean([t[-1] for _, t, _ in runs]))
        if budget <= t_star * (1 + TIME_TOLERANCE) and (best is None or c[2] > best[0]):
            best = (c[2], st.group(setting, label, c)["summary"], budget)
    return best


def _cell_rows(st: StudyRecords, setting: str, cell) -> list[dict[str, Any]]:
    rows = []
    for lab in st.labels(setting):
        runs = _group_times(st, setting, lab, cell)
        if runs:
            totals = [t[-1] for _, t, _ in runs]
            rows.append({"label": lab, "runs": runs, "budget_time": float(np.mean(totals)),
                         "epoch_time": float(np.mean([t[-1] / len(t) for _, t, _ in runs]))})
    return rows


@cached_per_setting
def equal_compute_cells(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """Per cell with two or more rows that record epoch times: T*, the cheapest row, and
    every row's read-off at T* (see the module docstring)."""
    out = []
    for cell in st.cells(setting, included_only=True):
        rows = _cell_rows(st, setting, cell)
        if len(rows) < 2:
            continue
        ids = [rid for r in rows for rid, _, _ in r["runs"]]
        hw = sorted(set(st.runs.set_index("run_id").loc[ids, "device_name"].astype(str)))
        base = {"cell": cell, "hardware": hw, "kind": device_kind(st, ids)}
        if len(hw) > 1:
            out.append({**base, "skipped": "its runs ran on different hardware ("
                        + "; ".join(hw) + "), so their times are not comparable"})
            continue
        cheapest = min(rows, key=lambda r: r["budget_time"])
        t_star = cheapest["budget_time"]
        for r in rows:
            full = r["budget_time"] <= t_star * (1 + TIME_TOLERANCE)
            missed = 0
            if full:  # its whole budget fits: its final accuracies
                g = st.group(setting, r["label"], cell)
                vals, ids = list(g["acc"]), list(g["run_ids"])
                epochs = [cell[2]] * len(vals)
            else:
                vals, epochs, missed = readoff_at(r["runs"], t_star)
                ids = [rid for rid, _, _ in r["runs"]]
                if missed:  # only its faster seeds: a biased sample, so none at all
                    vals, ids = [], []
            r.update(values=vals, value_runs=ids, epochs_reached=epochs, full=full,
                     not_reached=missed,
                     summary=stats.describe(vals, bootstrap=False, bounds=stats.PERCENT),
                     trained_within=_trained_within(st, setting, r["label"], cell, t_star))
        out.append({**base, "t_star": t_star, "cheapest": cheapest["label"], "rows": rows,
                    "skipped": ""})
    return out


def time_curve(st: StudyRecords, setting: str, label: str, cell) -> dict[str, Any] | None:
    """Mean cumulative time and mean deployed accuracy per epoch over a group's seeds, with
    the accuracy's 95% band clipped to [0, 100] (clip_hi/clip_lo: the times where it was)."""
    runs = _group_times(st, setting, label, cell)
    if not runs:
        return None
    n = min(len(t) for _, t, _ in runs)
    x = np.stack([t[:n] for _, t, _ in runs]).mean(axis=0)
    mean, lo, hi = stats.curve_band(np.stack([acc[:n] for _, _, acc in runs]))
    clip_hi, clip_lo = ([], []) if lo is None else (x[hi > 100].tolist(), x[lo < 0].tolist())
    lo, hi, clipped = stats.clip_band(lo, hi, stats.PERCENT)
    return {"x": x, "mean": mean, "lo": lo, "hi": hi, "n": len(runs), "clipped": clipped,
            "clip_hi": clip_hi, "clip_lo": clip_lo}


@cached_per_setting
def time_spread(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """The rows (per W/A pair and hardware, over every seed and budget, 2 runs or more) whose
    runs' mean epoch times have a coefficient of variation (sample std / mean) above
    ``TIME_CV_CAVEAT``, in display order."""
    inc = st.included[st.included["setting"] == setting]
    inc = inc.assign(t=pd.to_numeric(inc["mean_epoch_time_s"], errors="coerce")).dropna(
        subset=["t"])
    order = {lab: i for i, lab in enumerate(st.order)}
    out = []
    for (lab, w, a, hw), t in inc.groupby(["label", "w_bits", "a_bits", "device_name"])["t"]:
        if len(t) < 2 or not t.mean() > 0:
            continue
        cv = float(t.std(ddof=1) / t.mean())
        if cv > TIME_CV_CAVEAT:
            out.append({"label": lab, "cell": (int(w), int(a)), "hardware": hw, "n": len(t),
                        "min": float(t.min()), "max": float(t.max()), "cv": cv})
    return sorted(out, key=lambda r: (order.get(r["label"], len(order)), r["cell"]))


def shared_clause(st: StudyRecords, kind: str) -> str:
    """What a sentence stating a CPU time or time ratio adds ('' for GPU times): 'CPU
    wall-clock with up to 2 runs sharing the machine'."""
    if kind != "CPU":
        return ""
    conc = (st.spec.get("executor") or {}).get("local_concurrency")
    return "CPU wall-clock" + (f" with up to {conc} runs sharing the machine"
                               if isinstance(conc, int) and conc > 1 else "")


def spread_caveat(st: StudyRecords, setting: str) -> str:
    """A sentence naming the rows of ``time_spread`` ('' when there are none)."""
    rows = time_spread(st, setting)
    if not rows:
        return ""
    listed = "; ".join(f"{st.display(r['label'])} {cell_name(*r['cell'])}: "
                       f"{r['min']:.1f}–{r['max']:.1f} s (CV {r['cv']:.2f}, {r['n']} runs)"
                       for r in rows)
    return (f"Per-epoch training times vary across a row's own runs (seeds and budgets, same "
            f"hardware) by a coefficient of variation above {TIME_CV_CAVEAT:.2f} in: {listed}. "
            "The same work took that much more or less time (other load on the machine), so "
            "time ratios involving these rows are uncertain by about as much.")
