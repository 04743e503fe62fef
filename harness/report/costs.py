"""The report's cost section: what each method's deployed network costs to run and what
training it cost, relative to fp; and the memory of ours' own parameters at the weight bit
widths the study ran (SLB's logits: n = 2^bits values per weight).

Reads only records: the costs a run recorded in summary.json (``inference_cost``,
``training_cost``, ``param_bytes``, ``method_param_bytes``, ``optimizer_state_bytes``,
``method_optimizer_state_bytes``; load.py puts them in the runs table). A record written
before runs recorded one of them shows n/a there, and the table's note says so; nothing is
rebuilt from a config (that would need the model code and torch, and might not be the
network that ran). ``cost_rows`` (memoised per setting; the reviewer answer reads it too)
aggregates them per row, cell and hardware; ``cost_tables`` is the section's builder.

Units: size in MB (10^6 bytes) of the deployed payload (harness.deploy.packing stores exactly
it); BOPs and OPs per image with the Bi-Real Net convention (OPs = BOPs/64 + FLOPs,
harness.costs.opcount);
training FLOPs per step as torch's FlopCounterMode counts them (2 per multiply-add), shown
relative to fp; device time = wall-clock time x processes, in CPU-minutes (CPU-hours from one
hour up) or GPU-hours, two significant digits.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.report import timing
from harness.report.answers import NOT_ANSWERED, bullets
from harness.report.load import StudyRecords, cached_per_setting, cell_name
from harness.report.table import Table, grouped
from harness.report.tables import setting_slug


def human_bytes(b: float | None) -> str:
    if b is None or not math.isfinite(b):
        return "n/a"
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= k:
            return f"{b / k:.1f} {unit}"
    return f"{b:.0f} B"


def ratio(x: float | None, ref: float | None) -> str:
    if x is None or ref is None or not ref or not math.isfinite(x) or not math.isfinite(ref):
        return "n/a"
    return f"×{x / ref:.2f}"


# --------------------------------------------------------------------------- formatting

def sig2(x: float) -> str:
    """Two significant digits, without an exponent: 0.0123 -> 0.012, 1 -> 1.0, 1234 -> 1,200."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = 1 - math.floor(math.log10(abs(x)))
    r = round(x, decimals)
    decimals = 1 - math.floor(math.log10(abs(r)))  # 9.96 rounds to 10: one decimal less
    return f"{round(r, decimals):,.{max(decimals, 0)}f}"


def device_time(hours: float | None, gpu: bool) -> str:
    if hours is None or not math.isfinite(hours):
        return "n/a"
    if gpu:
        return f"{sig2(hours)} GPU-h"
    return f"{sig2(hours * 60)} CPU-min" if hours < 1 else f"{sig2(hours)} CPU-h"


def si(x: float | None) -> str:
    """A count with three significant digits and an SI prefix: 40813184 -> 40.8 M."""
    if x is None or not math.isfinite(x):
        return "n/a"
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= k:
            return f"{x / k:.3g} {unit}"
    return f"{x:.3g}"


def megabytes(b: float | None) -> str:
    if b is None or not math.isfinite(b):
        return "n/a"
    return f"{b / 1e6:.3g}" if b >= 1e4 else f"{b / 1e6:.2g}"


# --------------------------------------------------------------------------- rows

_NUMERIC = ["mean_epoch_time_s", "wall_time_s", "peak_mem_mb", "param_bytes",
            "method_param_bytes", "optimizer_state_bytes", "method_optimizer_state_bytes",
            "size_bytes", "bops", "ops", "inf_flops", "train_flops_step", "device_hours"]
# cost_rows' per-row means that are compared with fp's -> their runs-table columns
_FP_MEANS = {"epoch_s": "mean_epoch_time_s", "mem": "peak_mem_mb",
             "mparams": "method_param_bytes", "mopt": "method_optimizer_state_bytes",
             "train_flops": "train_flops_step", "size": "size_bytes", "ops": "ops"}


def _fp_reference(inc):
    """(hardware, activation bits, epochs) -> fp's mean costs there; falls back to fp's on
    the same hardware and activation bits, then on the same hardware."""
    fp = inc[inc["method"] == "fp"]

    def refs(keys: list[str]) -> dict:
        g = fp.groupby(keys)[list(_FP_MEANS.values())].mean()
        return {(k if isinstance(k, tuple) else (k,)): {m: float(row[c]) for m, c in
                                                        _FP_MEANS.items()}
                for k, row in g.iterrows()}

    levels = [refs(["device_name", "a_bits", "epochs"]), refs(["device_name", "a_bits"]),
              refs(["device_name"])]
    return lambda dev, a, e: levels[0].get((dev, a, e)) or levels[1].get((dev, a)) or \
        levels[2].get((dev,))


def _mean(s):
    s = s.dropna()
    return float(s.mean()) if len(s) else float("nan")


def _sum(s):
    s = s.dropna()
    return float(s.sum()) if len(s) else float("nan")


@cached_per_setting
def cost_rows(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """Per row, cell and hardware: the deployed size and op counts, mean epoch time, training
    FLOPs per step, memory and method bytes, summed device-hours; with fp's on the same
    hardware (same activation bits when there is such a run)."""
    inc = st.included[st.included["setting"] == setting]
    if inc.empty:
        return []
    inc = inc.assign(**{c: pd.to_numeric(inc[c], errors="coerce") if c in inc else float("nan")
                        for c in _NUMERIC})
    agg = inc.groupby(["label", "w_bits", "a_bits", "epochs", "device_name"], dropna=False).agg(
        n=("run_id", "size"), epoch_s=("mean_epoch_time_s", _mean),
        hours=("device_hours", _sum), mem=("peak_mem_mb", _mean),
        mem_kind=("peak_mem_kind", "first"), device=("device", "first"),
        params=("param_bytes", _mean), mparams=("method_param_bytes", _mean),
        opt=("optimizer_state_bytes", _mean), mopt=("method_optimizer_state_bytes", _mean),
        size=("size_bytes", _mean), bops=("bops", _mean), ops=("ops", _mean),
        inf_flops=("inf_flops", _mean), train_flops=("train_flops_step", _mean))
    fp_at = _fp_reference(inc)
    out = []
    for (lab, w, a, e, dev), r in agg.iterrows():
        refd = fp_at(dev, a, e)
        out.append({"row": lab, "cell": (int(w), int(a), int(e)), "device_name": dev,
                    **r.to_dict(), "fp": refd})
    order = {lab: i for i, lab in enumerate(st.order)}
    out.sort(key=lambda r: (order.get(r["row"], 1e9), r["cell"], r["device_name"]))
    return out


def _cost_data(st: StudyRecords, setting: str, r: dict[str, Any]) -> dict[str, Any]:
    fp = r["fp"] or {}
    return {"setting": st.setting_labels[setting], "row": r["row"],
            "name": st.display(r["row"]), "w_bits": r["cell"][0], "a_bits": r["cell"][1],
            "epochs": r["cell"][2],
            "hardware": r["device_name"], "device": r["device"], "n": r["n"],
            "size_bytes": r["size"], "bops": r["bops"], "ops": r["ops"],
            "flops": r["inf_flops"],
            "train_flops_per_step": r["train_flops"], "mean_epoch_time_s": r["epoch_s"],
            "device_hours": r["hours"], "peak_mem_mb": r["mem"], "peak_mem_kind": r["mem_kind"],
            "param_bytes": r["params"], "method_param_bytes": r["mparams"],
            "optimizer_state_bytes": r["opt"], "method_optimizer_state_bytes": r["mopt"],
            **{f"fp_{k}": fp.get(k) for k in _FP_MEANS}}


def _cost_notes(rows_: list[dict[str, Any]], hw: list[str], hw_id: dict[str, str]) -> list[str]:
    kinds = sorted({str(r["mem_kind"]) for r in rows_})
    notes = [
        "size: MB (10^6 bytes) of the deployed network, quantized weights at their bit width "
        "and everything else at 32 bits (what `python -m harness export` packs). BOPs: "
        "multiply-accumulates of the quantized layers x w_bits x a_bits, per image; OPs = "
        "BOPs/64 + FLOPs of the full-precision layers (Bi-Real Net, ReActNet). train FLOPs: "
        "per training step, forward, backward and the method's extra passes (FlopCounterMode, "
        "at the run's start). s/epoch: mean training time per epoch (without evaluation). "
        "peak MB: " + ", ".join(kinds) + ". method params: bytes of the quantized layers' "
        "parameters. compute: summed device time of the included runs (wall-clock x "
        "processes). × fp: relative to the fp runs on the same hardware (same activation "
        "bits and budget when available); n/a without such runs or where records predate "
        "the measurement."]
    missing = unrecorded(rows_)
    if missing:
        notes.append(f"n/a in {'; '.join(missing)}: not in these records (written before "
                     "runs recorded it); the report reads only the records, and a run of this "
                     "version records it.")
    if len(hw) > 1:
        notes.append("Hardware: " + "; ".join(f"{hw_id[h]} = {h}" for h in hw) + ".")
    else:
        notes.append(f"Hardware: {hw[0] if hw else 'unknown'}.")
    return notes


# the cost table's columns -> the summary.json field a run records them in
_RECORDED = {"size MB, BOPs, OPs": ("size", "inference_cost"),
             "train FLOPs/step": ("train_flops", "training_cost.flops_per_step"),
             "peak MB": ("mem", "peak_mem_mb"), "method params": ("mparams", "method_param_bytes")}


def unrecorded(rows_: list[dict[str, Any]]) -> list[str]:
    """'COLUMNS (summary.json FIELD)' for each cost column some row has no record of."""
    return [f"{cols} (summary.json {field})" for cols, (key, field) in _RECORDED.items()
            if any(not math.isfinite(r[key]) for r in rows_)]


def cost_table(st: StudyRecords, setting: str, rows_: list[dict[str, Any]]) -> Table:
    hw = sorted({r["device_name"] for r in rows_})
    hw_id = {h: f"H{i + 1}" for i, h in enumerate(hw)}
    rows = []
    for r in rows_:
        fp = r["fp"] or {}
        gpu = str(r["device"]).startswith("cuda")
        row = [st.display(r["row"]), cell_name(*r["cell"])] + (
            [hw_id[r["device_name"]]] if len(hw) > 1 else [])
        row += [str(r["n"]), megabytes(r["size"]), si(r["bops"]), si(r["ops"]),
                ratio(r["train_flops"], fp.get("train_flops")),
                f"{r['epoch_s']:.2f}", ratio(r["epoch_s"], fp.get("epoch_s")),
                f"{r['mem']:.0f}" if math.isfinite(r["mem"]) else "n/a",
                ratio(r["mem"], fp.get("mem")),
                human_bytes(r["mparams"]), ratio(r["mparams"], fp.get("mparams")),
                device_time(r["hours"], gpu)]
        rows.append(row)
    header = ["Method", "Cell"] + (["HW"] if len(hw) > 1 else []) + [
        "n", "size MB", "BOPs", "OPs", "train FLOPs/step × fp", "s/epoch", "× fp", "peak MB",
        "× fp", "method params", "× fp", "compute"]
    notes = _cost_notes(rows_, hw, hw_id) + [x for x in [timing.spread_caveat(st, setting)]
                                            if x]
    name, caption = (f"cost_{setting_slug(st, setting)}",
                     f"Cost per method and cell, {st.setting_name(setting)}")
    return Table(name, caption, header, rows,
                 pd.DataFrame([_cost_data(st, setting, r) for r in rows_]), notes=notes,
                 n_label_cols=3 if len(hw) > 1 else 2,
                 tex=_compact_cost(name, caption, rows,
                                   [(r["cell"], r["device_name"], i) for i, r in enumerate(rows_)],
                                   len(hw) > 1, notes,
                                   sorted({str(r["mem_kind"]) for r in rows_})))


def _compact_cost(name: str, caption: str, rows: list[list[str]], order: list[tuple],
                  multi_hw: bool, notes: list[str], kinds: list[str]) -> Table:
    """The paper version: a heading per cell (and hardware; ``order``: each row's sort key),
    each ratio to fp beside its value; seeds, BOPs, training FLOPs and device time stay in
    the markdown and CSV versions, and the notes describe only what it shows."""
    k = 3 if multi_hw else 2  # the label columns: method, cell[, hardware]
    keyed = []
    for _, r in sorted(zip(order, rows), key=lambda t: t[0]):
        _, size, _, ops, _, epoch_s, x_t, mem, x_m, params, x_p, _ = r[k:]
        keyed.append((", ".join(r[1:k]), [r[0], size, ops, f"{epoch_s} ({x_t})",
                                          f"{mem} ({x_m})", f"{params} ({x_p})"]))
    tex_rows, groups = grouped(keyed)
    first = ("MB: size of the deployed network (quantized weights at their bit width, the "
             "rest at 32 bits); OPs per image = BOPs/64 + FLOPs of the full-precision layers "
             "(Bi-Real Net); s/epoch: mean training time per epoch, evaluation excluded; peak "
             f"MB: {', '.join(kinds)}; params: bytes of the quantized layers' parameters; in "
             "parentheses: relative to the fp runs on the same hardware (same activation bits "
             "and budget when available). Seeds, BOPs, training FLOPs per step and device "
             "time: in the markdown and CSV versions of this table.")
    return Table(name, caption, ["Method", "MB", "OPs", "s/epoch (× fp)", "peak MB (× fp)",
                                 "params (× fp)"],
                 tex_rows, groups=groups, wide=True, wrap=True,
                 header_groups=[("", 1), ("deployed", 2), ("training", 3)],
                 notes=[first] + notes[1:])


# --------------------------------------------------------------------------- method memory

_MEMORY = ("method_param_bytes", "method_optimizer_state_bytes")


def _mean_of(df, column: str) -> float:
    return _mean(pd.to_numeric(df[column], errors="coerce")) if len(df) else float("nan")


@cached_per_setting
def memory_rows(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """Ours' (its default row's) parameter and optimizer-state bytes at each W/A the study
    ran it, as its runs recorded them (mean over the runs: the bytes do not depend on the
    seed or budget), against the bytes fp's runs recorded for the same layers, and the peak
    memory of ours' runs in that cell (its longest budget) against fp's."""
    lab = st.default_variant(st.ours, st.labels(setting)) if st.ours else None
    if lab is None:
        return []
    inc = st.included[st.included["setting"] == setting]
    fp = inc[inc["method"] == "fp"]
    fp_bytes = {f"fp_{c}": _mean_of(fp, c) for c in _MEMORY}
    peaks = {r["cell"][:2]: r for r in cost_rows(st, setting) if r["row"] == lab}
    out = []
    for (w, a), df in inc[inc["label"] == lab].groupby(["w_bits", "a_bits"]):
        run = peaks.get((int(w), int(a)))
        out.append({"row": lab, "w_bits": int(w), "a_bits": int(a), "n": len(df),
                    **{c: _mean_of(df, c) for c in _MEMORY}, **fp_bytes,
                    "peak_mem_mb": run["mem"] if run else float("nan"),
                    "fp_peak_mem_mb": (run["fp"] or {}).get("mem") if run else None})
    return out


def _memory_notes(rows_: list[dict[str, Any]]) -> list[str]:
    notes = ["method params: bytes of the parameters the method keeps for the quantized layers "
             "(latent weights, logits, scales) as the study's runs recorded them (summary.json "
             "method_param_bytes, counted by harness.costs.memory.memory_costs on the run's "
             "model and optimizer), at the bit widths the study ran; × fp weights: relative to "
             "the bytes the fp runs recorded for the same layers (and their optimizer state). "
             "peak MB: the study's runs in that cell, relative to fp's."]
    fields = [c for c in _MEMORY if any(not math.isfinite(r[c]) or not math.isfinite(
        r[f"fp_{c}"]) for r in rows_)]
    if fields:
        notes.append(f"n/a: the records do not hold summary.json {' or '.join(fields)} (written "
                     "before runs recorded it), or the study has no fp runs.")
    return notes


def memory_table(st: StudyRecords, setting: str, rows_: list[dict[str, Any]]) -> Table:
    one_a = len({r["a_bits"] for r in rows_}) == 1
    rows = [[st.display(r["row"]), f"W{r['w_bits']}" + ("" if one_a else f"/A{r['a_bits']}"),
             human_bytes(r["method_param_bytes"]),
             ratio(r["method_param_bytes"], r["fp_method_param_bytes"]),
             human_bytes(r["method_optimizer_state_bytes"]),
             ratio(r["method_optimizer_state_bytes"], r["fp_method_optimizer_state_bytes"]),
             f"{r['peak_mem_mb']:.0f}" if math.isfinite(r["peak_mem_mb"]) else "n/a",
             ratio(r["peak_mem_mb"], r["fp_peak_mem_mb"])] for r in rows_]
    header = ["Method", "Weights", "method params", "× fp weights", "their opt. state", "× fp",
              f"peak MB (runs, A{rows_[0]['a_bits']})" if one_a else "peak MB (runs)", "× fp"]
    return Table(f"method_memory_{setting_slug(st, setting)}",
                 f"Memory of {st.display(rows_[0]['row'])}'s parameters by weight bits, "
                 f"{st.setting_name(setting)}", header, rows,
                 pd.DataFrame([{**r, "name": st.display(r["row"])} for r in rows_]),
                 notes=_memory_notes(rows_), n_label_cols=2, wrap=True)


def cost_tables(st: StudyRecords, setting: str) -> list[Table]:
    rows = cost_rows(st, setting)
    mem = memory_rows(st, setting) if rows else []
    return ([cost_table(st, setting, rows)] if rows else []) + (
        [memory_table(st, setting, mem)] if mem else [])


# --------------------------------------------------------------------------- the answer

def ratio_values(xs: list[float]) -> str:
    """Ratios over cells as words: one value, two values stated as they are ('×2.00 or ×4.00,
    by cell'; a median of two values is neither), else the median and range."""
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return "n/a"
    distinct = sorted({f"×{x:.2f}" for x in xs}, key=lambda t: float(t[1:]))
    if len(distinct) <= 2:
        return " or ".join(distinct) + (" (by cell)" if len(distinct) == 2 else "")
    return (f"×{float(pd.Series(xs).median()):.2f} (median over cells; range "
            f"{distinct[0]}–{distinct[-1]})")


def _time_ratio(st: StudyRecords, setting: str, xs: list[float], denominator: str,
                name: str) -> str:
    """Epoch-time ratios to the row ``denominator`` (called ``name``), or why none is stated:
    its own runs' epoch times vary too much (timing.time_spread) for a ratio to be a
    finding."""
    spread = [r for r in timing.time_spread(st, setting) if r["label"] == denominator]
    if spread:
        worst = max(spread, key=lambda r: r["cv"])
        return (f"no ratio to {name}'s epoch time (its own runs took "
                f"{worst['min']:.1f}–{worst['max']:.1f} s per epoch, coefficient of variation "
                f"{worst['cv']:.2f}: other load on the machine)")
    return f"{ratio_values(xs)} {name}'s epoch time"


def _fp_ratios_text(st: StudyRecords, setting: str, with_fp: list[dict[str, Any]]) -> str:
    """Ours' epoch time, training FLOPs, peak memory and method bytes relative to fp's."""
    def rat(key: str) -> list[float]:
        return [r[key] / r["fp"][key] for r in with_fp
                if r["fp"][key] and math.isfinite(r[key])]

    fp = st.default_variant("fp", st.labels(setting)) or "fp"
    t, f = rat("epoch_s"), rat("train_flops")
    txt = f"; {_time_ratio(st, setting, t, fp, 'fp')}" if t else ""
    txt += f"; training FLOPs per step {ratio_values(f)} fp's" if f else ""
    return txt + (f"; relative to fp's: peak memory {ratio_values(rat('mem'))}, method "
                  f"parameters {ratio_values(rat('mparams'))}, their optimizer state "
                  f"{ratio_values(rat('mopt'))}")


def _deployed_text(here: list[dict[str, Any]]) -> str:
    """Ours' deployed size and OPs per cell, next to fp's."""
    parts = []
    for r in here:
        fp = r["fp"] or {}
        if not math.isfinite(r["size"]):
            continue
        part = f"{cell_name(*r['cell'][:2])}: {r['size'] / 1e6:.3g} MB, {si(r['ops'])} OPs"
        if fp.get("size") and math.isfinite(fp["size"]):
            part += (f" (fp: {fp['size'] / 1e6:.3g} MB, {si(fp['ops'])} OPs; "
                     f"×{fp['size'] / r['size']:.1f} smaller)")
        parts.append(part)
    parts = list(dict.fromkeys(parts))  # budgets share a cell's deployed network
    return ("; deployed " + "; ".join(parts)) if parts else ""


def _baseline_ratios_text(st: StudyRecords, s: str, rows_: list[dict[str, Any]],
                          here: list[dict[str, Any]], dev: str) -> str:
    """Ours' epoch time relative to each baseline row on the same hardware; none to a row
    whose own epoch times vary too much."""
    unstable = {r["label"] for r in timing.time_spread(st, s)}
    others, skipped = [], []
    for lab in st.labels(s):
        if st.method_of[lab] in (st.ours, "fp"):
            continue
        theirs = {(r["cell"]): r["epoch_s"] for r in rows_
                  if r["row"] == lab and r["device_name"] == dev}
        rs = [r["epoch_s"] / theirs[r["cell"]] for r in here if theirs.get(r["cell"])]
        if rs and lab in unstable:
            skipped.append(st.display(lab))
        elif rs:
            others.append(f"×{float(pd.Series(rs).median()):.2f} {st.display(lab)}")
    text = ("; epoch time relative to the baselines (median over shared cells): "
            + ", ".join(others)) if others else ""
    if skipped:
        text += (f"; none to {', '.join(skipped)} (their own epoch times vary by a coefficient "
                 f"of variation above {timing.TIME_CV_CAVEAT:.2f})")
    return text


def _cost_item(st: StudyRecords, s: str, ours: str, rows_: list[dict[str, Any]],
               dev: str) -> str:
    """Ours' costs on one hardware of setting ``s``, every time ratio with its caveat."""
    here = [r for r in rows_ if r["row"] == ours and r["device_name"] == dev]
    med = float(pd.Series([r["epoch_s"] for r in here]).median())
    clause = timing.shared_clause(st, "GPU" if str(here[0]["device"]).startswith("cuda")
                                  else "CPU")
    txt = (f"{st.setting_name(s)} on {dev}: {st.display(ours)} takes {med:.2f} s per epoch "
           + (f"(median over {len(here)} cells" if len(here) > 1 else
              f"({cell_name(*here[0]['cell'])}") + (f"; {clause})" if clause else ")"))
    own = [r for r in timing.time_spread(st, s) if r["label"] == ours]
    if own:
        txt += (f", its own runs varying by a coefficient of variation up to "
                f"{max(r['cv'] for r in own):.2f}")
    with_fp = [r for r in here if r["fp"]]
    txt += (_fp_ratios_text(st, s, with_fp) if with_fp else
            "; no fp run on this hardware, so no ratio to fp")
    return txt + _baseline_ratios_text(st, s, rows_, here, dev) + _deployed_text(here) + "."


def answer_cost(st: StudyRecords, q) -> tuple[str, list[str]]:
    """The cost question's answer: ours against fp and the baselines, per setting and
    hardware."""
    items = []
    for s in st.settings():
        ours = st.default_variant(st.ours, st.labels(s))
        rows_ = cost_rows(st, s) if ours else []
        items += [_cost_item(st, s, ours, rows_, dev) for dev in
                  sorted({r["device_name"] for r in rows_ if r["row"] == ours})]
    if not items:
        return f"{NOT_ANSWERED}: no completed {st.ours_name} run records its cost.", []
    total = st.runs.dropna(subset=["device_hours"])
    hours = total.groupby(total["device"].astype(str).str.startswith("cuda"))["device_hours"].sum()
    spent = "; ".join(device_time(h, bool(k)) for k, h in hours.items())
    text = (f"Cost of {st.ours_name} from the summaries (full table: cost tables). The whole "
            f"study used {spent} (all records, failed runs included).")
    caveats = [c for c in (timing.spread_caveat(st, s) for s in st.settings()) if c]
    text += "".join(f" {c}" for c in caveats)
    return text, bullets(items, "the cost tables")

