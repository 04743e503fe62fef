"""Pretrained variants in the report: a variant with ``init = { from = "fp", epochs = N }``
(harness/study/spec/stages.py) starts each run from the study's fp run of its seed, trained
N epochs, and trains the rest of the budget quantized.

- Its runs sit in the cell of the budget (runs.py adds ``init_epochs`` to the run's own
  epochs), and its row's display name says how the budget was spent: "BWN from fp (4 fp + 8
  ep)" (load.py ``budget_text``), wherever the report shows that row and its cell's epochs.
- Its *counterpart* is the variant of the same method with the same options that starts
  from scratch (``counterparts``): the pair the pretraining question compares, and the
  comparisons the verdict family adds for it (``family_pairs``): each pretrained row against
  its counterpart, and for every two methods both with a pair, the two pretrained rows
  against each other and the two scratch rows against each other (verdicts.py).

Reads only the runs table (load.py, runs.py); torch-free, like the whole report.
"""
from __future__ import annotations

import itertools
import json

from harness.report.load import StudyRecords, cached_per_setting, init_epochs

Side = tuple[str, tuple[int, int, int]]


def _scratch_options(st: StudyRecords, label: str) -> str:
    opts = {k: v for k, v in st.options_of.get(label, {}).items() if k != "init"}
    return json.dumps(opts, sort_keys=True, default=str)


@cached_per_setting
def counterparts(st: StudyRecords, setting: str) -> list[tuple[str, str]]:
    """(pretrained row, the row of the same method and options from scratch) in display
    order; a pretrained row without such a row is left out (``unpaired``)."""
    labels = st.labels(setting)
    out = []
    for lab in labels:
        if not init_epochs(st, lab):
            continue
        twins = [o for o in labels if o != lab and not init_epochs(st, o)
                 and st.method_of.get(o) == st.method_of.get(lab)
                 and _scratch_options(st, o) == _scratch_options(st, lab)]
        if twins:
            out.append((lab, twins[0]))
    return out


def unpaired(st: StudyRecords, setting: str) -> list[str]:
    """Pretrained rows with no row of the same method and options from scratch."""
    paired = {p for p, _ in counterparts(st, setting)}
    return [lab for lab in st.labels(setting) if init_epochs(st, lab) and lab not in paired]


def family_pairs(st: StudyRecords, setting: str, cell: tuple[int, int, int],
                 have: list[str]) -> list[tuple[Side, Side]]:
    """The comparisons the pretraining question asks of one cell (``have``: the rows with
    runs there), for the setting's verdict family: each pretrained row against its
    counterpart; for two methods with a pair each, pretrained against pretrained and
    scratch against scratch (ours first where it is one of them)."""
    pairs = [(p, s) for p, s in counterparts(st, setting) if p in have and s in have]
    out = [((p, cell), (s, cell)) for p, s in pairs]
    for (p1, s1), (p2, s2) in itertools.combinations(pairs, 2):
        if st.method_of.get(p1) == st.method_of.get(p2):
            continue
        if st.method_of.get(p2) == st.ours:
            (p1, s1), (p2, s2) = (p2, s2), (p1, s1)
        out += [((p1, cell), (p2, cell)), ((s1, cell), (s2, cell))]
    return out
