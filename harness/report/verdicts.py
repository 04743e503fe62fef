"""The one verdict rule: every comparison a report makes in a setting, and its decision.

``family(st, setting)`` collects every comparison the report shows for a setting:

- ours (its default variant) against every row of another method, per cell (the comparison
  tables, the Bop and budget answers);
- the best row of a main-table column against every other row with enough seeds (bold);
- each variant of a method against its default variant, per cell (ablation tables and the
  option answers);
- each pretrained row against its row from scratch, and two methods' pretrained rows (and
  their rows from scratch) against each other, per cell (pretrain.py: the pretraining
  answer);
- ours at its longest budget against its shortest, per W/A pair (the budget answer);
- ours against every other row at equal compute, per cell (timing.py's read-offs).

Each is a t-test (``compare_runs``): paired by seed when both sides ran the same seeds and
each seed's runs share their data order (summary.json ``seed_fingerprint``, recorded by the
trainer: harness/run/seeding.py), else Welch's; sides equal on every seed are the same
network, reported as identical without a test. The p-values are Benjamini-Hochberg
adjusted over the whole family (the comparisons that have one), and ``stats.RULE`` decides
(``Comparison.decide`` on the adjusted p). Tables, bold cells and answers all ask
``test(...)``, so a pair never gets two verdicts, and every place that states one can say
over how many tests it was adjusted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.report import pretrain, stats, timing
from harness.report.load import StudyRecords, cached_per_setting

FINAL, EQUAL_COMPUTE = "final", "equal_compute"   # what a test compares


@dataclass(frozen=True)
class Test:
    """A minus B, its adjusted p-value and the family it was adjusted over."""
    cmp: stats.Comparison
    p_adj: float
    family_size: int

    @property
    def decision(self) -> str:
        """stats.Comparison.decide on the adjusted p: higher, lower, ns, small, ..."""
        return self.cmp.decide(self.p_adj)

    def verdict(self, a: str, b: str) -> str:
        return self.cmp.verdict(a, b, self.p_adj)

    def fmt(self) -> str:
        """'+0.60 [+0.20, +1.00] (95% CI), p = 0.010, adjusted p = 0.030[, caveat]'."""
        return stats.fmt_comparison(self.cmp, p_adj=self.p_adj)


Side = tuple[str, tuple[int, int, int]]   # (row label, cell)


def _final_pairs(st: StudyRecords, setting: str) -> list[tuple[Side, Side]]:
    """The final-accuracy comparisons of the setting (see the module docstring)."""
    labels = st.labels(setting)
    cells = st.cells(setting, included_only=True)
    ours = st.default_variant(st.ours, labels) if st.ours else None
    pairs: list[tuple[Side, Side]] = []
    for c in cells:
        have = [lab for lab in labels if st.group(setting, lab, c)["acc"]]
        if ours in have:
            pairs += [((ours, c), (lab, c)) for lab in have
                      if st.method_of.get(lab) != st.ours]
        top = bold_candidate(st, setting, have, c)
        if top:
            pairs += [((top, c), (lab, c)) for lab in have if lab != top and
                      st.group(setting, lab, c)["summary"].n >= stats.MIN_N_CONCLUDE]
        for m in dict.fromkeys(st.method_of[lab] for lab in have):
            default = st.default_variant(m, labels)
            if default in have:
                pairs += [((lab, c), (default, c)) for lab in have
                          if st.method_of[lab] == m and lab != default]
        pairs += pretrain.family_pairs(st, setting, c, have)
    if ours:
        for w, a in sorted({c[:2] for c in cells}):
            mine = [c for c in cells if c[:2] == (w, a) and st.group(setting, ours, c)["acc"]]
            if len(mine) > 1:
                pairs.append(((ours, mine[-1]), (ours, mine[0])))
    return pairs


def bold_candidate(st: StudyRecords, setting: str, labels: list[str], cell) -> str | None:
    """The row a main-table column may bold: the highest mean among rows with at least
    MIN_N_CONCLUDE seeds, when no row with fewer seeds has a mean as high."""
    summ = [(st.group(setting, lab, cell)["summary"], lab) for lab in labels]
    summ = [(s, lab) for s, lab in summ if s.n]
    tested = [(s, lab) for s, lab in summ if s.n >= stats.MIN_N_CONCLUDE]
    if len(tested) < 2:
        return None
    best, lab = max(tested, key=lambda t: t[0].mean)
    if any(s.mean >= best.mean for s, other in summ if other != lab and s.n < stats.MIN_N_CONCLUDE):
        return None
    return lab


def _values(st: StudyRecords, setting: str, kind: str, side: Side) -> tuple[list, list]:
    """(run ids, values) of one side: its final accuracies, or its accuracies at T*."""
    if kind == FINAL:
        g = st.group(setting, *side)
        return g["run_ids"], g["acc"]
    for cell in timing.equal_compute_cells(st, setting):
        if cell["cell"] == side[1] and not cell["skipped"]:
            row = next((r for r in cell["rows"] if r["label"] == side[0]), None)
            return (row["value_runs"], row["values"]) if row else ([], [])
    return [], []


def compare_runs(st: StudyRecords, a_runs: list, a: list[float], b_runs: list,
                 b: list[float]) -> stats.Comparison:
    """A minus B where ``a[i]`` is run ``a_runs[i]``'s value: aligned by seed when both sides
    ran the same seeds once each (then equal values are ``identical``), and paired when each
    seed's two runs also share their data order (both recorded it and it agrees)."""
    ia, ib = ([st.seed_info(r) for r in runs] for runs in (a_runs, b_runs))
    seeds_a, seeds_b = [s for s, _ in ia], [s for s, _ in ib]
    if (len(a) != len(a_runs) or len(b) != len(b_runs) or None in seeds_a
            or len(set(seeds_a)) != len(seeds_a) or sorted(seeds_a) != sorted(seeds_b)):
        return stats.compare(a, b)
    oa = sorted(range(len(a)), key=lambda i: seeds_a[i])
    ob = sorted(range(len(b)), key=lambda i: seeds_b[i])
    paired = all(ia[i][1] and ia[i][1] == ib[j][1] for i, j in zip(oa, ob))
    return stats.compare([a[i] for i in oa], [b[j] for j in ob], aligned=True, paired=paired)


def _equal_compute_pairs(st: StudyRecords, setting: str) -> list[tuple[Side, Side]]:
    ours = st.default_variant(st.ours, st.labels(setting)) if st.ours else None
    pairs = []
    for cell in timing.equal_compute_cells(st, setting):
        labels = [r["label"] for r in cell.get("rows", []) if r["values"]]
        if cell["skipped"] or ours not in labels:
            continue
        pairs += [((ours, cell["cell"]), (lab, cell["cell"])) for lab in labels
                  if st.method_of.get(lab) != st.ours]
    return pairs


@cached_per_setting
def family(st: StudyRecords, setting: str) -> dict[tuple, Test]:
    """Every comparison of the setting, keyed (kind, A side, B side) in the order they were
    first asked for, with BH-adjusted p-values over all of them."""
    keys: dict[tuple, None] = {}
    for kind, pairs in ((FINAL, _final_pairs(st, setting)),
                        (EQUAL_COMPUTE, _equal_compute_pairs(st, setting))):
        for a, b in pairs:
            if (kind, b, a) not in keys:
                keys.setdefault((kind, a, b))
    cmps = {k: compare_runs(st, *_values(st, setting, k[0], k[1]),
                            *_values(st, setting, k[0], k[2])) for k in keys}
    return adjusted(cmps)


def adjusted(cmps: dict[Any, stats.Comparison]) -> dict[Any, Test]:
    """Each comparison with its p-value Benjamini-Hochberg adjusted over those that have
    one (``family_size``: how many; identical sides and too few seeds have none)."""
    adj = stats.adjust_pvalues([c.p for c in cmps.values()])
    n = sum(math.isfinite(c.p) for c in cmps.values())
    return {k: Test(c, p, n) for (k, c), p in zip(cmps.items(), adj)}


def test(st: StudyRecords, setting: str, a: Side, b: Side, kind: str = FINAL) -> Test:
    """A minus B from the setting's family (a pair outside it is a programming error)."""
    fam = family(st, setting)
    if (kind, a, b) in fam:
        return fam[(kind, a, b)]
    t = fam[(kind, b, a)]
    return Test(stats.flip(t.cmp), t.p_adj, t.family_size)


def family_size(st: StudyRecords, setting: str) -> int:
    """How many tests (comparisons with a p-value) the setting's adjustment is over."""
    fam = family(st, setting)
    return next(iter(fam.values())).family_size if fam else 0


def test_data(t: "Test | None") -> dict[str, Any]:
    """A test's CSV columns: which test, its p-value, degrees of freedom, adjusted p."""
    if t is None:
        return {"test": None, "p": None, "df": None, "p_adj": None, "family_size": None}
    c = t.cmp
    return {"test": "identical" if c.identical else "paired" if c.paired else "welch",
            "p": c.p, "df": c.df, "p_adj": t.p_adj, "family_size": t.family_size}


def design_note(tests: list[Test]) -> str:
    """Which test each of ``tests`` is: 'paired by seed in 3 of 5 (...); Welch's elsewhere'
    ('' when there are none), and how many are identical."""
    tested = [t for t in tests if not t.cmp.identical]
    paired = sum(t.cmp.paired for t in tested)
    same = len(tests) - len(tested)
    parts = []
    if tested:
        parts.append("paired t-test by seed (both rows ran the same seeds and each seed's "
                     "runs share their data order, summary.json seed_fingerprint)"
                     if paired == len(tested) else
                     "Welch's t-test (unpaired: the records hold no seed fingerprint, or the "
                     "rows ran other seeds or another data order)" if not paired else
                     f"paired t-test by seed in {paired} of {len(tested)} (their runs share "
                     "each seed's data order, summary.json seed_fingerprint), Welch's "
                     "t-test in the others")
    if same:
        parts.append(f"{same} identical on every seed (to within {stats.IDENTICAL_TOL:g}: "
                     "the same network), with no test")
    return "; ".join(parts)


def caveats(tests: list[Test]) -> str:
    """What a sentence resting on these tests must add: few seeds, or none ('')."""
    few = [t for t in tests if t.cmp.few_seeds]
    if not few:
        return ""
    ns = sorted({min(t.cmp.n_a, t.cmp.n_b) for t in few})
    n = " or ".join(map(str, ns))
    share = "every" if len(few) == len(tests) else f"{len(few)} of the {len(tests)}"
    return (f"{share} comparison rests on {n} seeds a side or fewer, too few to trust a "
            "single significant result")


def tally(tests: list[Test], a: str, b: str) -> dict[str, Any]:
    """Counts of each decision, and a sentence: 'A is significantly higher in 2, ...'."""
    counts = {d: sum(t.decision == d for t in tests)
              for d in ("higher", "lower", "ns", "small", "identical", "undefined")}
    parts = [(counts["higher"], f"{a} is significantly higher in {counts['higher']}"),
             (counts["lower"], f"{b} is significantly higher in {counts['lower']}"),
             (counts["ns"], f"there is no significant difference in {counts['ns']}")]
    if counts["small"]:
        parts.append((counts["small"], f"n is too small to conclude in {counts['small']}"))
    if counts["identical"] + counts["undefined"]:
        parts.append((1, f"there is no seed variance to test in "
                         f"{counts['identical'] + counts['undefined']}"))
    if len(tests) == 1:
        parts = [p for p in parts if p[0]] or parts
    texts = [t for _, t in parts]
    text = ", ".join(texts[:-1]) + " and " + texts[-1] if len(texts) > 1 else texts[0]
    return {"counts": counts, "text": text}
