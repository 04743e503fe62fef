"""The reproduction table: what a study measured against the numbers a paper reports.

Reads the reference CSV of the study (study.toml ``[report] reference``, or ``--reference``;
load.py reads it) and, for every row that is its method's default variant (the row the
reported numbers stand for), every cell of the study and every reference line that matches
it (method, dataset = ``[report] reference_dataset`` or the run's data.name, model, W/A),
one line per source (e.g. README Reported, Epoch400, Epoch500):

  measured   mean ± sample std (n seeds) of the final deployed test accuracy (%)
  gap        measured mean − reported (points)
  gap / std  that gap in units of the seeds' sample std (n ≥ 2 and std > 0)
  in 95% CI  whether the reported number lies inside the 95% t-interval of the measured mean

Statistics come from the cell's ``harness.report.stats`` summary (load.py). The table says when the
measured runs are not at full scale, so a smoke run's gap is never read as a finding.
"""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from harness.report.load import StudyRecords, cell_name, is_known, shown_path
from harness.report.table import Table, fmt_cell, slug


def reference_lines(st: StudyRecords, setting: str, label: str, w: int,
                    a: int) -> list[tuple[float, str]]:
    """Every (reported top-1, source) of the reference CSV for a default-variant row's cell,
    in the CSV's order."""
    ref = st.reference
    method = st.method_of.get(label)
    if ref is None or st.default_variant(method, st.labels(setting)) != label:
        return []
    ident = dict(json.loads(setting))
    m = ref[(ref["method"].astype(str).str.lower() == str(method).lower())
            & (ref["w_bits"] == w) & (ref["a_bits"] == a)]
    if "dataset" in m.columns:
        dataset = st.reference_dataset or ident.get("data.name")
        m = m[m["dataset"].astype(str).str.lower() == str(dataset).lower()]
    if "model" in m.columns:
        m = m[m["model"].astype(str).str.lower() == str(ident.get("model.name")).lower()]
    sources = m["source"].astype(str) if "source" in m.columns else [""] * len(m)
    return [(float(v), s) for v, s in zip(m["top1"], sources)]


def gap_rows(st: StudyRecords, setting: str) -> list[dict[str, Any]]:
    """One dict per (row, cell, reference line) with the measured summary and the gap."""
    out = []
    for label in st.labels(setting):
        for cell in st.cells(setting, included_only=True):
            s = st.group(setting, label, cell)["summary"]
            if s.n == 0:
                continue
            for reported, source in reference_lines(st, setting, label, cell[0], cell[1]):
                gap = s.mean - reported
                z = gap / s.std if s.n >= 2 and s.std > 0 else math.nan
                inside = None if s.ci is None else s.ci[0] <= reported <= s.ci[1]
                out.append({"label": label, "cell": cell, "summary": s, "reported": reported,
                            "source": source, "gap": gap, "gap_in_std": z, "inside": inside})
    return out


def _scales(st: StudyRecords, setting: str, rows: list[dict[str, Any]]) -> list[str]:
    ids = {rid for r in rows for rid in st.group(setting, r["label"], r["cell"])["run_ids"]}
    runs = st.runs[st.runs["run_id"].isin(ids)]
    return sorted({str(x) for x in runs["scale"] if is_known(x) and x and x != "full"})


def _notes(st: StudyRecords, setting: str, rows: list[dict[str, Any]]) -> list[str]:
    notes = [f"Reported: copied from {shown_path(st.reference_path)}, not measured here. "
             "Measured: final deployed test accuracy (%), mean ± sample std (n seeds). "
             "Gap / std: (measured mean − reported) / the seeds' sample std. In 95% CI: "
             "whether the reported number lies inside the 95% t-interval of the measured mean "
             "(none for n < 2)."]
    ident = dict(json.loads(setting))
    if st.reference_dataset and st.reference_dataset != ident.get("data.name"):
        notes.append(f"Measured on {ident.get('data.name')} ({ident.get('data.root') or ''}), "
                     f"reported on {st.reference_dataset}.".replace(" ()", ""))
    scales = _scales(st, setting, rows)
    if scales:
        notes.append(f"The measured runs are at scale {', '.join(scales)} (smaller data, "
                     "width or budget than the recipe): these gaps measure that, not the "
                     "method.")
    return notes


def reproduction_table(st: StudyRecords, setting: str) -> Table:
    rows_ = gap_rows(st, setting)
    rows, data = [], []
    for r in rows_:
        s, (w, a, e) = r["summary"], r["cell"]
        inside = "–" if r["inside"] is None else ("yes" if r["inside"] else "no")
        rows.append([st.display(r["label"]), cell_name(w, a, e), fmt_cell(s), r["source"],
                     f"{r['reported']:.1f}", f"{r['gap']:+.2f}",
                     "–" if math.isnan(r["gap_in_std"]) else f"{r['gap_in_std']:+.2f}",
                     inside])
        data.append({"setting": st.setting_labels.get(setting, setting), "row": r["label"],
                     "method": st.method_of.get(r["label"]), "w_bits": w, "a_bits": a,
                     "epochs": e, "n": s.n, "mean": s.mean, "std": s.std,
                     "ci_low": s.ci[0] if s.ci else None, "ci_high": s.ci[1] if s.ci else None,
                     "source": r["source"], "reported": r["reported"], "gap": r["gap"],
                     "gap_in_std": r["gap_in_std"], "reported_in_ci": r["inside"]})
    header = ["Method", "Cell", "Measured", "Source", "Reported†", "Measured − reported",
              "Gap / seed std", "Reported in 95% CI"]
    name = f"reproduction_{slug(st.setting_labels[setting])}"
    compact = Table(name, f"Reproduction: measured vs reported, {st.setting_name(setting)}",
                    ["Method", "Cell", "Measured", "Source", "Rep.†", "Δ", "Δ/std", "in CI"],
                    rows, n_label_cols=2, left_extra=(3,), wide=True, wrap=True,
                    notes=["Δ: measured − reported (points); Δ/std: that gap in seed "
                           "standard deviations; in CI: whether the reported number lies in "
                           "the measured 95% t-interval."])
    return Table(name,
                 f"Reproduction: measured vs reported, {st.setting_name(setting)}", header,
                 rows, pd.DataFrame(data), notes=_notes(st, setting, rows_) if rows_ else [],
                 n_label_cols=2, left_extra=(3,), wide=True, tex=compact)


def reproduction_tables(st: StudyRecords, setting: str) -> list[Table]:
    """The section builder (render.SECTIONS): the table when the reference has numbers."""
    return [reproduction_table(st, setting)] if st.reference is not None else []
